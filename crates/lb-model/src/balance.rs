//! The balancer: VIP match, server_id (TCP option or QUIC connection ID,
//! read with `flowpin-tcp-opt`'s views), connection table, Maglev ring.
//! The VIP is looked up by key each time it is needed, never cloned.

use std::net::IpAddr;

use etherparse::{IpNumber, TcpHeaderSlice};
use flowpin_bpf_abi::lb as abi;
use flowpin_bpf_progs::xdp_lb::VipCid;
use flowpin_tcp_opt::quic::ConnectionId;

use super::parse::Parsed;
use super::{keep, Decision, Model, Outcome, Route, Verdict};
use flowpin_bpf_abi::flow_hash::{flow_hash, flow_hash2, FiveTuple};

/// A server_id read from a packet.
pub(super) enum SidResult {
    None,
    Found(u32),
    Malformed,
}

/// Key of the `vips` table.
type VipKey = (IpAddr, u16, u8);

impl Model {
    fn tcp_server_id(&self, pkt: &[u8], p: &Parsed) -> SidResult {
        let Ok(tcp) = TcpHeaderSlice::from_slice(&pkt[p.l4..]) else {
            return SidResult::Malformed;
        };
        let opts = tcp.options();
        if opts.is_empty() {
            return SidResult::None;
        }
        match flowpin_tcp_opt::option::find_server_id_option(opts, self.cfg.tcp_opt_layout) {
            Ok(None) => SidResult::None,
            Ok(Some(o)) => SidResult::Found(o.raw_server_id()),
            Err(_) => SidResult::Malformed,
        }
    }

    /// The QUIC short header at `q`: the destination CID right after the
    /// first byte, `quic_cid_len` bytes (at least the minimum).
    fn quic_server_id(&self, pkt: &[u8], q: usize) -> SidResult {
        let cid_len = usize::from((self.cfg.quic_cid_len & 0x1f).max(8));
        let c = q + 1;
        if c + 8 > pkt.len() || c + cid_len > pkt.len() {
            return SidResult::Malformed;
        }
        let Ok(cid) = ConnectionId::new_checked(&pkt[c..c + cid_len]) else {
            return SidResult::Malformed;
        };
        if let Some(q) = self.cfg.quic_lb {
            let cr = pkt[c] >> flowpin_tcp_opt::consts::QUIC_LB_CR_SHIFT;
            if cr == flowpin_tcp_opt::consts::QUIC_LB_CR_UNROUTABLE {
                return SidResult::None;
            }
            if q.matches(pkt[c]) {
                let layout = flowpin_tcp_opt::CidLayout::QuicLb(q);
                return cid
                    .raw_server_id(layout)
                    .map_or(SidResult::Malformed, SidResult::Found);
            }
        }
        match cid.layout().and_then(|l| cid.raw_server_id(l)) {
            Some(id) => SidResult::Found(id),
            None => SidResult::None,
        }
    }

    /// The VIP of the packet: by port, then (if any VIP is) port-agnostic.
    fn match_vip(&self, p: &Parsed) -> Option<VipKey> {
        let proto = p.proto.0;
        if !p.nonfirst {
            let k = (p.dst, p.dport, proto);
            if self.vips.contains_key(&k) {
                return Some(k);
            }
        }
        if self.port_agnostic == 0 {
            return None;
        }
        let k = (p.dst, 0, proto);
        self.vips
            .get(&k)
            .filter(|v| v.flags & abi::VIP_PORT_AGNOSTIC != 0)
            .map(|_| k)
    }

    pub(super) fn balance(&mut self, pkt: &[u8], p: &Parsed) -> Decision {
        let Some(key) = self.match_vip(p) else {
            if p.nonfirst {
                self.global.pass_fragment_no_vip += 1;
                return keep(pkt, Verdict::Pass, Outcome::FragmentNoVip);
            }
            return keep(pkt, Verdict::Pass, Outcome::NotVip);
        };
        let Some((vip_id, flags)) = self.vips.get(&key).map(|v| (v.id, v.flags)) else {
            return keep(pkt, Verdict::Pass, Outcome::NotVip);
        };
        let tuple = FiveTuple {
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
            proto: p.proto.0,
        };
        let hash = flow_hash(&tuple);
        let mut vs = self.vip(vip_id);
        vs.packets += 1;
        vs.bytes += pkt.len() as u64;
        let mut chosen: Option<(IpAddr, Route)> = None;
        let mut sid_res = None;
        if flags & abi::VIP_SERVER_ID != 0 && p.proto == IpNumber::TCP && !p.nonfirst && !p.syn {
            sid_res = Some(self.tcp_server_id(pkt, p));
        } else if flags & abi::VIP_QUIC != 0 && p.proto == IpNumber::UDP && !p.nonfirst {
            let q = p.l4 + 8;
            let cid = self
                .vips
                .get(&key)
                .map(|v| v.cid.clone())
                .unwrap_or_default();
            match pkt.get(q) {
                None => sid_res = Some(SidResult::Malformed),
                Some(first) if cid != VipCid::Any => {
                    if first & 0x80 != 0 {
                        vs.quic_long_header += 1;
                    }
                    if first & 0x80 == 0 || crate::cid::long_routable(pkt, q) {
                        sid_res = Some(self.declared_cid_sid(&cid, pkt, q));
                    }
                }
                Some(first) if first & 0x80 != 0 => vs.quic_long_header += 1,
                Some(_) => sid_res = Some(self.quic_server_id(pkt, q)),
            }
        }
        match sid_res {
            Some(SidResult::Found(0)) => vs.sid_fallback_zero += 1,
            Some(SidResult::Found(sid)) => {
                let route = self.vips.get(&key).and_then(|v| v.server_ids.get(&sid));
                match route {
                    Some(a) if self.alive.contains(a) => {
                        vs.sid_routed += 1;
                        chosen = Some((*a, Route::ServerId));
                    }
                    _ if self
                        .vips
                        .get(&key)
                        .is_some_and(|v| v.retired_server_ids.contains(&sid)) =>
                    {
                        vs.sid_fallback_removed += 1
                    }
                    _ => vs.sid_fallback_unknown += 1,
                }
            }
            Some(SidResult::Malformed) => vs.sid_fallback_malformed += 1,
            Some(SidResult::None) => vs.sid_missing += 1,
            None => {}
        }
        let use_lru = !(p.proto == IpNumber::UDP && flags & abi::VIP_SKIP_LRU_UDP != 0);
        let nsets = self.cfg.conn_sets;
        let fp = (hash, flow_hash2(&tuple));
        if let Some((a, Route::ServerId)) = chosen {
            if self.cfg.sid_warm_conn
                && p.proto == IpNumber::TCP
                && self.conn.lookup(nsets, fp, &mut self.global) != Some(a)
            {
                self.conn.insert(nsets, fp, a, &mut self.global);
            }
        }
        if chosen.is_none() {
            if use_lru && !(p.proto == IpNumber::TCP && p.syn) {
                let found = self.conn.lookup(nsets, fp, &mut self.global);
                match found.filter(|a| self.alive.contains(a)) {
                    Some(a) => {
                        vs.lru_hit += 1;
                        chosen = Some((a, Route::Lru));
                    }
                    None => vs.lru_miss += 1,
                }
            }
            if chosen.is_none() {
                let slot = (hash % self.cfg.ring_size) as usize;
                let owner = self
                    .vips
                    .get(&key)
                    .and_then(|v| v.ring.get(slot).copied().flatten());
                match owner {
                    Some(a) if self.alive.contains(&a) => {
                        vs.new_flows += 1;
                        if use_lru {
                            self.conn.insert(nsets, fp, a, &mut self.global);
                        }
                        chosen = Some((a, Route::Ring));
                    }
                    _ => {
                        vs.unknown_backend += 1;
                        self.vip_stats.insert(vip_id, vs);
                        self.global.drop_unknown_backend += 1;
                        return Decision {
                            hash: Some(hash),
                            ..keep(pkt, Verdict::Drop, Outcome::UnknownBackend)
                        };
                    }
                }
            }
        }
        let Some((backend, route)) = chosen else {
            return keep(pkt, Verdict::Drop, Outcome::UnknownBackend);
        };
        let d = self.encap(pkt, p, backend, route, hash, &mut vs);
        self.vip_stats.insert(vip_id, vs);
        d
    }
}
