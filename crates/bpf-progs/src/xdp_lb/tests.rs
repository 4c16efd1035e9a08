//! Unit tests of the xdp_lb configuration and its C encoding.

use super::*;

#[test]
fn host_masks() {
    assert_eq!(host_mask(16, 32), 0x0000_ffff);
    assert_eq!(host_mask(32, 32), 0);
    assert_eq!(host_mask(0, 32), u32::MAX);
    assert_eq!(host_mask(96, 128), u32::MAX);
    assert_eq!(host_mask(120, 128), 0xff);
    assert_eq!(host_mask(128, 128), 0);
}

#[test]
fn connection_table_size_follows_the_budget() {
    let c = XdpLbConfig {
        lru_memory_bytes: 64 << 20,
        ..XdpLbConfig::default()
    };
    // 64 MiB / (64 B * 2 CPUs) = 524288 sets per CPU, a power of two.
    assert_eq!(c.conn_sets_per_cpu(2), 524_288);
    // Not a power of two: rounded down, never above the budget.
    let c = XdpLbConfig {
        lru_memory_bytes: 100 << 20,
        ..XdpLbConfig::default()
    };
    let sets = c.conn_sets_per_cpu(3);
    assert!(sets.is_power_of_two());
    assert!(u64::from(sets) * CONN_SET_BYTES * 3 <= 100 << 20);
    assert!(u64::from(sets) * 2 * CONN_SET_BYTES * 3 > 100 << 20);
}

#[test]
fn config_validation() {
    assert!(XdpLbConfig::default().validate().is_ok());
    let bad = XdpLbConfig {
        ring_size: 65536,
        ..XdpLbConfig::default()
    };
    assert!(matches!(bad.validate(), Err(XdpLbError::InvalidConfig(_))));
    let bad = XdpLbConfig {
        mtu: 500,
        ..XdpLbConfig::default()
    };
    assert!(bad.validate().is_err());
    let bad = XdpLbConfig {
        quic_cid_len: 4,
        ..XdpLbConfig::default()
    };
    assert!(bad.validate().is_err());
    // QUIC-LB with a 4-octet server ID needs 1 + 4 + 4 = 9 bytes.
    let quic_lb = flowpin_tcp_opt::QuicLb::new(1, 4).ok();
    let bad = XdpLbConfig::default().quic_cid_len(8).quic_lb(quic_lb);
    assert!(
        matches!(bad.validate(), Err(XdpLbError::InvalidConfig(m)) if m.contains("at least 9"))
    );
    let good = XdpLbConfig::default().quic_cid_len(9).quic_lb(quic_lb);
    assert!(good.validate().is_ok());
    assert_eq!(
        good.to_c(0).quic_lb,
        quic_lb.map_or(0, flowpin_tcp_opt::QuicLb::lb_config_byte)
    );
}

#[test]
fn cfg_encoding_uses_the_generated_layout() {
    let c = XdpLbConfig {
        mtu: 1400,
        quic_cid_len: 12,
        ..XdpLbConfig::default()
    };
    let raw = c.to_c(3);
    assert_eq!(raw.mtu, 1400);
    assert_eq!(raw.quic_cid_len, 12);
    assert_eq!(raw.port_agnostic_vips, 3);
    // 172.16.0.0/16: host bits from the flow hash.
    assert_eq!(raw.tun_src4, 0xac10_0000);
    assert_eq!(raw.tun_src4_host_mask, 0xffff);
}

#[test]
fn apply_and_plan_errors_keep_their_messages() {
    use crate::error::KernelError;
    let err = maps::ApplyError {
        failed: KernelError::errno("map injected", "update", 12, ""),
        index: 1,
        total: 3,
        rollback_failed: None,
    };
    let msg = XdpLbError::from(err).to_string();
    assert!(
        msg.contains("map write 2 of 3") && msg.contains("previous configuration"),
        "{msg}"
    );
    let vip = Vip::new("192.0.2.1".parse().expect("ip"), 80, Proto::Tcp);
    let msg = XdpLbError::from(LbError::UnknownVip(vip)).to_string();
    assert_eq!(
        msg,
        "VIP tcp:192.0.2.1:80 is not configured; add it with add_vip first"
    );
}

#[test]
fn the_control_state_plans_within_the_load_time_sizes() {
    let c = XdpLbConfig::default()
        .ring_size(251)
        .max_vips(3)
        .max_backends(9)
        .answer_icmp_echo(false);
    let lb = c.lb_config();
    assert_eq!(
        (
            lb.ring_size,
            lb.max_vips,
            lb.max_backends,
            lb.answer_icmp_echo
        ),
        (251, 3, 9, false)
    );
    assert_eq!(LbConfig::from(&c), lb);
    assert_eq!(XdpLbConfig::default().ring_size, DEFAULT_RING_SIZE);
}
