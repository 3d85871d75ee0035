//! TLS for the fake Kubernetes API: a serving certificate for the endpoint's IP issued
//! by the cluster's Kubernetes CA (`certs.k8s` of the secrets bundle, handed over in a
//! 0600 file that is removed once read), and client certificates required to chain
//! to the same CA, as kube-apiserver's `--client-ca-file` does. The kubeconfig the
//! agents hand out carries exactly such a certificate.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use provisioner::pki::talos::key_from_talos_pem;
use provisioner_core::talos::secrets::pem_field;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server configuration for `ip`, from `ca_file`: two lines, the CA certificate
/// and key as base64 of PEM (bundle form). The file is removed once read, so the key
/// does not outlive the start in the lab directory (kept on failure).
pub(crate) fn server_config(ip: IpAddr, ca_file: &std::path::Path) -> Result<Arc<rustls::ServerConfig>> {
    let text = std::fs::read_to_string(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    std::fs::remove_file(ca_file).with_context(|| format!("removing {}", ca_file.display()))?;
    let mut lines = text.lines();
    let (Some(crt), Some(key)) = (lines.next(), lines.next()) else {
        anyhow::bail!(
            "{}: expected two lines (CA certificate, CA key)",
            ca_file.display()
        );
    };
    server_config_from(crt.trim(), key.trim(), ip)
}

/// The server configuration for `ip` from a CA given as base64 of PEM (bundle form).
fn server_config_from(ca_crt_b64: &str, ca_key_b64: &str, ip: IpAddr) -> Result<Arc<rustls::ServerConfig>> {
    let (_, ca_pem) = pem_field("CA certificate", ca_crt_b64).map_err(anyhow::Error::msg)?;
    let (_, ca_key_pem) = pem_field("CA key", ca_key_b64).map_err(anyhow::Error::msg)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, key_from_talos_pem(&ca_key_pem)?)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver");
    p.distinguished_name = dn;
    p.subject_alt_names = vec![SanType::IpAddress(ip)];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer)?;

    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).context("the Kubernetes CA certificate")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?;
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec()), ca],
            PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?,
        )?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use provisioner::cluster::argocd::KubeReadyz;
    use provisioner::cluster::seams::ApiProbe;
    use provisioner::testing::fake_kube::FakeKube;

    use super::*;
    use crate::machine::MachineConfig;

    /// The kubeconfig an agent hands out works against the fake API server with the
    /// appliance's own `/readyz` probe (kube-rs, rustls): server certificate checked
    /// against the Kubernetes CA by IP, client certificate required.
    #[tokio::test]
    async fn the_agents_kubeconfig_reaches_the_tls_fake_api() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let bundle = provisioner::pki::talos::generate(time::OffsetDateTime::now_utc()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = server_config_from(&bundle.certs.k8s.crt, &bundle.certs.k8s.key, addr.ip()).unwrap();
        let kube = FakeKube::start_tls_on(listener, tls).unwrap();
        let config = format!(
            "version: v1alpha1\nmachine:\n  type: controlplane\n  ca: {{crt: {}, key: {}}}\n  network: {{hostname: talos-1}}\n\
             cluster:\n  controlPlane: {{endpoint: 'https://{addr}'}}\n  ca: {{crt: {}, key: {}}}\n",
            bundle.certs.os.crt, bundle.certs.os.key, bundle.certs.k8s.crt, bundle.certs.k8s.key
        );
        let kc = MachineConfig::parse(&config).unwrap().kubeconfig().unwrap();
        KubeReadyz.readyz(&kc).await.unwrap();
        assert!(kube.journal().requests.iter().any(|r| r == "GET /readyz"));

        // Without a client certificate the handshake is refused.
        let text = String::from_utf8(kc).unwrap();
        let mut anonymous: Vec<&str> = text.lines().filter(|l| !l.contains("client-")).collect();
        anonymous.push("    token: not-a-certificate");
        let e = KubeReadyz
            .readyz(anonymous.join("\n").as_bytes())
            .await
            .unwrap_err();
        assert!(
            !e.to_string().contains("kubeconfig"),
            "refused by TLS, not by parsing: {e}"
        );
    }
}
