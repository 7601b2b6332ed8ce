//! A no-op proxy-wasm filter, the baseline of the filter benchmark.
