//! A fake Kubernetes API server on loopback (axum, plain HTTP) with just enough of the
//! API for the ArgoCD hand-off: discovery (`/api`, `/apis`, `/apis/<g>/<v>`, with
//! `metrics.k8s.io` answering 503 like an aggregated API whose backend is down),
//! server-side apply PATCH (content type, field manager and force checked), GET with
//! simulated status (CRDs become Established, workloads become ready, each after a
//! delay), and `/readyz`. Custom resources are refused until their CRD is Established
//! and namespaced objects until their Namespace exists, as a real API server does.
//! With a scripted Argo CD controller ([`super::fake_argo`], [`FakeKube::set_argo`])
//! Applications get the status Argo CD would write, and can be listed.
//! Every request is journalled so tests can assert order. Integration tests run it on
//! loopback over plain HTTP; the simulated lab runs it over TLS inside the lab
//! namespace (`provisioner-lab-agent kube`), where the nodes' kubeconfigs point.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::fake_argo::{self, FakeArgo};

/// One server-side apply.
#[derive(Debug, Clone)]
pub struct Applied {
    /// When it was received.
    pub at: Instant,
    /// The object's `kind`.
    pub kind: String,
    /// Its namespace (None when cluster-scoped).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The `fieldManager` query parameter.
    pub field_manager: String,
    /// Whether `force=true` was given.
    pub force: bool,
}

/// Everything the fake saw, in order.
#[derive(Debug, Default)]
pub struct Journal {
    /// Every server-side apply.
    pub applies: Vec<Applied>,
    /// Every path requested, in order.
    pub requests: Vec<String>,
    /// When a GET first saw a CRD Established / a workload ready / an Application
    /// Synced and Healthy (by object key).
    pub observed_ready: BTreeMap<String, Instant>,
    /// Every change of an Application's `Sync/Health` a read answered: (when, name,
    /// state).
    pub argo: Vec<(Instant, String, String)>,
}

#[derive(Debug, Default)]
struct Stored {
    objects: BTreeMap<String, (Value, Instant)>,
    /// (group, plural) → CRD name, for custom resources.
    crds: BTreeMap<(String, String), String>,
}

#[derive(Debug)]
struct Inner {
    journal: Mutex<Journal>,
    stored: Mutex<Stored>,
    /// How long after apply a CRD is Established / a workload ready.
    crd_delay: Duration,
    ready_delay: Duration,
    argo: Mutex<Option<Arc<FakeArgo>>>,
}

/// A running fake API server; stops when dropped.
#[derive(Debug)]
pub struct FakeKube {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    shutdown: CancellationToken,
}

impl FakeKube {
    /// Starts on an ephemeral loopback port.
    ///
    /// # Panics
    /// If loopback cannot be bound (a test environment failure).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        Self::start_on(listener).expect("loopback listener has an address")
    }

    /// Starts on an already-bound listener (plain HTTP).
    pub fn start_on(listener: tokio::net::TcpListener) -> std::io::Result<Self> {
        let (me, app) = Self::parts(listener.local_addr()?);
        let token = me.shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::warn!(error = %e, "fake Kubernetes API stopped");
            }
        });
        Ok(me)
    }

    /// Starts on an already-bound listener with TLS (`tls` decides the server
    /// certificate and whether client certificates are required): the simulated lab
    /// serves the cluster endpoint like an API server, with a certificate from the
    /// cluster's Kubernetes CA.
    pub fn start_tls_on(
        listener: std::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let (me, app) = Self::parts(listener.local_addr()?);
        listener.set_nonblocking(true)?;
        let server =
            axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))?;
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        let token = me.shutdown.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            stopper.graceful_shutdown(Some(Duration::from_secs(1)));
        });
        tokio::spawn(async move {
            if let Err(e) = server.handle(handle).serve(app.into_make_service()).await {
                tracing::warn!(error = %e, "fake Kubernetes API stopped");
            }
        });
        Ok(me)
    }

    fn parts(addr: SocketAddr) -> (Self, axum::Router) {
        let inner = Arc::new(Inner {
            journal: Mutex::default(),
            stored: Mutex::default(),
            crd_delay: Duration::from_millis(150),
            ready_delay: Duration::from_millis(300),
            argo: Mutex::default(),
        });
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let me = Self {
            addr,
            inner,
            shutdown: CancellationToken::new(),
        };
        (me, app)
    }

    /// Cancelled when the server should stop (dropping the handle also stops it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// An admin kubeconfig for this server.
    pub fn kubeconfig(&self) -> Vec<u8> {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: admin\ncurrent-context: fake\nusers:\n- name: admin\n  user:\n    token: fake-token\n",
            self.addr
        )
        .into_bytes()
    }

    /// The journal so far (hold the guard briefly).
    pub fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        lock(&self.inner.journal)
    }

    /// Runs `argo` as the cluster's Argo CD application controller from now on.
    pub fn set_argo(&self, argo: Arc<FakeArgo>) {
        *lock(&self.inner.argo) = Some(argo);
    }

    /// As if Argo CD had synced a root Application applied before this test: the
    /// tree's Applications appear (`settle` from now).
    pub fn sync_root(&self) {
        sync_root(&self.inner, &mut lock(&self.inner.stored), Instant::now());
    }

    /// A stored object by key `<kind>/<ns>/<name>` (ns empty when cluster-scoped).
    pub fn object(&self, key: &str) -> Option<Value> {
        lock(&self.inner.stored).objects.get(key).map(|(v, _)| v.clone())
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A poisoned lock only means another request panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn status(code: StatusCode, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                      "reason": code.canonical_reason(), "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

fn key(kind: &str, ns: Option<&str>, name: &str) -> String {
    format!("{kind}/{}/{name}", ns.unwrap_or(""))
}

async fn handle(
    State(s): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    lock(&s.journal).requests.push(format!("{method} {path}"));
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    match seg.as_slice() {
        ["readyz"] => return "ok".into_response(),
        ["version"] => {
            return axum::Json(json!({"major": "1", "minor": "34", "gitVersion": "v1.34.1"})).into_response();
        }
        ["api"] => return axum::Json(json!({"kind": "APIVersions", "versions": ["v1"]})).into_response(),
        ["apis"] => {
            let groups: Vec<Value> = [
                "apps",
                "rbac.authorization.k8s.io",
                "networking.k8s.io",
                "apiextensions.k8s.io",
                "argoproj.io",
                "metrics.k8s.io",
            ]
            .iter()
            .map(|g| {
                let v = if *g == "metrics.k8s.io" {
                    "v1beta1"
                } else if *g == "argoproj.io" {
                    "v1alpha1"
                } else {
                    "v1"
                };
                json!({"name": g, "versions": [{"groupVersion": format!("{g}/{v}"), "version": v}],
                           "preferredVersion": {"groupVersion": format!("{g}/{v}"), "version": v}})
            })
            .collect();
            return axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
                .into_response();
        }
        ["apis", "metrics.k8s.io", ..] => {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is currently unable to handle the request",
            );
        }
        ["api", "v1"] | ["apis", _, _] => {
            return axum::Json(
                json!({"kind": "APIResourceList", "groupVersion": seg[1..].join("/"), "resources": []}),
            )
            .into_response();
        }
        _ => {}
    }
    let (group, rest) = match seg.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (*g, rest),
        _ => return status(StatusCode::NOT_FOUND, "not found"),
    };
    let now = Instant::now();
    if let ["namespaces", ns, "applications"] = rest
        && method == Method::GET
    {
        return list_applications(&s, ns, now);
    }
    let (ns, plural, name) = match rest {
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, *name),
        [plural, name] => (None, *plural, *name),
        _ => return status(StatusCode::METHOD_NOT_ALLOWED, "only single objects are served"),
    };
    match method {
        Method::PATCH => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct != "application/apply-patch+yaml" {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &format!("not server-side apply: {ct}"),
                );
            }
            let q: BTreeMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
            let Some(fm) = q.get("fieldManager") else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "fieldManager is required for apply requests",
                );
            };
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return status(StatusCode::BAD_REQUEST, "body is not JSON");
            };
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
            let mut stored = lock(&s.stored);
            if !group.is_empty()
                && !matches!(
                    group,
                    "apps" | "rbac.authorization.k8s.io" | "networking.k8s.io" | "apiextensions.k8s.io"
                )
            {
                let established = stored
                    .crds
                    .get(&(group.to_string(), plural.to_string()))
                    .and_then(|crd| stored.objects.get(&key("CustomResourceDefinition", None, crd)))
                    .is_some_and(|(_, at)| now >= *at + s.crd_delay);
                if !established {
                    return status(
                        StatusCode::NOT_FOUND,
                        "the server could not find the requested resource",
                    );
                }
            }
            if let Some(ns) = ns
                && !stored.objects.contains_key(&key("Namespace", None, ns))
            {
                return status(StatusCode::NOT_FOUND, &format!("namespaces \"{ns}\" not found"));
            }
            if kind == "CustomResourceDefinition" {
                let g = obj
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let p = obj
                    .pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                stored.crds.insert((g, p), name.to_string());
            }
            obj["metadata"]["generation"] = json!(1);
            let k = key(&kind, ns, name);
            let applied_at = stored.objects.get(&k).map(|(_, at)| *at).unwrap_or(now);
            stored.objects.insert(k, (obj.clone(), applied_at));
            // Argo CD syncs the root app-of-apps: its Applications appear.
            if kind == "Application" && name == "root" {
                sync_root(&s, &mut stored, now);
            }
            drop(stored);
            lock(&s.journal).applies.push(Applied {
                at: now,
                kind,
                namespace: ns.map(str::to_string),
                name: name.to_string(),
                field_manager: fm.clone(),
                force: q.get("force").map(String::as_str) == Some("true"),
            });
            axum::Json(obj).into_response()
        }
        Method::GET => {
            let kind = kind_of(plural);
            let k = key(kind, ns, name);
            let Some((mut obj, at)) = get_object(&s, kind, &k, now) else {
                return status(StatusCode::NOT_FOUND, &format!("{plural} \"{name}\" not found"));
            };
            let mut ready = false;
            match kind {
                "CustomResourceDefinition" if now >= at + s.crd_delay => {
                    obj["status"] = json!({"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]});
                    ready = true;
                }
                "Deployment" | "StatefulSet" if now >= at + s.ready_delay => {
                    let n = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
                    obj["status"] = json!({"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "availableReplicas": n,
                                           "readyReplicas": n, "currentRevision": "r1", "updateRevision": "r1"});
                    ready = true;
                }
                _ => {}
            }
            if ready {
                lock(&s.journal).observed_ready.entry(k).or_insert(now);
            }
            axum::Json(obj).into_response()
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "fake API server: PATCH (apply) and GET only",
        ),
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "customresourcedefinitions" => "CustomResourceDefinition",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "namespaces" => "Namespace",
        "secrets" => "Secret",
        "applications" => "Application",
        "appprojects" => "AppProject",
        "configmaps" => "ConfigMap",
        _ => "Other",
    }
}

#[path = "fake_kube_argo.rs"]
mod argo_routes;
use argo_routes::{get_object, list_applications, sync_root};
