//! Weights per version, and the admin API's manual overrides (set weight, promote, abort).

use std::collections::BTreeMap;

use crate::{FULL_WEIGHT_BP, ModelError, RolloutState, RouteTarget};

/// A manual change an operator asks for through the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Override {
    /// Set the canary's share, in basis points.
    SetWeight(u32),
    /// The canary becomes stable: no canary, weight 0.
    Promote,
    /// Back to stable: weight 0; the canary version stays (as Argo Rollouts' abort).
    Abort,
}

impl Override {
    fn operation(self) -> String {
        match self {
            Override::SetWeight(bp) => format!("set the canary weight to {bp} bp"),
            Override::Promote => "promote".into(),
            Override::Abort => "abort".into(),
        }
    }
}

impl RolloutState {
    /// The share of each version, in basis points: the canary gets its weight, each additional
    /// version (A/B/n) its own, stable the rest, every other live version 0. The values always
    /// sum to [`FULL_WEIGHT_BP`] for a valid state.
    pub fn version_weights_bp(&self) -> BTreeMap<String, u32> {
        let mut weights: BTreeMap<String, u32> =
            self.versions.keys().map(|hash| (hash.clone(), 0)).collect();
        let mut left = FULL_WEIGHT_BP;
        if let Some(canary) = &self.canary_hash {
            let canary_bp = self.canary_weight_bp.min(left);
            weights.insert(canary.clone(), canary_bp);
            left -= canary_bp;
        }
        for additional in &self.additional_weights {
            let share = additional.weight_bp.min(left);
            weights.insert(additional.pod_template_hash.clone(), share);
            left -= share;
        }
        weights.insert(self.stable_hash.clone(), left);
        weights
    }

    /// The sum of the additional versions' weights (saturating: a valid state is <= 10000).
    fn additional_bp(&self) -> u32 {
        self.additional_weights
            .iter()
            .fold(0u32, |sum, a| sum.saturating_add(a.weight_bp))
    }

    /// Applies an operator's override. Errors (and leaves the rollout unchanged) when it means
    /// nothing in the current state: no canary to weigh, promote or abort, or a weight above 100 %.
    ///
    /// Promote and abort also drop the header routes that target the canary: after a promote
    /// there is no canary to route to, and an abort sends all traffic back to stable, as Argo
    /// Rollouts removes its managed routes on abort.
    pub fn apply_override(&mut self, op: Override) -> Result<(), ModelError> {
        let refuse = |problem: &str| ModelError::Override {
            rollout: self.name.clone(),
            operation: op.operation(),
            problem: problem.to_owned(),
        };
        let Some(canary) = self.canary_hash.clone() else {
            return Err(refuse("there is no canary"));
        };
        match op {
            Override::SetWeight(bp) if bp > FULL_WEIGHT_BP => {
                return Err(refuse("the weight is above 10000 bp (100 %)"));
            }
            Override::SetWeight(bp) if bp.saturating_add(self.additional_bp()) > FULL_WEIGHT_BP => {
                return Err(refuse(
                    "with the additional versions' weights it is above 10000 bp (100 %)",
                ));
            }
            Override::SetWeight(bp) => self.canary_weight_bp = bp,
            // Both end an experiment's share, as Argo's full promotion and abort end its
            // experiments: everything goes to the (new) stable.
            Override::Promote => {
                self.stable_hash = canary;
                self.canary_hash = None;
                self.canary_weight_bp = 0;
                self.additional_weights.clear();
                self.drop_canary_routes();
            }
            Override::Abort => {
                self.canary_weight_bp = 0;
                self.additional_weights.clear();
                self.drop_canary_routes();
            }
        }
        Ok(())
    }

    fn drop_canary_routes(&mut self) {
        self.header_routes
            .retain(|route| route.target != RouteTarget::Canary);
    }
}
