//! Key and certificate generation for the Talos secrets bundle and talosconfig.
//!
//! Profiles (talos.md §5.3, §5.6): Ed25519 OS CA (`O=talos`); ECDSA P-256 etcd
//! (`O=etcd`), Kubernetes (`O=kubernetes`) and aggregator (empty subject) CAs; all
//! CAs with a random 128-bit serial, a 20-byte random SubjectKeyId, no AKI,
//! BasicConstraints CA, KeyUsage DigitalSignature+CertSign, EKU serverAuth+clientAuth,
//! valid 10 years. RSA-4096 service-account key. PEM labels as Talos writes them
//! (crates.md §5.6): `ED25519 PRIVATE KEY` (PKCS#8 inside), `EC PRIVATE KEY` (SEC1),
//! `RSA PRIVATE KEY` (PKCS#1). The admin client certificate: Ed25519, `O=os:admin`,
//! KeyUsage DigitalSignature, EKU clientAuth only, 1 year.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use provisioner_core::talos::secrets::{
    BootstrapSecrets, CertAndKey, Certs, ClusterIdentity, KeyOnly, SecretsBundle, TrustdInfo, pem_field,
};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Why keys or certificates cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A key could not be converted or read.
    #[error("{0}")]
    Key(String),
    /// A bundle field holds no PEM block.
    #[error(transparent)]
    Pem(#[from] provisioner_core::talos::secrets::PemError),
}

/// CA lifetime (`CAValidityTime`, 87600 h).
pub const CA_VALIDITY: Duration = Duration::hours(87_600);
/// talosconfig client certificate lifetime (1 year).
pub const CLIENT_VALIDITY: Duration = Duration::days(365);

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// A Talos token `[a-z0-9]{6}.[a-z0-9]{16}`: bytes ≥ 252 are rejected so `b % 36`
/// is uniform (`secrets/utils.go` `genToken`).
pub fn token() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let pick = |n: usize| {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            let [b] = random::<1>();
            if b < 252 {
                s.push(ALPHABET[usize::from(b % 36)] as char);
            }
        }
        s
    };
    format!("{}.{}", pick(6), pick(16))
}

fn pem(label: &str, der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn b64(s: &str) -> String {
    STANDARD.encode(s.as_bytes())
}

/// A P-256 key in SEC1 (`EC PRIVATE KEY`, RFC 5915) exactly as Go's
/// `x509.MarshalECPrivateKey` writes it: version 1, the 32-byte scalar, the
/// prime256v1 named curve in `[0]` and the uncompressed public point in `[1]`. Go's
/// parser needs the curve parameters, which a PKCS#8-embedded SEC1 key omits.
fn ec_sec1_pem(key: &KeyPair) -> Result<String, PkiError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePrivateKey;
    let sk =
        p256::SecretKey::from_pkcs8_der(key.serialized_der()).map_err(|e| PkiError::Key(e.to_string()))?;
    let scalar = sk.to_bytes();
    let point = sk.public_key().to_encoded_point(false);
    let point = point.as_bytes();
    if scalar.len() != 32 || point.len() != 65 {
        return Err(PkiError::Key("unexpected P-256 key sizes".into()));
    }
    // Fixed-size encoding: every length below is a single byte.
    let mut der = vec![0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];
    der.extend_from_slice(&scalar);
    der.extend_from_slice(&[
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ]);
    der.extend_from_slice(&[0xa1, 0x44, 0x03, 0x42, 0x00]);
    der.extend_from_slice(point);
    debug_assert_eq!(der.len(), 0x77 + 2);
    Ok(pem("EC PRIVATE KEY", der))
}

/// An RSA key in PKCS#1 (`RSA PRIVATE KEY`): the PKCS#8 wrapper's inner key.
fn rsa_pkcs1_pem(key: &KeyPair) -> Result<String, PkiError> {
    let info =
        pkcs8::PrivateKeyInfo::try_from(key.serialized_der()).map_err(|e| PkiError::Key(e.to_string()))?;
    Ok(pem("RSA PRIVATE KEY", info.private_key.to_vec()))
}

/// Talos' Ed25519 label over the same PKCS#8 DER.
fn ed25519_pem(key: &KeyPair) -> String {
    pem("ED25519 PRIVATE KEY", key.serialized_der().to_vec())
}

/// Reads a Talos-labelled private key (any of the four labels) for signing.
pub fn key_from_talos_pem(text: &str) -> Result<KeyPair, PkiError> {
    let p = pem::parse(text).map_err(|e| PkiError::Key(format!("not PEM: {e}")))?;
    let der = p.contents();
    match p.tag() {
        // PKCS#8 under a Talos label, or plain PKCS#8.
        "ED25519 PRIVATE KEY" | "PRIVATE KEY" => KeyPair::try_from(der).map_err(PkiError::from),
        "EC PRIVATE KEY" => {
            use p256::pkcs8::EncodePrivateKey;
            let sk = p256::SecretKey::from_sec1_der(der).map_err(|e| PkiError::Key(e.to_string()))?;
            let pk8 = sk.to_pkcs8_der().map_err(|e| PkiError::Key(e.to_string()))?;
            KeyPair::try_from(pk8.as_bytes()).map_err(PkiError::from)
        }
        "RSA PRIVATE KEY" => KeyPair::try_from(der).map_err(PkiError::from),
        other => Err(PkiError::Key(format!("unsupported key label {other:?}"))),
    }
}

fn ca_params(org: Option<&str>, now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = now;
    p.not_after = now + CA_VALIDITY;
    p.serial_number = Some(serial());
    p.key_identifier_method = KeyIdMethod::PreSpecified(random::<20>().to_vec());
    p
}

/// A random positive 128-bit serial.
fn serial() -> SerialNumber {
    let mut s = random::<16>();
    s[0] &= 0x7f;
    s[0] |= 0x01;
    SerialNumber::from_slice(&s)
}

fn ec_ca(org: Option<&str>, now: OffsetDateTime) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = ca_params(org, now).self_signed(&key)?;
    Ok(CertAndKey {
        crt: b64(&pem("CERTIFICATE", cert.der().to_vec())),
        key: b64(&ec_sec1_pem(&key)?),
    })
}

/// Generates a new bundle for the current contract (secretbox encryption, RSA-4096
/// service-account key), as `talosctl gen secrets` does.
pub fn generate(now: OffsetDateTime) -> Result<SecretsBundle, PkiError> {
    let os_key = KeyPair::generate_for(&PKCS_ED25519)?;
    let os_cert = ca_params(Some("talos"), now).self_signed(&os_key)?;
    let sa = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096)?;
    Ok(SecretsBundle {
        cluster: ClusterIdentity {
            // URL-safe alphabet with padding until the 1.14 contract (talos.md §5.1).
            id: URL_SAFE.encode(random::<32>()),
            secret: STANDARD.encode(random::<32>()),
        },
        secrets: BootstrapSecrets {
            bootstraptoken: token(),
            secretboxencryptionsecret: Some(STANDARD.encode(random::<32>())),
            aescbcencryptionsecret: None,
        },
        trustdinfo: TrustdInfo { token: token() },
        certs: Certs {
            etcd: ec_ca(Some("etcd"), now)?,
            k8s: ec_ca(Some("kubernetes"), now)?,
            // The aggregator CA's subject is empty (talos.md §5.3).
            k8saggregator: ec_ca(None, now)?,
            k8sserviceaccount: KeyOnly {
                key: b64(&rsa_pkcs1_pem(&sa)?),
            },
            os: CertAndKey {
                crt: b64(&pem("CERTIFICATE", os_cert.der().to_vec())),
                key: b64(&ed25519_pem(&os_key)),
            },
        },
    })
}

/// An `os:admin` client certificate and key signed by the bundle's OS CA, as
/// base64-of-PEM strings (crt, key).
pub fn admin_client_cert(s: &SecretsBundle, now: OffsetDateTime) -> Result<(String, String), PkiError> {
    let (_, ca_pem) = pem_field("certs.os.crt", &s.certs.os.crt)?;
    let (_, ca_key_pem) = pem_field("certs.os.key", &s.certs.os.key)?;
    let ca_key = key_from_talos_pem(&ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "os:admin");
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // apid accepts only client certificates whose EKU list is exactly [clientAuth].
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = now;
    p.not_after = now + CLIENT_VALIDITY;
    p.serial_number = Some(serial());
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer)?;
    Ok((
        b64(&pem("CERTIFICATE", cert.der().to_vec())),
        b64(&ed25519_pem(&key)),
    ))
}

/// Checks that every CA certificate parses and that each key belongs to its
/// certificate (public keys compared), and that the service-account key reads.
pub fn check_pairs(s: &SecretsBundle) -> Result<(), PkiError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let c = &s.certs;
    for (name, ck) in [
        ("certs.os", &c.os),
        ("certs.etcd", &c.etcd),
        ("certs.k8s", &c.k8s),
        ("certs.k8saggregator", &c.k8saggregator),
    ] {
        let (_, crt) = pem_field(&format!("{name}.crt"), &ck.crt)?;
        let (_, key) = pem_field(&format!("{name}.key"), &ck.key)?;
        let der = pem::parse(&crt).map_err(|e| PkiError::Key(format!("{name}.crt: {e}")))?;
        let (_, cert) = X509Certificate::from_der(der.contents())
            .map_err(|e| PkiError::Key(format!("{name}.crt: not a certificate: {e}")))?;
        let kp = key_from_talos_pem(&key).map_err(|e| PkiError::Key(format!("{name}.key: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != kp.public_key_raw() {
            return Err(PkiError::Key(format!(
                "{name}: the key does not belong to the certificate"
            )));
        }
    }
    let (_, sa) = pem_field("certs.k8sserviceaccount.key", &c.k8sserviceaccount.key)?;
    key_from_talos_pem(&sa).map_err(|e| PkiError::Key(format!("certs.k8sserviceaccount.key: {e}")))?;
    Ok(())
}
