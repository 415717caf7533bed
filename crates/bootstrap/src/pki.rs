//! A cluster's certificate authorities and service-account key pair.

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How long a cluster's CAs are valid: as kubeadm makes them.
pub const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(10 * 365 * 24);

/// A CA certificate and its private key, in PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateAuthority {
    pub cert_pem: String,
    pub key_pem: String,
}

// Never print key material, not even in a debug log.
impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A key pair for signing service-account tokens, in PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountKey {
    pub public_pem: String,
    pub private_pem: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("private_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Everything kubeadm keeps in `/etc/kubernetes/pki` that must be the same on every control-plane machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPki {
    pub ca: CertificateAuthority,
    pub etcd: CertificateAuthority,
    pub front_proxy: CertificateAuthority,
    pub service_account: ServiceAccountKey,
}

impl ClusterPki {
    pub fn generate(cluster_name: &str) -> Result<Self> {
        Ok(Self {
            ca: CertificateAuthority::generate(&format!("{cluster_name}-ca"))?,
            etcd: CertificateAuthority::generate(&format!("{cluster_name}-etcd-ca"))?,
            front_proxy: CertificateAuthority::generate(&format!("{cluster_name}-front-proxy-ca"))?,
            service_account: ServiceAccountKey::generate()?,
        })
    }
}

impl ServiceAccountKey {
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate()?;
        Ok(Self {
            public_pem: key.public_key_pem(),
            private_pem: key.serialize_pem(),
        })
    }
}

pub(crate) fn rcgen_time(t: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .expect("a timestamp within rcgen's range")
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

impl CertificateAuthority {
    /// A new self-signed CA named `common_name`, valid for [`CA_VALIDITY`].
    pub fn generate(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = Timestamp::now();
        params.not_before = rcgen_time(now - SignedDuration::from_mins(5));
        params.not_after = rcgen_time(now + CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }

    /// Signs a leaf certificate for `common_name` (in `organization`, for client certificates that carry a
    /// group), valid from `not_before` to `not_after`; returns the certificate and its new key in PEM.
    pub fn sign(&self, leaf: Leaf<'_>) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(leaf.common_name, leaf.organization);
        for host in leaf.hosts {
            params.subject_alt_names.push(match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.to_string().try_into()?),
            });
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = leaf.usages.to_vec();
        params.not_before = rcgen_time(leaf.not_before);
        params.not_after = rcgen_time(leaf.not_after);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// `sha256:<hex>` of the CA's public key, as kubeadm's `--discovery-token-ca-cert-hash` expects.
    pub fn public_key_hash(&self) -> Result<String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(self.cert_pem.as_bytes()).map_err(|e| {
            Error::InvalidSecret {
                secret: "CA certificate".into(),
                what: format!("not a PEM certificate: {e}"),
            }
        })?;
        let cert = pem.parse_x509().map_err(|e| Error::InvalidSecret {
            secret: "CA certificate".into(),
            what: format!("not an X.509 certificate: {e}"),
        })?;
        Ok(format!(
            "sha256:{}",
            hex::encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw))
        ))
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy)]
pub struct Leaf<'a> {
    pub common_name: &'a str,
    pub organization: Option<&'a str>,
    /// DNS names and IP addresses (subject alternative names).
    pub hosts: &'a [&'a str],
    pub usages: &'a [ExtendedKeyUsagePurpose],
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

pub use rcgen::ExtendedKeyUsagePurpose as Usage;
