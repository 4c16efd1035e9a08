//! The QUIC-LB configurations into the load balancer's desired state.

use flowpin_lb_core::{AesEngine, Desired, QuicLbConf, VipCid};

use super::{QuicLbEngine, StoredQuicLbConfig};

/// `xdp_lb` routes server IDs of at most this many octets (a flowpin
/// server_id is 32 bits).
pub const XDP_LB_MAX_SID_LEN: usize = 4;

/// Declares, for every VIP of `desired` that has configurations in
/// `configs` (the [`routable`](super::routable) ones: active and
/// retiring), the layout [`VipCid::QuicLb`] with them; other VIPs keep
/// theirs. Encrypted configurations use the AES engine each one names
/// ([`QuicLbConfigSpec::engine`](super::QuicLbConfigSpec::engine):
/// constant-time unless `"table"` was chosen). Configurations the data path
/// cannot route (server ID above 4 octets) or of VIPs not in `desired` are
/// left out and returned with the reason.
pub fn apply_to_desired(
    desired: &mut Desired,
    configs: &[StoredQuicLbConfig],
) -> Vec<(StoredQuicLbConfig, String)> {
    let mut skipped = Vec::new();
    for c in configs {
        let Some(vip) = desired.vips.get_mut(&c.at.vip) else {
            skipped.push((*c, format!("VIP {} is not in the registry", c.at.vip)));
            continue;
        };
        if c.config.server_id_len() > XDP_LB_MAX_SID_LEN {
            skipped.push((
                *c,
                format!(
                    "server ID of {} octets: xdp_lb routes 1..={XDP_LB_MAX_SID_LEN}",
                    c.config.server_id_len()
                ),
            ));
            continue;
        }
        let conf = QuicLbConf {
            config_id: c.at.config_id,
            server_id_len: c.spec.server_id_len,
            nonce_len: c.spec.nonce_len,
            key: c.spec.key.map(|k| flowpin_lb_core::QuicLbKey(*k.expose())),
            engine: match c.spec.engine {
                QuicLbEngine::ConstantTime => AesEngine::ConstantTime,
                QuicLbEngine::Table => AesEngine::Table,
            },
        };
        match &mut vip.cid {
            VipCid::QuicLb(confs) => {
                confs.retain(|x| x.config_id != conf.config_id);
                confs.push(conf);
                confs.sort_by_key(|x| x.config_id);
            }
            other => *other = VipCid::QuicLb(vec![conf]),
        }
    }
    skipped
}
