//! The control plane's desired state: the last good state from the source plus admin overrides.
//!
//! Pure: no I/O. `serve` feeds it source updates and admin commands, and publishes
//! [`Store::effective`] (translated to a snapshot) whenever [`Store`] says it changed.

use std::collections::BTreeMap;

use sluice_model::{Override, RolloutState, TrafficState};

/// An admin override and the source state it was made against: the override holds until the
/// source changes that rollout, so a new release in the source is never masked by an old override.
#[derive(Clone, Debug)]
struct Held {
    /// Applied in order: e.g. set-weight 50 then promote.
    overs: Vec<Override>,
    against: RolloutState,
}

/// Last good source state, admin overrides, and the last source error.
#[derive(Debug, Default)]
pub struct Store {
    source: TrafficState,
    overrides: BTreeMap<String, Held>,
    last_error: Option<String>,
    /// False until the source delivered a first valid state.
    ready: bool,
}

/// Why an admin command was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no rollout named {0:?}")]
    UnknownRollout(String),
    #[error("rollout {rollout:?}: {message}")]
    Refused { rollout: String, message: String },
}

impl Store {
    /// A new valid state from the source. Overrides whose rollout changed in the source (or
    /// vanished) are dropped.
    pub fn set_source(&mut self, state: TrafficState) {
        self.overrides
            .retain(|name, held| state.rollouts.get(name) == Some(&held.against));
        self.source = state;
        self.last_error = None;
        self.ready = true;
    }

    /// The source produced invalid input: keep serving the last good state, remember the error.
    pub fn set_source_error(&mut self, error: String) {
        self.last_error = Some(error);
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    pub fn is_overridden(&self, rollout: &str) -> bool {
        self.overrides.contains_key(rollout)
    }

    /// Applies an admin override; the result must validate, or nothing changes.
    pub fn apply_override(&mut self, rollout: &str, over: Override) -> Result<(), StoreError> {
        let source = self
            .source
            .rollouts
            .get(rollout)
            .ok_or_else(|| StoreError::UnknownRollout(rollout.to_string()))?;
        // Overrides compose: promote after set-weight acts on the weighted state.
        let mut candidate = self
            .effective_rollout(rollout)
            .unwrap_or_else(|| source.clone());
        candidate
            .apply_override(over)
            .and_then(|()| candidate.validate())
            .map_err(|e| StoreError::Refused {
                rollout: rollout.to_string(),
                message: e.to_string(),
            })?;
        let against = source.clone();
        self.overrides
            .entry(rollout.to_string())
            .or_insert_with(|| Held {
                overs: Vec::new(),
                against,
            })
            .overs
            .push(over);
        Ok(())
    }

    fn effective_rollout(&self, name: &str) -> Option<RolloutState> {
        let mut rollout = self.source.rollouts.get(name)?.clone();
        if let Some(held) = self.overrides.get(name) {
            // Each was validated when applied against this very source state.
            for over in &held.overs {
                if rollout.apply_override(*over).is_err() {
                    return self.source.rollouts.get(name).cloned();
                }
            }
        }
        Some(rollout)
    }

    /// The state to serve: the source with overrides applied.
    pub fn effective(&self) -> TrafficState {
        let rollouts = self
            .source
            .rollouts
            .keys()
            .filter_map(|name| Some((name.clone(), self.effective_rollout(name)?)))
            .collect();
        TrafficState { rollouts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::{Stickiness, Version};

    fn rollout(weight: u32) -> RolloutState {
        RolloutState {
            name: "default/demo".into(),
            hosts: vec!["demo.local".into()],
            versions: [
                ("aaa".to_string(), Version::default()),
                ("bbb".to_string(), Version::default()),
            ]
            .into(),
            stable_hash: "aaa".into(),
            canary_hash: Some("bbb".into()),
            canary_weight_bp: weight,
            header_routes: vec![],
            mirror_routes: Vec::new(),
            additional_weights: Vec::new(),
            preview: None,
            stickiness: Stickiness::None,
        }
    }

    fn state(weight: u32) -> TrafficState {
        TrafficState {
            rollouts: [("default/demo".to_string(), rollout(weight))].into(),
        }
    }

    #[test]
    fn override_holds_until_the_source_changes_that_rollout() {
        let mut store = Store::default();
        store.set_source(state(1000));
        store
            .apply_override("default/demo", Override::SetWeight(5000))
            .expect("valid override");
        assert_eq!(
            store.effective().rollouts["default/demo"].canary_weight_bp,
            5000
        );

        // The same source again (e.g. a reload of an unchanged file) keeps the override.
        store.set_source(state(1000));
        assert!(store.is_overridden("default/demo"));
        assert_eq!(
            store.effective().rollouts["default/demo"].canary_weight_bp,
            5000
        );

        // A change in the source wins.
        store.set_source(state(2000));
        assert!(!store.is_overridden("default/demo"));
        assert_eq!(
            store.effective().rollouts["default/demo"].canary_weight_bp,
            2000
        );
    }

    #[test]
    fn invalid_override_changes_nothing() {
        let mut store = Store::default();
        store.set_source(state(1000));
        let err = store
            .apply_override("default/demo", Override::SetWeight(12_000))
            .expect_err("weight above 100 %");
        assert!(err.to_string().contains("default/demo"), "{err}");
        assert_eq!(store.effective(), state(1000));
        assert!(matches!(
            store.apply_override("nope", Override::Abort),
            Err(StoreError::UnknownRollout(_))
        ));
    }

    #[test]
    fn promote_makes_the_canary_stable() {
        let mut store = Store::default();
        store.set_source(state(1000));
        store
            .apply_override("default/demo", Override::Promote)
            .expect("promote");
        let r = &store.effective().rollouts["default/demo"];
        assert_eq!(r.stable_hash, "bbb");
        assert_eq!(r.canary_hash, None);
        assert_eq!(r.canary_weight_bp, 0);
    }

    #[test]
    fn source_error_keeps_last_good_state() {
        let mut store = Store::default();
        store.set_source(state(1000));
        store.set_source_error("rollouts.yaml: bad".into());
        assert_eq!(store.effective(), state(1000));
        assert_eq!(store.last_error(), Some("rollouts.yaml: bad"));
    }
}
