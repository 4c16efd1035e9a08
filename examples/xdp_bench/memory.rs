//! `xdp_bench --live`: what one connection-table line costs on this machine.
//!
//! The live paths that miss the caches (`lru_hit_64k`: 65,536 flows
//! round-robin; `new_flow`: a random set of the whole table per packet)
//! pay one load of a cache line that was last touched long ago: at 4 Mpps,
//! each of 65,536 sets comes back every ~16 ms, and the line has left the
//! caches a machine shares with other tenants. This probe measures that
//! load in user space, on the receive thread's CPU, in an area as large as
//! one CPU's table with 4 KiB pages (as the kernel's `vmalloc` gives the
//! map): a chain of dependent loads of random distinct lines,
//!
//! - back to back (the best case: the lines come back every few ms), and
//! - spaced by the work of one live packet (a dependent ALU chain as long
//!   as an `lru_hit` packet's whole time on the loop, so each load starts
//!   after the previous "packet" ended, as in XDP), the load's cost being
//!   the time beyond that work alone.
//!
//! From the spaced figure the bench estimates the best ratio each of those
//! paths can reach here: `lru_hit_64k` needs `lru_hit`'s work plus one such
//! load per packet, `new_flow` at least one such load per packet.

use std::error::Error;
use std::hint::black_box;
use std::time::Instant;

use memmap2::{Advice, MmapMut};
use nix::unistd::Pid;
use rand::seq::SliceRandom;
use rand::SeedableRng;

type Res<T> = Result<T, Box<dyn Error>>;

const LINE: usize = 64;

/// What the probe measured.
pub(crate) struct LineLoad {
    /// Lines in the chain.
    pub(crate) lines: usize,
    /// Bytes of the area the lines were drawn from (one CPU's table).
    pub(crate) area_bytes: usize,
    /// ns per load, loads back to back.
    pub(crate) back_to_back_ns: f64,
    /// Work asked for between two loads, ns.
    pub(crate) spacing_target_ns: f64,
    /// Work between two loads, ns (the work alone, measured).
    pub(crate) spacing_ns: f64,
    /// ns per load beyond that work.
    pub(crate) spaced_ns: f64,
}

/// The next line's index, stored in the first 8 bytes of line `i`.
#[inline(always)]
fn next_of(area: &[u8], i: usize) -> u64 {
    let o = i * LINE;
    let mut b = [0u8; 8];
    b.copy_from_slice(&area[o..o + 8]);
    u64::from_ne_bytes(b)
}

/// `iters` steps of a dependent ALU chain seeded by `y`.
#[inline(always)]
fn work(mut y: u64, iters: u32) -> u64 {
    for _ in 0..iters {
        y = y.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    }
    y
}

/// Follows the chain `loads` times from line `start`, `iters` work steps
/// after each load; each next address depends on the work. Returns the
/// elapsed ns and the final line (kept alive).
fn chase(area: &[u8], start: usize, loads: u32, iters: u32) -> (f64, usize) {
    let zero = black_box(0u64);
    let mut cur = start;
    let mut y = 1u64;
    let t = Instant::now();
    for _ in 0..loads {
        let next = next_of(area, cur);
        y = work(y ^ next, iters);
        cur = (next ^ (y & zero)) as usize;
    }
    (t.elapsed().as_nanos() as f64, black_box(cur))
}

/// The work alone, same loop shape, ns per step.
fn work_ns_per_iter(iters: u32, n: u32) -> f64 {
    let t = Instant::now();
    let mut y = 1u64;
    for i in 0..n {
        y = work(y ^ u64::from(i), iters);
    }
    black_box(y);
    t.elapsed().as_nanos() as f64 / f64::from(n) / f64::from(iters.max(1))
}

/// Measures on `cpu`: `lines` random distinct lines of an `area_bytes`
/// area, back to back and spaced by about `spacing_ns` of work.
pub(crate) fn measure(
    area_bytes: usize,
    lines: usize,
    spacing_ns: f64,
    cpu: usize,
) -> Res<LineLoad> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    let old = nix::sched::sched_getaffinity(Pid::from_raw(0))?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)?;
    let r = measure_here(area_bytes, lines, spacing_ns);
    nix::sched::sched_setaffinity(Pid::from_raw(0), &old)?;
    r
}

fn measure_here(area_bytes: usize, lines: usize, spacing_ns: f64) -> Res<LineLoad> {
    let total = area_bytes / LINE;
    if lines < 2 || lines > total {
        return Err(format!(
            "memory probe: {lines} lines do not fit {total} lines of {area_bytes} bytes"
        )
        .into());
    }
    // 4 KiB pages, as the map has: huge pages off before the first touch
    // (a refusal only means no THP here, so 4 KiB pages anyway).
    let mut area = MmapMut::map_anon(area_bytes)
        .map_err(|e| format!("memory probe: mapping {area_bytes} bytes failed: {e}"))?;
    let _ = area.advise(Advice::NoHugePage);
    // Touch every page, then draw `lines` distinct lines and chain them in
    // random order.
    for p in (0..area_bytes).step_by(4096) {
        area[p] = 1;
    }
    let mut idx: Vec<usize> = (0..total).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(0x5eed));
    for i in 0..lines {
        let o = idx[i] * LINE;
        area[o..o + 8].copy_from_slice(&(idx[(i + 1) % lines] as u64).to_ne_bytes());
    }
    let w: &[u8] = &area;
    let start = idx[0];
    // Warm: the chain once around, then measure back to back.
    chase(w, start, lines as u32, 0);
    let loads = (lines as u32).max(1 << 20);
    let (ns, _) = chase(w, start, loads, 0);
    let back_to_back_ns = ns / f64::from(loads);
    // Spaced: calibrate the work, then loads with that work after each.
    let loads = (lines as u32).max(200_000);
    let mut iters = ((spacing_ns / work_ns_per_iter(1000, 20_000)).round() as u32).max(1);
    // Once more at the chosen length (short chains run at another pace).
    let per_iter = work_ns_per_iter(iters, loads / 4);
    iters = ((spacing_ns / per_iter).round() as u32).max(1);
    let work_alone = work_ns_per_iter(iters, loads) * f64::from(iters);
    let (ns, _) = chase(w, start, loads, iters);
    Ok(LineLoad {
        lines,
        area_bytes,
        back_to_back_ns,
        spacing_target_ns: spacing_ns,
        spacing_ns: work_alone,
        spaced_ns: (ns / f64::from(loads) - work_alone).max(0.0),
    })
}
