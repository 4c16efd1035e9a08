//! The standard process metrics (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`,
//! `process_start_time_seconds`), read from `/proc/self` on a scrape:
//! prometheus-client has none built in.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `/proc` times are in USER_HZ, 100 on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ProcessStats {
    pub(super) resident_bytes: u64,
    pub(super) cpu_seconds: f64,
    pub(super) open_fds: u64,
    pub(super) start_time_seconds: f64,
}

/// (utime + stime, starttime) in ticks from `/proc/<pid>/stat` (the command
/// name, in parentheses, may hold spaces and parentheses: fields are
/// counted after the last `)`).
pub(super) fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    Some((utime + stime, start))
}

/// `VmRSS` of `/proc/<pid>/status`, bytes.
pub(super) fn parse_rss(status: &str) -> Option<u64> {
    let l = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `btime` of `/proc/stat` (boot time, unix seconds).
pub(super) fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Reads this process's figures.
pub(super) fn read() -> Option<ProcessStats> {
    let (ticks, start) = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let rss = parse_rss(&std::fs::read_to_string("/proc/self/status").ok()?)?;
    let btime = parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(ProcessStats {
        resident_bytes: rss,
        cpu_seconds: ticks as f64 / USER_HZ,
        open_fds: fds,
        start_time_seconds: btime as f64 + start as f64 / USER_HZ,
    })
}

/// Registers the four metrics (unprefixed, as every exporter names them).
pub(super) fn register(reg: &mut Registry) {
    let Some(p) = read() else { return };
    let rss = Gauge::<i64>::default();
    rss.set(i64::try_from(p.resident_bytes).unwrap_or(i64::MAX));
    reg.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        rss,
    );
    let cpu = Counter::<f64>::default();
    cpu.inc_by(p.cpu_seconds);
    reg.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        cpu,
    );
    let fds = Gauge::<i64>::default();
    fds.set(i64::try_from(p.open_fds).unwrap_or(i64::MAX));
    reg.register("process_open_fds", "Number of open file descriptors", fds);
    let start = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    start.set(p.start_time_seconds);
    reg.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        start,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis.
        let stat = "4242 (flow (pin) node) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 2 0 123456 1000 300 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((300, 123456)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t  2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_is_readable() {
        let p = read().expect("/proc/self");
        assert!(
            p.resident_bytes > 0 && p.open_fds >= 3 && p.start_time_seconds > 1.0e9,
            "{p:?}"
        );
    }
}
