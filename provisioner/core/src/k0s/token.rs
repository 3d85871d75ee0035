//! k0s join tokens and the bootstrap-token Secrets that make them valid.
//!
//! Token format (k0s `pkg/token/joinencode.go`, `kubeconfig.go`): a kubeconfig with
//! one cluster and context named `k0s`, the cluster CA inline, user
//! `kubelet-bootstrap` (workers, server = Kube API on :6443) holding a bootstrap
//! token, gzip-compressed (best compression) and then standard base64.
//!
//! The credential is a Kubernetes bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`
//! (https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens); the
//! API server accepts it once a Secret `kube-system/bootstrap-token-<id>` of type
//! `bootstrap.kubernetes.io/token` exists. k0s's own worker tokens carry the usage
//! `authentication` (k0s `pkg/token/manager.go` `RandomBootstrapSecret`); the
//! appliance's also allow `signing` and name kubeadm's default node group.

use std::fmt;
use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Extra group the appliance's worker tokens authenticate as (kubeadm's default;
/// must start with `system:bootstrappers:`).
pub const AUTH_EXTRA_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// Kubernetes' name for the Secret type.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

/// A bootstrap token. `Debug` and `Display` hide the secret half.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

/// Why a string is not a bootstrap token (the value is never echoed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a bootstrap token: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
pub struct TokenFormatError;

fn lower_alnum(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl BootstrapToken {
    /// A token from its parts, checked against the format.
    pub fn new(id: &str, secret: &str) -> Result<Self, TokenFormatError> {
        if lower_alnum(id, 6) && lower_alnum(secret, 16) {
            Ok(Self {
                id: id.into(),
                secret: secret.into(),
            })
        } else {
            Err(TokenFormatError)
        }
    }

    /// A fresh token from `next_byte`, a source of random bytes (the caller's RNG;
    /// core does no I/O). Bytes >= 252 are rejected so `b % 36` is uniform.
    pub fn generate(mut next_byte: impl FnMut() -> u8) -> Self {
        const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut pick = |n: usize| {
            let mut s = String::with_capacity(n);
            while s.len() < n {
                let b = next_byte();
                if b < 252 {
                    s.push(ALPHABET[usize::from(b % 36)] as char);
                }
            }
            s
        };
        let id = pick(6);
        let secret = pick(16);
        Self { id, secret }
    }

    /// The public half (also in the Secret's name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret half.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `<id>.<secret>`, as a bearer token.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.****************)", self.id)
    }
}

impl std::str::FromStr for BootstrapToken {
    type Err = TokenFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, secret) = s.split_once('.').ok_or(TokenFormatError)?;
        Self::new(id, secret)
    }
}

impl TryFrom<String> for BootstrapToken {
    type Error = TokenFormatError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BootstrapToken> for String {
    fn from(t: BootstrapToken) -> Self {
        t.expose()
    }
}

/// A kubeconfig (client-go `clientcmd/api/v1` field names), enough for join tokens
/// and the appliance's admin access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// `v1`.
    pub api_version: String,
    /// `Config`.
    pub kind: String,
    /// Clusters.
    pub clusters: Vec<NamedCluster>,
    /// Contexts.
    pub contexts: Vec<NamedContext>,
    /// Selected context.
    pub current_context: String,
    /// Users.
    pub users: Vec<NamedUser>,
}

/// `clusters[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// Name.
    pub name: String,
    /// The cluster.
    pub cluster: ClusterEntry,
}

/// `clusters[].cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterEntry {
    /// API URL.
    pub server: String,
    /// base64 of the CA certificate PEM.
    pub certificate_authority_data: String,
}

/// `contexts[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedContext {
    /// Name.
    pub name: String,
    /// The context.
    pub context: ContextEntry,
}

/// `contexts[].context`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextEntry {
    /// Cluster name.
    pub cluster: String,
    /// User name.
    pub user: String,
}

/// `users[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUser {
    /// Name.
    pub name: String,
    /// Credentials.
    pub user: UserEntry,
}

/// `users[].user`: a bearer token or a client certificate.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UserEntry {
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// base64 of the client certificate PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// base64 of the client key PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials never reach logs or test output.
        f.debug_struct("UserEntry")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_certificate_data", &self.client_certificate_data.is_some())
            .field(
                "client_key_data",
                &self.client_key_data.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Kubeconfig {
    /// One cluster/context/user, all in context `context`.
    pub fn single(context: &str, server: &str, ca_pem: &str, user: &str, cred: UserEntry) -> Self {
        Self {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: context.into(),
                cluster: ClusterEntry {
                    server: server.into(),
                    certificate_authority_data: STANDARD.encode(ca_pem),
                },
            }],
            contexts: vec![NamedContext {
                name: context.into(),
                context: ContextEntry {
                    cluster: context.into(),
                    user: user.into(),
                },
            }],
            current_context: context.into(),
            users: vec![NamedUser {
                name: user.into(),
                user: cred,
            }],
        }
    }

    /// The worker join kubeconfig k0s builds: context `k0s`, user `kubelet-bootstrap`.
    pub fn worker_join(api_url: &str, ca_pem: &str, token: &BootstrapToken) -> Self {
        Self::single(
            "k0s",
            api_url,
            ca_pem,
            "kubelet-bootstrap",
            UserEntry {
                token: Some(token.expose()),
                ..Default::default()
            },
        )
    }

    /// As YAML.
    pub fn to_yaml(&self) -> String {
        // Plain strings and lists: serialisation cannot fail.
        serde_saphyr::to_string(self).unwrap_or_default()
    }

    /// The CA certificate PEM of the current context's cluster.
    pub fn ca_pem(&self) -> Option<String> {
        let ctx = self.contexts.iter().find(|c| c.name == self.current_context)?;
        let c = self.clusters.iter().find(|c| c.name == ctx.context.cluster)?;
        let der = STANDARD.decode(&c.cluster.certificate_authority_data).ok()?;
        String::from_utf8(der).ok()
    }
}

/// Why a join token does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not base64.
    #[error("join token is not base64")]
    Base64,
    /// Not gzip.
    #[error("join token is not gzip data")]
    Gzip,
    /// Larger than any kubeconfig (guards against decompression bombs).
    #[error("join token expands beyond {0} bytes")]
    TooLarge(usize),
    /// Not a kubeconfig.
    #[error("join token is not a kubeconfig: {0}")]
    Kubeconfig(String),
}

/// Largest decompressed token accepted.
pub const MAX_TOKEN_KUBECONFIG: usize = 64 * 1024;

/// gzip (best compression) + standard base64 of the kubeconfig YAML.
pub fn encode(kubeconfig: &Kubeconfig) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(kubeconfig.to_yaml().as_bytes());
    let bytes = gz.finish().unwrap_or_default();
    STANDARD.encode(bytes)
}

/// The inverse of [`encode`] (also reads tokens made by `k0s token create`).
pub fn decode(token: &str) -> Result<Kubeconfig, DecodeError> {
    let gz = STANDARD.decode(token.trim()).map_err(|_| DecodeError::Base64)?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .take(MAX_TOKEN_KUBECONFIG as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Gzip)?;
    if out.len() > MAX_TOKEN_KUBECONFIG {
        return Err(DecodeError::TooLarge(MAX_TOKEN_KUBECONFIG));
    }
    let text = String::from_utf8(out).map_err(|_| DecodeError::Kubeconfig("not UTF-8".into()))?;
    serde_saphyr::from_str(&text).map_err(|e| DecodeError::Kubeconfig(e.to_string()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Secret<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: SecretMeta,
    #[serde(rename = "type")]
    kind_type: &'static str,
    string_data: SecretData<'a>,
}

#[derive(Serialize)]
struct SecretMeta {
    name: String,
    namespace: &'static str,
}

#[derive(Serialize)]
struct SecretData<'a> {
    description: String,
    #[serde(rename = "token-id")]
    token_id: &'a str,
    #[serde(rename = "token-secret")]
    token_secret: &'a str,
    #[serde(rename = "usage-bootstrap-authentication")]
    authentication: &'static str,
    #[serde(rename = "usage-bootstrap-signing")]
    signing: &'static str,
    #[serde(rename = "auth-extra-groups")]
    groups: &'static str,
}

/// The Secret that makes `token` valid, as one YAML document. `node` goes into the
/// description only (no secret material there).
pub fn bootstrap_secret(token: &BootstrapToken, node: &str) -> String {
    let s = Secret {
        api_version: "v1",
        kind: "Secret",
        metadata: SecretMeta {
            name: format!("bootstrap-token-{}", token.id()),
            namespace: "kube-system",
        },
        kind_type: SECRET_TYPE,
        string_data: SecretData {
            description: format!("k0s worker join token for {node}, issued by the provisioner"),
            token_id: token.id(),
            token_secret: token.secret(),
            authentication: "true",
            signing: "true",
            groups: AUTH_EXTRA_GROUP,
        },
    };
    serde_saphyr::to_string(&s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

    #[test]
    fn format_rules() {
        assert!("abcdef.0123456789abcdef".parse::<BootstrapToken>().is_ok());
        for bad in [
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef0123456789abcdef0",
            "abc-ef.0123456789abcdef",
        ] {
            assert!(bad.parse::<BootstrapToken>().is_err(), "{bad}");
        }
        let mut n = 0u8;
        let t = BootstrapToken::generate(|| {
            n = n.wrapping_add(37);
            n
        });
        assert!(t.expose().parse::<BootstrapToken>().is_ok());
        assert!(!format!("{t:?}").contains(t.secret()));
    }

    #[test]
    fn round_trip() {
        let t = BootstrapToken::new("abcdef", "0123456789abcdef").unwrap();
        let kc = Kubeconfig::worker_join("https://10.0.20.11:6443", CA, &t);
        let token = encode(&kc);
        let back = decode(&token).unwrap();
        assert_eq!(back, kc);
        assert_eq!(back.ca_pem().as_deref(), Some(CA));
        assert_eq!(back.users[0].name, "kubelet-bootstrap");
        assert_eq!(
            back.users[0].user.token.as_deref(),
            Some("abcdef.0123456789abcdef")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(decode("!!!"), Err(DecodeError::Base64));
        assert_eq!(decode("aGVsbG8="), Err(DecodeError::Gzip));
        // A gzip bomb: 1 MiB of zeros.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![b'a'; 1 << 20]).unwrap();
        let bomb = STANDARD.encode(gz.finish().unwrap());
        assert_eq!(decode(&bomb), Err(DecodeError::TooLarge(MAX_TOKEN_KUBECONFIG)));
    }
}
