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

use clap::Parser;
use flowpin::tcp_opt::quic_lb::tool::{decode_lines, encode_lines, QuicLbToolError};
use flowpin::tcp_opt::quic_lb::QuicLbConfig;
// The same flags as `flowpin-node quic-lb encode|decode`.
use flowpin_node::quic_lb_args::{ConfigArgs, QuicLbCmd as Command};
use rand::RngCore;

#[derive(Parser, Debug)]
#[command(about = "Encode and decode QUIC-LB connection IDs (draft-ietf-quic-load-balancers-21)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The configuration with its key; a codec error is returned as the codec
/// gave it.
fn load_config(args: &ConfigArgs) -> Result<QuicLbConfig, Box<dyn Error>> {
    args.config().map_err(|e| match e {
        QuicLbToolError::Codec(e) => e.into(),
        e => e.into(),
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    match Cli::parse().command {
        Command::Encode {
            config,
            server_id,
            flowpin_id,
            nonce,
        } => {
            let config = load_config(&config)?;
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
            print!("{}", decode_lines(&load_config(&config)?, &cid)?);
        }
    }
    Ok(())
}
