//! The HTTP client every outbound fetch of the manager goes through.
//!
//! The address policy is enforced where the connection is made, not before it: host names are resolved by
//! [`PolicyResolver`], which hands reqwest only addresses the policy allows and fails the connection otherwise,
//! so a name that resolves to a public address when checked and to 169.254.169.254 when connected (DNS
//! rebinding) is still refused. A URL whose host is an IP address is never resolved (hyper connects to it
//! directly), so [`HttpClient::request`] checks it before a request exists, and the redirect policy checks
//! every redirect target.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, Url};

use crate::policy::{AddressClass, EgressPolicy};

/// Redirects followed per request at most (all within one origin).
pub const MAX_REDIRECTS: usize = 10;

/// Why the manager did not connect, or stopped reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error(
        "refused to connect to {}{address} ({class}): the manager reaches loopback, link-local, private, reserved and Service-range addresses only inside a CIDR allowed with `slipway manager --allow-egress` (for this one: --allow-egress {})",
        resolved_from(host, address),
        host_cidr(address)
    )]
    AddressRefused {
        /// The host as the URL names it.
        host: String,
        address: IpAddr,
        class: AddressClass,
    },

    #[error(
        "refused a redirect from {from} to {to}: only redirects within the same scheme, host and port are followed"
    )]
    RedirectLeavesOrigin { from: String, to: String },

    #[error("more than {max} redirects")]
    TooManyRedirects { max: usize },

    #[error("{scheme}: URLs are not fetched; only http:// and https:// are")]
    Scheme { scheme: String },

    #[error("the URL names no host")]
    NoHost,

    #[error("the answer is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
}

fn resolved_from(host: &str, address: &IpAddr) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(literal) if literal == *address => String::new(),
        _ => format!("{host}, which resolves to "),
    }
}

fn host_cidr(address: &IpAddr) -> String {
    match address {
        IpAddr::V4(_) => format!("{address}/32"),
        IpAddr::V6(_) => format!("{address}/128"),
    }
}

/// An error and its causes on one line: reqwest's own message says little ("error sending request").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The egress refusal inside a reqwest error (from the resolver or the redirect policy), if it is one.
pub fn refusal(error: &reqwest::Error) -> Option<&EgressError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(refused) = current.downcast_ref::<EgressError>() {
            return Some(refused);
        }
        cause = current.source();
    }
    None
}

/// `scheme://host:port` of a URL: what redirect and refusal messages show, never a path, query or user info.
pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl EgressPolicy {
    /// Checks what can be checked of `url` before connecting: the scheme, and the host when it is an IP address.
    /// Host names are checked when they are resolved, by the client's resolver.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressError::Scheme {
                scheme: url.scheme().to_string(),
            });
        }
        let address = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(EgressError::NoHost),
        };
        self.check_address(url.host_str().unwrap_or_default(), address)
    }

    /// Checks one address `host` stands for.
    pub fn check_address(&self, host: &str, address: IpAddr) -> Result<(), EgressError> {
        match self.refusal(address) {
            None => Ok(()),
            Some(class) => Err(EgressError::AddressRefused {
                host: host.to_string(),
                address,
                class,
            }),
        }
    }
}

/// Resolves host names with the system resolver and fails unless every address is allowed: a name with one
/// refused address is refused whole, so which address hyper happens to try first makes no difference.
struct PolicyResolver {
    policy: Arc<EgressPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for address in &addresses {
                policy.check_address(&host, address.ip())?;
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// Follows a redirect only within the origin (scheme, host, port) of the request's first URL, at most
/// [`MAX_REDIRECTS`] times. A redirect elsewhere fails the request before anything is sent there.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(EgressError::TooManyRedirects { max: MAX_REDIRECTS });
        }
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        if attempt.url().origin() == first.origin() {
            attempt.follow()
        } else {
            let refused = EgressError::RedirectLeavesOrigin {
                from: origin_of(first),
                to: origin_of(attempt.url()),
            };
            attempt.error(refused)
        }
    })
}

/// How long a client waits, and whether it checks certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Until the TCP (and TLS) connection stands.
    pub connect_timeout: Duration,
    /// The whole request, from connecting to the last byte of the body.
    pub timeout: Duration,
    /// Accept any server certificate (a BMC's `disableCertificateVerification`).
    pub accept_invalid_certificates: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            accept_invalid_certificates: false,
        }
    }
}

/// An HTTP client bound to an [`EgressPolicy`]: connects only to allowed addresses, follows redirects only
/// within one origin, times out, and ignores `HTTP(S)_PROXY` (a proxy would resolve names where the policy
/// cannot see them). Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl HttpClient {
    /// Fails only when the TLS backend cannot start.
    pub fn new(policy: EgressPolicy, settings: &ClientSettings) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .tls_danger_accept_invalid_certs(settings.accept_invalid_certificates)
            .redirect(same_origin_redirects())
            .dns_resolver(Arc::new(PolicyResolver {
                policy: policy.clone(),
            }))
            .no_proxy()
            .build()?;
        Ok(Self { http, policy })
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// A request to `url`, or why the policy refuses it before connecting.
    pub fn request(
        &self,
        method: Method,
        url: Url,
    ) -> Result<reqwest::RequestBuilder, EgressError> {
        self.policy.check_url(&url)?;
        Ok(self.http.request(method, url))
    }

    pub fn get(&self, url: Url) -> Result<reqwest::RequestBuilder, EgressError> {
        self.request(Method::GET, url)
    }
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    TooLarge(EgressError),
    #[error("reading the answer: {0}")]
    Read(#[source] reqwest::Error),
}

/// Reads `response`'s body, refusing it (without reading on) once it is longer than `limit` bytes; a declared
/// `Content-Length` over the limit is refused before the first byte.
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let too_large = || BodyError::TooLarge(EgressError::BodyTooLarge { limit });
    if response
        .content_length()
        .is_some_and(|declared| declared > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
