//! The one rule for backend weights, shared by every control plane (the
//! load balancer's planner, the registry, the node's configuration).
//!
//! A weight is a backend's relative share of a VIP's Maglev ring: backend
//! `i` gets `M · wᵢ / Σw` of the `M` slots (Hamilton apportionment, see
//! `flowpin_maglev::Maglev::build_weighted`). Valid weights are
//! `0..=`[`MAX_WEIGHT`]:
//!
//! - **0** is accepted and means *no new flows*: the backend owns no ring
//!   slot, but keeps its backend index, its server_id route and its
//!   connection-table entries, so its existing connections (and any packet
//!   carrying its server_id) keep reaching it. It is the same data-path
//!   state as a draining backend; a VIP whose backends all have weight 0
//!   drops new flows (`unknown_backend`).
//! - **above [`MAX_WEIGHT`]** is refused: weights are relative, and the cap
//!   keeps `Σw · M` far from overflow for any realistic backend count.
//!
//! Weight 0 and draining (`LbState::drain_backend`, the registry's
//! `state: draining`) give the same data path; a draining backend keeps its
//! weight, so undraining it restores its share. The registry's validation
//! (`flowpin-registry`, entries with another weight are rejected as
//! `bad_weight`) and the node's configuration (`backend.weight`) call
//! [`validate`], as [`LbState`](crate::LbState) does.

use std::fmt;

/// Largest accepted backend weight (2¹⁶).
pub const MAX_WEIGHT: u32 = 1 << 16;

/// A weight above [`MAX_WEIGHT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightError {
    /// The weight refused.
    pub weight: u32,
}

impl fmt::Display for WeightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "weight {} is above the maximum {MAX_WEIGHT}: weights are relative, scale them down \
             (0 means no new flows)",
            self.weight
        )
    }
}

impl std::error::Error for WeightError {}

/// Checks a backend weight against the rule of this module: `Ok` for
/// `0..=MAX_WEIGHT` (0: no new flows, still reachable by server_id and the
/// connection table).
pub fn validate(weight: u32) -> Result<(), WeightError> {
    if weight <= MAX_WEIGHT {
        Ok(())
    } else {
        Err(WeightError { weight })
    }
}

/// Whether a weight gives the backend new flows (it is above 0).
pub fn takes_new_flows(weight: u32) -> bool {
    weight > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_to_max_is_accepted_and_zero_takes_no_new_flows() {
        assert_eq!(validate(0), Ok(()));
        assert_eq!(validate(MAX_WEIGHT), Ok(()));
        let err = validate(MAX_WEIGHT + 1).expect_err("above the cap");
        assert_eq!(err.weight, MAX_WEIGHT + 1);
        assert!(err.to_string().contains("65536"), "{err}");
        assert!(!takes_new_flows(0));
        assert!(takes_new_flows(1));
    }
}
