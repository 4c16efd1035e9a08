//! Steer any address and any port to the right socket.
//!
//! `bind()` ties a socket to one address (or all) and one port. The
//! `sk_lookup` BPF program (crate `flowpin-bpf-progs`) decouples them, the
//! way Cloudflare's tubular does: at socket lookup, a packet whose
//! (protocol, local address, local port) matches a **binding** goes to the
//! socket registered for the binding's **label**, whatever it is bound to.
//! One socket can serve every port of a `/24`; a thousand services can share
//! one port on different prefixes.
//!
//! - **Bindings** `(protocol, prefix, port or any) → label`. Precedence: the
//!   longest prefix wins, then a specific port beats any port.
//! - **Destinations**: a label names one TCP listener and one UDP socket,
//!   registered by the process that owns them ([`Dispatcher::register`]).
//!   The socket may belong to a `SO_REUSEPORT` group: the group's own
//!   selection (its `sk_reuseport` program, see `flowpin-sk-reuseport`) then
//!   picks inside the group.
//! - **State in pinned maps** under one bpffs directory: several processes
//!   register their own sockets, and a controller that restarts
//!   ([`Dispatcher::open`]) finds everything as it was. Every
//!   read-modify-write holds an exclusive `flock` on the pin directory.
//! - **Stats per label**: lookups, redirected, no socket registered, errors.
//!
//! Bad input gets an [`Error`] that says what to do and changes nothing.
//! The rules live in [`model`] (plain Rust, tested without root); the
//! [`Dispatcher`] reads the maps, asks the model, writes what it planned.
//!
//! ```no_run
//! use flowpin_sk_lookup::{Binding, Dispatcher, Label, Port, Proto};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Controller: create the pinned state, attach to this namespace, bind.
//! let d = Dispatcher::create("/sys/fs/bpf/edge", Default::default())?;
//! d.attach("/proc/self/ns/net")?; // the link is pinned beside the maps
//! let web = Label::new("web")?;
//! d.bind(Binding::new(Proto::Tcp, "10.0.0.0/24".parse()?, Port::Any), &web)?;
//! // Server process: register its listener, bound anywhere.
//! let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
//! Dispatcher::open("/sys/fs/bpf/edge")?.register(&web, &listener)?;
//! // Every port of 10.0.0.0/24 now reaches `listener`.
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod dispatcher;
pub mod model;

use std::net::IpAddr;

pub use dispatcher::{Dispatcher, DispatcherConfig, LabelInfo, LINK_PIN};
pub use flowpin_bpf_progs::sk_lookup::{LabelStats, SkLookupError};
pub use model::{Binding, Family, Label, Port, Prefix, Proto};

/// Errors of the control API. Every bad-input error leaves the state as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Text that is not a prefix / port.
    #[error("{0}")]
    Parse(String),
    /// A prefix with bits set past its length.
    #[error("prefix {addr}/{len} has host bits set: use the network address (e.g. 10.0.0.0/24, not 10.0.0.1/24)")]
    HostBits {
        /// The address given.
        addr: IpAddr,
        /// The length given.
        len: u8,
    },
    /// A prefix length past the address.
    #[error("prefix length {len} is too long for {addr} (at most {max})")]
    PrefixLength {
        /// The address.
        addr: IpAddr,
        /// The length.
        len: u8,
        /// Its largest length.
        max: u8,
    },
    /// A label name that is empty, too long or holds a NUL.
    #[error("label {0:?} must be 1 to 32 bytes without NUL")]
    LabelName(String),
    /// The binding exists already (or twice in one call).
    #[error("binding {binding} exists already (label {label}): remove it first (Dispatcher::unbind) to point it elsewhere")]
    DuplicateBinding {
        /// The binding.
        binding: Binding,
        /// The label it points to.
        label: Label,
    },
    /// No such binding.
    #[error("binding {0} does not exist")]
    UnknownBinding(Binding),
    /// No such label.
    #[error("label {0} does not exist: add a binding for it first (Dispatcher::bind)")]
    UnknownLabel(Label),
    /// More bindings than the trie holds.
    #[error("{adding} new bindings on top of {have} exceed the capacity of {max}: remove some, or create the dispatcher with a larger DispatcherConfig::max_bindings")]
    TooManyBindings {
        /// Bindings present.
        have: usize,
        /// Bindings asked for.
        adding: usize,
        /// Capacity.
        max: usize,
    },
    /// Every label id is used.
    #[error("all {max} labels are in use: remove the bindings of unused labels")]
    TooManyLabels {
        /// Capacity.
        max: u32,
    },
    /// A socket of a protocol the label cannot use.
    #[error("socket for label {label}: {why}")]
    WrongProtocol {
        /// The label.
        label: Label,
        /// What is wrong.
        why: String,
    },
    /// A socket (or binding) of a family the other side cannot serve.
    #[error("label {label}: {why} (use a dual-stack IPv6 socket, IPV6_V6ONLY off, to serve both families)")]
    WrongFamily {
        /// The label.
        label: Label,
        /// What is wrong.
        why: String,
    },
    /// The socket is not bound.
    #[error(
        "the socket is not bound: bind() it (any address and port will do) before registering"
    )]
    Unbound,
    /// The socket is connected.
    #[error(
        "the socket is connected: register a listening TCP socket or an unconnected UDP socket"
    )]
    Connected,
    /// A TCP socket that does not listen.
    #[error("the TCP socket is not listening: call listen() before registering")]
    NotListening,
    /// A socket query failed.
    #[error("querying the socket ({what}): {source}")]
    Socket {
        /// The query.
        what: &'static str,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// The pin directory is unusable.
    #[error("pin directory {path}: {why}")]
    Pins {
        /// The directory.
        path: std::path::PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// The kernel layer failed.
    #[error("{step}: {source}")]
    Kernel {
        /// What was being done.
        step: &'static str,
        /// The kernel layer's error.
        #[source]
        source: SkLookupError,
    },
}
