//! slipway-egress: what the manager may reach over HTTP.
//!
//! Add-on URLs and BMC addresses are written by tenants, and a BMC names further links itself; the manager
//! fetches them from inside the management cluster's network, with its own credentials at hand. Everything it
//! fetches goes through an [`HttpClient`] made here, which
//! - connects only to addresses the [`EgressPolicy`] allows: the public internet, plus the CIDRs an operator
//!   gave with `slipway manager --allow-egress`; loopback, link-local (cloud metadata), private, reserved and
//!   the Service range (`--service-cidr`) are refused. The check is made on the addresses a name resolves to,
//!   at connect time, so DNS cannot swap in another address after the check;
//! - follows redirects only within the origin (scheme, host, port) it was sent to;
//! - times out (connect and total) and, with [`read_body`], reads at most a given number of bytes;
//! - ignores `HTTP_PROXY`/`HTTPS_PROXY`.
//!
//! Not here: the manager's Kubernetes clients (the management cluster from its kubeconfig or ServiceAccount;
//! workload clusters from the credentials Slipway wrote) and the AWS SDK (an endpoint from a manager flag); and
//! which links a protocol may follow beyond redirects (the Redfish client keeps to the BMC's origin itself).

mod client;
mod policy;

pub use client::{
    BodyError, ClientSettings, EgressError, HttpClient, MAX_REDIRECTS, error_chain, origin_of,
    read_body, refusal,
};
pub use ipnet::IpNet;
pub use policy::{AddressClass, DEFAULT_SERVICE_CIDR, EgressPolicy, parse_cidr};
