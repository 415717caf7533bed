//! slipway-bootstrap: what a workload cluster needs before its first machine boots — its certificate authorities
//! and service-account key, an admin kubeconfig, bootstrap tokens that expire, and the cloud-init that turns a
//! plain machine into a kubeadm or k3s node.
//!
//! Pure functions over PEM strings and Kubernetes objects: nothing here talks to a cluster. The controller decides
//! when to call them and stores the results in Secrets named as Cluster API names them (`<cluster>-ca`,
//! `<cluster>-etcd`, `<cluster>-proxy`, `<cluster>-sa`, `<cluster>-kubeconfig`), so tools that read Cluster API
//! clusters work unchanged.

pub mod cloud_init;
mod error;
pub mod kubeconfig;
pub mod node_packages;
pub mod pki;
pub mod secrets;
pub mod token;

pub use error::{Error, Result};
pub use kubeconfig::AdminKubeconfig;
pub use pki::{CertificateAuthority, ClusterPki, ServiceAccountKey};
pub use token::{BootstrapToken, K3sServerToken};
