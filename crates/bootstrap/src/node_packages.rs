//! The node software of a kubeadm machine, installed by its user data from the Kubernetes project's package
//! repository (or a mirror of it) at exactly the cluster's version, unless the image has it already.
//!
//! The install is one `runcmd` step, first of all, a fixed script whose inputs (the repository, the version, the
//! key's fingerprint) are its arguments, never part of its text. In order, it:
//!
//! 1. does nothing when `kubeadm version` already says the cluster's version and a kubelet is there (a prebaked
//!    image, e.g. one the Kubernetes image-builder made);
//! 2. downloads the repository's `Release.key` and trusts from it only the key with the Kubernetes project's
//!    fingerprint ([`KUBERNETES_KEY_FINGERPRINT`]), exported by that fingerprint into apt's keyring; without that
//!    key it stops, so a mirror (or anyone between) cannot hand out another key;
//! 3. installs containerd (the image's own distribution package), then kubelet, kubeadm and kubectl at
//!    `<version>-*` (the Kubernetes version exact, any package revision) from that repository, signed by that key,
//!    and holds them, so no unattended upgrade moves them;
//! 4. loads `overlay` and `br_netfilter`, turns on IP forwarding and bridged traffic through iptables (what
//!    kubeadm's preflight and the pod network need), and gives containerd the systemd cgroup driver kubeadm
//!    configures the kubelet for.
//!
//! It expects a Debian or Ubuntu image with `curl` and `gpg` (Ubuntu's cloud images have both).

/// The fingerprint of the key that signs the Kubernetes project's packages (`isv:kubernetes OBS Project`), the
/// same for every minor version's repository.
pub const KUBERNETES_KEY_FINGERPRINT: &str = "DE15B14486CD377B9E876E1A234654DA9A296436";

/// The Kubernetes project's package repositories; one per minor version below it (`/v1.37/deb/`).
pub const DEFAULT_REPOSITORY: &str = "https://pkgs.k8s.io/core:/stable:";

/// Where kubeadm machines get kubelet, kubeadm and kubectl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRepository {
    base: String,
}

impl Default for PackageRepository {
    fn default() -> Self {
        Self {
            base: DEFAULT_REPOSITORY.to_string(),
        }
    }
}

impl PackageRepository {
    /// A mirror of `https://pkgs.k8s.io/core:/stable:` laid out the same way: `<base>/v<major>.<minor>/deb/`
    /// holds the Debian repository and its `Release.key`.
    pub fn new(base: &str) -> Result<Self, String> {
        let base = base.trim_end_matches('/');
        let fix = "give the address under which /v<major>.<minor>/deb/ is found, like https://pkgs.k8s.io/core:/stable:";
        let Some(rest) = base.strip_prefix("https://") else {
            return Err(format!("package repository {base:?} must use https; {fix}"));
        };
        // Only characters a shell, apt's sources.list and a URL all take literally.
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:/@%+".contains(c);
        if rest.is_empty()
            || rest.starts_with('/')
            || !rest.chars().all(allowed)
            || base.len() > 512
        {
            return Err(format!(
                "package repository {base:?} is not a plain https URL of at most 512 characters; {fix}"
            ));
        }
        Ok(Self {
            base: base.to_string(),
        })
    }

    /// The Debian repository of `kubernetes_version`'s minor (`v1.37.2` → `<base>/v1.37/deb/`).
    pub fn for_version(&self, kubernetes_version: &str) -> String {
        let version = kubernetes_version.trim_start_matches('v');
        let minor = version.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
        format!("{}/v{minor}/deb/", self.base)
    }
}

/// The script of the install step; `$1` the repository (with a trailing `/`), `$2` the version without `v`, `$3`
/// the key's fingerprint.
const INSTALL_SCRIPT: &str = r#"set -eu
repo="$1"
version="$2"
fingerprint="$3"
if command -v kubelet >/dev/null 2>&1 && [ "$(kubeadm version -o short 2>/dev/null || true)" = "v$version" ]; then
  echo "slipway: kubeadm and kubelet v$version are on the image; installing nothing"
  exit 0
fi
gnupg="$(mktemp -d)"
curl -fsS --retry 5 "${repo}Release.key" -o "$gnupg/Release.key"
gpg --homedir "$gnupg" --batch --quiet --import "$gnupg/Release.key" 2>/dev/null || true
gpg --homedir "$gnupg" --batch --export "$fingerprint" >"$gnupg/kubernetes.gpg" 2>/dev/null || true
if [ ! -s "$gnupg/kubernetes.gpg" ]; then
  echo "slipway: ${repo}Release.key does not hold the Kubernetes package key ${fingerprint}; installing nothing" >&2
  exit 1
fi
install -d -m 0755 /etc/apt/keyrings
install -m 0644 "$gnupg/kubernetes.gpg" /etc/apt/keyrings/kubernetes.gpg
rm -rf "$gnupg"
echo "deb [signed-by=/etc/apt/keyrings/kubernetes.gpg] $repo /" >/etc/apt/sources.list.d/kubernetes.list
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends containerd "kubelet=${version}-*" "kubeadm=${version}-*" "kubectl=${version}-*"
apt-mark hold kubelet kubeadm kubectl
printf 'overlay\nbr_netfilter\n' >/etc/modules-load.d/kubernetes.conf
modprobe overlay
modprobe br_netfilter
printf 'net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n' >/etc/sysctl.d/90-kubernetes.conf
sysctl --system
mkdir -p /etc/containerd
containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' >/etc/containerd/config.toml
systemctl restart containerd
systemctl enable kubelet
"#;

/// The `runcmd` step that installs the node software of `kubernetes_version` from `repository`.
pub fn install_step(repository: &PackageRepository, kubernetes_version: &str) -> serde_json::Value {
    serde_json::json!([
        "sh",
        "-c",
        INSTALL_SCRIPT,
        "install-node-software",
        repository.for_version(kubernetes_version),
        kubernetes_version.trim_start_matches('v'),
        KUBERNETES_KEY_FINGERPRINT,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_minor_has_its_repository() {
        let default = PackageRepository::default();
        assert_eq!(
            default.for_version("v1.37.2"),
            "https://pkgs.k8s.io/core:/stable:/v1.37/deb/"
        );
        let mirror = PackageRepository::new("https://mirror.example/k8s/core:/stable:/").unwrap();
        assert_eq!(
            mirror.for_version("v1.36.3"),
            "https://mirror.example/k8s/core:/stable:/v1.36/deb/"
        );
    }

    #[test]
    fn a_repository_must_be_a_plain_https_url() {
        for bad in [
            "http://pkgs.k8s.io/core:/stable:",
            "pkgs.k8s.io",
            "https://",
            "https://mirror.example/$(reboot)",
            "https://mirror.example/a b",
            "https://mirror.example/x'y",
        ] {
            let error = PackageRepository::new(bad).unwrap_err();
            assert!(
                error.contains("https://pkgs.k8s.io/core:/stable:"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_step_passes_its_inputs_as_arguments() {
        let step = install_step(&PackageRepository::default(), "v1.37.2");
        let args: Vec<&str> = step
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(args[..2], ["sh", "-c"]);
        assert!(
            !args[2].contains("1.37"),
            "the script is the same for every version"
        );
        assert_eq!(
            args[3..],
            [
                "install-node-software",
                "https://pkgs.k8s.io/core:/stable:/v1.37/deb/",
                "1.37.2",
                KUBERNETES_KEY_FINGERPRINT
            ]
        );
    }

    /// The install step run for real (sh, curl, gpg) against a repository whose `Release.key` holds a key that is
    /// not the Kubernetes project's: it stops before apt is touched.
    #[test]
    fn a_release_key_without_the_kubernetes_key_stops_the_install() {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("gnupg");
        std::fs::create_dir(&home).unwrap();
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg")
                .arg("--homedir")
                .arg(&home)
                .args(["--batch", "--passphrase", ""])
                .args(args)
                .output()
                .expect("gpg");
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        gpg(&[
            "--quick-gen-key",
            "Not Kubernetes <keys@example.invalid>",
            "ed25519",
            "sign",
            "never",
        ]);
        let served = dir.path().join("served");
        std::fs::create_dir_all(served.join("v1.37/deb")).unwrap();
        std::fs::write(
            served.join("v1.37/deb/Release.key"),
            gpg(&["--armor", "--export"]),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "http.server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let repo = format!("http://127.0.0.1:{port}/v1.37/deb/");
        let run = Command::new("sh")
            .args([
                "-c",
                INSTALL_SCRIPT,
                "install-node-software",
                &repo,
                "1.37.2",
                KUBERNETES_KEY_FINGERPRINT,
            ])
            // No kubelet on this PATH: the image has no node software.
            .env("PATH", "/usr/bin:/bin")
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1")
            .output()
            .unwrap();
        let _ = server.kill();
        let _ = server.wait();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("does not hold the Kubernetes package key")
                && stderr.contains(KUBERNETES_KEY_FINGERPRINT),
            "{stderr}"
        );
        assert!(!std::path::Path::new("/etc/apt/sources.list.d/kubernetes.list").exists());
    }
}
