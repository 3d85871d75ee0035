//! A stand-in Image Factory on loopback that fails the way the real one does
//! (siderolabs/image-factory v1.5.0, commit 26b95ca):
//!
//! - `POST /schematics`: the body is YAML (JSON is a subset), unknown fields are
//!   rejected (`pkg/schematic/schematic.go` `Unmarshal`, `KnownFields(true)`), an
//!   empty body is `EOF`, `owner` is refused outside the Enterprise edition
//!   (`validate`), a `bootloader` outside `none|dual-boot|sd-boot|grub` fails to
//!   decode (talos `pkg/machinery/imager/imageropts` `BootloaderKind`, an enumer
//!   `-text` type; `none` is its zero value, so it is omitted from the canonical
//!   form), each as `400` with a plain-text body and a trailing newline
//!   (`internal/frontend/http/http.go` `MatchError` → `http.Error`). Success is
//!   `201` with `{"id","schematic"}`, also when the schematic already exists
//!   (`internal/schematic/schematic.go` `Put`; `configuration.go`
//!   `handleSchematicCreate`). The ID is the SHA-256 of the canonical YAML; the
//!   factory does not sort extensions. With [`FakeFactory::enterprise_owner`] set it
//!   adds `owner:` to the hashed body, as an authenticated Enterprise factory does
//!   (`docs/api.md`: "The `owner` is part of the canonical body, so it changes the ID").
//! - `GET /schematics/{id}`: the stored YAML, or `404 schematic not found`.
//! - `GET /image/{id}/{version}/{file}`: `404 schematic ID "<id>" not found` for an
//!   ID never POSTed (or not 64 hex digits: `storage/registry/registry.go`
//!   pre-validates the digest), else the file from `<root>/<version>/<file>` with
//!   `Range` support.
//!
//! The canonical form is `provisioner_core`'s, pinned to the factory's own test
//! vectors (`pkg/schematic/schematic_test.go`); the enterprise mode exists so a test
//! can see the client refuse an ID it did not compute.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use provisioner_core::talos::schematic::Schematic;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The fake factory's state.
#[derive(Debug, Default)]
pub struct FakeFactory {
    /// Boot assets: `<root>/<version>/<file>`.
    pub root: PathBuf,
    /// Stored schematics: ID → canonical YAML.
    pub schematics: Mutex<BTreeMap<String, String>>,
    /// Behave as an authenticated Enterprise factory with this user.
    pub enterprise_owner: Option<String>,
    /// Every request as `METHOD path status`, in order.
    pub log: Mutex<Vec<String>>,
}

/// Go's `http.Error`: plain text, `nosniff`, message plus newline.
fn go_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{message}\n"),
    )
        .into_response()
}

/// The fake's 400 answer: the body as the real handler words it (Go's YAML and
/// validation errors; see the module's notes on the upstream handler).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

impl FakeFactory {
    fn record(&self, line: String) {
        if let Ok(mut l) = self.log.lock() {
            l.push(line);
        }
    }

    /// Parses and stores a schematic as the real handler does; `Err` is the 400 body.
    pub fn create(&self, body: &[u8]) -> Result<(String, String), Rejected> {
        let text = std::str::from_utf8(body).map_err(|e| Rejected(format!("yaml: invalid UTF-8: {e}")))?;
        if text.trim().is_empty() {
            return Err(Rejected("EOF".into()));
        }
        let raw: Value = serde_saphyr::from_str(text).map_err(|e| Rejected(format!("yaml: {e}")))?;
        let owner = raw.get("owner").and_then(Value::as_str).map(str::to_string);
        if owner.is_some() && self.enterprise_owner.is_none() {
            return Err(Rejected(
                "owner field is only supported in Enterprise edition".into(),
            ));
        }
        let mut map = raw;
        if let Some(m) = map.as_object_mut() {
            m.remove("owner");
        }
        if let Some(c) = map.get_mut("customization").and_then(Value::as_object_mut)
            && let Some(b) = c.get("bootloader").and_then(Value::as_str).map(str::to_string)
        {
            match b.as_str() {
                "none" => {
                    c.remove("bootloader");
                }
                "dual-boot" | "sd-boot" | "grub" => {}
                other => {
                    return Err(Rejected(format!(
                        "yaml: unmarshal errors:\n  {other} does not belong to BootloaderKind values"
                    )));
                }
            }
        }
        let parsed: Schematic =
            serde_json::from_value(map).map_err(|e| Rejected(format!("yaml: unmarshal errors:\n  {e}")))?;
        let mut canonical = parsed.canonical_yaml().map_err(|e| Rejected(e.to_string()))?;
        if let Some(o) = &self.enterprise_owner {
            canonical = format!("owner: {o}\n{canonical}");
        }
        let id = hex::encode(Sha256::digest(canonical.as_bytes()));
        if let Ok(mut s) = self.schematics.lock() {
            s.entry(id.clone()).or_insert_with(|| canonical.clone());
        }
        Ok((id, canonical))
    }

    fn known(&self, id: &str) -> Option<String> {
        self.schematics.lock().ok()?.get(id).cloned()
    }

    /// Serves the factory on an ephemeral loopback port; returns its base URL.
    pub async fn serve(self: Arc<Self>) -> (String, tokio::task::JoinHandle<()>) {
        let app = axum::Router::new()
            .route("/schematics", post(create))
            .route("/schematics/{id}", get(show))
            .route("/image/{id}/{version}/{file}", get(image))
            .with_state(self);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = l.local_addr().expect("local addr");
        let h = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        (format!("http://{addr}"), h)
    }
}

async fn create(State(f): State<Arc<FakeFactory>>, body: axum::body::Bytes) -> Response {
    let r = match f.create(&body) {
        Ok((id, schematic)) => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{}\n", serde_json::json!({"id": id, "schematic": schematic})),
        )
            .into_response(),
        Err(e) => go_error(StatusCode::BAD_REQUEST, &e.0),
    };
    f.record(format!("POST /schematics {}", r.status().as_u16()));
    r
}

async fn show(State(f): State<Arc<FakeFactory>>, UrlPath(id): UrlPath<String>) -> Response {
    let r = match f.known(&id) {
        Some(yaml) => ([(header::CONTENT_TYPE, "application/yaml")], yaml).into_response(),
        None => go_error(StatusCode::NOT_FOUND, "schematic not found"),
    };
    f.record(format!("GET /schematics/{id} {}", r.status().as_u16()));
    r
}

async fn image(
    State(f): State<Arc<FakeFactory>>,
    UrlPath((id, version, file)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let r = if f.known(&id).is_none() {
        go_error(StatusCode::NOT_FOUND, &format!("schematic ID {id:?} not found"))
    } else if file.contains('/') || file.starts_with('.') || version.contains('/') {
        go_error(
            StatusCode::BAD_REQUEST,
            &format!("invalid profile path: {file:?}"),
        )
    } else {
        crate::http::assets::serve_file(&f.root.join(&version).join(&file), &headers, None).await
    };
    f.record(format!(
        "GET /image/{id}/{version}/{file} {}",
        r.status().as_u16()
    ));
    r
}
