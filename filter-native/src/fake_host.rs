//! A fake Envoy for unit tests: definitions of the ABI callbacks the module calls, over a
//! per-thread request/response header map, counters and a log. The hooks are then driven exactly
//! as Envoy drives them (only the pointers Envoy would pass are dummies).

use std::cell::RefCell;

use crate::abi::{EnvoyBuffer, HeaderType, LogLevel, MetricsResult, ModuleBuffer, REQUEST_HEADER};

#[derive(Debug, Default)]
pub struct Host {
    pub request: Vec<(String, Vec<u8>)>,
    pub response: Vec<(String, Vec<u8>)>,
    pub counter_names: Vec<String>,
    pub counters: Vec<u64>,
    pub logs: Vec<String>,
    pub route_cache_clears: usize,
}

thread_local! {
    pub static HOST: RefCell<Host> = RefCell::new(Host::default());
}

/// Runs `f` on this thread's fake host.
pub fn with_host<T>(f: impl FnOnce(&mut Host) -> T) -> T {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

fn bytes(buffer: ModuleBuffer) -> Vec<u8> {
    if buffer.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the module passes buffers valid for the duration of the call.
    unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.length) }.to_vec()
}

fn text(buffer: ModuleBuffer) -> String {
    String::from_utf8_lossy(&bytes(buffer)).into_owned()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_get_header(
    _filter: *mut std::ffi::c_void,
    header_type: HeaderType,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
    index: usize,
    optional_size: *mut usize,
) -> bool {
    let key = text(key);
    with_host(|host| {
        let map = if header_type == REQUEST_HEADER {
            &host.request
        } else {
            &host.response
        };
        if !optional_size.is_null() {
            // SAFETY: a non-null `optional_size` is the module's valid out-pointer.
            unsafe { *optional_size = map.iter().filter(|(k, _)| *k == key).count() };
        }
        let Some((_, value)) = map.iter().filter(|(k, _)| *k == key).nth(index) else {
            return false;
        };
        // SAFETY: `result` is the module's valid out-pointer. The value stays in the
        // thread-local map (not modified) until the test changes it, after the hook returns.
        unsafe {
            *result = EnvoyBuffer {
                ptr: value.as_ptr(),
                length: value.len(),
            }
        };
        true
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_set_header(
    _filter: *mut std::ffi::c_void,
    header_type: HeaderType,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    // As Envoy: a null or empty value removes the header.
    let remove = value.ptr.is_null() || value.length == 0;
    let (key, value) = (text(key), bytes(value));
    with_host(|host| {
        let map = if header_type == REQUEST_HEADER {
            &mut host.request
        } else {
            &mut host.response
        };
        map.retain(|(k, _)| *k != key);
        if !remove {
            map.push((key, value));
        }
    });
    true
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_add_header(
    _filter: *mut std::ffi::c_void,
    header_type: HeaderType,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let (key, value) = (text(key), bytes(value));
    with_host(|host| {
        let map = if header_type == REQUEST_HEADER {
            &mut host.request
        } else {
            &mut host.response
        };
        map.push((key, value));
    });
    true
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_clear_route_cache(
    _filter: *mut std::ffi::c_void,
) {
    with_host(|host| host.route_cache_clears += 1);
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    _config: *mut std::ffi::c_void,
    name: ModuleBuffer,
    _label_names: *const ModuleBuffer,
    _label_names_length: usize,
    counter_id: *mut usize,
) -> MetricsResult {
    let name = text(name);
    with_host(|host| {
        host.counter_names.push(name);
        host.counters.push(0);
        // SAFETY: `counter_id` is the module's valid out-pointer.
        unsafe { *counter_id = host.counters.len() - 1 };
    });
    crate::abi::METRICS_SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_increment_counter(
    _filter: *mut std::ffi::c_void,
    id: usize,
    _label_values: *const ModuleBuffer,
    _label_values_length: usize,
    value: u64,
) -> MetricsResult {
    with_host(|host| match host.counters.get_mut(id) {
        Some(counter) => {
            *counter += value;
            crate::abi::METRICS_SUCCESS
        }
        None => 1,
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_callback_log(_level: LogLevel, message: ModuleBuffer) {
    let message = text(message);
    with_host(|host| host.logs.push(message));
}
