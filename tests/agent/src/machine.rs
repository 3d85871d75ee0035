//! The parts of a Talos v1alpha1 machine config the agent needs (talos.md §5-§6): the
//! node's hostname and type, the OS CA (`machine.ca`, with its key in control-plane
//! configs, from which apid's server certificate is issued), the cluster endpoint
//! (`cluster.controlPlane.endpoint`) and the Kubernetes CA (`cluster.ca`, key included
//! on control planes) from which the admin kubeconfig is minted, as Talos does.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use provisioner::pki::talos::key_from_talos_pem;
use provisioner::testing::fake_apid::NodeTls;
use provisioner_core::talos::secrets::pem_field;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SanType,
};
use serde_json::Value;

/// What the agent reads from the fetched config.
pub(crate) struct MachineConfig {
    /// `machine.network.hostname`.
    pub(crate) hostname: String,
    /// `machine.type` (`controlplane`, `worker`).
    pub(crate) machine_type: String,
    /// `cluster.controlPlane.endpoint`, e.g. `https://10.77.12.150:6443`.
    pub(crate) endpoint: String,
    os_ca_pem: String,
    os_ca_key_pem: String,
    k8s_ca_pem: String,
    k8s_ca_key_pem: String,
}

impl std::fmt::Debug for MachineConfig {
    /// Never prints the CA key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineConfig")
            .field("hostname", &self.hostname)
            .field("machine_type", &self.machine_type)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

fn str_at<'a>(doc: &'a Value, ptr: &str) -> Result<&'a str> {
    doc.pointer(ptr)
        .and_then(Value::as_str)
        .with_context(|| format!("the machine config has no {ptr}"))
}

impl MachineConfig {
    /// Parses the (possibly multi-document) config; the v1alpha1 document is the one
    /// with a `machine` key.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text)
            // Not the parser's message: it may quote the document, which holds CA keys.
            .map_err(|_| anyhow::anyhow!("the machine config is not YAML"))?;
        let doc = docs
            .iter()
            .find(|d| d.get("machine").is_some())
            .context("no v1alpha1 document (with `machine:`) in the config")?;
        let machine_type = str_at(doc, "/machine/type")?.to_string();
        let (_, os_ca_pem) =
            pem_field("machine.ca.crt", str_at(doc, "/machine/ca/crt")?).map_err(anyhow::Error::msg)?;
        // Worker configs carry the CA certificate only; apid there gets its certificate
        // from trustd, which the lab does not simulate.
        let Ok(key_b64) = str_at(doc, "/machine/ca/key") else {
            bail!("machine.ca.key missing: a {machine_type} config cannot issue apid's certificate here");
        };
        let (_, os_ca_key_pem) = pem_field("machine.ca.key", key_b64).map_err(anyhow::Error::msg)?;
        let (_, k8s_ca_pem) =
            pem_field("cluster.ca.crt", str_at(doc, "/cluster/ca/crt")?).map_err(anyhow::Error::msg)?;
        let (_, k8s_ca_key_pem) =
            pem_field("cluster.ca.key", str_at(doc, "/cluster/ca/key")?).map_err(anyhow::Error::msg)?;
        Ok(Self {
            hostname: str_at(doc, "/machine/network/hostname")?.to_string(),
            machine_type,
            endpoint: str_at(doc, "/cluster/controlPlane/endpoint")?.to_string(),
            os_ca_pem,
            os_ca_key_pem,
            k8s_ca_pem,
            k8s_ca_key_pem,
        })
    }

    /// apid's server certificate, as Talos issues it (Ed25519 key, IP SAN = the node's
    /// address, EKU serverAuth), signed by the OS CA; client certificates must chain to
    /// the same CA.
    pub(crate) fn apid_tls(&self, ip: IpAddr) -> Result<NodeTls> {
        let ca_key = key_from_talos_pem(&self.os_ca_key_pem).context("machine.ca.key")?;
        let issuer = Issuer::from_ca_cert_pem(&self.os_ca_pem, ca_key).context("machine.ca.crt")?;
        let key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.hostname.as_str());
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::IpAddress(ip)];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &issuer)?;
        Ok(NodeTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            client_ca_pem: self.os_ca_pem.clone(),
        })
    }

    /// The admin kubeconfig the `Kubeconfig` call returns, as Talos builds it: the
    /// cluster endpoint, the Kubernetes CA, and a client certificate for
    /// `O=system:masters` signed by that CA (EKU clientAuth, P-256 key).
    pub(crate) fn kubeconfig(&self) -> Result<Vec<u8>> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ca_key = key_from_talos_pem(&self.k8s_ca_key_pem).context("cluster.ca.key")?;
        let issuer = Issuer::from_ca_cert_pem(&self.k8s_ca_pem, ca_key).context("cluster.ca.crt")?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:masters");
        dn.push(DnType::CommonName, "admin");
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &issuer)?;
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {ca}\ncontexts:\n- name: admin@{cluster}\n  context:\n    cluster: {cluster}\n    \
             user: admin@{cluster}\ncurrent-context: admin@{cluster}\nusers:\n- name: admin@{cluster}\n  user:\n    \
             client-certificate-data: {crt}\n    client-key-data: {key}\n",
            cluster = "lab",
            server = self.endpoint,
            ca = b64(&self.k8s_ca_pem),
            crt = b64(&cert.pem()),
            key = b64(&key.serialize_pem()),
        )
        .into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(with_key: bool) -> String {
        let bundle = provisioner::pki::talos::generate(time_now()).unwrap();
        let key = if with_key {
            format!("    key: {}\n", bundle.certs.os.key)
        } else {
            String::new()
        };
        format!(
            "version: v1alpha1\nmachine:\n  type: controlplane\n  ca:\n    crt: {}\n{key}  network:\n    hostname: talos-1\n\
             cluster:\n  controlPlane:\n    endpoint: https://10.77.12.150:6443\n  ca:\n    crt: {}\n    key: {}\n\
             ---\napiVersion: v1alpha1\nkind: Other\n",
            bundle.certs.os.crt, bundle.certs.k8s.crt, bundle.certs.k8s.key
        )
    }

    fn time_now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    #[test]
    fn reads_a_control_plane_config_and_issues_apids_certificate() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mc = MachineConfig::parse(&config(true)).unwrap();
        assert_eq!(mc.hostname, "talos-1");
        assert_eq!(mc.machine_type, "controlplane");
        let tls = mc.apid_tls("10.77.12.151".parse().unwrap()).unwrap();
        assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{mc:?}").contains("PRIVATE"));
        let kc = String::from_utf8(mc.kubeconfig().unwrap()).unwrap();
        assert!(kc.contains("server: https://10.77.12.150:6443"), "{kc}");
        assert!(kc.contains("client-key-data: "), "{kc}");
    }

    #[test]
    fn a_config_without_the_ca_key_is_refused_clearly() {
        let e = MachineConfig::parse(&config(false)).unwrap_err();
        assert!(format!("{e:#}").contains("machine.ca.key missing"), "{e:#}");
    }
}
