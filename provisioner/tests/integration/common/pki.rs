//! Test PKI shaped like a Talos cluster's (talos.md §5.3, §5.6, §9.2): an Ed25519 OS
//! CA, apid server certificates with the node IP as SAN, and client certificates with
//! a chosen O and EKU. Generated fresh per test; never written to the repository.

use std::net::IpAddr;

use provisioner::os::talos::api::ClusterIdentity;
use provisioner::testing::fake_apid::NodeTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, SanType,
};

pub struct OsCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl OsCa {
    pub fn new() -> Self {
        crate::common::crypto();
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::OrganizationName, "talos");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = p.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// The OS CA of a cluster's secrets bundle (so the appliance's own identity
    /// minted from that bundle is accepted by the fake apid).
    pub fn from_bundle(b: &provisioner_core::talos::SecretsBundle) -> Self {
        use provisioner_core::talos::secrets::pem_field;
        crate::common::crypto();
        let (_, pem) = pem_field("os crt", &b.certs.os.crt).unwrap();
        let (_, key_pem) = pem_field("os key", &b.certs.os.key).unwrap();
        let key = provisioner::pki::talos::key_from_talos_pem(&key_pem).unwrap();
        Self {
            issuer: Issuer::from_ca_cert_pem(&pem, key).unwrap(),
            pem,
        }
    }

    /// apid's server certificate: Ed25519, SAN = node IP, EKU serverAuth.
    pub fn node_tls(&self, ip: IpAddr) -> NodeTls {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, format!("node-{ip}"));
        p.subject_alt_names = vec![SanType::IpAddress(ip)];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        NodeTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            client_ca_pem: self.pem.clone(),
        }
    }

    /// A client identity with subject O=`org` and these EKUs. The key is labelled
    /// `ED25519 PRIVATE KEY`, as in a talosconfig.
    pub fn client(&self, org: &str, ekus: Vec<ExtendedKeyUsagePurpose>) -> ClusterIdentity {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::OrganizationName, org);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = ekus;
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        ClusterIdentity {
            os_ca_pem: self.pem.clone(),
            client_cert_pem: cert.pem(),
            client_key_pem: key
                .serialize_pem()
                .replace("BEGIN PRIVATE KEY", "BEGIN ED25519 PRIVATE KEY")
                .replace("END PRIVATE KEY", "END ED25519 PRIVATE KEY"),
        }
    }

    /// The appliance's talosconfig identity: O=os:admin, EKU clientAuth only.
    pub fn admin(&self) -> ClusterIdentity {
        self.client("os:admin", vec![ExtendedKeyUsagePurpose::ClientAuth])
    }
}
