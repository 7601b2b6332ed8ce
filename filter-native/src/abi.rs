//! Our own declarations of the parts of Envoy's dynamic-module C ABI this module uses.
//!
//! Pinned to **Envoy 1.40, ABI `v0.2.0`** (`source/extensions/dynamic_modules/abi/abi.h` in
//! Envoy's tree; Envoy logs `Dynamic module ABI version v0.2.0 matched.` when it loads us). Envoy's
//! own Rust SDK is not published as a crate, so only the types and functions used here are
//! declared, by hand, from that header. Nothing checks these signatures at build time: the
//! real-Envoy e2e suite (`SLUICE_FILTER=native`, tests/tests/filter.rs and invalid_policy.rs) is the
//! check, and must be run on every Envoy upgrade (see the crate docs).
//!
//! Conventions of the ABI: every pointer Envoy hands us (`*_envoy_ptr`) is opaque and valid for
//! the duration of the hook it was passed to (the filter's for the stream's lifetime); buffers Envoy
//! returns (`EnvoyBuffer`) point into Envoy's header map and are valid until the hook returns;
//! buffers we pass (`ModuleBuffer`) need only live for the duration of the call. C enums are
//! `int`-sized; they are declared here as `u32`/`i32` constants.

use std::ffi::c_void;

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr`.
pub type ConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_module_ptr`.
pub type ConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_envoy_ptr`.
pub type FilterEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_module_ptr`.
pub type FilterModulePtr = *const c_void;

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    /// Borrows `bytes` for the duration of one call.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_http_header_type`.
pub type HeaderType = u32;
pub const REQUEST_HEADER: HeaderType = 0;
pub const RESPONSE_HEADER: HeaderType = 2;

/// `envoy_dynamic_module_type_log_level` (Trace, Debug, Info, Warn, Error, Critical, Off).
pub type LogLevel = u32;
pub const LOG_INFO: LogLevel = 2;
pub const LOG_WARN: LogLevel = 3;
pub const LOG_ERROR: LogLevel = 4;

/// `envoy_dynamic_module_type_metrics_result`; 0 is `Success`.
pub type MetricsResult = u32;
pub const METRICS_SUCCESS: MetricsResult = 0;

/// The `Continue` value of every `envoy_dynamic_module_type_on_http_filter_*_status` enum.
pub type FilterStatus = u32;
pub const CONTINUE: FilterStatus = 0;

/// The version string `envoy_dynamic_module_on_program_init` returns (NUL-terminated).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

// Callbacks Envoy implements. They are resolved when Envoy `dlopen`s the module (Envoy exports
// them), so the cdylib links with them undefined; unit tests define them (`crate::fake_host`).
unsafe extern "C" {
    /// Value `index` of header `key` into `result` (null if absent); `optional_size`, if not
    /// null, receives the number of values. Returns whether the value exists.
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;

    /// Replaces every value of header `key` with `value`.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Adds a value to header `key`.
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter_envoy_ptr: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Clears the stream's cached route so the router matches again on the edited headers.
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter_envoy_ptr: FilterEnvoyPtr);

    /// Defines a counter `<metrics_namespace>.<name>` (no labels here: `label_names` null, 0).
    /// Only valid while the filter config is being created.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        filter_config_envoy_ptr: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> MetricsResult;

    /// Adds `value` to counter `id` of the filter's config.
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy_ptr: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Writes `message` to Envoy's log (logger `dynamic_modules`).
    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);
}
