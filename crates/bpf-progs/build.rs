//! Compiles the BPF program of every enabled feature into a libbpf-rs
//! skeleton `$OUT_DIR/<name>.skel.rs` (never committed), and writes
//! `$OUT_DIR/skels.rs` with one module per compiled program.
//!
//! | feature | program (`src/bpf/<name>.bpf.c`) |
//! |---|---|
//! | `xdp-lb` | `xdp_lb` |
//! | `xdp-decap` | `xdp_decap` |
//! | `xdp-pass` | `xdp_pass` |
//! | `xdp-reflect` | `xdp_reflect` (bench loop; not a default feature) |
//! | `xdp-flood` | `xdp_flood` (the lab's flood loop; not a default feature) |
//! | `sockops` | `sockops_server_id` |
//! | `reuseport` | `sk_reuseport_select` |
//! | `sk-lookup` | `sk_lookup` |
//! | `probe-encap` | `probe_encap` (health probes through the tunnel) |
//!
//! The headers shared with Rust come from `flowpin-bpf-abi`: its build
//! script hands their directory over as `DEP_FLOWPIN_BPF_ABI_INCLUDE`
//! (`links = "flowpin_bpf_abi"`), never a path relative to this crate.
//! Program-private headers are in `src/bpf`.
//!
//! clang is looked up in `$FLOWPIN_CLANG`, then `clang`, `clang-19` ...
//! `clang-14` on `$PATH`. A missing clang is a build error that names the
//! packages to install.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const CLANG_CANDIDATES: &[&str] = &[
    "clang", "clang-21", "clang-20", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15",
    "clang-14",
];

fn clang_works(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn find_clang() -> PathBuf {
    println!("cargo:rerun-if-env-changed=FLOWPIN_CLANG");
    if let Ok(c) = env::var("FLOWPIN_CLANG") {
        if clang_works(&c) {
            return PathBuf::from(c);
        }
        panic!(
            "FLOWPIN_CLANG={c} does not run (`{c} --version` failed); point it at a working clang"
        );
    }
    for c in CLANG_CANDIDATES {
        if clang_works(c) {
            return PathBuf::from(c);
        }
    }
    panic!(
        "\n\nflowpin-bpf-progs needs clang to compile its BPF programs and none was found \
         (tried $FLOWPIN_CLANG and {CLANG_CANDIDATES:?}).\n\
         Install it: apt-get update && apt-get install -y clang-19 llvm-19 libelf-dev zlib1g-dev pkg-config\n\
         or run ./scripts/setup.sh, or set FLOWPIN_CLANG=/path/to/clang.\n\
         (Every program feature of flowpin-bpf-progs needs it, so do the facade's `bpf`, `xdp-lb`, `xdp-decap`, `sockops`, `sk-reuseport` and `sk-lookup`; flowpin-maglev, flowpin-tcp-opt and flowpin-bpf-abi do not.)\n\n"
    );
}

/// Every program: its `src/bpf/<name>.bpf.c` and the Cargo feature that
/// compiles it (as `CARGO_FEATURE_<FEATURE>`).
const PROGRAMS: &[(&str, &str)] = &[
    ("probe_encap", "PROBE_ENCAP"),
    ("sk_lookup", "SK_LOOKUP"),
    ("sk_reuseport_select", "REUSEPORT"),
    ("sockops_server_id", "SOCKOPS"),
    ("xdp_decap", "XDP_DECAP"),
    ("xdp_flood", "XDP_FLOOD"),
    ("xdp_lb", "XDP_LB"),
    ("xdp_pass", "XDP_PASS"),
    ("xdp_reflect", "XDP_REFLECT"),
];

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir = manifest.join("src/bpf");
    // The headers shared with Rust (single source of truth of the layouts),
    // included as <flowpin/<name>.h>.
    let abi_include = PathBuf::from(env::var_os("DEP_FLOWPIN_BPF_ABI_INCLUDE").expect(
        "flowpin-bpf-abi sets DEP_FLOWPIN_BPF_ABI_INCLUDE (links = \"flowpin_bpf_abi\"); \
         is it a normal dependency of this crate?",
    ));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let (target_arch_define, multiarch) = match arch.as_str() {
        "x86_64" => ("__TARGET_ARCH_x86", "x86_64-linux-gnu"),
        "aarch64" => ("__TARGET_ARCH_arm64", "aarch64-linux-gnu"),
        other => panic!("unsupported target arch {other} for BPF UAPI headers"),
    };

    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-changed={}", abi_include.display());
    let abi_headers = abi_include.join("flowpin");
    for dir in [&bpf_dir, &abi_headers] {
        for entry in std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .flatten()
        {
            println!("cargo:rerun-if-changed={}", entry.path().display());
        }
    }

    // Every program in src/bpf has a feature, and the other way round.
    let mut on_disk: Vec<String> = std::fs::read_dir(&bpf_dir)
        .expect("src/bpf exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|f| f.strip_suffix(".bpf.c"))
                .map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let known: Vec<&str> = PROGRAMS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        on_disk, known,
        "src/bpf/*.bpf.c and build.rs's PROGRAMS differ: give every program a feature"
    );

    let enabled: Vec<&str> = PROGRAMS
        .iter()
        .filter(|(_, feature)| env::var_os(format!("CARGO_FEATURE_{feature}")).is_some())
        .map(|(name, _)| *name)
        .collect();

    let mut skels = String::from(
        "// Generated by build.rs: one module per program compiled (its feature is on).\n",
    );
    for name in &enabled {
        skels.push_str(&format!(
            "/// Skeleton generated from `src/bpf/{name}.bpf.c`.\npub mod {name} {{\n    include!(concat!(env!(\"OUT_DIR\"), \"/{name}.skel.rs\"));\n}}\n"
        ));
    }
    std::fs::write(out.join("skels.rs"), skels).expect("write skels.rs");
    if enabled.is_empty() {
        return;
    }

    let clang = find_clang();
    for name in enabled {
        let src = bpf_dir.join(format!("{name}.bpf.c"));
        let skel = out.join(format!("{name}.skel.rs"));
        let args = vec![
            "-O2".to_string(),
            "-g".to_string(),
            "-Wall".to_string(),
            "-Werror".to_string(),
            format!("-D{target_arch_define}"),
            format!("-I{}", bpf_dir.display()),
            format!("-I{}", abi_include.display()),
            format!("-I/usr/include/{multiarch}"),
        ];
        SkeletonBuilder::new()
            .source(&src)
            .clang(&clang)
            .clang_args(args)
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building BPF program {}: {e:#}", display(&src)));
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
