//! Certificates for a cluster on one machine: a private CA and the certificates it signs,
//! for `tally demo --tls`, `tally certs` and the tests. An operator's own PKI takes its
//! place in a real deployment; the node itself never makes certificates.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Result<Ca, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Ca { cert: params.self_signed(&key)?, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `dns_names` and `ips`, good for serving TLS and for showing
    /// as a client: a node's certificate does both.
    pub fn issue(&self, dns_names: &[String], ips: &[IpAddr]) -> Result<Issued, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        if let Some(name) = dns_names.first() {
            params.distinguished_name.push(DnType::CommonName, name.as_str());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Node `id`'s certificate: its peer name, and the names clients reach it by.
    pub fn issue_node(&self, id: u64, hosts: &[String], ips: &[IpAddr]) -> Result<Issued, rcgen::Error> {
        let mut names = vec![node_name(id)];
        names.extend(hosts.iter().cloned());
        self.issue(&names, ips)
    }
}

/// The DNS name a node's certificate carries (`node-3`), which its peers check, as etcd
/// binds members to names.
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}
