//! The command-line encoder/decoder's shared part (`flowpin-node quic-lb`
//! and `examples/quic_lb_cid.rs`): where the key comes from (a file or
//! [`QUIC_LB_KEY_ENV`], never the command line), the arguments' parsing,
//! and the printed lines. Nothing here prints or returns a key.

use std::path::Path;

use super::{hex_string, parse_hex, QuicLbConfig, QuicLbKey, QuicLbNonce, QuicLbServerId};
use crate::{Error, ServerId};

/// The environment variable holding the key (32 hex digits).
pub const QUIC_LB_KEY_ENV: &str = "FLOWPIN_QUIC_LB_KEY";

/// Why a command-line request failed (never holds a key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicLbToolError {
    /// The codec refused (lengths, key format, CID).
    #[error(transparent)]
    Codec(#[from] Error),
    /// An argument or the key's source.
    #[error("{0}")]
    Usage(String),
}

/// The key: from `key_file`, else from `$FLOWPIN_QUIC_LB_KEY`, else none
/// (plaintext); `plaintext` ignores the environment.
pub fn load_key(
    key_file: Option<&Path>,
    plaintext: bool,
) -> Result<Option<QuicLbKey>, QuicLbToolError> {
    if plaintext {
        return Ok(None);
    }
    if let Some(path) = key_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            QuicLbToolError::Usage(format!("reading the key file {}: {e}", path.display()))
        })?;
        return Ok(Some(text.trim().parse::<QuicLbKey>()?));
    }
    match std::env::var(QUIC_LB_KEY_ENV) {
        Ok(v) => v
            .trim()
            .parse::<QuicLbKey>()
            .map(Some)
            .map_err(|e| QuicLbToolError::Usage(format!("${QUIC_LB_KEY_ENV}: {e}"))),
        Err(_) => Ok(None),
    }
}

/// `config_id=… server_id_len=… nonce_len=… cid_len=… mode=… lb_passes=…`.
pub fn describe(config: &QuicLbConfig) -> String {
    format!(
        "config_id={} server_id_len={} nonce_len={} cid_len={} mode={} lb_passes={}",
        config.config_id(),
        config.server_id_len(),
        config.nonce_len(),
        config.cid_len(),
        config.mode().name(),
        config.lb_passes()
    )
}

/// Encodes a CID: the server ID from `server_id_hex` or a flowpin
/// `flowpin_id` (big-endian), the nonce from `nonce_hex` or the first
/// `nonce_len` octets of `random`. Returns the lines to print
/// ([`describe`], `server_id=… nonce=…`, `cid=…`).
pub fn encode_lines(
    config: &QuicLbConfig,
    server_id_hex: Option<&str>,
    flowpin_id: Option<u32>,
    nonce_hex: Option<&str>,
    random: &[u8; 18],
) -> Result<String, QuicLbToolError> {
    let sid = match (server_id_hex, flowpin_id) {
        (Some(hex), _) => hex.parse::<QuicLbServerId>()?,
        (None, Some(id)) => {
            let id = ServerId::new(id).ok_or_else(|| {
                QuicLbToolError::Usage("--flowpin-id 0 is reserved (no server)".into())
            })?;
            QuicLbServerId::from_server_id(id, config.server_id_len())?
        }
        (None, None) => {
            return Err(QuicLbToolError::Usage(
                "give --server-id HEX or --flowpin-id N".into(),
            ))
        }
    };
    let nonce = match nonce_hex {
        Some(hex) => hex.parse::<QuicLbNonce>()?,
        None => QuicLbNonce::from_slice(&random[..config.nonce_len().min(18)])
            .ok_or_else(|| QuicLbToolError::Usage("nonce longer than 18 octets".into()))?,
    };
    let mut cid = [0u8; 20];
    let n = config.encode(&sid, &nonce, &mut cid)?;
    Ok(format!(
        "{}\nserver_id={sid} nonce={nonce}\ncid={}\n",
        describe(config),
        hex_string(&cid[..n])
    ))
}

/// Decodes a CID given in hex (`0x` allowed). Returns the lines to print:
/// [`describe`], then `server_id=… nonce=… [flowpin_server_id=…]
/// len_bits=…`, or `unroutable: …` when the codepoint is not the config's.
pub fn decode_lines(config: &QuicLbConfig, cid_hex: &str) -> Result<String, QuicLbToolError> {
    let mut bytes = [0u8; 20];
    let cid = cid_hex.strip_prefix("0x").unwrap_or(cid_hex);
    let n = parse_hex(cid, &mut bytes).ok_or_else(|| {
        QuicLbToolError::Usage("the CID must be an even number of hex digits, at most 40".into())
    })?;
    let mut out = describe(config);
    out.push('\n');
    match config.open(&bytes[..n])? {
        None => out.push_str(&format!(
            "unroutable: codepoint {} is not config {}\n",
            bytes[0] >> 5,
            config.config_id()
        )),
        Some(d) => {
            out.push_str(&format!("server_id={} nonce={}", d.server_id, d.nonce));
            if let Some(id) = d.server_id.to_server_id() {
                out.push_str(&format!(" flowpin_server_id={id}"));
            }
            out.push_str(&format!(" len_bits={}\n", d.len_bits));
        }
    }
    Ok(out)
}
