//! The Talos secrets bundle: generated certificates and keys have Talos' profiles
//! (checked by parsing them), talosconfig's client certificate is what apid accepts,
//! a talosctl bundle imports and re-exports identically (plain and SOPS+age), and
//! the store keeps bundles encrypted at rest.

use std::path::{Path, PathBuf};

use ::time::OffsetDateTime;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use provisioner::os::talos::{import_bundle, sops, talosconfig};
use provisioner::pki::talos as pki;
use provisioner::store::RedbSecretStore;
use provisioner_core::talos::SecretsBundle;
use provisioner_core::talos::secrets::{is_token, pem_field};
use provisioner_core::talos::store::{MemSecretStore, SecretStore, battery};
use x509_parser::prelude::*;

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("PROVISIONER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    if dir.join("talos/v1.11/gen-secrets.yaml").is_file() {
        Some(dir)
    } else {
        println!(
            "SKIPPED: no Talos fixtures at {} (set PROVISIONER_FIXTURES)",
            dir.display()
        );
        None
    }
}

/// One generated bundle shared by the tests (RSA-4096 generation takes seconds).
fn shared() -> &'static SecretsBundle {
    static B: std::sync::OnceLock<SecretsBundle> = std::sync::OnceLock::new();
    B.get_or_init(|| pki::generate(OffsetDateTime::now_utc()).unwrap())
}

fn der_of(b64: &str) -> (String, Vec<u8>) {
    let (label, text) = pem_field("field", b64).unwrap();
    (label, ::pem::parse(text).unwrap().into_contents())
}

const OID_ED25519: &str = "1.3.101.112";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";

fn organization(c: &X509Certificate<'_>) -> Vec<String> {
    c.subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap().to_string())
        .collect()
}

/// One CA: algorithm, subject O, CA flags, key usages, EKUs, SKI, no AKI, validity.
fn check_ca(name: &str, b64: &str, alg: &str, org: &[&str], now: OffsetDateTime) {
    let (label, der) = der_of(b64);
    assert_eq!(label, "CERTIFICATE", "{name}");
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        c.public_key().algorithm.algorithm.to_id_string(),
        alg,
        "{name} key algorithm"
    );
    if alg == OID_EC {
        let curve = c
            .public_key()
            .algorithm
            .parameters
            .as_ref()
            .unwrap()
            .as_oid()
            .unwrap();
        assert_eq!(curve.to_id_string(), OID_P256, "{name} curve");
    }
    assert_eq!(organization(&c), org, "{name} O");
    assert_eq!(c.subject().iter_common_name().count(), 0, "{name} has no CN");
    let bc = c.basic_constraints().unwrap().unwrap();
    assert!(bc.value.ca && bc.critical, "{name}: BasicConstraints CA critical");
    let ku = c.key_usage().unwrap().unwrap();
    assert!(
        ku.value.digital_signature() && ku.value.key_cert_sign(),
        "{name} KU"
    );
    assert!(!ku.value.key_encipherment(), "{name} KU");
    let eku = c.extended_key_usage().unwrap().unwrap().value;
    assert!(
        eku.server_auth && eku.client_auth && !eku.code_signing,
        "{name} EKU"
    );
    let ski = c
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.len()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ski, 20, "{name} SKI is 20 bytes");
    assert!(
        !c.extensions()
            .iter()
            .any(|e| matches!(e.parsed_extension(), ParsedExtension::AuthorityKeyIdentifier(_))),
        "{name} has no AKI"
    );
    let nb = c.validity().not_before.timestamp();
    let na = c.validity().not_after.timestamp();
    assert!((nb - now.unix_timestamp()).abs() <= 2, "{name} not_before is now");
    assert_eq!(na - nb, 87_600 * 3600, "{name} valid 87600 h");
    assert!(c.raw_serial().len() >= 15, "{name}: 128-bit random serial");
    c.verify_signature(None)
        .unwrap_or_else(|e| panic!("{name} self-signature: {e}"));
}

#[test]
fn generated_bundle_has_talos_profiles() {
    let now = OffsetDateTime::now_utc();
    let started = std::time::Instant::now();
    let b = pki::generate(now).unwrap();
    println!("bundle generated in {:?} (incl. RSA-4096)", started.elapsed());
    b.check().unwrap();
    pki::check_pairs(&b).unwrap();
    let c = &b.certs;
    check_ca("os", &c.os.crt, OID_ED25519, &["talos"], now);
    check_ca("etcd", &c.etcd.crt, OID_EC, &["etcd"], now);
    check_ca("k8s", &c.k8s.crt, OID_EC, &["kubernetes"], now);
    check_ca("k8saggregator", &c.k8saggregator.crt, OID_EC, &[], now);
    // Key labels as Talos writes them.
    assert_eq!(der_of(&c.os.key).0, "ED25519 PRIVATE KEY");
    for k in [&c.etcd.key, &c.k8s.key, &c.k8saggregator.key] {
        let (label, der) = der_of(k);
        assert_eq!(label, "EC PRIVATE KEY");
        // SEC1 with the named curve (prime256v1 OID in the parameters), as Go's
        // x509.MarshalECPrivateKey writes it.
        p256::SecretKey::from_sec1_der(&der).unwrap();
        // Same layout as talosctl's keys (gen-secrets.yaml keys start `MHcCAQEE`).
        assert_eq!(&der[..7], &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
        let p256_oid = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(
            der.windows(p256_oid.len()).any(|w| w == p256_oid),
            "curve parameters present"
        );
    }
    let (label, der) = der_of(&c.k8sserviceaccount.key);
    assert_eq!(label, "RSA PRIVATE KEY");
    let kp = rcgen::KeyPair::try_from(der.as_slice()).unwrap();
    // PKCS#1 RSAPrivateKey; the public key's modulus is 4096 bits.
    let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    let (_, pk) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
    match pk.parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 4096),
        other => panic!("service-account key is {other:?}"),
    }
    // Tokens and random secrets.
    assert!(is_token(&b.secrets.bootstraptoken) && is_token(&b.trustdinfo.token));
    assert_ne!(b.secrets.bootstraptoken, b.trustdinfo.token);
    let id = base64::engine::general_purpose::URL_SAFE
        .decode(&b.cluster.id)
        .unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(STANDARD.decode(&b.cluster.secret).unwrap().len(), 32);
    assert_eq!(
        STANDARD
            .decode(b.secrets.secretboxencryptionsecret.as_ref().unwrap())
            .unwrap()
            .len(),
        32
    );
    // A second bundle shares nothing.
    let b2 = pki::generate(now).unwrap();
    assert_ne!(b2.cluster.secret, b.cluster.secret);
    assert_ne!(b2.certs.os.key, b.certs.os.key);
}

#[test]
fn talosconfig_client_cert_is_what_apid_accepts() {
    let now = OffsetDateTime::now_utc();
    let b = shared();
    let cluster: provisioner_core::talos::TalosCluster = serde_saphyr::from_str(
        "clusterName: lab\ntalosVersion: v1.11.6\nkubernetesVersion: v1.34.1\nendpoint: https://10.0.0.10:6443\n\
         nodes:\n  - {hostname: cp1, ipAddress: 10.0.0.11, controlPlane: true, installDisk: /dev/sda}\n  \
         - {hostname: w1, ipAddress: 10.0.0.21, installDisk: /dev/sda}\n",
    )
    .unwrap();
    let text = talosconfig(&cluster, b, now).unwrap();
    let tc = provisioner_core::talos::yaml::from_str(&text).unwrap();
    assert_eq!(tc["context"], "lab");
    let ctx = &tc["contexts"]["lab"];
    assert_eq!(
        ctx["endpoints"],
        serde_json::json!(["10.0.0.11"]),
        "control-plane IPs, not the VIP"
    );
    assert_eq!(ctx["ca"], b.certs.os.crt);
    let (label, der) = der_of(ctx["crt"].as_str().unwrap());
    assert_eq!(label, "CERTIFICATE");
    assert_eq!(der_of(ctx["key"].as_str().unwrap()).0, "ED25519 PRIVATE KEY");
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(organization(&c), ["os:admin"]);
    assert_eq!(c.public_key().algorithm.algorithm.to_id_string(), OID_ED25519);
    let ku = c.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let eku = c.extended_key_usage().unwrap().unwrap().value;
    assert!(
        eku.client_auth && !eku.server_auth && eku.other.is_empty(),
        "EKU exactly [clientAuth]"
    );
    assert!(!c.is_ca());
    let life = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
    assert_eq!(life, 365 * 86_400);
    // Signed by the bundle's OS CA.
    let (_, ca_der) = der_of(&b.certs.os.crt);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    c.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(c.issuer(), ca.subject());
}

#[test]
fn talosctl_bundle_imports_and_reexports_identically() {
    let Some(dir) = fixtures() else { return };
    let text = std::fs::read_to_string(dir.join("talos/v1.11/gen-secrets.yaml")).unwrap();
    let b = import_bundle(&text, None).unwrap();
    assert_eq!(b.to_yaml(), text);
    // Through the encrypted store and back.
    let tmp = tempfile::tempdir().unwrap();
    let store = RedbSecretStore::open(&tmp.path().join("s.redb"), &tmp.path().join("s.key")).unwrap();
    store.put("c", &b).unwrap();
    drop(store);
    let store = RedbSecretStore::open(&tmp.path().join("s.redb"), &tmp.path().join("s.key")).unwrap();
    assert_eq!(store.get("c").unwrap().unwrap().to_yaml(), text);
    // A bundle whose key does not match its certificate is refused, naming the CA.
    let mut bad = b.clone();
    bad.certs.k8s.key = b.certs.etcd.key.clone();
    let err = import_bundle(&bad.to_yaml(), None).unwrap_err().to_string();
    assert!(err.contains("certs.k8s"), "{err}");
    let mut bad = b;
    bad.trustdinfo.token = "nope".into();
    let err = import_bundle(&bad.to_yaml(), None).unwrap_err().to_string();
    assert!(err.contains("trustdinfo.token"), "{err}");
}

#[test]
fn sops_age_bundle_imports_with_the_key_only() {
    let b = shared().clone();
    let id = age::x25519::Identity::generate();
    let key_file = format!(
        "# created: test\n# public key: {}\n{}\n",
        id.to_public(),
        age::secrecy::ExposeSecret::expose_secret(&id.to_string())
    );
    let enc = sops::encrypt_yaml(&b.to_yaml(), &id.to_public().to_string(), "2026-11-26T08:00:00Z").unwrap();
    assert!(sops::is_sops(&enc));
    assert!(!enc.contains(&b.trustdinfo.token) && !enc.contains(&b.certs.os.key));
    assert!(enc.contains("ENC[AES256_GCM,data:"));
    assert_eq!(import_bundle(&enc, Some(&key_file)).unwrap(), b);
    // No key, or another key: refused.
    assert!(
        import_bundle(&enc, None)
            .unwrap_err()
            .to_string()
            .contains("--age-key")
    );
    let other = age::x25519::Identity::generate();
    let other_file = age::secrecy::ExposeSecret::expose_secret(&other.to_string()).to_string();
    assert!(import_bundle(&enc, Some(&other_file)).is_err());
    // Moving an encrypted value to another key breaks its additional data.
    let mut doc = provisioner_core::talos::yaml::from_str(&enc).unwrap();
    let v = doc["trustdinfo"]["token"].clone();
    doc["secrets"]["bootstraptoken"] = v;
    let tampered = provisioner_core::talos::yaml::to_string(&doc).unwrap();
    assert!(import_bundle(&tampered, Some(&key_file)).is_err());
}

#[test]
fn secret_stores_pass_the_battery_and_redb_encrypts_at_rest() {
    let b = shared().clone();
    battery(&MemSecretStore::new(), &b);
    let tmp = tempfile::tempdir().unwrap();
    let (db, key) = (tmp.path().join("secrets.redb"), tmp.path().join("secrets.key"));
    {
        let store = RedbSecretStore::open(&db, &key).unwrap();
        battery(&store, &b);
        store.put("plain-check", &b).unwrap();
        // The Debug form never shows the identity.
        assert!(!format!("{store:?}").contains("AGE-SECRET-KEY"));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let raw = std::fs::read(&db).unwrap();
    let contains = |needle: &str| raw.windows(needle.len()).any(|w| w == needle.as_bytes());
    for secret in [
        b.trustdinfo.token.as_str(),
        b.secrets.bootstraptoken.as_str(),
        &b.certs.os.key[..40],
        &b.cluster.secret[..20],
        "PRIVATE KEY",
    ] {
        assert!(!contains(secret), "store file holds plaintext {secret:?}");
    }
    // Without the key file's identity the bundle cannot be read.
    std::fs::remove_file(&key).unwrap();
    let store = RedbSecretStore::open(&db, &key).unwrap();
    assert!(store.get("plain-check").is_err());
    let _: SecretsBundle = b;
}
