//! What every scenario run shares, in the classic half and in the fleet:
//! the preamble (the scenario's name and server_id mode on every progress
//! line), the order of the two modes, the count of broken connections to
//! healthy backends, and the checks every run ends with.

use crate::topo::Topology;
use crate::workload::{Broken, ConnReport};
use crate::Error;

/// One run of a scenario, in one server_id mode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    name: &'static str,
    server_id: bool,
    fleet: bool,
}

impl Run {
    /// A run of the classic half (LBs driven by the lab itself), which
    /// starts with every LB in the router's ECMP.
    pub(crate) fn classic(
        topo: &Topology,
        name: &'static str,
        server_id: bool,
    ) -> Result<Run, Error> {
        topo.set_ecmp(&vec![true; topo.lbs.len()])?;
        Ok(Run {
            name,
            server_id,
            fleet: false,
        })
    }

    /// A run of the fleet (LBs are `flowpin-node lb` processes): its
    /// progress lines carry the fleet's prefix.
    pub(crate) fn fleet(name: &'static str, server_id: bool) -> Run {
        Run {
            name,
            server_id,
            fleet: true,
        }
    }

    /// A progress line: `<scenario> [server_id on|off] <msg>`.
    pub(crate) fn progress(&self, msg: impl AsRef<str>) {
        let mode = if self.server_id {
            "server_id on "
        } else {
            "server_id off"
        };
        let line = format!("{:<44} [{mode}] {}", self.name, msg.as_ref());
        if self.fleet {
            crate::fleet::progress(line);
        } else {
            crate::progress(line);
        }
    }

    /// The checks every run ends with: some connection got an answer (or
    /// the data path is broken: an error); with server_id routing on,
    /// packets were routed by it (else the problem, for the caller to
    /// fail or to record).
    pub(crate) fn check(
        &self,
        reports: &[ConnReport],
        sid_routed: u64,
    ) -> Result<Option<String>, Error> {
        if reports.iter().all(|r| r.answered == 0) {
            let what = if self.fleet {
                "the fleet's data path"
            } else {
                "the data path"
            };
            return Err(format!("no connection ever got an answer: {what} is broken").into());
        }
        Ok((self.server_id && sid_routed == 0)
            .then(|| "server_id routing is on but no packet was routed by server_id".to_string()))
    }
}

impl Run {
    /// [`Run::check`], a problem failing the run (the classic half).
    pub(crate) fn require(&self, reports: &[ConnReport], sid_routed: u64) -> Result<(), Error> {
        match self.check(reports, sid_routed)? {
            Some(p) => Err(format!("{}: {p}", self.name).into()),
            None => Ok(()),
        }
    }
}

/// Runs a scenario in both modes, the first mode alternating with `k` (the
/// scenario's index) so drift favours neither: `(with server_id, without)`.
pub(crate) fn both_modes<T>(
    k: usize,
    mut run: impl FnMut(bool) -> Result<T, Error>,
) -> Result<(T, T), Error> {
    Ok(if k.is_multiple_of(2) {
        let with = run(true)?;
        (with, run(false)?)
    } else {
        let without = run(false)?;
        (run(true)?, without)
    })
}

/// Connections to backends that stayed healthy, and how many of them broke.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) healthy: usize,
    pub(crate) reset: usize,
    pub(crate) stalled: usize,
}

impl Tally {
    /// Counts `reports`, leaving out connections to backend `unhealthy`.
    pub(crate) fn of(reports: &[ConnReport], unhealthy: Option<u16>) -> Tally {
        let healthy = reports.iter().filter(|r| Some(r.backend) != unhealthy);
        let mut t = Tally::default();
        for r in healthy {
            t.healthy += 1;
            match r.broken {
                Some(Broken::Reset) => t.reset += 1,
                Some(Broken::Stalled) => t.stalled += 1,
                None => {}
            }
        }
        t
    }

    /// Reset or stalled.
    pub(crate) fn broken(&self) -> usize {
        self.reset + self.stalled
    }
}

/// Which scenarios a lab run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Every scenario (`cargo run --release --example lab`).
    All,
    /// The main job's first look (`./scripts/lab.sh`, `--first-look`): a
    /// representative subset, each section's ring changes included.
    FirstLook,
    /// CI (`--quick`): seconds, not minutes.
    Quick,
}

/// Connections per run when `--quick` runs a scenario built to break
/// connections without server_id: ~10 % break there, so 200 leave no
/// room for chance (with 60, none breaking has a chance of about 1 in 1,000).
pub(crate) const QUICK_BREAK_CONNECTIONS: usize = 200;

/// The connections a scenario runs with: `n`, raised to
/// [`QUICK_BREAK_CONNECTIONS`] in quick mode for a scenario that
/// must break some without server_id.
pub(crate) fn connections(n: usize, coverage: Coverage, expects_breaks: bool) -> usize {
    if coverage == Coverage::Quick && expects_breaks {
        n.max(QUICK_BREAK_CONNECTIONS)
    } else {
        n
    }
}

/// The lab's check of its own eyes: a scenario built to break connections
/// without server_id (a ring change meeting connection-table misses) that
/// broke none means the lab no longer sees breaks (its reset/stall counting
/// or the scenario itself stopped working), so its zeros with server_id
/// prove nothing. `None`: the scenario showed what it was built to show.
pub(crate) fn blind(
    name: &str,
    expects_breaks_without_server_id: bool,
    broken_without_server_id: usize,
    healthy_without_server_id: usize,
) -> Option<String> {
    (expects_breaks_without_server_id && broken_without_server_id == 0).then(|| {
        format!(
            "{name}: 0 of {healthy_without_server_id} connections broke without server_id, \
             but this scenario is built to break some there (a ring change meeting \
             connection-table misses): the lab's break counting (reset/stall detection) \
             or the scenario no longer works, so its zeros with server_id prove nothing"
        )
    })
}
