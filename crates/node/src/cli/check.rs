//! `flowpin-node check-config FILE [--role ROLE]`: loads the file the way
//! the role would (parse, validate, read the files it names) without
//! touching the kernel or etcd. Exit 0 and one line on stdout when valid;
//! exit 1 and the reason on stderr when not.

use std::path::Path;
use std::process::ExitCode;

use flowpin_node::config::{BackendConfig, ClientConfig, ConfigError, LbConfig, RegistrySection};

use super::RoleArg;

/// The role a file is for: `--role`, else its one role table.
fn role_of(path: &Path, given: Option<RoleArg>) -> Result<RoleArg, String> {
    if let Some(r) = given {
        return Ok(r);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
    let found: Vec<(RoleArg, &str)> = [
        (RoleArg::Lb, "lb"),
        (RoleArg::Backend, "backend"),
        (RoleArg::Client, "client"),
    ]
    .into_iter()
    .filter(|(_, name)| table.contains_key(*name))
    .collect();
    match found.as_slice() {
        [(r, _)] => Ok(*r),
        [] => Err(format!(
            "{}: cannot tell the role: the file has no [lb], [backend] or [client] table; add the role's table or pass --role",
            path.display()
        )),
        many => Err(format!(
            "{}: tables of several roles ({}): one file configures one role; split it or pass --role",
            path.display(),
            many.iter().map(|(_, n)| format!("[{n}]")).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Loads `path` as a config of `role`; returns a one-line summary.
fn check(path: &Path, role: RoleArg) -> Result<String, String> {
    let err = |e: ConfigError| e.to_string();
    let registry = |r: &RegistrySection| -> Result<String, String> {
        r.registry_config().map_err(err)?;
        Ok(format!("registry {} {}", r.endpoints.join(","), r.prefix))
    };
    match role {
        RoleArg::Lb => {
            let c = LbConfig::load(path).map_err(err)?;
            Ok(format!(
                "lb on {}, pins {}, {}, metrics {}",
                c.lb.interface,
                c.lb.pin_dir.display(),
                registry(&c.registry)?,
                c.metrics.listen
            ))
        }
        RoleArg::Backend => {
            let c = BackendConfig::load(path).map_err(err)?;
            Ok(format!(
                "backend {} ({}) on {}, {} VIP(s), {}",
                c.backend.host,
                c.backend.address,
                c.backend.interface,
                c.backend.vips.len(),
                registry(&c.registry)?
            ))
        }
        RoleArg::Client => {
            let c = ClientConfig::load(path).map_err(err)?;
            Ok(format!(
                "client on cgroup {}, pins {}",
                c.client.cgroup.display(),
                c.pin_dir().display()
            ))
        }
    }
}

/// Runs `check-config`.
pub(crate) fn run(path: &Path, role: Option<RoleArg>) -> ExitCode {
    match role_of(path, role).and_then(|r| check(path, r).map(|s| (r, s))) {
        Ok((r, summary)) => {
            println!(
                "{}: valid {} config: {summary}",
                path.display(),
                format!("{r:?}").to_lowercase()
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("flowpin-node check-config: {why}");
            ExitCode::FAILURE
        }
    }
}
