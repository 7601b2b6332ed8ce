//! The filter's state: a compiled policy with its Envoy counter ids (one per filter config), the
//! per-stream state (a pooled allocation), the per-thread random generator, and the request view
//! that reads headers from Envoy in place.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};

use sluice_filter::decision::join_borrowed;
use sluice_filter::metrics::rollout_counter_names;
use sluice_filter::{CompiledPolicy, RequestView};

use crate::abi::{self, EnvoyBuffer, FilterEnvoyPtr, ModuleBuffer};

/// A filter configuration: the compiled policy and, per rollout, the Envoy ids of its counters
/// in slot order ([`sluice_filter::metrics::rollout_counter_names`]: the (version, reason)
/// counters, then the split ones when the policy has a bucket header).
#[derive(Debug)]
pub struct Config {
    pub policy: CompiledPolicy,
    /// `counter_ids[rollout][slot]`.
    pub counter_ids: Vec<Vec<usize>>,
}

impl Config {
    /// Compiles `bytes` and defines its counters through `define` (name → Envoy id).
    pub fn new(
        bytes: &[u8],
        mut define: impl FnMut(&str) -> Result<usize, String>,
    ) -> Result<Self, String> {
        let policy =
            CompiledPolicy::from_bytes(bytes).map_err(|e| format!("invalid policy: {e}"))?;
        let mut counter_ids = Vec::with_capacity(policy.rollouts.len());
        for rollout in &policy.rollouts {
            let names = rollout_counter_names(&policy, rollout);
            let ids = names
                .iter()
                .map(|name| define(name).map_err(|e| format!("defining counter {name}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            counter_ids.push(ids);
        }
        Ok(Self {
            policy,
            counter_ids,
        })
    }

    /// The Envoy id of the counter for (rollout index, metric slot), if both are in range.
    pub fn counter_id(&self, rollout: usize, slot: usize) -> Option<usize> {
        self.counter_ids.get(rollout)?.get(slot).copied()
    }
}

/// Per-stream state. Streams are recycled through a per-thread pool, so a request allocates
/// nothing on the common path.
#[derive(Debug)]
pub struct Stream {
    pub config: *const Config,
    /// A `Set-Cookie` value for the response (a new sticky key).
    pub set_cookie: Option<String>,
}

/// Streams kept for reuse per worker thread; beyond this many idle ones they are freed.
const POOL_MAX: usize = 4096;

thread_local! {
    // Boxed on purpose: the pool keeps the very allocations whose addresses Envoy holds as
    // filter pointers, so reusing one costs no allocation.
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<Stream>>> = const { RefCell::new(Vec::new()) };
    static RNG_STATE: Cell<u64> = Cell::new(seed());
}

/// A stream for `config`, from the pool when one is idle.
pub fn take_stream(config: *const Config) -> Box<Stream> {
    let pooled = POOL
        .try_with(|pool| pool.try_borrow_mut().ok().and_then(|mut p| p.pop()))
        .ok()
        .flatten();
    match pooled {
        Some(mut stream) => {
            stream.config = config;
            stream.set_cookie = None;
            stream
        }
        None => Box::new(Stream {
            config,
            set_cookie: None,
        }),
    }
}

/// Returns a finished stream to the pool (or frees it).
pub fn release_stream(mut stream: Box<Stream>) {
    stream.set_cookie = None;
    stream.config = std::ptr::null();
    let _ = POOL.try_with(|pool| {
        if let Ok(mut pool) = pool.try_borrow_mut()
            && pool.len() < POOL_MAX
        {
            pool.push(stream);
        }
    });
}

/// Runs `f` with this thread's random generator.
pub fn with_rng<T>(f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
    let state = RNG_STATE.try_with(Cell::get).unwrap_or_else(|_| seed());
    let mut rng = fastrand::Rng::with_seed(state);
    let out = f(&mut rng);
    let _ = RNG_STATE.try_with(|s| s.set(rng.get_seed()));
    out
}

/// A seed from the OS; if that fails, from the time, the thread and a counter.
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    getrandom::u64().unwrap_or_else(|_| {
        // RandomState is itself seeded per process and per instance; mixed with the time it
        // still differs between threads and calls.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        RandomState::new().hash_one(nanos)
    })
}

/// The request headers of one stream, read from Envoy when the decision asks for them.
#[derive(Debug, Clone, Copy)]
pub struct EnvoyRequest {
    pub filter: FilterEnvoyPtr,
}

impl EnvoyRequest {
    /// Value `index` of request header `name` and how many values it has, borrowed from Envoy's
    /// header map: valid until the hook that made this `EnvoyRequest` returns (the lifetime is
    /// tied to `&self`, which the hook owns).
    fn value(&self, name: &str, index: usize) -> (Option<&[u8]>, usize) {
        let mut value = EnvoyBuffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: `self.filter` is the filter pointer Envoy passed to the running hook; `value`
        // and `count` are valid out-pointers.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.filter,
                abi::REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                &mut value,
                index,
                &mut count,
            )
        };
        if !found || value.ptr.is_null() {
            return (None, count);
        }
        // SAFETY: Envoy returned a pointer/length into its header map, which is not modified
        // before the hook returns; the borrow cannot outlive `self` (owned by the hook).
        let bytes = unsafe { std::slice::from_raw_parts(value.ptr, value.length) };
        (Some(bytes), count)
    }

    /// The first value of request header `name` (see [`Self::value`] for its lifetime).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.value(name, 0).0
    }
}

impl RequestView for EnvoyRequest {
    /// Every value, read in place: a repeated header's values are all needed (the core joins
    /// them as Envoy's route matching does, and searches every `Cookie` field).
    fn for_each_value(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        let (first, count) = self.value(name, 0);
        let Some(first) = first else {
            return;
        };
        each(first);
        for index in 1..count {
            if let (Some(value), _) = self.value(name, index) {
                each(value);
            }
        }
    }

    /// A header sent once is lent from Envoy's header map, not copied.
    fn joined(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let (first, count) = self.value(name, 0);
        join_borrowed(
            first
                .into_iter()
                .chain((1..count).filter_map(|index| self.value(name, index).0)),
        )
    }
}
