//! slipway-addons: puts add-on manifest bundles (CNI, cert-manager, external-dns, …) on a *workload* cluster.
//!
//! The steps, each a function the AddonBundle controller calls in turn:
//! [`source::resolve`] the manifest text (inline, a ConfigMap key, or a URL pinned by SHA-256), [`render`] the
//! bundle's `values` into it, [`parse`] it into objects, [`wait_for_api`] until the workload apiserver answers,
//! [`apply`] them by server-side apply in dependency order, check [`readiness`] / [`wait_ready`], and [`prune`]
//! what the previous [`Inventory`] had and the new set dropped.
//!
//! It is not a controller: it keeps no state, watches nothing and writes no status; the caller stores the
//! inventory (see [`inventory::store`]) and decides when to re-apply. It is not a templating engine either: values
//! are plain `${name}` substitutions, and there is no Helm or Kustomize.

mod apply;
mod discovery;
mod error;
pub mod inventory;
mod manifest;
mod object_ref;
mod readiness;
mod render;
pub mod source;

pub use apply::{ApplyOptions, ApplyReport, MANAGED_BY_LABEL, apply};
pub use error::{Error, ObjectFailure, Result};
pub use inventory::{Inventory, PruneReport, prune};
pub use manifest::parse;
pub use object_ref::ObjectRef;
pub use readiness::{NotReady, readiness, wait_for_api, wait_ready};
pub use render::render;
