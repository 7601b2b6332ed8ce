//! The per-request decision: which version of a rollout gets this request, and why.
//!
//! Order: header routes (first matching route wins, its matches AND-ed) → stickiness (a key from a
//! header or cookie hashed into a bucket in `[0, 10000)`) → a random draw (a bucket
//! `rng.u32(0..10000)`). A bucket picks the version by [`version_of_bucket`]: canary iff bucket <
//! canary weight; the additional versions (A/B/n) at the top of the range; stable in between.
//! Headers are read through [`RequestView`] only when a step needs them, so the glue makes a host
//! call only when a header is actually tested.
//!
//! A header sent several times is tested as one value, its values joined with `,` in the order
//! received — what Envoy's route `HeaderMatcher` does (`HeaderUtility::getAllOfHeaderAsString`),
//! so the filter and a native header route agree on `x-canary: 1` + `x-canary: 0` (= `1,0`).
//! Cookies are the exception: every `Cookie` field is searched, in order, for the sticky cookie.

use std::borrow::Cow;

use xxhash_rust::xxh3::xxh3_64;

use crate::http::{find_cookie, new_sticky_key, set_cookie_value};
use crate::policy::{HeaderMatch, MAX_WEIGHT_BP, MatchKind, Rollout, Sticky};

/// Read access to the request's headers.
pub trait RequestView {
    /// Calls `each` with every value of header `name` (lower-case), in the order received; not
    /// at all when the header is absent.
    fn for_each_value(&self, name: &str, each: &mut dyn FnMut(&[u8]));

    /// The value of header `name` as Envoy's route matching sees it ([`joined_value`]). A view
    /// that can lend a single value without copying it overrides this, so the common case (the
    /// header sent once) allocates nothing.
    fn joined(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        joined_value(self, name).map(Cow::Owned)
    }
}

/// The value of header `name` as Envoy's route matching sees it: all its values joined with `,`
/// (a single value as it is); `None` when the header is absent.
pub fn joined_value<R: RequestView + ?Sized>(request: &R, name: &str) -> Option<Vec<u8>> {
    let mut joined: Option<Vec<u8>> = None;
    request.for_each_value(name, &mut |value| match &mut joined {
        None => joined = Some(value.to_vec()),
        Some(all) => {
            all.push(b',');
            all.extend_from_slice(value);
        }
    });
    joined
}

/// [`RequestView::joined`] for a view whose values live as long as the view: `values` yields
/// every value of the header in order; one value is lent, several are joined into a new buffer.
pub fn join_borrowed<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<Cow<'a, [u8]>> {
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut all = Vec::with_capacity(first.len() + 1 + second.len());
    all.extend_from_slice(first);
    for value in std::iter::once(second).chain(values) {
        all.push(b',');
        all.extend_from_slice(value);
    }
    Some(Cow::Owned(all))
}

/// The sticky cookie `name` from the first `Cookie` field that holds it (HTTP/1.1 clients may
/// send several `Cookie` lines; HTTP/2 ones one field per cookie).
pub fn sticky_cookie(request: &dyn RequestView, name: &str) -> Option<Vec<u8>> {
    let mut found: Option<Vec<u8>> = None;
    request.for_each_value("cookie", &mut |field| {
        if found.is_none() {
            found = find_cookie(field, name).map(<[u8]>::to_vec);
        }
    });
    found
}

/// Why a version was chosen; also a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A header route matched.
    Header,
    /// The client's sticky key (header or cookie) chose the bucket.
    Sticky,
    /// A per-request random draw.
    Weight,
}

impl Reason {
    /// All reasons, in metric-slot order.
    pub const ALL: [Reason; 3] = [Reason::Header, Reason::Sticky, Reason::Weight];

    /// Lower-case label used in metric names.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Header => "header",
            Reason::Sticky => "sticky",
            Reason::Weight => "weight",
        }
    }

    fn slot(self) -> usize {
        match self {
            Reason::Header => 0,
            Reason::Sticky => 1,
            Reason::Weight => 2,
        }
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index of the chosen version in the rollout's `versions` (see [`Rollout::hash`]).
    pub version: usize,
    /// Why it was chosen.
    pub reason: Reason,
    /// A `Set-Cookie` value to add to the response: the client had no sticky cookie and was given
    /// a new key.
    pub set_cookie: Option<String>,
}

impl Decision {
    /// Index of this decision's counter among the rollout's counters (see [`metric_slots`]).
    pub fn metric_slot(&self) -> usize {
        self.version * Reason::ALL.len() + self.reason.slot()
    }
}

/// The (version index, reason) pairs of a rollout's counters, in slot order.
pub fn metric_slots(rollout: &Rollout) -> impl Iterator<Item = (usize, Reason)> + '_ {
    (0..rollout.versions.len()).flat_map(|v| Reason::ALL.into_iter().map(move |r| (v, r)))
}

/// The bucket in `[0, 10000)` of a sticky key. xxh3 is stable across VMs, platforms and releases,
/// so a client keeps its bucket wherever its requests land.
pub fn bucket(key: &[u8]) -> u32 {
    // The remainder of a division by 10000 always fits in u32.
    (xxh3_64(key) % u64::from(MAX_WEIGHT_BP)) as u32
}

/// What a request's headers decide before any weight is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Draw {
    /// A header route matched: this version (index in the rollout's `versions`).
    Route(usize),
    /// The client's sticky key falls in this bucket in `[0, 10000)`; `set_cookie` as in
    /// [`Decision::set_cookie`].
    Sticky {
        bucket: u32,
        set_cookie: Option<String>,
    },
    /// A per-request random draw decides.
    Random,
}

/// Header routes, then stickiness: everything about a request that does not depend on the
/// canary weight. [`decide`] applies the rollout's weight to it; with weights in the routes
/// (`FilterPolicy.bucket_header`) the router applies its own.
pub fn draw(rollout: &Rollout, request: &dyn RequestView, rng: &mut fastrand::Rng) -> Draw {
    if let Some(route) = rollout
        .header_routes
        .iter()
        .find(|route| route.matches.iter().all(|m| matches(m, request)))
    {
        return Draw::Route(route.target);
    }

    match &rollout.stickiness {
        Some(Sticky::Header(name)) => {
            if let Some(key) = request.joined(name).filter(|k| !k.is_empty()) {
                return sticky(&key, None);
            }
        }
        Some(Sticky::Cookie(cookie)) => {
            if let Some(key) = sticky_cookie(request, &cookie.name).filter(|k| !k.is_empty()) {
                return sticky(&key, None);
            }
            let key = new_sticky_key(rng);
            let set_cookie = set_cookie_value(cookie, &key);
            return sticky(key.as_bytes(), Some(set_cookie));
        }
        None => {}
    }
    Draw::Random
}

/// Decides which version of `rollout` serves the request.
pub fn decide(rollout: &Rollout, request: &dyn RequestView, rng: &mut fastrand::Rng) -> Decision {
    match draw(rollout, request, rng) {
        Draw::Route(version) => Decision {
            version,
            reason: Reason::Header,
            set_cookie: None,
        },
        Draw::Sticky { bucket, set_cookie } => Decision {
            version: version_of_bucket(rollout, bucket),
            reason: Reason::Sticky,
            set_cookie,
        },
        Draw::Random => {
            // No draw when nothing but stable, or nothing but the canary, has a share: the same
            // shortcut as before additional versions existed (a policy without them decides,
            // and consumes the generator, exactly as it did).
            let version = if rollout.weight_bp >= MAX_WEIGHT_BP {
                pick(rollout, true)
            } else if rollout.weight_bp == 0 && rollout.additional.iter().all(|a| a.weight_bp == 0)
            {
                rollout.stable
            } else {
                version_of_bucket(rollout, rng.u32(0..MAX_WEIGHT_BP))
            };
            Decision {
                version,
                reason: Reason::Weight,
                set_cookie: None,
            }
        }
    }
}

/// The version a bucket in `[0, 10000)` gets (index in the rollout's `versions`). With canary
/// weight `c` and additional weights `a₁ … aₙ` (sum `A`, `c + A <= 10000`):
///
/// ```text
///  0          c                     10000 − A      +a₁      +a₂  …   10000
///  |  canary  |        stable        |  additional₁ | additional₂ | … |
/// ```
///
/// The rule, and why: the canary's range starts at 0 and the additional ranges end at 10000, so
/// - as the canary weight grows, a bucket in the canary stays in the canary (its range only
///   widens), whatever the additional weights are: stickiness is monotonic for the canary;
/// - an additional version never holds a bucket below `c`: it takes no key from the canary's
///   range, and while only the canary weight changes, every additional range stays where it is.
///
/// Envoy's `weighted_clusters` with `header_name` lists clusters canary, stable, additional₁ …
/// and picks the first whose cumulative range holds the bucket: the same rule, which is why the
/// control plane can put the weights in the routes (`FilterPolicy.bucket_header`).
/// A bucket `>= 10000` (never produced) is treated as 9999.
pub fn version_of_bucket(rollout: &Rollout, bucket: u32) -> usize {
    let bucket = bucket.min(MAX_WEIGHT_BP - 1);
    if bucket < rollout.weight_bp {
        return pick(rollout, true);
    }
    // Validated policies sum to at most 10000; saturating keeps any other input panic-free.
    let total: u32 = rollout
        .additional
        .iter()
        .fold(0u32, |sum, a| sum.saturating_add(a.weight_bp));
    let mut start = MAX_WEIGHT_BP.saturating_sub(total);
    if bucket < start {
        return rollout.stable;
    }
    for additional in &rollout.additional {
        let end = start.saturating_add(additional.weight_bp);
        if bucket < end {
            return additional.version;
        }
        start = end;
    }
    // Only reached when the ranges do not cover [0, 10000), which validation rules out.
    rollout.stable
}

fn sticky(key: &[u8], set_cookie: Option<String>) -> Draw {
    Draw::Sticky {
        bucket: bucket(key),
        set_cookie,
    }
}

fn pick(rollout: &Rollout, canary: bool) -> usize {
    match rollout.canary {
        Some(c) if canary => c,
        _ => rollout.stable,
    }
}

fn matches(m: &HeaderMatch, request: &dyn RequestView) -> bool {
    let Some(value) = request.joined(&m.header) else {
        return false;
    };
    match &m.kind {
        MatchKind::Exact(want) => value == want.as_bytes(),
        MatchKind::Prefix(prefix) => value.starts_with(prefix.as_bytes()),
        // A value that is not UTF-8 cannot match a pattern written as a string.
        MatchKind::Regex(re) => std::str::from_utf8(&value).is_ok_and(|v| re.is_match(v)),
        MatchKind::Present => true,
    }
}
