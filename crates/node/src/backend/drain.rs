//! Counting the live connections of a draining backend, from
//! `/proc/net/tcp{,6}` of the service's namespace.

use std::path::Path;

/// TCP states that are not a live connection (`include/net/tcp_states.h`):
/// TIME_WAIT 6, CLOSE 7, LISTEN 10.
const NOT_LIVE: [u8; 3] = [6, 7, 10];

/// Counts live TCP connections (any state but TIME_WAIT, CLOSE, LISTEN)
/// whose local port is in `ports`, in the text of `/proc/net/tcp` or
/// `/proc/net/tcp6`.
pub fn count_live(proc_net_tcp: &str, ports: &[u16]) -> usize {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter(|line| {
            let mut f = line.split_whitespace();
            let (Some(_sl), Some(local), Some(_remote), Some(st)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return false;
            };
            let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            else {
                return false;
            };
            let Ok(state) = u8::from_str_radix(st, 16) else {
                return false;
            };
            ports.contains(&port) && !NOT_LIVE.contains(&state)
        })
        .count()
}

/// Live connections to `ports` in the namespace `ns` (ours if `None`).
pub fn live_connections(ns: Option<&Path>, ports: &[u16]) -> usize {
    let read = || {
        ["tcp", "tcp6"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
                    .map(|t| count_live(&t, ports))
                    .unwrap_or(0)
            })
            .sum()
    };
    match ns {
        Some(p) => flowpin_bpf_progs::netns::run_in(p, read).unwrap_or(0),
        None => read(),
    }
}

/// Starts `argv` (the `drain_command`) without waiting for it; a thread
/// reaps it and logs how it ended.
pub(super) fn spawn_drain_command(argv: &[String]) {
    let Some((prog, args)) = argv.split_first() else {
        return;
    };
    match std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            tracing::info!(command = ?argv, "drain command started: asking the service to close keep-alive connections");
            std::thread::spawn(move || match child.wait() {
                Ok(st) if st.success() => tracing::info!("drain command succeeded"),
                Ok(st) => tracing::warn!(status = %st, "drain command failed"),
                Err(e) => tracing::warn!(error = %e, "drain command: cannot wait for it"),
            });
        }
        Err(e) => tracing::warn!(command = ?argv, error = %e, "drain command could not start"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100640A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100640A:1F90 0201000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100640A:1F90 0201000A:9C41 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
   3: 0100640A:1F90 0201000A:9C42 08 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   4: 0100007F:0050 0100007F:9C43 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
";

    #[test]
    fn counts_live_connections_on_the_port_only() {
        // established + close_wait on 8080; listen and time_wait excluded; port 80 excluded.
        assert_eq!(count_live(TCP, &[8080]), 2);
        assert_eq!(count_live(TCP, &[80]), 1);
        assert_eq!(count_live(TCP, &[8080, 80]), 3);
        assert_eq!(count_live(TCP, &[443]), 0);
        assert_eq!(count_live("garbage\nmore garbage ::: x", &[8080]), 0);
    }
}
