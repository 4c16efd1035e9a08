//! AES micro-benchmark (issue 22): the own cost of one AES-128 block in an
//! XDP program on this kernel — the crypto kfuncs `bpf_crypto_decrypt` /
//! `bpf_crypto_encrypt` (one context per kernel driver) and the BPF
//! engines — each against the empty XDP program, measured with
//! `BPF_PROG_TEST_RUN` both with repeat 1 (one syscall per packet, caches
//! as `xdp_bench` leaves them) and with a large repeat (warm).
//!
//! Build the BPF object, then run (root):
//! ```text
//! scripts/aes_micro.sh            # builds /tmp/aes_micro.bpf.o and runs this
//! cargo run --release -p flowpin-bpf-progs --example aes_micro -- /tmp/aes_micro.bpf.o [calls] [rounds]
//! ```

use std::os::fd::{AsFd, AsRawFd, RawFd};

use libbpf_rs::libbpf_sys;
use libbpf_rs::ObjectBuilder;

/// One `BPF_PROG_TEST_RUN`: (return value, duration ns per repeat); a
/// syscall program (context, no data) takes repeat 0.
fn test_run(
    fd: RawFd,
    data: Option<&[u8]>,
    ctx: Option<&mut [u8]>,
    repeat: u32,
) -> Result<(u32, u32), String> {
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        repeat: repeat as _,
        ..Default::default()
    };
    if let Some(d) = data {
        opts.data_in = d.as_ptr().cast();
        opts.data_size_in = d.len() as u32;
    }
    if let Some(c) = ctx {
        // A syscall program's context is copied back into ctx_in.
        opts.ctx_in = c.as_mut_ptr().cast();
        opts.ctx_size_in = c.len() as u32;
    }
    // SAFETY: the pointers in `opts` point to live buffers of the stated
    // sizes for the whole call (the kernel copies in and out of them).
    let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd, &mut opts) };
    if rc < 0 {
        return Err(format!(
            "BPF_PROG_TEST_RUN: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok((opts.retval, opts.duration))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: aes_micro <aes_micro.bpf.o> [calls] [rounds]")?;
    let calls: u32 = args.next().map_or(Ok(20_000), |s| s.parse())?;
    let rounds: u32 = args.next().map_or(Ok(5), |s| s.parse())?;
    let algos = ["ecb(aes-fixed-time)", "ecb(aes-generic)"];
    let pkt = vec![0u8; 64];
    let key = [
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 9, 0xcf, 0x4f, 0x3c,
    ];
    for algo in algos {
        let obj = ObjectBuilder::default().open_file(&path)?.load()?;
        let progs: Vec<(String, RawFd)> = obj
            .progs()
            .map(|p| {
                (
                    p.name().to_string_lossy().into_owned(),
                    p.as_fd().as_raw_fd(),
                )
            })
            .collect();
        let prog = |n: &str| {
            progs
                .iter()
                .find(|p| p.0 == n)
                .map(|p| p.1)
                .ok_or_else(|| format!("no program {n}"))
        };
        // struct args { u8 key[16]; char algo[32]; int err; }
        let mut a = vec![0u8; 16 + 32 + 4];
        a[..16].copy_from_slice(&key);
        a[16..16 + algo.len()].copy_from_slice(algo.as_bytes());
        test_run(prog("setup")?, None, Some(&mut a), 0)?;
        let err = i32::from_ne_bytes(a[48..52].try_into()?);
        if err != 0 {
            println!("{algo}: setup failed: {err}");
            continue;
        }
        let names: Vec<String> = progs
            .iter()
            .filter(|p| p.0 != "setup")
            .map(|p| p.0.clone())
            .collect();
        let run = |name: &str, repeat: u32, n: u32| -> Result<f64, Box<dyn std::error::Error>> {
            let p = prog(name)?;
            let mut sum = 0u64;
            for _ in 0..n {
                let (ret, ns) = test_run(p, Some(&pkt), None, repeat)?;
                if ret != 2 {
                    return Err(format!("{name}: returned {ret}").into());
                }
                sum += u64::from(ns);
            }
            Ok(sum as f64 / f64::from(n))
        };
        println!("{algo}: own ns per run (less `empty`), median of {rounds} rounds");
        println!(
            "  {:<16} {:>12} {:>12}",
            "program", "repeat 1", "repeat 1000"
        );
        let mut cold = vec![Vec::new(); names.len()];
        let mut warm = vec![Vec::new(); names.len()];
        for _ in 0..rounds {
            for (i, n) in names.iter().enumerate() {
                cold[i].push(run(n, 1, calls)?);
                warm[i].push(run(n, 1000, (calls / 1000).max(5))?);
            }
        }
        let ie = names.iter().position(|n| n == "empty").ok_or("no empty")?;
        let (ce, we) = (median(cold[ie].clone()), median(warm[ie].clone()));
        println!("  {:<16} {:>12.1} {:>12.1}   (absolute)", "empty", ce, we);
        for (i, n) in names.iter().enumerate() {
            if i != ie {
                println!(
                    "  {n:<16} {:>12.1} {:>12.1}",
                    median(cold[i].clone()) - ce,
                    median(warm[i].clone()) - we
                );
            }
        }
    }
    Ok(())
}
