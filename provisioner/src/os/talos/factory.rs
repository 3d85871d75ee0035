//! `images pull talos`: the Image Factory as it really behaves.
//!
//! The factory only serves schematics it has stored. `GET /image/<id>/<ver>/<file>`
//! for an ID nobody POSTed answers `404 schematic ID "<id>" not found`
//! (image-factory v1.5.0 `internal/frontend/http/image.go` `handleImage` →
//! `schematicFactory.Get` → `internal/schematic/storage/registry/registry.go`
//! `ErrNotFoundTag`, mapped to 404 by `internal/frontend/http/http.go`
//! `MatchError`). So the appliance first POSTs the canonical schematic to
//! `/schematics` (`internal/frontend/http/configuration.go`
//! `handleSchematicCreate`): the body is parsed with unknown fields rejected
//! (`pkg/schematic/schematic.go` `Unmarshal`, `KnownFields(true)`), an invalid body
//! is `400` with the YAML error as a plain-text body, and success is always
//! `201 {"id","schematic"}`, also for a schematic already stored (`Put` does nothing
//! then), which makes the POST idempotent. The returned ID must equal the one
//! computed locally ([`Schematic::id`]); a factory that canonicalises differently
//! (an Enterprise factory adds `owner` to the hashed body, `docs/api.md`) would
//! otherwise build images the appliance never asked for.

use std::collections::BTreeMap;
use std::path::Path;

use provisioner_core::catalog::Image;
use provisioner_core::infra::Infra;
use provisioner_core::talos::schematic::Schematic;

use crate::images::{CacheError, ImageCache, Placed};

/// How much of an error body is quoted (the factory's are one line).
const BODY_QUOTE: usize = 512;

/// Why the factory would not take the schematic.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// No HTTP answer at all.
    #[error("Image Factory {url}: no answer: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// `400`: the factory refuses the schematic itself.
    #[error("Image Factory {url} rejected the schematic (HTTP 400): {body}")]
    Rejected {
        /// The URL called.
        url: String,
        /// The factory's plain-text reason.
        body: String,
    },
    /// `401`/`403`: an Enterprise factory with authentication.
    #[error(
        "Image Factory {url} wants authentication (HTTP {status}: {body}); the appliance \
         speaks to factories without authentication only"
    )]
    Auth {
        /// The URL called.
        url: String,
        /// The status.
        status: u16,
        /// The factory's reason.
        body: String,
    },
    /// Any other non-success status.
    #[error("Image Factory {url}: HTTP {status}: {body}")]
    Status {
        /// The URL called.
        url: String,
        /// The status.
        status: u16,
        /// The body, quoted.
        body: String,
    },
    /// A success status whose body is not `{"id", "schematic"}`.
    #[error("Image Factory {url}: the answer is not the documented {{\"id\",\"schematic\"}} JSON: {detail}")]
    BadAnswer {
        /// The URL called.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The factory stored the schematic under another ID.
    #[error(
        "Image Factory {url} stored the schematic as {factory}, but the appliance computed \
         {local}; refusing to pull (the factory hashed this canonical form instead: {canonical:?})"
    )]
    IdMismatch {
        /// The URL called.
        url: String,
        /// The locally computed ID.
        local: String,
        /// The factory's ID.
        factory: String,
        /// The factory's canonical YAML.
        canonical: String,
    },
    /// The schematic has no canonical form here, or `--schematic` names none.
    #[error("{0}")]
    Local(String),
    /// The files could not be cached.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(BODY_QUOTE) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// POSTs `schematic` (its canonical YAML) to `<factory>/schematics` and checks the
/// ID the factory stored it under. Returns that ID.
pub async fn ensure_schematic(
    client: &reqwest::Client,
    factory: &str,
    schematic: &Schematic,
) -> Result<String, FactoryError> {
    let url = format!("{}/schematics", factory.trim_end_matches('/'));
    let body = schematic
        .canonical_yaml()
        .map_err(|e| FactoryError::Local(format!("schematic: {e}")))?;
    let local = schematic
        .id()
        .map_err(|e| FactoryError::Local(format!("schematic: {e}")))?;
    let resp = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/yaml")
        .body(body)
        .send()
        .await
        .map_err(|source| FactoryError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|source| FactoryError::Unreachable {
        url: url.clone(),
        source,
    })?;
    match status {
        200..=299 => {}
        400 => {
            return Err(FactoryError::Rejected {
                url,
                body: quote(&bytes),
            });
        }
        401 | 403 => {
            return Err(FactoryError::Auth {
                url,
                status,
                body: quote(&bytes),
            });
        }
        _ => {
            return Err(FactoryError::Status {
                url,
                status,
                body: quote(&bytes),
            });
        }
    }
    #[derive(serde::Deserialize)]
    struct Created {
        id: String,
        schematic: String,
    }
    let created: Created = serde_json::from_slice(&bytes).map_err(|e| FactoryError::BadAnswer {
        url: url.clone(),
        detail: format!("{e}: {}", quote(&bytes)),
    })?;
    if !created.id.eq_ignore_ascii_case(&local) {
        return Err(FactoryError::IdMismatch {
            url,
            local,
            factory: created.id,
            canonical: created.schematic,
        });
    }
    Ok(local)
}

/// The schematic `--schematic` names: a YAML file (normalised like the ones in
/// `infra/`), or the 64-hex ID of a schematic defined in `infra/` (or the factory's
/// default, empty schematic). The factory cannot be asked for a bare ID: only the
/// body can be POSTed.
pub fn resolve(arg: &str, infra: &Infra) -> Result<Schematic, FactoryError> {
    let path = Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FactoryError::Local(format!("{}: {e}", path.display())))?;
        let s: Schematic = serde_saphyr::from_str(&text)
            .map_err(|e| FactoryError::Local(format!("{}: {e}", path.display())))?;
        return Ok(s.normalized());
    }
    if arg.len() != 64 || !arg.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(FactoryError::Local(format!(
            "--schematic: {arg:?} is neither a schematic file nor a 64-hex-digit schematic ID"
        )));
    }
    let mut known: BTreeMap<String, (Schematic, String)> = BTreeMap::new();
    let default = Schematic::default();
    if let Ok(id) = default.id() {
        known.insert(id, (default, "the default schematic".into()));
    }
    for (name, cluster) in &infra.talos {
        for node in &cluster.nodes {
            let s = cluster.schematic_for(node);
            if let Ok(id) = s.id() {
                known
                    .entry(id)
                    .or_insert_with(|| (s, format!("cluster {name}, node {}", node.hostname)));
            }
        }
    }
    let want = arg.to_ascii_lowercase();
    if let Some((s, _)) = known.remove(&want) {
        return Ok(s);
    }
    let list: Vec<String> = known
        .iter()
        .map(|(id, (_, from))| format!("{id} ({from})"))
        .collect();
    Err(FactoryError::Local(format!(
        "--schematic {arg}: no schematic in infra/ has this ID, and the Image Factory only serves \
         schematics POSTed to it, which needs the body: pass the schematic YAML file instead \
         (known IDs: {})",
        list.join(", ")
    )))
}

/// The images/ descriptor whose file URLs point at this schematic and version.
pub fn descriptor_for<'a>(
    images: &'a BTreeMap<String, Image>,
    schematic: &str,
    version: &str,
) -> Option<&'a Image> {
    let needle = format!("/image/{schematic}/{version}/");
    images
        .values()
        .find(|i| i.kernel.url.as_deref().is_some_and(|u| u.contains(&needle)))
}

/// `images pull talos`: create the schematic on the factory, then pull the files of
/// `image` into the cache (checksums recorded on first pull, verified after).
/// Returns the schematic ID the factory stored and what was placed.
pub async fn pull(
    client: &reqwest::Client,
    cache: &ImageCache,
    factory: &str,
    schematic: &Schematic,
    version: &str,
    image: &Image,
) -> Result<(String, Vec<Placed>), FactoryError> {
    let created = ensure_schematic(client, factory, schematic).await?;
    let files = ImageCache::sources(image, Some((factory, &created, version)))?;
    let placed = cache.pull_image(client, image, &files).await?;
    Ok((created, placed))
}
