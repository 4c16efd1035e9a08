//! A registry without etcd: `registry = { file = "vips.toml" }` (or
//! `.json`) lists the VIPs and their backends; the node reads it into the
//! same [`Snapshot`] an etcd watch delivers (so the same
//! `desired_of` → `reconcile` path applies it), and reads it again when its
//! modification time or size changes (polled every second: one `stat`).
//! A file that does not parse or validate is refused with the reason and
//! the state of the last good file is kept.
//!
//! ```toml
//! [[vips]]
//! addr = "10.100.0.1"
//! port = 8080
//! proto = "tcp"          # default tcp
//! server_id = true       # VIP flag: route by the server_id TCP option
//!
//! [[vips.backends]]
//! addr = "10.0.1.2"
//! weight = 100           # default 100
//! server_id = 1001       # optional
//! state = "active"       # or "draining"
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowpin_registry::{
    BackendSpec, BackendState, Proto, ServerId, Snapshot, Vip, VipEntry, VipFlags, VipSpec,
};
use serde::Deserialize;

/// How often the file's metadata is looked at.
pub const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    vips: Vec<FileVip>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVip {
    addr: IpAddr,
    port: u16,
    #[serde(default = "tcp")]
    proto: String,
    #[serde(default)]
    server_id: bool,
    #[serde(default)]
    quic: bool,
    #[serde(default)]
    backends: Vec<FileBackend>,
}

fn tcp() -> String {
    "tcp".into()
}

fn hundred() -> u32 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackend {
    addr: IpAddr,
    #[serde(default = "hundred")]
    weight: u32,
    #[serde(default)]
    server_id: Option<u32>,
    #[serde(default)]
    state: BackendState,
}

/// Parses and validates the text of a registry file (`json`: JSON, else
/// TOML) into the VIPs of a snapshot; `stamp_ms` is written as every
/// entry's `updated_at_ms`. The error says what is wrong and where.
pub fn parse(text: &str, json: bool, stamp_ms: u64) -> Result<BTreeMap<Vip, VipEntry>, String> {
    let doc: FileDoc = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        toml::from_str(text).map_err(|e| e.to_string())?
    };
    let mut out = BTreeMap::new();
    for (i, v) in doc.vips.iter().enumerate() {
        let at = format!("vips[{i}] ({}:{})", v.addr, v.port);
        let proto: Proto = v
            .proto
            .parse()
            .map_err(|_| format!("{at}: proto {:?}: write \"tcp\" or \"udp\"", v.proto))?;
        if v.port == 0 {
            return Err(format!("{at}: port 0: a VIP has a port"));
        }
        let vip = Vip::new(v.addr, v.port, proto);
        let mut flags = VipFlags::NONE;
        if v.server_id {
            flags |= VipFlags::SERVER_ID;
        }
        if v.quic {
            flags |= VipFlags::QUIC;
        }
        let mut spec = VipSpec::new(vip, flags);
        spec.updated_at_ms = Some(stamp_ms);
        let mut backends = BTreeMap::new();
        let mut ids = BTreeMap::new();
        for (j, b) in v.backends.iter().enumerate() {
            let bat = format!("{at}.backends[{j}] ({})", b.addr);
            flowpin_lb_core::weight::validate(b.weight).map_err(|e| format!("{bat}: {e}"))?;
            let sid = match b.server_id {
                None => None,
                Some(id) => Some(
                    ServerId::new(id)
                        .ok_or_else(|| format!("{bat}: server_id {id} is not a valid server_id"))?,
                ),
            };
            if let Some(id) = b.server_id {
                if let Some(other) = ids.insert(id, b.addr) {
                    return Err(format!("{bat}: server_id {id} is also {other}'s"));
                }
            }
            let mut spec = BackendSpec::new(b.addr, b.weight, sid);
            spec.state = b.state;
            spec.updated_at_ms = Some(stamp_ms);
            if backends.insert(b.addr, spec).is_some() {
                return Err(format!("{bat}: listed twice"));
            }
        }
        if out
            .insert(
                vip,
                VipEntry {
                    spec,
                    backends,
                    health: Default::default(),
                },
            )
            .is_some()
        {
            return Err(format!("{at}: VIP listed twice"));
        }
    }
    Ok(out)
}

/// A registry file, watched.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    /// (mtime, len) of the last read.
    seen: Option<(SystemTime, u64)>,
    current: Snapshot,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl FileSource {
    /// Reads `path` once; a file that cannot be used is an error (at start
    /// there is no last good state to keep).
    pub fn open(path: &Path) -> Result<FileSource, String> {
        let mut s = FileSource {
            path: path.to_path_buf(),
            seen: None,
            current: Snapshot::default(),
        };
        match s.reload() {
            Some(Err(e)) => Err(e),
            _ => Ok(s),
        }
    }

    /// The last good snapshot (revision: how many good reads, from 1).
    pub fn current(&self) -> Snapshot {
        self.current.clone()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file if it changed since the last look: `None` unchanged,
    /// `Some(Ok)` a new snapshot (now current), `Some(Err)` refused (the
    /// current one is kept).
    pub fn reload(&mut self) -> Option<Result<Snapshot, String>> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => {
                let key = (UNIX_EPOCH, u64::MAX);
                if self.seen == Some(key) {
                    return None;
                }
                self.seen = Some(key);
                return Some(Err(format!("cannot read {}: {e}", self.path.display())));
            }
        };
        let key = (meta.modified().unwrap_or(UNIX_EPOCH), meta.len());
        if self.seen == Some(key) {
            return None;
        }
        self.seen = Some(key);
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => return Some(Err(format!("cannot read {}: {e}", self.path.display()))),
        };
        let json = self.path.extension().is_some_and(|e| e == "json");
        match parse(&text, json, ms(key.0)) {
            Ok(vips) => {
                self.current = Snapshot {
                    revision: self.current.revision + 1,
                    vips,
                    ..Snapshot::default()
                };
                Some(Ok(self.current.clone()))
            }
            Err(e) => Some(Err(format!("{}: {e}", self.path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[vips]]
addr = "10.100.0.1"
port = 8080
server_id = true
[[vips.backends]]
addr = "10.0.1.2"
server_id = 1001
[[vips.backends]]
addr = "10.0.1.3"
weight = 50
state = "draining"
"#;

    #[test]
    fn toml_and_json_give_the_same_vips() {
        let a = parse(GOOD, false, 7).expect("toml");
        let json = r#"{"vips":[{"addr":"10.100.0.1","port":8080,"server_id":true,"backends":[
            {"addr":"10.0.1.2","server_id":1001},{"addr":"10.0.1.3","weight":50,"state":"draining"}]}]}"#;
        assert_eq!(parse(json, true, 7).expect("json"), a);
        let vip = Vip::new("10.100.0.1".parse().expect("ip"), 8080, Proto::Tcp);
        let e = &a[&vip];
        assert_eq!(e.spec.flags, VipFlags::SERVER_ID);
        assert_eq!(e.backends.len(), 2);
        let b3 = &e.backends[&"10.0.1.3".parse::<IpAddr>().expect("ip")];
        assert_eq!(
            (b3.weight, b3.state, b3.server_id),
            (50, BackendState::Draining, None)
        );
        assert_eq!(b3.updated_at_ms, Some(7));
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, why) in [
            ("[[vips]]\naddr = \"10.1.1.1\"\nport = 80\nproto = \"sctp\"", "proto \"sctp\""),
            ("[[vips]]\naddr = \"10.1.1.1\"\nport = 0", "port 0"),
            ("[[vips]]\naddr = \"10.1.1.1\"\nport = 80\n[[vips]]\naddr = \"10.1.1.1\"\nport = 80", "VIP listed twice"),
            ("[[vips]]\naddr = \"10.1.1.1\"\nport = 80\n[[vips.backends]]\naddr = \"10.0.0.2\"\nweight = 70000", "vips[0] (10.1.1.1:80).backends[0] (10.0.0.2)"),
            ("[[vips]]\naddr = \"10.1.1.1\"\nport = 80\n[[vips.backends]]\naddr = \"10.0.0.2\"\n[[vips.backends]]\naddr = \"10.0.0.2\"", "listed twice"),
            ("[[vips]]\naddr = \"10.1.1.1\"\nport = 80\n[[vips.backends]]\naddr = \"10.0.0.2\"\nserver_id = 5\n[[vips.backends]]\naddr = \"10.0.0.3\"\nserver_id = 5", "server_id 5 is also 10.0.0.2's"),
            ("[[vips]]\naddr = \"10.1.1.1\"\nport = 80\ncolour = 1", "unknown field"),
            ("not toml [", "expected"),
        ] {
            let e = parse(text, false, 0).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("vips.toml");
        std::fs::write(&p, GOOD).expect("write");
        let mut s = FileSource::open(&p).expect("open");
        assert_eq!(s.current().revision, 1);
        assert!(s.reload().is_none(), "unchanged file read again");
        std::fs::write(&p, GOOD.replace("weight = 50", "weight = 60\n")).expect("write");
        let snap = s.reload().expect("changed").expect("good");
        assert_eq!(snap.revision, 2);
        std::fs::write(&p, "broken [").expect("write");
        assert!(s.reload().expect("changed").is_err());
        assert_eq!(s.current(), snap, "the last good state is kept");
        assert!(FileSource::open(&dir.path().join("none.toml")).is_err());
    }
}
