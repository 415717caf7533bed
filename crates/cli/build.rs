//! Build facts for `slipway version`: the git commit the binary was built from and the Kubernetes versions its
//! tests run against (`hack/versions.env`).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rustc-env=SLIPWAY_GIT_COMMIT={}", git_commit());
    let versions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/versions.env");
    println!("cargo:rerun-if-changed={}", versions.display());
    let text =
        std::fs::read_to_string(&versions).expect("hack/versions.env is part of the repository");
    for key in ["KUBERNETES_VERSION", "KUBERNETES_PREVIOUS_VERSION"] {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("hack/versions.env has no {key}"))
            .trim();
        println!("cargo:rustc-env=SLIPWAY_{key}={value}");
    }
}

/// `SLIPWAY_GIT_COMMIT` when set (a build from a source archive, or an image build that passes it on), else the
/// commit of the work tree, else "unknown". The commit is read again when HEAD or the branch it names moves.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=SLIPWAY_GIT_COMMIT");
    if let Ok(commit) = std::env::var("SLIPWAY_GIT_COMMIT") {
        return commit;
    }
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(file) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={file}");
    }
    git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
