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
    /// The share of each version, in basis points: the canary gets its weight, stable the rest,
    /// every other live version 0. The values always sum to [`FULL_WEIGHT_BP`] for a valid state.
    pub fn version_weights_bp(&self) -> BTreeMap<String, u32> {
        let canary_bp = self.canary_weight_bp.min(FULL_WEIGHT_BP);
        let mut weights: BTreeMap<String, u32> =
            self.versions.keys().map(|hash| (hash.clone(), 0)).collect();
        match &self.canary_hash {
            Some(canary) => {
                weights.insert(canary.clone(), canary_bp);
                weights.insert(self.stable_hash.clone(), FULL_WEIGHT_BP - canary_bp);
            }
            None => {
                weights.insert(self.stable_hash.clone(), FULL_WEIGHT_BP);
            }
        }
        weights
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
            Override::SetWeight(bp) => self.canary_weight_bp = bp,
            Override::Promote => {
                self.stable_hash = canary;
                self.canary_hash = None;
                self.canary_weight_bp = 0;
                self.drop_canary_routes();
            }
            Override::Abort => {
                self.canary_weight_bp = 0;
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
