//! The release state machine: which generation is live, which are warming
//! or draining, what may be retired. Plain Rust, no kernel, no clock: time
//! comes in as a parameter (nanoseconds of `CLOCK_MONOTONIC`), so every
//! transition is tested in memory.
//!
//! ```text
//!            add             activate              activate(other)
//!   (free) ───────▶ Warming ──────────▶ Live ────────────────────▶ Draining
//!                     │  ▲                ▲   activate (roll back)    │
//!                     │  └────────────────┼───────────────────────────┤
//!              retire │                   └───────────────────────────┘
//!                     ▼                                               │ retire: deadline set;
//!                  Retired ◀──────────────── due(): no socket left, ───┘ due() once past the
//!                                            deadline, or idle         deadline or idle
//! ```
//!
//! Generation numbers grow by one from 1 and never repeat; generation `g`
//! uses index `g % MAX_GENS` of the kernel's tables, which is free when it
//! was never used or its generation is `Retired`.

use std::fmt;

/// Generations that can exist at once (the kernel table's size).
pub const MAX_GENS: u32 = flowpin_bpf_progs::sk_reuseport_select::MAX_GENS;
/// Sockets per generation.
pub const MAX_SLOTS: u32 = flowpin_bpf_progs::sk_reuseport_select::MAX_SLOTS;

/// A generation: one release of the server (its set of sockets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u32);

impl Generation {
    /// Index of the generation in the kernel tables.
    pub fn index(self) -> u32 {
        self.0 % MAX_GENS
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "generation {}", self.0)
    }
}

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenState {
    /// Its sockets are in the map but it gets no traffic yet (warming up).
    Warming,
    /// New TCP connections and new UDP flows go to it.
    Live,
    /// No new flows; existing UDP flows and QUIC connections stay. With a
    /// deadline (set by `retire`), it is removed once past it or idle.
    Draining {
        /// `CLOCK_MONOTONIC` nanoseconds; `None` until `retire` is called.
        deadline_ns: Option<u64>,
    },
    /// Removed from the map; its index may be reused.
    Retired,
}

/// A generation and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenInfo {
    /// The generation.
    pub gen: Generation,
    /// Its number of slots (sockets).
    pub slots: u32,
    /// Its state.
    pub state: GenState,
}

/// What the kernel layer observed about a draining generation, for [`ReleaseState::due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Sockets of the generation still in the map (closed sockets leave it).
    pub sockets_left: u32,
    /// Last packet delivered to it, `CLOCK_MONOTONIC` ns (0 = never).
    pub last_ns: u64,
}

/// What `retire` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retirement {
    /// The generation never went live: remove its sockets now.
    RemoveNow,
    /// The generation drains until the deadline or until idle.
    Draining {
        /// `CLOCK_MONOTONIC` ns.
        deadline_ns: u64,
    },
}

/// Refused transitions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// Every index is held by a generation that is not retired.
    #[error("no free generation index: {blocking} (index {index}) is still {state:?}; retire it (and let it drain) before adding a new generation")]
    NoFreeIndex {
        /// The generation holding the index the next generation needs.
        blocking: Generation,
        /// The index.
        index: u32,
        /// Its state.
        state: GenState,
    },
    /// The generation is unknown (never added, or its index was reused).
    #[error("{0} is unknown (never added, or its index was reused by a newer generation)")]
    Unknown(Generation),
    /// The generation is retired.
    #[error("{0} is retired; add a new generation instead")]
    Retired(Generation),
    /// The live generation cannot be retired.
    #[error("{0} is live; activate another generation before retiring it")]
    RetireLive(Generation),
    /// A generation needs 1..=MAX_SLOTS sockets.
    #[error("a generation needs 1 to {max} sockets, got {got}")]
    SlotCount {
        /// Sockets given.
        got: usize,
        /// The maximum.
        max: u32,
    },
}

/// The state of every generation of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReleaseState {
    entries: [Option<GenInfo>; MAX_GENS as usize],
}

impl ReleaseState {
    /// No generation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the state from the kernel table entries (index = position).
    pub fn from_entries(entries: [Option<GenInfo>; MAX_GENS as usize]) -> Self {
        ReleaseState { entries }
    }

    /// Entries by index (`None`: never used).
    pub fn entries(&self) -> &[Option<GenInfo>; MAX_GENS as usize] {
        &self.entries
    }

    /// The generations that exist (any state), oldest first.
    pub fn generations(&self) -> Vec<GenInfo> {
        let mut v: Vec<GenInfo> = self.entries.iter().flatten().copied().collect();
        v.sort_by_key(|g| g.gen);
        v
    }

    /// The live generation, if any.
    pub fn live(&self) -> Option<Generation> {
        self.entries
            .iter()
            .flatten()
            .find(|g| g.state == GenState::Live)
            .map(|g| g.gen)
    }

    /// The entry of `gen`, if it still owns its index.
    pub fn get(&self, gen: Generation) -> Option<&GenInfo> {
        self.entries[gen.index() as usize]
            .as_ref()
            .filter(|g| g.gen == gen)
    }

    fn get_mut(&mut self, gen: Generation) -> Result<&mut GenInfo, ReleaseError> {
        self.entries[gen.index() as usize]
            .as_mut()
            .filter(|g| g.gen == gen)
            .ok_or(ReleaseError::Unknown(gen))
    }

    /// The number the next added generation gets.
    pub fn next_generation(&self) -> Generation {
        Generation(
            self.entries
                .iter()
                .flatten()
                .map(|g| g.gen.0)
                .max()
                .unwrap_or(0)
                + 1,
        )
    }

    /// Adds a generation of `slots` sockets in state `Warming`. The caller
    /// clears whatever the previous (retired) owner of the index left.
    pub fn add(&mut self, slots: usize) -> Result<GenInfo, ReleaseError> {
        if slots == 0 || slots > MAX_SLOTS as usize {
            return Err(ReleaseError::SlotCount {
                got: slots,
                max: MAX_SLOTS,
            });
        }
        let gen = self.next_generation();
        let idx = gen.index();
        if let Some(old) = &self.entries[idx as usize] {
            if old.state != GenState::Retired {
                return Err(ReleaseError::NoFreeIndex {
                    blocking: old.gen,
                    index: idx,
                    state: old.state,
                });
            }
        }
        let info = GenInfo {
            gen,
            slots: slots as u32,
            state: GenState::Warming,
        };
        self.entries[idx as usize] = Some(info);
        Ok(info)
    }

    /// Makes `gen` live; the previous live generation (returned) drains.
    /// Activating a draining generation rolls a release back.
    pub fn activate(&mut self, gen: Generation) -> Result<Option<Generation>, ReleaseError> {
        match self.get(gen).map(|g| g.state) {
            None => return Err(ReleaseError::Unknown(gen)),
            Some(GenState::Retired) => return Err(ReleaseError::Retired(gen)),
            Some(GenState::Live) => return Ok(None),
            Some(_) => {}
        }
        let prev = self.live();
        if let Some(p) = prev {
            self.get_mut(p)?.state = GenState::Draining { deadline_ns: None };
        }
        self.get_mut(gen)?.state = GenState::Live;
        Ok(prev)
    }

    /// Stops `gen` for good: a warming generation is removed at once, a
    /// draining one keeps its existing flows until `now_ns + drain_ns` or
    /// until idle (see [`due`](Self::due)). The live one is refused.
    pub fn retire(
        &mut self,
        gen: Generation,
        now_ns: u64,
        drain_ns: u64,
    ) -> Result<Retirement, ReleaseError> {
        let g = self.get_mut(gen)?;
        match g.state {
            GenState::Live => Err(ReleaseError::RetireLive(gen)),
            GenState::Retired => Err(ReleaseError::Retired(gen)),
            GenState::Warming => {
                g.state = GenState::Retired;
                Ok(Retirement::RemoveNow)
            }
            GenState::Draining { deadline_ns } => {
                let d = now_ns.saturating_add(drain_ns);
                // Retiring twice never extends the deadline.
                let d = deadline_ns.map_or(d, |old| old.min(d));
                g.state = GenState::Draining {
                    deadline_ns: Some(d),
                };
                Ok(Retirement::Draining { deadline_ns: d })
            }
        }
    }

    /// Draining generations that may be removed now: no socket left in the
    /// map (the old process exited), or retired and past the deadline, or
    /// retired and idle for `idle_ns`.
    pub fn due(
        &self,
        now_ns: u64,
        idle_ns: u64,
        activity: impl Fn(Generation) -> Activity,
    ) -> Vec<Generation> {
        let mut out = Vec::new();
        for g in self.entries.iter().flatten() {
            let GenState::Draining { deadline_ns } = g.state else {
                continue;
            };
            let a = activity(g.gen);
            let gone = a.sockets_left == 0;
            let past = deadline_ns.is_some_and(|d| now_ns >= d);
            let idle = deadline_ns.is_some() && now_ns.saturating_sub(a.last_ns) >= idle_ns;
            if gone || past || idle {
                out.push(g.gen);
            }
        }
        out.sort();
        out
    }

    /// Marks `gen` retired after its sockets were removed (any state but live).
    pub fn finish(&mut self, gen: Generation) -> Result<(), ReleaseError> {
        let g = self.get_mut(gen)?;
        match g.state {
            GenState::Live => Err(ReleaseError::RetireLive(gen)),
            _ => {
                g.state = GenState::Retired;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn quiet(_: Generation) -> Activity {
        Activity {
            sockets_left: 2,
            last_ns: 0,
        }
    }

    #[test]
    fn first_release_warms_then_goes_live() {
        let mut st = ReleaseState::new();
        let g1 = st.add(2).unwrap();
        assert_eq!(g1.gen, Generation(1));
        assert_eq!(g1.state, GenState::Warming);
        assert_eq!(st.live(), None, "a warming generation gets no traffic");
        assert_eq!(st.activate(g1.gen).unwrap(), None);
        assert_eq!(st.live(), Some(Generation(1)));
    }

    #[test]
    fn flip_drains_the_previous_generation() {
        let mut st = ReleaseState::new();
        let g1 = st.add(2).unwrap().gen;
        st.activate(g1).unwrap();
        let g2 = st.add(2).unwrap().gen;
        assert_eq!(st.activate(g2).unwrap(), Some(g1));
        assert_eq!(st.live(), Some(g2));
        assert_eq!(
            st.get(g1).unwrap().state,
            GenState::Draining { deadline_ns: None }
        );
        // Roll back: the draining generation may go live again.
        assert_eq!(st.activate(g1).unwrap(), Some(g2));
        assert_eq!(st.live(), Some(g1));
    }

    #[test]
    fn the_live_generation_cannot_be_retired() {
        let mut st = ReleaseState::new();
        let g1 = st.add(1).unwrap().gen;
        st.activate(g1).unwrap();
        assert_eq!(st.retire(g1, 0, S), Err(ReleaseError::RetireLive(g1)));
        assert_eq!(st.finish(g1), Err(ReleaseError::RetireLive(g1)));
        assert_eq!(st.live(), Some(g1));
    }

    #[test]
    fn retiring_a_warming_generation_removes_it_now() {
        let mut st = ReleaseState::new();
        let g1 = st.add(1).unwrap().gen;
        assert_eq!(st.retire(g1, 0, S).unwrap(), Retirement::RemoveNow);
        assert_eq!(st.get(g1).unwrap().state, GenState::Retired);
        assert_eq!(st.activate(g1), Err(ReleaseError::Retired(g1)));
        assert_eq!(st.retire(g1, 0, S), Err(ReleaseError::Retired(g1)));
    }

    #[test]
    fn draining_generation_is_due_at_deadline_or_idle_or_when_empty() {
        let mut st = ReleaseState::new();
        let g1 = st.add(2).unwrap().gen;
        st.activate(g1).unwrap();
        let g2 = st.add(2).unwrap().gen;
        st.activate(g2).unwrap();
        // Draining without retire: stays while it has sockets, whatever the time.
        assert!(st.due(1000 * S, S, quiet).is_empty());
        // ... but is due once its process closed every socket.
        assert_eq!(
            st.due(0, S, |_| Activity {
                sockets_left: 0,
                last_ns: 0
            }),
            vec![g1]
        );

        assert_eq!(
            st.retire(g1, 10 * S, 30 * S).unwrap(),
            Retirement::Draining {
                deadline_ns: 40 * S
            }
        );
        let busy = |_| Activity {
            sockets_left: 2,
            last_ns: 20 * S,
        };
        assert!(
            st.due(20 * S, 5 * S, busy).is_empty(),
            "active flows keep it"
        );
        assert_eq!(st.due(25 * S, 5 * S, busy), vec![g1], "idle for 5 s");
        let busy_late = |_| Activity {
            sockets_left: 2,
            last_ns: 39 * S,
        };
        assert!(st.due(39 * S, 5 * S, busy_late).is_empty());
        assert_eq!(st.due(40 * S, 5 * S, busy_late), vec![g1], "deadline");
        // A second retire never extends the deadline.
        assert_eq!(
            st.retire(g1, 20 * S, 60 * S).unwrap(),
            Retirement::Draining {
                deadline_ns: 40 * S
            }
        );
        st.finish(g1).unwrap();
        assert!(st.due(100 * S, S, quiet).is_empty());
    }

    #[test]
    fn indexes_are_reused_only_after_retirement() {
        let mut st = ReleaseState::new();
        let mut gens = Vec::new();
        for _ in 0..MAX_GENS {
            let g = st.add(1).unwrap().gen;
            st.activate(g).unwrap();
            gens.push(g);
        }
        // Generation 9 needs index 1, held by draining generation 1.
        let err = st.add(1).unwrap_err();
        assert_eq!(
            err,
            ReleaseError::NoFreeIndex {
                blocking: Generation(1),
                index: 1,
                state: GenState::Draining { deadline_ns: None }
            }
        );
        st.retire(Generation(1), 0, 0).unwrap();
        st.finish(Generation(1)).unwrap();
        let g9 = st.add(1).unwrap();
        assert_eq!(g9.gen, Generation(9));
        assert_eq!(g9.gen.index(), 1);
        assert_eq!(
            st.get(Generation(1)),
            None,
            "generation 1 is forgotten once its index is reused"
        );
        assert_eq!(
            st.activate(Generation(1)),
            Err(ReleaseError::Unknown(Generation(1)))
        );
        assert_eq!(st.next_generation(), Generation(10));
    }

    #[test]
    fn slot_counts_are_checked() {
        let mut st = ReleaseState::new();
        assert_eq!(
            st.add(0),
            Err(ReleaseError::SlotCount {
                got: 0,
                max: MAX_SLOTS
            })
        );
        assert_eq!(
            st.add(MAX_SLOTS as usize + 1),
            Err(ReleaseError::SlotCount {
                got: MAX_SLOTS as usize + 1,
                max: MAX_SLOTS
            })
        );
        assert!(st.add(MAX_SLOTS as usize).is_ok());
    }

    #[test]
    fn state_round_trips_through_entries() {
        let mut st = ReleaseState::new();
        let g1 = st.add(3).unwrap().gen;
        st.activate(g1).unwrap();
        st.add(2).unwrap();
        let copy = ReleaseState::from_entries(*st.entries());
        assert_eq!(copy, st);
        assert_eq!(copy.live(), Some(g1));
        assert_eq!(copy.generations().len(), 2);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Add(usize),
            Activate(u32),
            Retire(u32),
            Finish(u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (1usize..4).prop_map(Op::Add),
                (1u32..20).prop_map(Op::Activate),
                (1u32..20).prop_map(Op::Retire),
                (1u32..20).prop_map(Op::Finish),
            ]
        }

        proptest! {
            #[test]
            fn at_most_one_live_and_numbers_grow(ops in proptest::collection::vec(op(), 0..80)) {
                let mut st = ReleaseState::new();
                let mut last = 0;
                for o in ops {
                    let live_before = st.live();
                    match o {
                        Op::Add(n) => if let Ok(g) = st.add(n) {
                            prop_assert!(g.gen.0 > last);
                            last = g.gen.0;
                        },
                        Op::Activate(g) => { let _ = st.activate(Generation(g)); }
                        Op::Retire(g) => { let _ = st.retire(Generation(g), 0, 1); }
                        Op::Finish(g) => { let _ = st.finish(Generation(g)); }
                    }
                    let lives = st.entries().iter().flatten().filter(|g| g.state == GenState::Live).count();
                    prop_assert!(lives <= 1);
                    // Once something is live, something stays live.
                    if live_before.is_some() { prop_assert!(st.live().is_some()); }
                }
            }
        }
    }
}
