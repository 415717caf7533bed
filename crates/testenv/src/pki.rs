//! Throw-away certificates for a test control plane: one CA that signs the serving certificate and the client
//! certificates, and a service-account key pair.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::Result;

/// A certificate and its private key, in PEM.
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The certificates of one control plane, written under `dir`.
pub struct Pki {
    pub ca: CertAndKey,
    pub admin: CertAndKey,
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca_cert_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key_file(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn serving_cert_file(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn serving_key_file(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn sa_key_file(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn sa_pub_file(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
}

/// Generates the CA, the apiserver's serving certificate (for 127.0.0.1 and localhost), an admin client certificate
/// in `system:masters`, and a service-account key pair, and writes them into `dir`.
pub fn generate(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir)?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name("slipway-testenv-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = CertAndKey {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec!["localhost".to_string()])?;
    serving.distinguished_name = name("kube-apiserver", None);
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin.distinguished_name = name("slipway-testenv-admin", Some("system:masters"));
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;

    let sa_key = KeyPair::generate()?;

    let pki = Pki {
        ca,
        admin: CertAndKey {
            cert_pem: admin_cert.pem(),
            key_pem: admin_key.serialize_pem(),
        },
        dir: dir.to_path_buf(),
    };
    std::fs::write(pki.ca_cert_file(), &pki.ca.cert_pem)?;
    std::fs::write(pki.ca_key_file(), &pki.ca.key_pem)?;
    std::fs::write(pki.serving_cert_file(), serving_cert.pem())?;
    std::fs::write(pki.serving_key_file(), serving_key.serialize_pem())?;
    std::fs::write(pki.sa_key_file(), sa_key.serialize_pem())?;
    std::fs::write(pki.sa_pub_file(), sa_key.public_key_pem())?;
    Ok(pki)
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}
