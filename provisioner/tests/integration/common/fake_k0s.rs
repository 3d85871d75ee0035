//! A fake k0s API server on loopback: HTTPS with a server certificate issued by the
//! cluster's k0s CA (as k0s's own apiserver cert is), client certificates required
//! and checked as kube-apiserver's x509 authenticator would see them: chained to
//! the k0s CA, and (stricter than RBAC, so a wrong identity fails loudly) refused
//! unless the subject has `O=system:masters`. It answers `/readyz` (failing the first
//! few times, as while kine and the apiserver start) and `GET /api/v1/nodes` (each
//! Node appears and turns `Ready=True` from its own listing on: delays counted in
//! polls, so the test does not depend on machine load); every other request is
//! proxied to a [`FakeKube`] (plain HTTP, server-side apply) for the ArgoCD hand-off,
//! through the simulated token controller of [`super::fake_token`] (a token Secret
//! is answered empty [`TOKEN_EMPTY_GETS`] times, then filled).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use provisioner_core::k0s::store::K0sSecrets;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde_json::{Value, json};

use super::fake_token::{TokenController, forward};
use provisioner::testing::fake_kube::FakeKube;

/// How many GETs of a token Secret the token controller answers before filling it.
pub const TOKEN_EMPTY_GETS: usize = 2;

/// One Node the fake reports.
#[derive(Debug, Clone)]
pub struct FakeNode {
    pub name: String,
    pub ip: IpAddr,
    /// Listed from the n-th `/api/v1/nodes` answer on (1 = the first).
    pub listed_from: usize,
    /// `Ready=True` from the n-th answer on (`False` before).
    pub ready_from: usize,
}

/// What the fake saw.
#[derive(Debug, Default)]
pub struct K0sJournal {
    /// Subjects (`CN=…, O=…`) of client certificates accepted in a handshake.
    pub accepted: Vec<String>,
    /// Client certificates refused, with why.
    pub refused: Vec<String>,
    /// Status of every `/readyz` answer, in order.
    pub readyz: Vec<u16>,
    /// Ready Nodes in every `/api/v1/nodes` answer, in order.
    pub node_lists: Vec<usize>,
}

struct Inner {
    readyz_failures: usize,
    nodes: Vec<FakeNode>,
    upstream: SocketAddr,
    http: reqwest::Client,
    tokens: Arc<TokenController>,
    journal: Arc<Mutex<K0sJournal>>,
}

pub struct FakeK0s {
    pub addr: SocketAddr,
    /// The apply target behind the proxy (journal of server-side applies).
    pub kube: FakeKube,
    /// The simulated token controller in front of it.
    pub tokens: Arc<TokenController>,
    journal: Arc<Mutex<K0sJournal>>,
    handle: axum_server::Handle<SocketAddr>,
}

impl FakeK0s {
    /// Starts the fake for the cluster whose CA is in `secrets`.
    /// `/readyz` fails `readyz_failures` times before it answers `ok`.
    pub async fn start(secrets: &K0sSecrets, readyz_failures: usize, nodes: Vec<FakeNode>) -> Self {
        super::crypto();
        let kube = FakeKube::start().await;
        let journal = Arc::new(Mutex::new(K0sJournal::default()));
        let tls = server_config(secrets, journal.clone());
        let tokens = TokenController::new(TOKEN_EMPTY_GETS);
        let inner = Arc::new(Inner {
            readyz_failures,
            nodes,
            upstream: kube.addr,
            http: reqwest::Client::new(),
            tokens: tokens.clone(),
            journal: journal.clone(),
        });
        let app = axum::Router::new().fallback(handle).with_state(inner);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
        )
        .unwrap()
        .handle(handle.clone());
        tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        Self {
            addr,
            kube,
            tokens,
            journal,
            handle,
        }
    }

    /// `https://127.0.0.1:<port>`: the API URL the appliance's kubeconfig points at.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn journal(&self) -> std::sync::MutexGuard<'_, K0sJournal> {
        self.journal.lock().unwrap()
    }
}

impl Drop for FakeK0s {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// TLS: a server certificate for 127.0.0.1 issued by the k0s CA, client
/// certificates required ([`MastersOnly`]).
fn server_config(s: &K0sSecrets, journal: Arc<Mutex<K0sJournal>>) -> rustls::ServerConfig {
    let issuer = Issuer::from_ca_cert_pem(&s.ca_crt, KeyPair::from_pem(&s.ca_key).unwrap()).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    p.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    let ca = CertificateDer::from_pem_slice(s.ca_crt.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let inner = WebPkiClientVerifier::builder(Arc::new(roots)).build().unwrap();
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(Arc::new(MastersOnly { inner, journal }))
        .with_single_cert(
            vec![cert.der().clone(), ca],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg
}

/// Chains to the k0s CA (webpki) and has `O=system:masters`, or the handshake fails.
#[derive(Debug)]
struct MastersOnly {
    inner: Arc<dyn ClientCertVerifier>,
    journal: Arc<Mutex<K0sJournal>>,
}

fn subject(der: &[u8]) -> (String, Vec<String>) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let orgs = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    (cert.subject().to_string(), orgs)
}

impl ClientCertVerifier for MastersOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let (who, orgs) = subject(end_entity);
        let mut j = self.journal.lock().unwrap();
        match self.inner.verify_client_cert(end_entity, intermediates, now) {
            Err(e) => {
                j.refused.push(format!("{who}: {e}"));
                Err(e)
            }
            Ok(_) if !orgs.iter().any(|o| o == "system:masters") => {
                j.refused.push(format!("{who}: not in system:masters"));
                Err(rustls::Error::General("client is not in system:masters".into()))
            }
            Ok(v) => {
                j.accepted.push(who);
                Ok(v)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

async fn handle(
    State(s): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match (method.clone(), uri.path()) {
        (Method::GET, "/readyz") => {
            let mut j = s.journal.lock().unwrap();
            let ready = j.readyz.len() >= s.readyz_failures;
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            j.readyz.push(code.as_u16());
            drop(j);
            if ready {
                "ok".into_response()
            } else {
                (code, "[-]etcd failed: reason withheld\nreadyz check failed").into_response()
            }
        }
        (Method::GET, "/api/v1/nodes") => {
            // As the real API server lists them: items without apiVersion/kind.
            let nth = s.journal.lock().unwrap().node_lists.len() + 1;
            let items: Vec<Value> = s
                .nodes
                .iter()
                .filter(|n| nth >= n.listed_from)
                .map(|n| {
                    let ready = if nth >= n.ready_from { "True" } else { "False" };
                    json!({
                        "metadata": {"name": n.name, "resourceVersion": "1"},
                        "status": {
                            "addresses": [{"type": "InternalIP", "address": n.ip.to_string()},
                                          {"type": "Hostname", "address": n.name}],
                            "conditions": [{"type": "MemoryPressure", "status": "False"},
                                           {"type": "Ready", "status": ready, "reason": "KubeletReady"}]
                        }
                    })
                })
                .collect();
            let ready = items
                .iter()
                .filter(|i| i.pointer("/status/conditions/1/status") == Some(&json!("True")))
                .count();
            s.journal.lock().unwrap().node_lists.push(ready);
            axum::Json(json!({"kind": "NodeList", "apiVersion": "v1",
                              "metadata": {"resourceVersion": "1"}, "items": items}))
            .into_response()
        }
        _ => forward(&s.tokens, &s.http, s.upstream, method, &uri, &headers, body).await,
    }
}
