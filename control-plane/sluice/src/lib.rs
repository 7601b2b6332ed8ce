//! The sluice control-plane binary and CLI.
