//! The event hooks Envoy calls (`envoy_dynamic_module_on_*`). Each one is a thin shell: it runs
//! its body under [`guard`] (no panic crosses the FFI boundary) and converts pointers; the work is
//! in [`on_config`], [`on_request_headers`] and [`on_response_headers`].

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_filter::http::authority_rewrite;
use sluice_filter::split;

use crate::abi::{
    self, CONTINUE, ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer, FilterEnvoyPtr, FilterModulePtr,
    FilterStatus, LogLevel, ModuleBuffer,
};
use crate::stream::{Config, EnvoyRequest, Stream, release_stream, take_stream, with_rng};

/// Logs through Envoy (logger `dynamic_modules`).
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the message buffer lives for the duration of the call.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

/// Runs `body`, turning a panic into `fallback` (logged once per process).
fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            if !LOGGED.swap(true, Ordering::Relaxed) {
                log(
                    abi::LOG_ERROR,
                    "sluice: a filter hook panicked; the request passes through unchanged \
                     (logged once)",
                );
            }
            fallback
        }
    }
}

#[cfg(test)]
pub fn guard_for_test<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    guard(fallback, body)
}

/// Compiles a policy and defines its counters; logs and returns None if it is invalid.
pub fn on_config(envoy_config: ConfigEnvoyPtr, bytes: &[u8]) -> Option<Box<Config>> {
    let defined = Config::new(bytes, |name| {
        let mut id = 0usize;
        // SAFETY: `envoy_config` is the config pointer of the running `config_new` hook, during
        // which counters may be defined; `id` is a valid out-pointer; no labels (null, 0).
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                envoy_config,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        if result == abi::METRICS_SUCCESS {
            Ok(id)
        } else {
            Err(format!("Envoy returned metrics result {result}"))
        }
    });
    match defined {
        Ok(config) => {
            log(
                abi::LOG_INFO,
                &format!(
                    "sluice: policy configured: {} rollout(s), routing header {}",
                    config.policy.rollouts.len(),
                    config.policy.routing_header
                ),
            );
            Some(Box::new(config))
        }
        Err(message) => {
            log(abi::LOG_ERROR, &format!("sluice: {message}"));
            None
        }
    }
}

/// Sets (`Some`) or removes (`None`, a null buffer) every value of request header `name`:
/// Envoy's `setCopy`, so a client-sent value is replaced.
fn set_request_header(filter: FilterEnvoyPtr, name: &str, value: Option<&[u8]>) {
    let value = value.map_or(
        ModuleBuffer {
            ptr: std::ptr::null(),
            length: 0,
        },
        ModuleBuffer::of,
    );
    // SAFETY: `filter` is the running hook's filter pointer; both buffers outlive the call.
    unsafe {
        abi::envoy_dynamic_module_callback_http_set_header(
            filter,
            abi::REQUEST_HEADER,
            ModuleBuffer::of(name.as_bytes()),
            value,
        );
    }
}

/// The decision for one request (`sluice_filter::split::route`, the rule the Wasm build also
/// applies): write the routing header (a version) or the bucket header (weights in the routes),
/// re-route, count.
pub fn on_request_headers(filter: FilterEnvoyPtr, stream: &mut Stream) {
    // SAFETY: a stream's config pointer is set by `on_http_filter_new` from the config Envoy
    // passed; Envoy keeps a filter config alive while any filter created from it exists.
    let Some(config) = (unsafe { stream.config.as_ref() }) else {
        return;
    };
    let request = EnvoyRequest { filter };
    let Some(authority) = request.get(":authority") else {
        return;
    };
    let Some((index, rollout)) = config.policy.rollout_for_authority(authority) else {
        return;
    };
    // The router must see the host the filter decided for (`demo.local.` → `demo.local`). The
    // rewritten value is copied first: the write replaces the buffer `authority` points into.
    if let Some(host) = authority_rewrite(authority) {
        let host = host.into_owned();
        set_request_header(filter, ":authority", Some(&host));
    }
    let routing = with_rng(|rng| split::route(&config.policy, rollout, &request, rng));
    routing
        .value
        .with_bytes(|value| set_request_header(filter, routing.header, Some(value)));
    if let Some(name) = routing.remove {
        set_request_header(filter, name, None);
    }
    // SAFETY: as above. Header writes by a dynamic module do not clear the route cache, so the
    // router would keep the route it matched before the filter ran.
    unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(filter) };
    if let Some(id) = config.counter_id(index, routing.slot) {
        // SAFETY: `filter` was created from the config that defined counter `id`; no labels.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                filter,
                id,
                std::ptr::null(),
                0,
                1,
            );
        }
    }
    stream.set_cookie = routing.set_cookie;
}

/// Hands out a new sticky cookie, if the request's decision made one.
pub fn on_response_headers(filter: FilterEnvoyPtr, stream: &mut Stream) {
    if let Some(cookie) = stream.set_cookie.take() {
        // SAFETY: `filter` is the running hook's filter pointer; both buffers outlive the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                filter,
                abi::RESPONSE_HEADER,
                ModuleBuffer::of(b"set-cookie"),
                ModuleBuffer::of(cookie.as_bytes()),
            );
        }
    }
}

/// The stream behind a filter module pointer.
///
/// # Safety
/// `module` must be null or a pointer returned by `on_http_filter_new` and not yet destroyed,
/// used by one thread at a time (Envoy calls a stream's hooks on its worker thread only).
unsafe fn stream_mut<'a>(module: FilterModulePtr) -> Option<&'a mut Stream> {
    // SAFETY: per the function's contract.
    unsafe { (module as *mut Stream).as_mut() }
}

/// The bytes of an Envoy buffer (empty if null).
///
/// # Safety
/// `buffer` must point to `length` readable bytes for `'a`.
unsafe fn envoy_bytes<'a>(buffer: EnvoyBuffer) -> &'a [u8] {
    if buffer.ptr.is_null() {
        return &[];
    }
    // SAFETY: per the function's contract.
    unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.length) }
}

// ---------------------------------------------------------------------------------------------
// Hooks Sluice uses.

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr().cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy_config: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    guard(std::ptr::null(), || {
        // SAFETY: Envoy's config bytes are valid for the duration of this hook.
        let bytes = unsafe { envoy_bytes(config) };
        on_config(envoy_config, bytes)
            .map_or(std::ptr::null(), |c| Box::into_raw(c).cast_const().cast())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigModulePtr) {
    guard((), || {
        if !config.is_null() {
            // SAFETY: `config` came from `Box::into_raw` in `config_new`; Envoy destroys it once,
            // after every filter created from it.
            drop(unsafe { Box::from_raw(config as *mut Config) });
        }
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _filter: FilterEnvoyPtr,
) -> FilterModulePtr {
    guard(std::ptr::null(), || {
        Box::into_raw(take_stream(config.cast::<Config>()))
            .cast_const()
            .cast()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    _end_of_stream: bool,
) -> FilterStatus {
    guard(CONTINUE, || {
        // SAFETY: `module` is this stream's pointer from `filter_new`, on its worker thread.
        if let Some(stream) = unsafe { stream_mut(module) } {
            on_request_headers(filter, stream);
        }
        CONTINUE
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter: FilterEnvoyPtr,
    module: FilterModulePtr,
    _end_of_stream: bool,
) -> FilterStatus {
    guard(CONTINUE, || {
        // SAFETY: `module` is this stream's pointer from `filter_new`, on its worker thread.
        if let Some(stream) = unsafe { stream_mut(module) } {
            on_response_headers(filter, stream);
        }
        CONTINUE
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: FilterModulePtr) {
    guard((), || {
        if !module.is_null() {
            // SAFETY: `module` came from `Box::into_raw` in `filter_new`; Envoy destroys it once.
            release_stream(unsafe { Box::from_raw(module as *mut Stream) });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Hooks Envoy requires a module to export, which Sluice does not need: they do nothing.

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _end_of_stream: bool,
) -> FilterStatus {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
) -> FilterStatus {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _end_of_stream: bool,
) -> FilterStatus {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
) -> FilterStatus {
    CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *const c_void,
    _headers_size: usize,
    _body_chunks: *const c_void,
    _body_chunks_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _headers: *const c_void,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _data: *const c_void,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _trailers: *const c_void,
    _trailers_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _event_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter: FilterEnvoyPtr,
    _module: FilterModulePtr,
) {
}
