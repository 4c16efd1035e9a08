//! `flowpin-node quic-lb encode|decode` (the QUIC-LB codec for servers
//! that are not quinn; the shared part is `flowpin_tcp_opt::quic_lb::tool`,
//! as in `examples/quic_lb_cid.rs`) and `flowpin-node vip quic-lb
//! add|retire` (a VIP's QUIC-LB configurations in the registry). A key is
//! read from `--key-file` or `$FLOWPIN_QUIC_LB_KEY`, never from the
//! command line, and never printed.

use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;
use flowpin_registry::lb::vip_name;
use flowpin_registry::quic_lb::{QuicLbConfigSpec, QuicLbEngine};
use flowpin_registry::Vip;
use flowpin_tcp_opt::quic_lb::tool::{decode_lines, encode_lines, load_key, QuicLbToolError};
use serde::Serialize;

use super::{parse_vip, print_json, CliError, RegistryArgs};

pub(crate) use flowpin_node::quic_lb_args::QuicLbCmd;

fn tool(e: QuicLbToolError) -> CliError {
    CliError::Usage(e.to_string())
}

/// 18 random octets (a nonce when none is given).
fn random18() -> Result<[u8; 18], CliError> {
    let mut r = [0u8; 18];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut r))
        .map_err(|e| CliError::Usage(format!("cannot read /dev/urandom for a nonce: {e}")))?;
    Ok(r)
}

/// Runs `quic-lb encode|decode`.
pub(crate) fn run(cmd: &QuicLbCmd) -> Result<(), CliError> {
    let out = match cmd {
        QuicLbCmd::Encode {
            config,
            server_id,
            flowpin_id,
            nonce,
        } => encode_lines(
            &config.config().map_err(tool)?,
            server_id.as_deref(),
            *flowpin_id,
            nonce.as_deref(),
            &random18()?,
        ),
        QuicLbCmd::Decode { config, cid } => decode_lines(&config.config().map_err(tool)?, cid),
    }
    .map_err(tool)?;
    print!("{out}");
    Ok(())
}

/// `vip quic-lb add` / `vip quic-lb retire`.
#[derive(Subcommand)]
pub(crate) enum VipQuicLbAction {
    /// Store a new QUIC-LB configuration of a UDP VIP at a free codepoint
    /// (state active). Load balancers apply and acknowledge it; servers
    /// issue CIDs with it once every live LB has.
    Add {
        /// The VIP: `10.100.0.1:443/udp`.
        #[arg(value_parser = parse_vip)]
        vip: Vip,
        /// Config rotation codepoint, 0..=6.
        #[arg(long)]
        id: u8,
        /// Server ID octets (1..=4 for xdp_lb's routing).
        #[arg(long)]
        server_id_len: u8,
        /// Nonce octets, 4..=18 (server ID + nonce <= 19).
        #[arg(long)]
        nonce_len: u8,
        /// A file holding the AES-128 key (32 hex digits); else
        /// $FLOWPIN_QUIC_LB_KEY; else plaintext.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Plaintext even if $FLOWPIN_QUIC_LB_KEY is set.
        #[arg(long, conflicts_with = "key_file")]
        plaintext: bool,
        /// AES engine of an encrypted configuration: `constant-time` (the
        /// default) or `table` (faster, not constant-time: see
        /// crates/bpf-progs/README.md, "Encrypted CIDs in XDP: two engines").
        #[arg(long, value_parser = parse_engine)]
        engine: Option<QuicLbEngine>,
        /// Where the registry is.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Mark a configuration retiring: servers stop issuing it, load
    /// balancers keep routing it until it is removed.
    Retire {
        /// The VIP.
        #[arg(value_parser = parse_vip)]
        vip: Vip,
        /// Config rotation codepoint, 0..=6.
        #[arg(long)]
        id: u8,
        /// Where the registry is.
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Serialize)]
struct QuicLbWriteOut {
    action: &'static str,
    vip: String,
    config_id: u8,
    encrypted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<&'static str>,
    revision: i64,
}

fn parse_engine(s: &str) -> Result<QuicLbEngine, String> {
    s.parse()
}

/// Runs `vip quic-lb add|retire`.
pub(crate) async fn vip_action(action: VipQuicLbAction) -> Result<(), CliError> {
    let (out, json) = match action {
        VipQuicLbAction::Add {
            vip,
            id,
            server_id_len,
            nonce_len,
            key_file,
            plaintext,
            engine,
            registry,
        } => {
            let key = load_key(key_file.as_deref(), plaintext).map_err(tool)?;
            let reg = super::registry::connect(&registry).await?;
            let spec = QuicLbConfigSpec::new(server_id_len, nonce_len, key)
                .with_engine(engine.unwrap_or_default());
            let revision = reg.put_quic_lb_config(&vip, id, &spec).await?;
            (
                QuicLbWriteOut {
                    action: "added",
                    vip: vip_name(&vip),
                    config_id: id,
                    encrypted: Some(key.is_some()),
                    engine: key.map(|_| engine.unwrap_or_default().as_str()),
                    revision,
                },
                registry.json,
            )
        }
        VipQuicLbAction::Retire { vip, id, registry } => {
            let reg = super::registry::connect(&registry).await?;
            if !reg.retire_quic_lb_config(&vip, id).await? {
                return Err(CliError::Usage(format!(
                    "VIP {} has no QUIC-LB configuration {id}: nothing retired",
                    vip_name(&vip)
                )));
            }
            (
                QuicLbWriteOut {
                    action: "retiring",
                    vip: vip_name(&vip),
                    config_id: id,
                    encrypted: None,
                    engine: None,
                    revision: 0,
                },
                registry.json,
            )
        }
    };
    if json {
        return print_json(&out);
    }
    let enc = match (out.encrypted, out.engine) {
        (Some(true), Some(engine)) => format!(", encrypted, {engine} AES"),
        (Some(true), None) => ", encrypted".to_string(),
        (Some(false), _) => ", plaintext".to_string(),
        (None, _) => String::new(),
    };
    println!(
        "{} QUIC-LB config {} of {}{enc}{}",
        out.action,
        out.config_id,
        out.vip,
        if out.revision > 0 {
            format!(" (revision {})", out.revision)
        } else {
            String::new()
        }
    );
    Ok(())
}
