//! End-to-end tests with a real Envoy.
