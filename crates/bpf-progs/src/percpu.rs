//! Reading per-CPU counters (`BPF_MAP_TYPE_PERCPU_ARRAY` values made of
//! `u64` counters): one `lookup_percpu`, summed over CPUs. Shared by the
//! control modules so each reports failures in its own error type.

use libbpf_rs::{MapCore, MapFlags, MapHandle};

/// Why reading per-CPU counters failed.
#[derive(Debug)]
pub(crate) enum PercpuError {
    /// `lookup_percpu` failed (libbpf's error carries the errno).
    Lookup(libbpf_rs::Error),
    /// A CPU's value is shorter than the counters asked for: the program and
    /// the Rust API are out of sync.
    Short {
        /// Bytes the kernel returned for one CPU.
        got: usize,
        /// Bytes needed (`8 * counters`).
        want: usize,
    },
}

/// Writes into `out` the sum over all CPUs of the value at `key` of the
/// per-CPU map `map`, read as `out.len()` native-endian `u64` counters
/// (wrapping add). A missing key reads as zeros.
pub(crate) fn sum_u64_counters(
    map: &MapHandle,
    key: u32,
    out: &mut [u64],
) -> Result<(), PercpuError> {
    out.fill(0);
    let want = out.len() * 8;
    let per_cpu = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .map_err(PercpuError::Lookup)?
        .unwrap_or_default();
    for cpu in per_cpu {
        let Some(bytes) = cpu.get(..want) else {
            return Err(PercpuError::Short {
                got: cpu.len(),
                want,
            });
        };
        for (total, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *total = total.wrapping_add(u64::from_ne_bytes(b));
        }
    }
    Ok(())
}
