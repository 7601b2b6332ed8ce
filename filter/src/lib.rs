//! The Sluice proxy-wasm HTTP filter.
