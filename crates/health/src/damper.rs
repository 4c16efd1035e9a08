//! Rise/fall damping: a backend's health changes only after `rise`
//! consecutive passes or `fall` consecutive failures, so one lost probe
//! does not drain a backend and one lucky probe does not bring a dead one
//! back.
//!
//! A new backend starts [`Health::Unknown`]: no verdict is published until
//! it has passed `rise` times (up) or failed `fall` times (down).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The damped health of one backend as one prober sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not enough probes yet.
    #[default]
    Unknown,
    /// Passing.
    Up,
    /// Failing.
    Down,
}

impl Health {
    /// `"unknown"`, `"up"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }

    /// The gauge value of the state metric: 1 up, 0 down, -1 unknown.
    pub fn gauge(self) -> i64 {
        match self {
            Health::Unknown => -1,
            Health::Up => 1,
            Health::Down => 0,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rise/fall state machine of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damper {
    rise: u32,
    fall: u32,
    state: Health,
    passes: u32,
    failures: u32,
}

impl Damper {
    /// A damper in [`Health::Unknown`] (`rise`, `fall` of 0 count as 1).
    pub fn new(rise: u32, fall: u32) -> Damper {
        Damper {
            rise: rise.max(1),
            fall: fall.max(1),
            state: Health::Unknown,
            passes: 0,
            failures: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn observe(&mut self, passed: bool) -> Option<Health> {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            if self.state != Health::Up && self.passes >= self.rise {
                self.state = Health::Up;
                return Some(Health::Up);
            }
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.state != Health::Down && self.failures >= self.fall {
                self.state = Health::Down;
                return Some(Health::Down);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rise_and_fall_in_order() {
        let mut d = Damper::new(2, 3);
        assert_eq!(d.state(), Health::Unknown);
        assert_eq!(d.observe(true), None);
        assert_eq!(d.observe(true), Some(Health::Up));
        assert_eq!(d.observe(false), None);
        assert_eq!(d.observe(false), None);
        assert_eq!(d.observe(true), None, "a pass resets the failure streak");
        assert_eq!(d.observe(false), None);
        assert_eq!(d.observe(false), None);
        assert_eq!(d.observe(false), Some(Health::Down));
        assert_eq!(d.observe(false), None, "already down");
        assert_eq!(d.observe(true), None);
        assert_eq!(d.observe(true), Some(Health::Up));
    }

    #[test]
    fn a_new_failing_backend_goes_down_after_fall() {
        let mut d = Damper::new(2, 3);
        assert_eq!(d.observe(false), None);
        assert_eq!(d.observe(false), None);
        assert_eq!(d.observe(false), Some(Health::Down));
    }

    proptest! {
        /// Alternating results (a flapping backend) never change the state
        /// when rise and fall are at least 2, and every change follows a
        /// streak of `rise` passes or `fall` failures.
        #[test]
        fn flapping_is_damped(rise in 1u32..6, fall in 1u32..6,
                              results in proptest::collection::vec(any::<bool>(), 0..200)) {
            let mut d = Damper::new(rise, fall);
            let mut streak: (bool, u32) = (true, 0);
            for r in &results {
                streak = if streak.0 == *r { (*r, streak.1 + 1) } else { (*r, 1) };
                let before = d.state();
                match d.observe(*r) {
                    Some(Health::Up) => {
                        prop_assert!(*r && streak.1 >= rise);
                        prop_assert_ne!(before, Health::Up);
                    }
                    Some(Health::Down) => {
                        prop_assert!(!*r && streak.1 >= fall);
                        prop_assert_ne!(before, Health::Down);
                    }
                    Some(Health::Unknown) => prop_assert!(false, "never back to unknown"),
                    None => {
                        // No change although a full streak: already there.
                        if *r && streak.1 >= rise { prop_assert_eq!(before, Health::Up); }
                        if !*r && streak.1 >= fall { prop_assert_eq!(before, Health::Down); }
                    }
                }
            }
            if rise >= 2 && fall >= 2 {
                let mut d = Damper::new(rise, fall);
                for i in 0..results.len() {
                    prop_assert_eq!(d.observe(i % 2 == 0), None);
                }
            }
        }
    }
}
