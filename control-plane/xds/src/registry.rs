//! TODO(owner): see crate docs.
