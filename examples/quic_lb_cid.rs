//! Encode and decode QUIC-LB connection IDs (draft-ietf-quic-load-balancers-21)
//! from the command line, for servers and tools that are not quinn: every
//! mode (plaintext, single-pass AES-128-ECB, four-pass Feistel), with the
//! config rotation codepoint. The key is read from a file or the
//! environment (`FLOWPIN_QUIC_LB_KEY`), never from the command line (where
//! `ps` shows it), and never printed.
//!
//! ```text
//! # the draft's first encrypted test vector
//! export FLOWPIN_QUIC_LB_KEY=8f95f09245765f80256934e50c66207f
//! cargo run --example quic_lb_cid -- encode --config-id 0 --server-id-len 3 --nonce-len 4 \
//!     --server-id ed793a --nonce ee080dbf
//! cid=0720b1d07b359d3c
//! cargo run --example quic_lb_cid -- decode --config-id 0 --server-id-len 3 --nonce-len 4 \
//!     0720b1d07b359d3c
//! ```
//!
//! See crates/tcp-opt/README.md for the algorithm, step by step.
use std::error::Error;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use flowpin::tcp_opt::quic_lb::{hex_string, QuicLbConfig, QuicLbKey, QuicLbNonce, QuicLbServerId};
use flowpin::tcp_opt::ServerId;
use rand::RngCore;

/// The environment variable holding the key (32 hex digits).
const KEY_ENV: &str = "FLOWPIN_QUIC_LB_KEY";

#[derive(Parser, Debug)]
#[command(about = "Encode and decode QUIC-LB connection IDs (draft-ietf-quic-load-balancers-21)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a CID: first octet, then server ID + nonce (encrypted with a key).
    Encode {
        #[command(flatten)]
        config: ConfigArgs,
        /// The server ID, hex (`--server-id-len` octets).
        #[arg(long, conflicts_with = "flowpin_id")]
        server_id: Option<String>,
        /// A flowpin server_id (decimal), written big-endian in the server ID.
        #[arg(long)]
        flowpin_id: Option<u32>,
        /// The nonce, hex (`--nonce-len` octets); random if absent.
        #[arg(long)]
        nonce: Option<String>,
    },
    /// Read a CID: the server ID (what a load balancer routes by) and the nonce.
    Decode {
        #[command(flatten)]
        config: ConfigArgs,
        /// The CID, hex.
        cid: String,
    },
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// Config rotation codepoint, 0..=6.
    #[arg(long)]
    config_id: u8,
    /// Server ID octets, 1..=15.
    #[arg(long)]
    server_id_len: u8,
    /// Nonce octets, 4..=18 (server ID + nonce <= 19).
    #[arg(long)]
    nonce_len: u8,
    /// A file holding the key (32 hex digits); else $FLOWPIN_QUIC_LB_KEY;
    /// else plaintext.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Plaintext even if $FLOWPIN_QUIC_LB_KEY is set.
    #[arg(long, conflicts_with = "key_file")]
    plaintext: bool,
}

impl ConfigArgs {
    fn config(&self) -> Result<QuicLbConfig, Box<dyn Error>> {
        let key = if self.plaintext {
            None
        } else if let Some(path) = &self.key_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading the key file {}: {e}", path.display()))?;
            Some(text.trim().parse::<QuicLbKey>()?)
        } else {
            match std::env::var(KEY_ENV) {
                Ok(v) => Some(
                    v.trim()
                        .parse::<QuicLbKey>()
                        .map_err(|e| format!("${KEY_ENV}: {e}"))?,
                ),
                Err(_) => None,
            }
        };
        Ok(QuicLbConfig::new(self.config_id, self.server_id_len, self.nonce_len)?.with_key(key))
    }
}

fn describe(config: &QuicLbConfig) {
    println!(
        "config_id={} server_id_len={} nonce_len={} cid_len={} mode={} lb_passes={}",
        config.config_id(),
        config.server_id_len(),
        config.nonce_len(),
        config.cid_len(),
        config.mode().name(),
        config.lb_passes()
    );
}

fn main() -> Result<(), Box<dyn Error>> {
    match Cli::parse().command {
        Command::Encode {
            config,
            server_id,
            flowpin_id,
            nonce,
        } => {
            let config = config.config()?;
            let sid = match (server_id, flowpin_id) {
                (Some(hex), _) => hex.parse::<QuicLbServerId>()?,
                (None, Some(id)) => {
                    let id = ServerId::new(id).ok_or("--flowpin-id 0 is reserved (no server)")?;
                    QuicLbServerId::from_server_id(id, config.server_id_len())?
                }
                (None, None) => return Err("give --server-id HEX or --flowpin-id N".into()),
            };
            let nonce = match nonce {
                Some(hex) => hex.parse::<QuicLbNonce>()?,
                None => {
                    let mut n = [0u8; 18];
                    rand::rng().fill_bytes(&mut n);
                    QuicLbNonce::from_slice(&n[..config.nonce_len()])
                        .ok_or("nonce longer than 18 octets")?
                }
            };
            let mut cid = [0u8; 20];
            let n = config.encode(&sid, &nonce, &mut cid)?;
            describe(&config);
            println!("server_id={sid} nonce={nonce}");
            println!("cid={}", hex_string(&cid[..n]));
        }
        Command::Decode { config, cid } => {
            let config = config.config()?;
            let mut bytes = [0u8; 20];
            let cid = cid.strip_prefix("0x").unwrap_or(&cid);
            let n = flowpin::tcp_opt::quic_lb::parse_hex(cid, &mut bytes)
                .ok_or("the CID must be an even number of hex digits, at most 40")?;
            describe(&config);
            match config.open(&bytes[..n])? {
                None => println!(
                    "unroutable: codepoint {} is not config {}",
                    bytes[0] >> 5,
                    config.config_id()
                ),
                Some(d) => {
                    print!("server_id={} nonce={}", d.server_id, d.nonce);
                    if let Some(id) = d.server_id.to_server_id() {
                        print!(" flowpin_server_id={id}");
                    }
                    println!(" len_bits={}", d.len_bits);
                }
            }
        }
    }
    Ok(())
}
