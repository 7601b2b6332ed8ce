//! A dynamic module that does nothing: the baseline that prices Envoy's dynamic-module machinery
//! (a filter object per stream and a C call per hook) in the filter benchmark, as the no-op Wasm
//! filter prices V8. It exports every HTTP-filter hook Envoy 1.40 (ABI v0.2.0) requires, each
//! returning at once; see `sluice-filter-native` for the ABI notes.

use std::ffi::{c_char, c_void};

type Ptr = *const c_void;
const CONTINUE: u32 = 0;
/// A non-null, never dereferenced pointer standing for the config and for every filter.
static TOKEN: u8 = 0;

fn token() -> Ptr {
    (&raw const TOKEN).cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Buffer {
    ptr: *const u8,
    length: usize,
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _envoy: Ptr,
    _name: Buffer,
    _config: Buffer,
) -> Ptr {
    token()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: Ptr) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(_config: Ptr, _envoy: Ptr) -> Ptr {
    token()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_filter: Ptr) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _e: Ptr,
    _m: Ptr,
    _end: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _e: Ptr,
    _m: Ptr,
    _end: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_e: Ptr, _m: Ptr) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _e: Ptr,
    _m: Ptr,
    _end: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _e: Ptr,
    _m: Ptr,
    _end: bool,
) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_e: Ptr, _m: Ptr) -> u32 {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_e: Ptr, _m: Ptr) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _e: Ptr,
    _m: Ptr,
    _id: u64,
    _result: u32,
    _headers: Ptr,
    _headers_size: usize,
    _body: Ptr,
    _body_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _e: Ptr,
    _m: Ptr,
    _id: u64,
    _headers: Ptr,
    _size: usize,
    _end: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _e: Ptr,
    _m: Ptr,
    _id: u64,
    _data: Ptr,
    _count: usize,
    _end: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _e: Ptr,
    _m: Ptr,
    _id: u64,
    _trailers: Ptr,
    _size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _e: Ptr,
    _m: Ptr,
    _id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _e: Ptr,
    _m: Ptr,
    _id: u64,
    _reason: u32,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_e: Ptr, _m: Ptr, _id: u64) {}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _e: Ptr,
    _m: Ptr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _e: Ptr,
    _m: Ptr,
) {
}
