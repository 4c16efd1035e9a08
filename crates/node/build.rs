//! Build information for `flowpin-node --version`: the git commit (if the
//! source is a git checkout and `git` is installed), the target and the
//! profile. Nothing else is generated.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let commit = if dirty && commit != "unknown" {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=FLOWPIN_GIT_COMMIT={commit}");
    for var in ["TARGET", "PROFILE"] {
        let v = std::env::var(var).unwrap_or_else(|_| "unknown".into());
        println!("cargo:rustc-env=FLOWPIN_BUILD_{var}={v}");
    }
    // Re-run when HEAD moves (a commit, a checkout) or the source changes.
    for p in ["HEAD", "index"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &r]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-env-changed=FLOWPIN_GIT_COMMIT");
}
