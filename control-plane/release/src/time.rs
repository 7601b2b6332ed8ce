//! Time arithmetic that cannot overflow or panic.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// `start + duration`, saturating at the latest representable time.
pub(crate) fn after(start: Timestamp, duration: Duration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| start.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// How long from `now` until `end`; `None` when `end` is now or past.
pub(crate) fn until(now: Timestamp, end: Timestamp) -> Option<Duration> {
    let left = end.duration_since(now);
    if left.is_positive() {
        Duration::try_from(left).ok()
    } else {
        None
    }
}
