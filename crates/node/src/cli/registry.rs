//! The commands on the registry: `vips`, `backends`, `vip add/remove`,
//! `backend drain/undrain`.

use std::net::IpAddr;

use flowpin_node::config::RegistrySection;
use flowpin_registry::lb::vip_name;
use flowpin_registry::{BackendState, Registry, RegistryConfig, Snapshot, Vip, VipFlags, VipSpec};
use serde::Serialize;

use super::table::Table;
use super::{print_json, BackendAction, BackendTarget, CliError, RegistryArgs, VipAction};

fn registry_config(a: &RegistryArgs) -> Result<RegistryConfig, CliError> {
    if let Some(path) = &a.config {
        return Ok(RegistrySection::load_from(path)?.registry_config()?);
    }
    match (&a.endpoints[..], &a.prefix) {
        ([_, ..], Some(prefix)) => {
            let section = RegistrySection::plain(a.endpoints.clone(), prefix.clone());
            section.validate()?;
            Ok(section.registry_config()?)
        }
        _ => Err(CliError::Usage(
            "where is the registry? give --config FILE (a role's config with a [registry] section) or --endpoints URL --prefix PREFIX".into(),
        )),
    }
}

pub(super) async fn connect(a: &RegistryArgs) -> Result<Registry, CliError> {
    Ok(Registry::connect(registry_config(a)?).await?)
}

fn state_name(s: BackendState) -> &'static str {
    match s {
        BackendState::Active => "active",
        BackendState::Draining => "draining",
    }
}

#[derive(Serialize)]
struct VipRow {
    vip: String,
    addr: IpAddr,
    port: u16,
    proto: &'static str,
    flags: String,
    backends: usize,
    active: usize,
    draining: usize,
}

#[derive(Serialize)]
struct VipsOut {
    revision: i64,
    vips: Vec<VipRow>,
    rejected: Vec<RejectedRow>,
}

#[derive(Serialize)]
struct RejectedRow {
    key: String,
    kind: &'static str,
    reason: String,
}

fn rejected(snap: &Snapshot) -> Vec<RejectedRow> {
    snap.rejected
        .iter()
        .map(|r| RejectedRow {
            key: r.key.clone(),
            kind: r.kind.as_str(),
            reason: r.reason.clone(),
        })
        .collect()
}

fn print_rejected(rows: &[RejectedRow]) {
    if !rows.is_empty() {
        println!(
            "\n{} registry entries rejected (no LB applies them):",
            rows.len()
        );
        for r in rows {
            println!("  {} ({}): {}", r.key, r.kind, r.reason);
        }
    }
}

/// `vips`.
pub(crate) async fn vips(a: &RegistryArgs) -> Result<(), CliError> {
    let snap = connect(a).await?.snapshot().await?;
    let vips: Vec<VipRow> = snap
        .vips
        .iter()
        .map(|(v, e)| {
            let draining = e
                .backends
                .values()
                .filter(|b| b.state == BackendState::Draining)
                .count();
            VipRow {
                vip: vip_name(v),
                addr: v.addr,
                port: v.port,
                proto: v.proto.as_str(),
                flags: e.spec.flags.to_string(),
                backends: e.backends.len(),
                active: e.backends.len() - draining,
                draining,
            }
        })
        .collect();
    let out = VipsOut {
        revision: snap.revision,
        vips,
        rejected: rejected(&snap),
    };
    if a.json {
        return print_json(&out);
    }
    let mut t = Table::new(&["VIP", "FLAGS", "BACKENDS", "ACTIVE", "DRAINING"]);
    for v in &out.vips {
        t.row(vec![
            v.vip.clone(),
            v.flags.clone(),
            v.backends.to_string(),
            v.active.to_string(),
            v.draining.to_string(),
        ]);
    }
    print!("{}", t.render());
    println!(
        "({} VIPs at etcd revision {})",
        out.vips.len(),
        out.revision
    );
    print_rejected(&out.rejected);
    Ok(())
}

#[derive(Serialize)]
struct BackendRow {
    vip: String,
    addr: IpAddr,
    weight: u32,
    server_id: Option<u32>,
    state: &'static str,
    updated_at_ms: Option<u64>,
}

#[derive(Serialize)]
struct BackendsOut {
    revision: i64,
    backends: Vec<BackendRow>,
    rejected: Vec<RejectedRow>,
}

/// `backends [VIP]`.
pub(crate) async fn backends(only: Option<Vip>, a: &RegistryArgs) -> Result<(), CliError> {
    let snap = connect(a).await?.snapshot().await?;
    if let Some(v) = &only {
        if !snap.vips.contains_key(v) {
            return Err(CliError::Usage(format!(
                "VIP {} is not in the registry (flowpin-node vips lists them; declare it with flowpin-node vip add)",
                vip_name(v)
            )));
        }
    }
    let backends: Vec<BackendRow> = snap
        .vips
        .iter()
        .filter(|(v, _)| only.is_none_or(|o| o == **v))
        .flat_map(|(v, e)| {
            e.backends.values().map(move |b| BackendRow {
                vip: vip_name(v),
                addr: b.addr,
                weight: b.weight,
                server_id: b.server_id.map(u32::from),
                state: state_name(b.state),
                updated_at_ms: b.updated_at_ms,
            })
        })
        .collect();
    let out = BackendsOut {
        revision: snap.revision,
        backends,
        rejected: rejected(&snap),
    };
    if a.json {
        return print_json(&out);
    }
    let mut t = Table::new(&["VIP", "BACKEND", "WEIGHT", "SERVER_ID", "STATE"]);
    for b in &out.backends {
        t.row(vec![
            b.vip.clone(),
            b.addr.to_string(),
            b.weight.to_string(),
            b.server_id.map_or("-".into(), |s| s.to_string()),
            b.state.into(),
        ]);
    }
    print!("{}", t.render());
    println!(
        "({} backends at etcd revision {})",
        out.backends.len(),
        out.revision
    );
    print_rejected(&out.rejected);
    Ok(())
}

#[derive(Serialize)]
struct WriteOut {
    action: &'static str,
    vip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<IpAddr>,
    revision: i64,
}

fn print_write(json: bool, out: &WriteOut) -> Result<(), CliError> {
    if json {
        return print_json(out);
    }
    let rev = if out.revision > 0 {
        format!(" (etcd revision {})", out.revision)
    } else {
        String::new()
    };
    match out.backend {
        Some(b) => println!("{} {b} on {}{rev}", out.action, out.vip),
        None => println!("{} {}{rev}", out.action, out.vip),
    }
    Ok(())
}

/// `vip add` / `vip remove`.
pub(crate) async fn vip_action(action: VipAction) -> Result<(), CliError> {
    match action {
        VipAction::Add {
            vip,
            server_id,
            quic,
            port_agnostic,
            skip_lru_udp,
            registry,
        } => {
            let flags = VipFlags::NONE
                .with(VipFlags::SERVER_ID, server_id)
                .with(VipFlags::QUIC, quic)
                .with(VipFlags::PORT_AGNOSTIC, port_agnostic)
                .with(VipFlags::SKIP_LRU_UDP, skip_lru_udp);
            let reg = connect(&registry).await?;
            let revision = reg.put_vip(&VipSpec::new(vip, flags)).await?;
            print_write(
                registry.json,
                &WriteOut {
                    action: "declared",
                    vip: vip_name(&vip),
                    backend: None,
                    revision,
                },
            )
        }
        VipAction::Health(h) => {
            let reg = connect(&h.registry).await?;
            let (action, revision) = match h.check() {
                None => {
                    if !reg.delete_health_check(&h.vip).await? {
                        return Err(CliError::Usage(format!(
                            "VIP {} has no health check: nothing removed",
                            vip_name(&h.vip)
                        )));
                    }
                    ("health check removed", 0)
                }
                Some(c) => ("health check set", reg.put_health_check(&h.vip, &c).await?),
            };
            print_write(
                h.registry.json,
                &WriteOut {
                    action,
                    vip: vip_name(&h.vip),
                    backend: None,
                    revision,
                },
            )
        }
        VipAction::QuicLb(a) => super::quic_lb::vip_action(a).await,
        VipAction::Remove { vip, registry } => {
            let reg = connect(&registry).await?;
            if !reg.delete_vip(&vip).await? {
                return Err(CliError::Usage(format!(
                    "VIP {} is not in the registry: nothing removed",
                    vip_name(&vip)
                )));
            }
            print_write(
                registry.json,
                &WriteOut {
                    action: "removed",
                    vip: vip_name(&vip),
                    backend: None,
                    revision: 0,
                },
            )
        }
    }
}

/// `backend drain` / `backend undrain`.
pub(crate) async fn backend_action(action: BackendAction) -> Result<(), CliError> {
    let (t, state, verb): (BackendTarget, _, _) = match action {
        BackendAction::Drain(t) => (t, BackendState::Draining, "drained"),
        BackendAction::Undrain(t) => (t, BackendState::Active, "undrained"),
    };
    let reg = connect(&t.registry).await?;
    let vips: Vec<Vip> = match t.vip {
        Some(v) => vec![v],
        None => {
            let snap = reg.snapshot().await?;
            snap.vips
                .iter()
                .filter(|(_, e)| e.backends.contains_key(&t.addr))
                .map(|(v, _)| *v)
                .collect()
        }
    };
    let mut done = Vec::new();
    for v in &vips {
        if let Some(revision) = reg.set_backend_state(v, t.addr, state).await? {
            done.push(WriteOut {
                action: verb,
                vip: vip_name(v),
                backend: Some(t.addr),
                revision,
            });
        }
    }
    if done.is_empty() {
        return Err(CliError::Usage(format!(
            "backend {} is not registered{}: nothing {verb} (flowpin-node backends lists them)",
            t.addr,
            t.vip
                .map_or(String::new(), |v| format!(" on VIP {}", vip_name(&v)))
        )));
    }
    if t.registry.json {
        return print_json(&done);
    }
    for d in &done {
        print_write(false, d)?;
    }
    Ok(())
}
