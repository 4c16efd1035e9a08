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
use flowpin::tcp_opt::quic_lb::tool::{decode_lines, encode_lines, load_key};
use flowpin::tcp_opt::quic_lb::QuicLbConfig;
use rand::RngCore;

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
        let key = load_key(self.key_file.as_deref(), self.plaintext)?;
        Ok(QuicLbConfig::new(self.config_id, self.server_id_len, self.nonce_len)?.with_key(key))
    }
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
            let mut random = [0u8; 18];
            rand::rng().fill_bytes(&mut random);
            print!(
                "{}",
                encode_lines(
                    &config,
                    server_id.as_deref(),
                    flowpin_id,
                    nonce.as_deref(),
                    &random
                )?
            );
        }
        Command::Decode { config, cid } => {
            print!("{}", decode_lines(&config.config()?, &cid)?);
        }
    }
    Ok(())
}
