//! The hosts' cgroups, one builder for both halves of the lab: one cgroup
//! per backend host, one for the clients with the sock_ops program in the
//! client role loaded for it; and the lab process's own membership of the
//! clients' cgroup (the lab is the clients' host).

use flowpin_bpf_progs::sockops_server_id::{ServerIdOps, ServerIdOpsConfig};
use flowpin_testing::Cgroup;

use crate::topo;
use crate::{Created, Error};

/// The cgroups; dropping removes them (the program first).
pub(crate) struct Cgroups {
    /// The sock_ops program in the client role (VIP port), not attached yet.
    pub(crate) client_ops: ServerIdOps,
    /// One per backend host.
    pub(crate) backends: Vec<Cgroup>,
    /// The clients' cgroup.
    pub(crate) client: Cgroup,
}

impl Cgroups {
    /// Makes the cgroups (`<prefix>cli`, `<prefix>be1` …), each registered
    /// in `created` at once, and loads the client's program.
    pub(crate) fn build(prefix: &str, created: &mut Created) -> Result<Cgroups, Error> {
        let client = Cgroup::new(&format!("{prefix}cli"))?;
        created.cgroups.push(client.path().to_path_buf());
        let mut backends = Vec::new();
        for j in 0..topo::BACKENDS {
            let cg = Cgroup::new(&format!("{prefix}be{}", j + 1))?;
            created.cgroups.push(cg.path().to_path_buf());
            backends.push(cg);
        }
        let client_ops = ServerIdOps::load(ServerIdOpsConfig::client().ports(&[topo::VIP_PORT]))?;
        Ok(Cgroups {
            client_ops,
            backends,
            client,
        })
    }
}
