//! The command-line arguments of the QUIC-LB codec: `flowpin-node quic-lb
//! encode|decode` and `examples/quic_lb_cid.rs` parse the same flags with
//! these types (the codec itself is `flowpin_tcp_opt::quic_lb::tool`). A
//! key is read from `--key-file` or `$FLOWPIN_QUIC_LB_KEY`, never from the
//! command line.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use flowpin_tcp_opt::quic_lb::tool::{load_key, QuicLbToolError};
use flowpin_tcp_opt::quic_lb::QuicLbConfig;

/// `quic-lb encode` / `quic-lb decode`.
#[derive(Subcommand, Debug)]
pub enum QuicLbCmd {
    /// Write a CID: first octet, then server ID + nonce (encrypted with a key).
    Encode {
        /// The configuration.
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
        /// The configuration.
        #[command(flatten)]
        config: ConfigArgs,
        /// The CID, hex.
        cid: String,
    },
}

/// A QUIC-LB configuration on the command line (the key from a file or
/// the environment).
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Config rotation codepoint, 0..=6.
    #[arg(long)]
    pub config_id: u8,
    /// Server ID octets, 1..=15.
    #[arg(long)]
    pub server_id_len: u8,
    /// Nonce octets, 4..=18 (server ID + nonce <= 19).
    #[arg(long)]
    pub nonce_len: u8,
    /// A file holding the key (32 hex digits); else $FLOWPIN_QUIC_LB_KEY;
    /// else plaintext.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Plaintext even if $FLOWPIN_QUIC_LB_KEY is set.
    #[arg(long, conflicts_with = "key_file")]
    pub plaintext: bool,
}

impl ConfigArgs {
    /// The configuration with its key (loaded per [`load_key`]): a key that
    /// cannot be read is [`QuicLbToolError::Usage`], lengths or a codepoint
    /// the codec refuses are [`QuicLbToolError::Codec`].
    pub fn config(&self) -> Result<QuicLbConfig, QuicLbToolError> {
        let key = load_key(self.key_file.as_deref(), self.plaintext)?;
        Ok(QuicLbConfig::new(self.config_id, self.server_id_len, self.nonce_len)?.with_key(key))
    }
}
