//! Threaded NAPI and the CPU time of threads: how the CPU-cost benches and
//! the lab measure receive processing (`examples/xdp_bench --live`, the
//! lab's health-probing cost, `flowpin-health`'s `prober_cpu`).
//!
//! With threaded NAPI (`/sys/class/net/<dev>/threaded` = 1) an interface's
//! receive processing runs on kernel threads named `napi/<dev>-<napi id>`
//! instead of in softirq context on whichever CPU took the interrupt, so
//! its CPU time can be read per thread ([`thread_cpu_ns`]) and the thread
//! pinned to a CPU ([`pin_thread`]). A veth has NAPI instances (and so NAPI
//! threads) only with GRO on or an XDP program attached; it takes that path
//! for a socket's TCP segments only when the sending end has no TSO
//! (`flowpin_bpf_progs::netdev::set_offload`).
//!
//! Only switch interfaces of namespaces the caller created: kernel threads
//! are visible from every namespace, the switch is not undone on drop.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::{NetNs, Result, TestingError};

/// How long [`enable_threaded_napi`] waits for a NAPI thread to appear.
const NAPI_THREAD_WAIT: Duration = Duration::from_secs(2);

/// Turns threaded NAPI of `dev` in `ns` on or off
/// (`echo 1|0 > /sys/class/net/<dev>/threaded`, run with `ip netns exec`,
/// which mounts the namespace's own `/sys`).
pub fn set_threaded_napi(ns: &NetNs, dev: &str, on: bool) -> Result<()> {
    ns.exec(
        "sh",
        &[
            "-c",
            &format!("echo {} > /sys/class/net/{dev}/threaded", u8::from(on)),
        ],
    )?;
    Ok(())
}

/// Turns threaded NAPI of `dev` in `ns` on and returns the pids of the NAPI
/// kernel threads that appeared (named `napi/<dev>-*` and not there
/// before: another namespace's interface of the same name keeps its own),
/// waiting up to 2 s for at least one.
///
/// Fails with [`TestingError::NoNapiThread`] when none appears (the
/// interface has no NAPI instance, or its threads already existed).
pub fn enable_threaded_napi(ns: &NetNs, dev: &str) -> Result<Vec<u32>> {
    let before = napi_threads(dev);
    set_threaded_napi(ns, dev, true)?;
    let t0 = Instant::now();
    loop {
        let new: Vec<u32> = napi_threads(dev)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if !new.is_empty() {
            return Ok(new);
        }
        if t0.elapsed() >= NAPI_THREAD_WAIT {
            return Err(TestingError::NoNapiThread {
                dev: dev.to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids of the NAPI kernel threads of every interface named `dev`, in
/// any namespace (`/proc/<pid>/comm` = `napi/<dev>-<napi id>`; a `comm` cut
/// at 15 bytes matches when it is a prefix of `napi/<dev>-`).
pub fn napi_threads(dev: &str) -> Vec<u32> {
    let prefix = format!("napi/{dev}-");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| comm_is_napi_of(c.trim_end(), &prefix))
        })
        .collect()
}

/// Whether a thread's `comm` is that of a NAPI thread with `prefix`
/// (`napi/<dev>-`), `comm` being cut at 15 bytes by the kernel.
fn comm_is_napi_of(comm: &str, prefix: &str) -> bool {
    comm.starts_with(prefix) || (comm.len() >= 15 && prefix.starts_with(comm))
}

/// Pins thread `pid` (e.g. a NAPI kernel thread) to CPU `cpu`
/// (`sched_setaffinity`).
pub fn pin_thread(pid: u32, cpu: usize) -> Result<()> {
    let fail = |errno| TestingError::Affinity { pid, cpu, errno };
    let mut set = CpuSet::new();
    set.set(cpu).map_err(fail)?;
    let raw = i32::try_from(pid).map_err(|_| fail(nix::Error::ESRCH))?;
    sched_setaffinity(Pid::from_raw(raw), &set).map_err(fail)
}

/// CPU time thread `tid` of process `pid` has used so far, ns: its
/// `sum_exec_runtime`, the first field of `/proc/<pid>/task/<tid>/schedstat`
/// (user + kernel; for a kernel thread `tid` = `pid`).
pub fn thread_cpu_ns(pid: u32, tid: u32) -> Result<u64> {
    read_schedstat(PathBuf::from(format!("/proc/{pid}/task/{tid}/schedstat")))
}

/// CPU time every current thread of process `pid` has used so far, ns
/// (the sum of their [`thread_cpu_ns`]; a thread that ends while they are
/// read counts 0).
pub fn process_cpu_ns(pid: u32) -> Result<u64> {
    let task = PathBuf::from(format!("/proc/{pid}/task"));
    let dir = std::fs::read_dir(&task).map_err(|source| TestingError::Io {
        what: "listing the threads of",
        path: task,
        source,
    })?;
    Ok(dir
        .filter_map(|e| read_schedstat(e.ok()?.path().join("schedstat")).ok())
        .sum())
}

fn read_schedstat(path: PathBuf) -> Result<u64> {
    let io = |source, path| TestingError::Io {
        what: "reading the CPU time (schedstat) of",
        path,
        source,
    };
    let s = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => return Err(io(e, path)),
    };
    match parse_schedstat(&s) {
        Some(ns) => Ok(ns),
        None => Err(io(
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("expected `<run ns> <wait ns> <slices>`, found {s:?}"),
            ),
            path,
        )),
    }
}

/// The first field of a `schedstat` line (`sum_exec_runtime`, ns).
fn parse_schedstat(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn napi_comm_matches_whole_and_cut_names_only() {
        assert!(comm_is_napi_of("napi/eth0-8193", "napi/eth0-"));
        assert!(!comm_is_napi_of("napi/eth1-8193", "napi/eth0-"));
        assert!(!comm_is_napi_of("napi/eth0", "napi/eth0-"));
        // "napi/veth-long-name-" is cut to its first 15 bytes.
        assert!(comm_is_napi_of("napi/veth-long-", "napi/veth-long-name-"));
        assert!(!comm_is_napi_of("napi/veth-other", "napi/veth-long-name-"));
    }

    #[test]
    fn schedstat_first_field_is_the_runtime() {
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123_456));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn own_thread_cpu_time_is_read_and_grows() {
        let pid = std::process::id();
        let tid = u32::try_from(nix::unistd::gettid().as_raw()).unwrap_or(0);
        let a = thread_cpu_ns(pid, tid).expect("own schedstat");
        let t0 = Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let b = thread_cpu_ns(pid, tid).expect("own schedstat");
        assert!(b > a, "{a} -> {b} after 30 ms of spinning");
        assert!(process_cpu_ns(pid).expect("own task dir") >= b);
        let e = thread_cpu_ns(pid, u32::MAX).unwrap_err();
        assert!(e.to_string().contains("schedstat"), "{e}");
    }

    #[test]
    fn pinning_to_a_cpu_that_does_not_exist_fails_and_names_it() {
        let e = pin_thread(std::process::id(), usize::MAX).unwrap_err();
        assert!(e.to_string().contains("CPU 18446744073709551615"), "{e}");
    }
}
