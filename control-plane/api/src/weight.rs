//! Argo's traffic weights → Sluice's basis points.
//!
//! Argo Rollouts counts weights (`setWeight`, `status.canary.weights.*.weight`) in units of
//! `spec.strategy.canary.trafficRouting.maxTrafficWeight`, 100 when absent (`weightutil.
//! MaxTrafficWeight`): with `maxTrafficWeight: 1000`, `setWeight: 100` is 10 %. The traffic model
//! counts basis points (10 000 = 100 %).

use sluice_model::FULL_WEIGHT_BP;

use crate::resource::RolloutSpec;

/// Argo's total traffic weight when `maxTrafficWeight` is absent.
pub const DEFAULT_MAX_TRAFFIC_WEIGHT: i32 = 100;

/// The document field of the total weight.
pub const MAX_TRAFFIC_WEIGHT_FIELD: &str = "spec.strategy.canary.trafficRouting.maxTrafficWeight";

/// The total traffic weight of a rollout: weights are in `0..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightScale {
    max: u32,
}

impl WeightScale {
    /// The scale of `spec`: its `maxTrafficWeight`, else 100. Errors (for
    /// [`MAX_TRAFFIC_WEIGHT_FIELD`]) unless it is at least 1.
    pub fn of(spec: &RolloutSpec) -> Result<WeightScale, String> {
        let max = spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.traffic_routing.as_ref())
            .and_then(|t| t.max_traffic_weight)
            .unwrap_or(DEFAULT_MAX_TRAFFIC_WEIGHT);
        match u32::try_from(max) {
            Ok(max) if max >= 1 => Ok(WeightScale { max }),
            _ => Err(format!("{max} is not a positive total weight")),
        }
    }

    /// `maxTrafficWeight`: the weight that means 100 %.
    pub fn max(self) -> i32 {
        // `of` took it from an i32.
        i32::try_from(self.max).unwrap_or(i32::MAX)
    }

    /// Checks that `weight` is in `0..=max`; the problem names the range.
    pub fn check(self, weight: i32) -> Result<u32, String> {
        match u32::try_from(weight) {
            Ok(w) if w <= self.max => Ok(w),
            _ => Err(format!(
                "{weight} is outside 0..={} (maxTrafficWeight)",
                self.max
            )),
        }
    }

    /// `weight` in basis points: `weight × 10000 / max`, rounded to the nearest basis point, a
    /// half rounding up. The stable share is `10000 −` this, so canary and stable add up to
    /// exactly 10000 (with `max` 3, weight 1 is 3333 bp and stable 6667 bp). Errors unless
    /// `weight` is in `0..=max`.
    pub fn to_bp(self, weight: i32) -> Result<u32, String> {
        let weight = self.check(weight)?;
        let max = u64::from(self.max);
        // weight ≤ max < 2^32, so the products fit u64 by far; checked all the same.
        let twice = u64::from(weight)
            .checked_mul(2 * u64::from(FULL_WEIGHT_BP))
            .and_then(|n| n.checked_add(max))
            .ok_or_else(|| format!("{weight} overflows the basis-point conversion"))?;
        let bp = twice / (2 * max);
        u32::try_from(bp).map_err(|_| format!("{weight} overflows the basis-point conversion"))
    }

    /// The stable share of a canary weight: `max − canary`; errors unless `canary` is in
    /// `0..=max`.
    pub fn stable_weight(self, canary: i32) -> Result<i32, String> {
        let canary = self.check(canary)?;
        i32::try_from(self.max - canary).map_err(|_| format!("{canary} is out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(max: Option<i32>) -> Result<WeightScale, String> {
        let yaml = match max {
            Some(max) => {
                format!("strategy: {{canary: {{trafficRouting: {{maxTrafficWeight: {max}}}}}}}")
            }
            None => "strategy: {canary: {}}".to_owned(),
        };
        WeightScale::of(&serde_yaml::from_str(&yaml).expect("spec"))
    }

    #[test]
    fn weights_are_in_units_of_max_traffic_weight() {
        let default = scale(None).expect("default");
        assert_eq!(default.max(), 100);
        assert_eq!(default.to_bp(5), Ok(500));
        assert_eq!(default.to_bp(100), Ok(10_000));
        let thousand = scale(Some(1000)).expect("1000");
        assert_eq!(thousand.to_bp(100), Ok(1000), "10 %");
        assert_eq!(thousand.to_bp(500), Ok(5000), "50 %");
        assert_eq!(thousand.to_bp(1000), Ok(10_000));
        assert_eq!(thousand.stable_weight(100), Ok(900));
        assert!(thousand.to_bp(1001).is_err());
        assert!(thousand.to_bp(-1).is_err());
        let message = default.to_bp(101).expect_err("above 100");
        assert_eq!(message, "101 is outside 0..=100 (maxTrafficWeight)");
    }

    #[test]
    fn rounding_is_to_the_nearest_basis_point_and_shares_sum_to_10000() {
        let three = scale(Some(3)).expect("3");
        assert_eq!(three.to_bp(1), Ok(3333));
        assert_eq!(three.to_bp(2), Ok(6667));
        // Half a basis point rounds up.
        let big = scale(Some(20_000)).expect("20000");
        assert_eq!(big.to_bp(1), Ok(1));
        assert_eq!(big.to_bp(3), Ok(2));
        // Any max, any weight: the stable share, converted alone, completes the canary's to
        // 10000 within the one rounding step, and canary ≤ 10000.
        for max in [1, 3, 7, 100, 999, 1000, 65_537, i32::MAX] {
            let s = scale(Some(max)).expect("max");
            for w in [0, 1, max / 3, max / 2, max - 1, max] {
                let bp = s.to_bp(w).expect("in range");
                assert!(bp <= FULL_WEIGHT_BP, "{w}/{max}");
                let stable = s.to_bp(s.stable_weight(w).expect("stable")).expect("bp");
                assert!((bp + stable).abs_diff(FULL_WEIGHT_BP) <= 1, "{w}/{max}");
            }
        }
        assert_eq!(
            scale(Some(i32::MAX)).expect("max").to_bp(i32::MAX),
            Ok(10_000)
        );
    }

    #[test]
    fn the_total_must_be_positive() {
        assert!(scale(Some(0)).is_err());
        assert!(scale(Some(-100)).is_err());
    }
}
