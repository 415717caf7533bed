//! Upstream add-on manifests for tests, never copied into the repository: fetched from their pinned upstream URLs,
//! checked against their sha256 and cached under `<cache>/addons/`, or read from a local mirror directory when
//! `SLIPWAY_ADDONS_MIRROR` names one (machines without internet; CI points it at its fixtures). Either way a file
//! whose digest is not the pinned one is refused.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::cache_dir;

/// The variable naming a mirror directory laid out as `<addon>/<version>/<file>`.
pub const MIRROR_VARIABLE: &str = "SLIPWAY_ADDONS_MIRROR";

/// One upstream file: where tests find it in a mirror (`path`), where it is published, and its digest.
#[derive(Debug, Clone, Copy)]
pub struct PinnedManifest {
    pub path: &'static str,
    pub url: &'static str,
    pub sha256: &'static str,
}

/// Every upstream manifest the tests use: those of `config/addons/` with the same URLs and digests (a test holds
/// the two together), and external-dns's DNSEndpoint CRD.
pub const PINNED: &[PinnedManifest] = &[
    PinnedManifest {
        path: "flannel/v0.28.9/kube-flannel.yml",
        url: "https://raw.githubusercontent.com/flannel-io/flannel/v0.28.9/Documentation/kube-flannel.yml",
        sha256: "e875824be2f552b45711dbda91af81b17eb961d00025d914d9fef18fad8f09c0",
    },
    PinnedManifest {
        path: "cert-manager/v1.19.4/cert-manager.yaml",
        url: "https://github.com/cert-manager/cert-manager/releases/download/v1.19.4/cert-manager.yaml",
        sha256: "abad40873bd9c63105bf1fc7c41354fe8ad716f01657762b5acb82977e707ef1",
    },
    PinnedManifest {
        path: "external-dns/v0.22.0/external-dns-serviceaccount.yaml",
        url: "https://raw.githubusercontent.com/kubernetes-sigs/external-dns/9d4616c13f98c474b14e78e15ca269df79743c17/kustomize/external-dns-serviceaccount.yaml",
        sha256: "a0daf3d8a90132d50ad8151c98a9edb5811677481adf3dd28916aaf9581f0af7",
    },
    PinnedManifest {
        path: "external-dns/v0.22.0/external-dns-clusterrole.yaml",
        url: "https://raw.githubusercontent.com/kubernetes-sigs/external-dns/9d4616c13f98c474b14e78e15ca269df79743c17/kustomize/external-dns-clusterrole.yaml",
        sha256: "66bdbcb9e55501891b20633cb9c01d930e32e3df3823a98601a63bb4232224bb",
    },
    PinnedManifest {
        path: "external-dns/v0.22.0/external-dns-clusterrolebinding.yaml",
        url: "https://raw.githubusercontent.com/kubernetes-sigs/external-dns/9d4616c13f98c474b14e78e15ca269df79743c17/kustomize/external-dns-clusterrolebinding.yaml",
        sha256: "9741c2cbb929c2048848493ae985dba064a78eeef92e7e6b9b033faa2c8361e7",
    },
    PinnedManifest {
        path: "external-dns/v0.22.0/external-dns-deployment.yaml",
        url: "https://raw.githubusercontent.com/kubernetes-sigs/external-dns/9d4616c13f98c474b14e78e15ca269df79743c17/kustomize/external-dns-deployment.yaml",
        sha256: "ad9f94d059478cf9b3ca945737323b14fb5288195062ab866d1ff8a9f394898a",
    },
    PinnedManifest {
        path: "external-dns/v0.22.0/dnsendpoints.externaldns.k8s.io.yaml",
        url: "https://raw.githubusercontent.com/kubernetes-sigs/external-dns/9d4616c13f98c474b14e78e15ca269df79743c17/config/crd/standard/dnsendpoints.externaldns.k8s.io.yaml",
        sha256: "7d1c06b1e991c8db3a70be658fb628e61e71ba72f2686469c276f4f6ab0d1e30",
    },
];

fn pinned(path: &str) -> &'static PinnedManifest {
    PINNED.iter().find(|p| p.path == path).unwrap_or_else(|| {
        panic!("no pinned upstream manifest {path}: add its URL and sha256 to slipway_testenv::addons::PINNED")
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The text of the pinned upstream manifest `path` (`<addon>/<version>/<file>`): from `SLIPWAY_ADDONS_MIRROR`
/// when set, else from the cache, else downloaded from its URL into the cache. Panics with what to do when it
/// cannot be had or its digest is not the pinned one. Blocking (a download runs on a thread of its own), so it
/// serves sync and async tests and request handlers alike.
pub fn addon_manifest(path: &str) -> String {
    let pin = pinned(path);
    let (bytes, from) = match std::env::var_os(MIRROR_VARIABLE) {
        Some(mirror) => {
            let file = PathBuf::from(mirror).join(path);
            let bytes = std::fs::read(&file).unwrap_or_else(|e| {
                panic!("{MIRROR_VARIABLE}: reading {}: {e}; the mirror is laid out as <addon>/<version>/<file>", file.display())
            });
            (bytes, file.display().to_string())
        }
        None => cached_or_downloaded(pin),
    };
    let digest = sha256_hex(&bytes);
    assert_eq!(
        digest, pin.sha256,
        "{from}: sha256 {digest} is not the pinned {} of {}",
        pin.sha256, pin.url
    );
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("{from} is not UTF-8: {e}"))
}

fn cached_or_downloaded(pin: &'static PinnedManifest) -> (Vec<u8>, String) {
    let file = cache_dir().join("addons").join(pin.path);
    if let Ok(bytes) = std::fs::read(&file)
        && sha256_hex(&bytes) == pin.sha256
    {
        return (bytes, file.display().to_string());
    }
    let failed = |e: String| -> ! {
        panic!(
            "downloading {} failed: {e}; without internet, set {MIRROR_VARIABLE} to a directory holding {}",
            pin.url, pin.path
        )
    };
    let bytes = std::thread::spawn(move || download(pin.url))
        .join()
        .expect("the download thread does not panic")
        .unwrap_or_else(|e| failed(e));
    if sha256_hex(&bytes) == pin.sha256 {
        // Written under a temporary name and renamed, so a parallel test never reads half a file.
        let parent = file.parent().expect("a cache path has a parent");
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        let partial = file.with_extension(format!("partial-{}", std::process::id()));
        std::fs::write(&partial, &bytes)
            .unwrap_or_else(|e| panic!("writing {}: {e}", partial.display()));
        std::fs::rename(&partial, &file)
            .unwrap_or_else(|e| panic!("renaming to {}: {e}", file.display()));
    }
    (bytes, pin.url.to_string())
}

/// One GET on a runtime of its own: callers may be inside another runtime, which must not be blocked on.
fn download(url: &str) -> Result<Vec<u8>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let response = reqwest::get(url).await.map_err(|e| e.to_string())?;
        let response = response.error_for_status().map_err(|e| e.to_string())?;
        Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::PINNED;

    /// The default bundles and the tests fetch the same files: every URL and digest in `config/addons/` is pinned
    /// here, and each pin's mirror path ends in its URL's file name.
    #[test]
    fn the_pins_are_those_of_the_default_bundles() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/addons");
        let mut bundles = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
            for document in documents {
                let url = &document["spec"]["source"]["url"];
                bundles.push((
                    url["url"].as_str().unwrap().to_string(),
                    url["sha256"].as_str().unwrap().to_string(),
                ));
            }
        }
        assert_eq!(bundles.len(), 6, "{bundles:?}");
        for (url, sha256) in &bundles {
            let pin = PINNED
                .iter()
                .find(|p| p.url == url)
                .unwrap_or_else(|| panic!("{url} is not pinned"));
            assert_eq!(&pin.sha256, sha256, "{url}");
        }
        for pin in PINNED {
            let file = pin.path.rsplit('/').next().unwrap();
            assert!(pin.url.ends_with(file), "{} is not {}", pin.url, pin.path);
        }
    }
}
