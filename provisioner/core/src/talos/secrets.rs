//! The talosctl secrets bundle (`talosctl gen secrets` → `secrets.yaml`, talhelper's
//! `talsecret.yaml`) as data, with the checks that need no cryptography.
//!
//! Layout (talos.md §5.1): YAML keys are the lower-cased Go field names; certificates
//! and keys are base64 of PEM. Generation and certificate parsing are in the daemon.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// A PEM certificate and its key, both base64 of PEM (`key` empty on workers).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertAndKey {
    /// base64 of a PEM `CERTIFICATE`.
    pub crt: String,
    /// base64 of a PEM private key.
    pub key: String,
}

/// A key without certificate (the service-account key).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyOnly {
    /// base64 of a PEM private key.
    pub key: String,
}

/// `cluster:`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterIdentity {
    /// 32 random bytes, base64 (URL-safe alphabet before Talos 1.14).
    pub id: String,
    /// 32 random bytes, base64.
    pub secret: String,
}

/// `secrets:`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSecrets {
    /// Kubernetes bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub bootstraptoken: String,
    /// 32 bytes, base64 (contracts > 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretboxencryptionsecret: Option<String>,
    /// 32 bytes, base64 (contracts ≤ 1.2; exactly one of the two is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbcencryptionsecret: Option<String>,
}

/// `trustdinfo:`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustdInfo {
    /// `[a-z0-9]{6}.[a-z0-9]{16}`; becomes `machine.token`.
    pub token: String,
}

/// `certs:`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certs {
    /// etcd CA (ECDSA P-256).
    pub etcd: CertAndKey,
    /// Kubernetes CA (ECDSA P-256).
    pub k8s: CertAndKey,
    /// Front-proxy (aggregator) CA (ECDSA P-256).
    pub k8saggregator: CertAndKey,
    /// Service-account signing key (RSA-4096, or ECDSA for old contracts).
    pub k8sserviceaccount: KeyOnly,
    /// Talos API CA (Ed25519).
    pub os: CertAndKey,
}

/// The whole bundle, field order as talosctl writes it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsBundle {
    /// Cluster id and secret.
    pub cluster: ClusterIdentity,
    /// Bootstrap token and encryption secret.
    pub secrets: BootstrapSecrets,
    /// trustd token.
    pub trustdinfo: TrustdInfo,
    /// CAs and keys.
    pub certs: Certs,
}

// Debug by hand: keys, secrets and tokens never reach a log line or a panic message
// through `{:?}` (a derived Debug on the bundle would print the cluster's CA keys).
// Certificates are public; they show as their size.
const REDACTED: &str = "<redacted>";

fn size(b64: &str) -> String {
    format!("<{} bytes>", b64.len())
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("crt", &size(&self.crt))
            .field("key", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for KeyOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyOnly").field("key", &REDACTED).finish()
    }
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIdentity")
            .field("id", &self.id)
            .field("secret", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for BootstrapSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapSecrets").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TrustdInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustdInfo").field("token", &REDACTED).finish()
    }
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("etcd", &self.etcd)
            .field("k8s", &self.k8s)
            .field("k8saggregator", &self.k8saggregator)
            .field("k8sserviceaccount", &self.k8sserviceaccount)
            .field("os", &self.os)
            .finish()
    }
}

impl std::fmt::Debug for SecretsBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsBundle")
            .field("cluster", &self.cluster)
            .field("secrets", &self.secrets)
            .field("trustdinfo", &self.trustdinfo)
            .field("certs", &self.certs)
            .finish()
    }
}

/// Whether `t` has the `[a-z0-9]{6}.[a-z0-9]{16}` shape of Talos tokens
/// (`secrets/utils.go` `genToken(6, 16)`).
pub fn is_token(t: &str) -> bool {
    let ok =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    matches!(t.split_once('.'), Some((a, b)) if ok(a, 6) && ok(b, 16))
}

/// Why a base64-of-PEM field of a bundle does not hold a PEM block (the text names
/// the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// Not base64.
    #[error("{field}: not base64: {error}")]
    Base64 {
        /// The field.
        field: String,
        /// The decoder's complaint.
        error: base64::DecodeError,
    },
    /// Decodes to bytes that are not text.
    #[error("{0}: not PEM text")]
    NotText(String),
    /// Text without a `-----BEGIN …-----` line.
    #[error("{0}: no PEM block")]
    NoBlock(String),
}

/// Decodes a base64-of-PEM field and returns (label, text); used by the checks here
/// and by the daemon's certificate parsing.
pub fn pem_field(field: &str, b64: &str) -> Result<(String, String), PemError> {
    let bytes = STANDARD.decode(b64.trim()).map_err(|error| PemError::Base64 {
        field: field.to_string(),
        error,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| PemError::NotText(field.to_string()))?;
    let label = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("-----BEGIN ")
                .and_then(|r| r.strip_suffix("-----"))
        })
        .ok_or_else(|| PemError::NoBlock(field.to_string()))?
        .to_string();
    Ok((label, text))
}

fn b64_len(field: &str, v: &str, want: usize, errs: &mut Vec<String>) {
    let dec = STANDARD
        .decode(v)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(v));
    match dec {
        Ok(b) if b.len() == want => {}
        Ok(b) => errs.push(format!("{field}: {} bytes, expected {want}", b.len())),
        Err(e) => errs.push(format!("{field}: not base64: {e}")),
    }
}

const KEY_LABELS: [&str; 4] = [
    "ED25519 PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "PRIVATE KEY",
];

impl SecretsBundle {
    /// Parses a bundle (plain YAML; unknown fields rejected; the error names the
    /// field and position).
    pub fn from_yaml(text: &str) -> Result<Self, serde_saphyr::Error> {
        serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
    }

    /// Writes it exactly as talosctl lays it out.
    pub fn to_yaml(&self) -> String {
        // Plain strings and maps always serialise.
        super::yaml::to_string(self).unwrap_or_default()
    }

    /// Shape checks: token formats, 32-byte secrets, PEM labels. Returns every
    /// problem, each naming the field.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        b64_len("cluster.id", &self.cluster.id, 32, &mut errs);
        b64_len("cluster.secret", &self.cluster.secret, 32, &mut errs);
        for (f, t) in [
            ("secrets.bootstraptoken", &self.secrets.bootstraptoken),
            ("trustdinfo.token", &self.trustdinfo.token),
        ] {
            if !is_token(t) {
                errs.push(format!(
                    "{f}: not a token of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}"
                ));
            }
        }
        match (
            &self.secrets.secretboxencryptionsecret,
            &self.secrets.aescbcencryptionsecret,
        ) {
            (Some(s), None) => b64_len("secrets.secretboxencryptionsecret", s, 32, &mut errs),
            (None, Some(s)) => b64_len("secrets.aescbcencryptionsecret", s, 32, &mut errs),
            _ => errs.push(
                "secrets: exactly one of secretboxencryptionsecret and aescbcencryptionsecret must be set"
                    .into(),
            ),
        }
        let c = &self.certs;
        for (name, ck) in [
            ("certs.etcd", &c.etcd),
            ("certs.k8s", &c.k8s),
            ("certs.k8saggregator", &c.k8saggregator),
            ("certs.os", &c.os),
        ] {
            match pem_field(&format!("{name}.crt"), &ck.crt) {
                Ok((l, _)) if l == "CERTIFICATE" => {}
                Ok((l, _)) => errs.push(format!("{name}.crt: PEM label {l:?}, expected CERTIFICATE")),
                Err(e) => errs.push(e.to_string()),
            }
            check_key(&format!("{name}.key"), &ck.key, &mut errs);
        }
        check_key("certs.k8sserviceaccount.key", &c.k8sserviceaccount.key, &mut errs);
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

fn check_key(field: &str, b64: &str, errs: &mut Vec<String>) {
    match pem_field(field, b64) {
        Ok((l, _)) if KEY_LABELS.contains(&l.as_str()) => {}
        Ok((l, _)) => errs.push(format!("{field}: PEM label {l:?} is not a private key")),
        Err(e) => errs.push(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        assert!(is_token("inn7ol.u4ehnti8qyls9ymo"));
        assert!(!is_token("INN7OL.u4ehnti8qyls9ymo"));
        assert!(!is_token("inn7ol-u4ehnti8qyls9ymo"));
        assert!(!is_token("inn7o.u4ehnti8qyls9ymoo"));
    }

    #[test]
    fn check_names_fields() {
        let b = SecretsBundle::default();
        let errs = b.check().unwrap_err();
        assert!(errs.iter().any(|e| e.starts_with("cluster.id")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("trustdinfo.token")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("certs.os.crt")), "{errs:?}");
    }

    #[test]
    fn debug_never_prints_keys_secrets_or_tokens() {
        let mut b = SecretsBundle {
            cluster: ClusterIdentity {
                id: "cluster-id-public".into(),
                secret: "CLUSTER-SECRET".into(),
            },
            ..Default::default()
        };
        b.secrets.bootstraptoken = "BOOTST.TOKENTOKENTOKEN1".into();
        b.secrets.secretboxencryptionsecret = Some("SECRETBOX".into());
        b.trustdinfo.token = "TRUSTD.TOKENTOKENTOKEN1".into();
        b.certs.os = CertAndKey {
            crt: "Q0VSVA==".into(),
            key: "PRIVATE-KEY-OS".into(),
        };
        b.certs.k8sserviceaccount.key = "PRIVATE-KEY-SA".into();
        let shown = format!("{b:?} {b:#?}");
        for secret in [
            "CLUSTER-SECRET",
            "BOOTST",
            "SECRETBOX",
            "TRUSTD",
            "PRIVATE-KEY-OS",
            "PRIVATE-KEY-SA",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("cluster-id-public") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
