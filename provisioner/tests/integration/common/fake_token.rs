//! Kubernetes' service-account token controller, simulated in front of a [`FakeKube`]:
//! a `kubernetes.io/service-account-token` Secret whose
//! `kubernetes.io/service-account.name` annotation names an applied ServiceAccount
//! gets `data.token`, `data["ca.crt"]` and `data.namespace` after a delay (until then
//! GETs answer it without data), and keeps the same token for good, as the real
//! controller does. The delay is counted in GETs of the Secret, not in time, so the
//! tests do not depend on machine load. `kube-system` exists from the start, as in a
//! real cluster (seeded into the FakeKube on first use, with field manager
//! `kube-apiserver`).
//!
//! [`TokenController`] is the filter both proxies use ([`FakeCluster`] here, plain
//! HTTP, and `fake_k0s`, HTTPS with client certificates).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use provisioner::testing::fake_kube::FakeKube;

/// The `ca.crt` the controller writes (stands for the cluster CA; never parsed).
pub const FAKE_CA_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nZmFrZSBjbHVzdGVyIENB\n-----END CERTIFICATE-----\n";

#[derive(Debug, Default)]
struct Seen {
    seeded: bool,
    /// `ns/name` of every ServiceAccount applied.
    accounts: BTreeSet<String>,
    /// `ns/name` of every token Secret applied → (GETs of it so far, its token,
    /// whether a GET has been answered with it).
    secrets: BTreeMap<String, (usize, String, bool)>,
    /// GETs of a token Secret answered before it was filled.
    early_gets: usize,
}

/// The simulated token controller.
#[derive(Debug)]
pub struct TokenController {
    empty_gets: usize,
    state: Mutex<Seen>,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `(namespace, plural, name)` of a core-group single-object path.
fn core_object(path: &str) -> Option<(&str, &str, &str)> {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    match seg.as_slice() {
        ["api", "v1", "namespaces", ns, plural, name] => Some((ns, plural, name)),
        _ => None,
    }
}

impl TokenController {
    /// Answers the first `empty_gets` GETs of each token Secret without data, the
    /// next ones filled (`usize::MAX`: never filled).
    pub fn new(empty_gets: usize) -> Arc<Self> {
        Arc::new(Self {
            empty_gets,
            state: Mutex::default(),
        })
    }

    /// The token issued for Secret `ns/name`, once a GET has been answered with it.
    pub fn token(&self, ns: &str, name: &str) -> Option<String> {
        let st = self.state.lock().unwrap();
        st.secrets
            .get(&format!("{ns}/{name}"))
            .filter(|(_, _, issued)| *issued)
            .map(|(_, t, _)| t.clone())
    }

    /// How many GETs saw a token Secret before the controller filled it.
    pub fn early_gets(&self) -> usize {
        self.state.lock().unwrap().early_gets
    }

    /// Before forwarding: makes sure `kube-system` exists upstream.
    pub async fn before(&self, http: &reqwest::Client, upstream: SocketAddr, path: &str) {
        if core_object(path).map(|(ns, ..)| ns) != Some("kube-system") {
            return;
        }
        if std::mem::replace(&mut self.state.lock().unwrap().seeded, true) {
            return;
        }
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}});
        http.patch(format!(
            "http://{upstream}/api/v1/namespaces/kube-system?fieldManager=kube-apiserver"
        ))
        .header("content-type", "application/apply-patch+yaml")
        .body(ns.to_string())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    }

    /// After forwarding: records applied ServiceAccounts and token Secrets, and fills
    /// the answer to a GET of a token Secret that is due. Returns the body to send.
    pub fn after(&self, method: &Method, path: &str, code: StatusCode, body: Bytes) -> Bytes {
        let Some((ns, plural, name)) = core_object(path) else {
            return body;
        };
        if !code.is_success() {
            return body;
        }
        let key = format!("{ns}/{name}");
        let mut st = self.state.lock().unwrap();
        let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
            return body;
        };
        match (method, plural) {
            (&Method::PATCH, "serviceaccounts") => {
                st.accounts.insert(key);
                body
            }
            (&Method::PATCH, "secrets") if obj["type"] == "kubernetes.io/service-account-token" => {
                let n = st.secrets.len() + 1;
                st.secrets
                    .entry(key)
                    .or_insert_with(|| (0, format!("eyJhbGciOiJSUzI1NiJ9.fake-sa-token-{n}"), false));
                body
            }
            (&Method::GET, "secrets") if st.secrets.contains_key(&key) => {
                let account = obj
                    .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                    .and_then(Value::as_str)
                    .map(|a| format!("{ns}/{a}"));
                let has_account = account.is_some_and(|a| st.accounts.contains(&a));
                let entry = st.secrets.get_mut(&key).unwrap();
                entry.0 += 1;
                if entry.0 <= self.empty_gets || !has_account {
                    st.early_gets += 1;
                    return body;
                }
                entry.2 = true;
                let token = entry.1.clone();
                obj["data"] = json!({
                    "token": b64(token.as_bytes()),
                    "ca.crt": b64(FAKE_CA_PEM.as_bytes()),
                    "namespace": b64(ns.as_bytes()),
                });
                Bytes::from(obj.to_string())
            }
            _ => body,
        }
    }
}

/// Forwards one request to a plain-HTTP [`FakeKube`] through `tokens`.
pub async fn forward(
    tokens: &TokenController,
    http: &reqwest::Client,
    upstream: SocketAddr,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    tokens.before(http, upstream, uri.path()).await;
    let mut req = http
        .request(method.clone(), format!("http://{upstream}{path}"))
        .body(body);
    if let Some(ct) = headers.get("content-type") {
        req = req.header("content-type", ct);
    }
    match req.send().await {
        Ok(r) => {
            let code = r.status();
            let ct = r.headers().get("content-type").cloned();
            let bytes = r.bytes().await.unwrap_or_default();
            let bytes = tokens.after(&method, uri.path(), code, bytes);
            let mut resp = (code, bytes).into_response();
            if let Some(ct) = ct {
                resp.headers_mut().insert("content-type", ct);
            }
            resp
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

struct Inner {
    tokens: Arc<TokenController>,
    http: reqwest::Client,
    upstream: SocketAddr,
}

/// A managed cluster: a [`FakeKube`] behind the simulated token controller, on
/// loopback, plain HTTP.
pub struct FakeCluster {
    pub addr: SocketAddr,
    /// The API behind the proxy (journal of server-side applies, stored objects).
    pub kube: FakeKube,
    pub tokens: Arc<TokenController>,
    shutdown: CancellationToken,
}

impl FakeCluster {
    /// Token Secrets are answered empty `empty_gets` times, then filled.
    pub async fn start(empty_gets: usize) -> Self {
        let kube = FakeKube::start().await;
        let tokens = TokenController::new(empty_gets);
        let inner = Arc::new(Inner {
            tokens: tokens.clone(),
            http: reqwest::Client::new(),
            upstream: kube.addr,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(handle).with_state(inner);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            addr,
            kube,
            tokens,
            shutdown,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An admin kubeconfig for this cluster (bearer `admin-token`, no CA: the
    /// registration then takes the CA from the token Secret's `ca.crt`).
    pub fn kubeconfig(&self) -> Vec<u8> {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: admin\ncurrent-context: fake\nusers:\n- name: admin\n  user:\n    token: admin-token\n",
            self.url()
        )
        .into_bytes()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn handle(
    State(s): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(&s.tokens, &s.http, s.upstream, method, &uri, &headers, body).await
}

/// Asserts `secret` (an ArgoCD cluster Secret as stored) registers `name` at `server`
/// with `token` and `ca_data`, and carries no client certificate, key or admin token.
pub fn assert_sa_registration(secret: &Value, name: &str, server: &str, token: &str, ca_data: &str) {
    assert_eq!(
        secret.pointer("/metadata/labels/argocd.argoproj.io~1secret-type"),
        Some(&json!("cluster"))
    );
    assert_eq!(secret["stringData"]["name"], name);
    assert_eq!(secret["stringData"]["server"], server);
    let config: Value = serde_json::from_str(secret["stringData"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(
        config,
        json!({"bearerToken": token, "tlsClientConfig": {"insecure": false, "caData": ca_data}}),
        "SA-token registration"
    );
    let text = secret.to_string();
    for absent in ["certData", "keyData", "admin-token", "client-key", "PRIVATE KEY"] {
        assert!(!text.contains(absent), "the cluster Secret carries {absent}");
    }
}
