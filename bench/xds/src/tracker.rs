//! Bookkeeping of one measured change: which clients have received it, and when the last did.
//!
//! A change is delivered to a client once every expected type (those a weight change touches,
//! learned from a warm-up change) has had a new version since the change started. The latency of
//! the change is the latest such time across clients minus the time the change was requested.

use std::time::{Duration, Instant};

use crate::client::TypeSet;

/// One change in flight.
#[derive(Debug)]
pub struct Epoch {
    t0: Instant,
    /// Types that must change for a client to count as updated; empty = any one type.
    expected: TypeSet,
    seen: Vec<TypeSet>,
    done_at: Vec<Option<Instant>>,
    done: usize,
    /// Version changes of types outside `expected` (or before `t0`): should stay 0.
    unexpected: u64,
    /// Clients the change concerns (all, unless the clients are scoped).
    affected: Vec<bool>,
    affected_count: usize,
    /// Bytes of every response received since `t0`, and those of them sent to unaffected
    /// clients (which should receive nothing).
    bytes: u64,
    unaffected_bytes: u64,
}

impl Epoch {
    /// A change every client should receive.
    #[cfg(test)]
    pub fn new(clients: usize, t0: Instant, expected: TypeSet) -> Self {
        Epoch::with_affected(vec![true; clients], t0, expected)
    }

    /// A change only the clients marked in `affected` should receive.
    pub fn with_affected(affected: Vec<bool>, t0: Instant, expected: TypeSet) -> Self {
        let clients = affected.len();
        Epoch {
            t0,
            expected,
            seen: vec![0; clients],
            done_at: vec![None; clients],
            done: 0,
            unexpected: 0,
            affected_count: affected.iter().filter(|a| **a).count(),
            affected,
            bytes: 0,
            unaffected_bytes: 0,
        }
    }

    /// Client `client` received a response of `bytes` bytes (encoded).
    pub fn on_bytes(&mut self, client: usize, bytes: u64) {
        self.bytes += bytes;
        if !self.affected.get(client).copied().unwrap_or(true) {
            self.unaffected_bytes += bytes;
        }
    }

    /// Bytes received by every client since the change started.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes received by clients the change does not concern.
    pub fn unaffected_bytes(&self) -> u64 {
        self.unaffected_bytes
    }

    /// Clients the change concerns.
    #[cfg(test)]
    pub fn affected(&self) -> usize {
        self.affected_count
    }

    /// Client `client` received a new version of type `type_index` at `at`.
    pub fn on_change(&mut self, client: usize, type_index: usize, at: Instant) {
        let bit: TypeSet = 1 << type_index;
        let Some(seen) = self.seen.get_mut(client) else {
            return;
        };
        if at < self.t0
            || (self.expected != 0 && self.expected & bit == 0)
            || !self.affected[client]
        {
            self.unexpected += 1;
            return;
        }
        *seen |= bit;
        let delivered = if self.expected == 0 {
            true
        } else {
            *seen & self.expected == self.expected
        };
        if delivered && self.done_at[client].is_none() {
            self.done_at[client] = Some(at);
            self.done += 1;
        }
    }

    /// Every client has received the change.
    pub fn is_complete(&self) -> bool {
        self.done == self.affected_count
    }

    /// Clients that have not received the change yet.
    pub fn pending(&self) -> usize {
        self.affected_count - self.done
    }

    /// From the request to the last client's update; `None` until complete.
    pub fn latency(&self) -> Option<Duration> {
        if !self.is_complete() {
            return None;
        }
        let last = self
            .done_at
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(self.t0);
        Some(last.saturating_duration_since(self.t0))
    }

    /// Every type any client has seen change in this epoch.
    pub fn seen_types(&self) -> TypeSet {
        self.seen.iter().fold(0, |acc, s| acc | s)
    }

    pub fn unexpected(&self) -> u64 {
        self.unexpected
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples; `None` if there are none.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ROUTE: usize = 3;
    const ECDS: usize = 4;
    const BOTH: TypeSet = (1 << ROUTE) | (1 << ECDS);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn complete_once_every_client_has_every_expected_type() {
        let t0 = Instant::now();
        let mut e = Epoch::new(2, t0, BOTH);
        e.on_change(0, ROUTE, t0 + ms(1));
        e.on_change(0, ECDS, t0 + ms(2));
        assert!(!e.is_complete());
        assert_eq!(e.pending(), 1);
        e.on_change(1, ECDS, t0 + ms(5));
        assert!(!e.is_complete(), "client 1 still lacks RDS");
        assert_eq!(e.latency(), None);
        e.on_change(1, ROUTE, t0 + ms(7));
        assert!(e.is_complete());
        assert_eq!(e.latency(), Some(ms(7)));
        assert_eq!(e.unexpected(), 0);
    }

    #[test]
    fn latency_is_the_latest_client_not_the_last_event() {
        let t0 = Instant::now();
        let mut e = Epoch::new(2, t0, 1 << ROUTE);
        e.on_change(0, ROUTE, t0 + ms(9));
        e.on_change(1, ROUTE, t0 + ms(4));
        // A second update of a done client does not move its time.
        e.on_change(1, ROUTE, t0 + ms(20));
        assert_eq!(e.latency(), Some(ms(9)));
    }

    #[test]
    fn other_types_and_stale_events_are_counted_not_used() {
        let t0 = Instant::now() + ms(100);
        let mut e = Epoch::new(1, t0, 1 << ROUTE);
        e.on_change(0, 0, t0 + ms(1));
        e.on_change(0, ROUTE, t0 - ms(1));
        assert!(!e.is_complete());
        assert_eq!(e.unexpected(), 2);
        e.on_change(0, ROUTE, t0 + ms(3));
        assert_eq!(e.latency(), Some(ms(3)));
        // Out-of-range clients are ignored rather than panicking.
        e.on_change(5, ROUTE, t0);
    }

    #[test]
    fn discovery_mode_takes_any_type_and_reports_what_changed() {
        let t0 = Instant::now();
        let mut e = Epoch::new(2, t0, 0);
        e.on_change(0, ROUTE, t0 + ms(1));
        e.on_change(1, ECDS, t0 + ms(2));
        assert!(e.is_complete());
        e.on_change(0, ECDS, t0 + ms(3));
        assert_eq!(e.seen_types(), BOTH);
        assert_eq!(e.unexpected(), 0);
    }

    #[test]
    fn a_scoped_change_waits_for_the_affected_clients_and_counts_the_others() {
        let t0 = Instant::now();
        let mut e = Epoch::with_affected(vec![false, true, false], t0, 1 << ROUTE);
        assert_eq!(e.affected(), 1);
        e.on_bytes(1, 300);
        e.on_change(1, ROUTE, t0 + ms(4));
        assert!(e.is_complete());
        assert_eq!(e.latency(), Some(ms(4)));
        assert_eq!(
            (e.bytes(), e.unaffected_bytes(), e.unexpected()),
            (300, 0, 0)
        );
        // An unaffected client that receives something is counted, never waited for.
        e.on_bytes(0, 50);
        e.on_change(0, ROUTE, t0 + ms(5));
        assert_eq!(
            (e.bytes(), e.unaffected_bytes(), e.unexpected()),
            (350, 50, 1)
        );
        assert_eq!(e.latency(), Some(ms(4)));
    }

    #[test]
    fn percentiles_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(percentile(&samples, 50.0), Some(ms(50)));
        assert_eq!(percentile(&samples, 99.0), Some(ms(99)));
        assert_eq!(percentile(&samples, 100.0), Some(ms(100)));
        assert_eq!(percentile(&samples, 0.0), Some(ms(1)));
        let few = [ms(3), ms(1), ms(2)];
        assert_eq!(percentile(&few, 50.0), Some(ms(2)));
        assert_eq!(percentile(&few, 99.0), Some(ms(3)));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
