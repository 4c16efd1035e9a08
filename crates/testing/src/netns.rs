//! Network namespaces and veth pairs as guards.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::sched::{setns, CloneFlags};

use crate::{mac_str, run_cmd, unique_name, Result, TestingError};

/// A network namespace created with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace with a unique name built from `tag`, with `lo` up.
    pub fn new(tag: &str) -> Result<Self> {
        let name = unique_name(tag);
        run_cmd("ip", ["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as listed by `ip netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run_cmd("ip", a)
    }

    /// Sets the link-layer address of interface `dev` (down, address, up).
    pub fn set_mac(&self, dev: &str, mac: [u8; 6]) -> Result<()> {
        self.ip(&["link", "set", dev, "down"])?;
        self.ip(&["link", "set", dev, "address", &mac_str(mac)])?;
        self.ip(&["link", "set", dev, "up"])?;
        Ok(())
    }

    /// Runs any command inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut a = vec!["netns", "exec", self.name.as_str(), program];
        a.extend_from_slice(args);
        run_cmd("ip", a)
    }

    /// Sets a sysctl inside the namespace, e.g. `("net.ipv4.ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        let key = path.clone();
        let value = value.to_string();
        self.run(move || {
            fs::write(&key, value).map_err(|source| TestingError::Io {
                what: "writing sysctl",
                path: key.clone(),
                source,
            })
        })?
    }

    /// Runs `f` on a new thread that has entered this namespace and returns
    /// its result. Sockets created inside `f` belong to the namespace and
    /// keep belonging to it after `f` returns.
    pub fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.path();
        let name = self.name.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                self.enter_current_thread_at(&path, &name)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(TestingError::Panicked(self.name.clone())))
        })
    }

    /// Spawns a long-running thread inside the namespace (e.g. a server).
    pub fn spawn<F, T>(&self, f: F) -> Result<std::thread::JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = self.path();
        let name = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let entered = enter_netns(&path, &name);
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            if !ok {
                panic!("could not enter namespace {name}");
            }
            f()
        });
        rx.recv()
            .map_err(|_| TestingError::Panicked(self.name.clone()))??;
        Ok(h)
    }

    /// Moves the calling thread into this namespace for good. Use only on
    /// threads you own (e.g. the main thread of a child process).
    pub fn enter_current_thread(&self) -> Result<()> {
        enter_netns(&self.path(), &self.name)
    }

    fn enter_current_thread_at(&self, path: &Path, name: &str) -> Result<()> {
        enter_netns(path, name)
    }
}

/// Moves the calling thread into the network namespace bound at `path`.
pub fn enter_netns(path: &Path, name: &str) -> Result<()> {
    let f = File::open(path).map_err(|source| TestingError::Io {
        what: "opening network namespace",
        path: path.to_path_buf(),
        source,
    })?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| TestingError::Setns {
        ns: name.to_string(),
        errno,
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair with one end in each of two namespaces. Deleted on drop (and
/// also when either namespace goes away).
#[derive(Debug)]
pub struct VethPair {
    a_ns: String,
    a: String,
}

impl VethPair {
    /// Creates `a` in namespace `ns_a` and its peer `b` in `ns_b`, both up.
    pub fn new(ns_a: &NetNs, a: &str, ns_b: &NetNs, b: &str) -> Result<Self> {
        ns_a.ip(&[
            "link",
            "add",
            a,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            ns_b.name(),
        ])?;
        let pair = VethPair {
            a_ns: ns_a.name().to_string(),
            a: a.to_string(),
        };
        ns_a.ip(&["link", "set", a, "up"])?;
        ns_b.ip(&["link", "set", b, "up"])?;
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.a_ns, "link", "del", &self.a])
            .output();
    }
}
