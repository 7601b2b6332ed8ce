//! Rollout resource types (sluice.dev and Argo read-only) and their derivation into the traffic model.
