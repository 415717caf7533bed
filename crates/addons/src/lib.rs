//! slipway-addons: puts add-on manifest bundles (CNI, cert-manager, external-dns, …) on a *workload* cluster.
//!
//! The steps, each a function the AddonBundle controller calls in turn:
//! [`source::resolve`] the manifest text (inline, a ConfigMap key, or a URL pinned by SHA-256), [`render`] the
//! bundle's `values` into it, [`parse`] it into objects, [`wait_for_api`] until the workload apiserver answers,
//! [`apply`] them by server-side apply in dependency order, check [`readiness`] / [`wait_ready`], and [`prune`]
//! what the previous [`Inventory`] had and the new set dropped.
//!
//! A bundle is tenant input to a manager shared by every team, so the work it causes is bounded: [`render`] refuses
//! output more than 4 times its input or over 16 MiB, [`parse`] refuses more than [`MAX_OBJECTS`] objects, deep
//! nesting and alias bombs, and [`prune`] deletes only objects Slipway's own apply created (their UIDs are in the
//! inventory), never a Namespace still holding objects someone else created.
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

pub use apply::{Applied, ApplyOptions, ApplyReport, MANAGED_BY_LABEL, apply, field_manager};
pub use error::{Error, ObjectFailure, Result};
pub use inventory::{Entry, Inventory, InventoryKey, PruneReport, prune};
pub use manifest::{MAX_OBJECTS, parse};
pub use object_ref::ObjectRef;
pub use readiness::{NotReady, readiness, wait_for_api, wait_ready};
pub use render::{MAX_RENDERED_BYTES, render};
