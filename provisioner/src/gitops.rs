//! `provisioner check` over `gitops/`: every ArgoCD object under `bootstrap/` and
//! `core/` must validate against its CRD's `openAPIV3Schema` from the pinned install
//! manifest, then pass the semantic rules of `provisioner_core::gitops` (evaluated
//! against the tree's real directories and the registered cluster names).

pub mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use provisioner_core::gitops::{self as rules, Object};
use serde_json::Value;

use crate::cluster::argocd::Settings;

/// What a passing check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// ArgoCD objects checked.
    pub objects: usize,
    /// Applications the ApplicationSets generate over the tree.
    pub generated: usize,
    /// Whether the CRD schemas were available (the install manifest is cached).
    pub schema: Option<String>,
}

/// Checks `gitops_dir`; problems are appended as `file: object: message` lines.
/// `clusters` are the cluster names `infra/` defines.
/// A configuration without a `gitops/` directory (e.g. an appliance that only
/// netboots) skips these checks.
pub fn check(
    gitops_dir: &Path,
    cache_dir: &Path,
    clusters: &[String],
    problems: &mut Vec<String>,
) -> Option<Summary> {
    if !gitops_dir.is_dir() {
        eprintln!("gitops: skipped: no directory {}", gitops_dir.display());
        return None;
    }
    let settings = match Settings::load(gitops_dir) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e);
            return None;
        }
    };
    let settings_file = gitops_dir.join("settings.yaml").display().to_string();
    for c in settings.clusters.iter().chain([&settings.argocd.host]) {
        if !clusters.contains(c) {
            problems.push(format!(
                "{settings_file}: field `clusters`: {c:?} is not a cluster in infra/"
            ));
        }
    }
    if !settings.clusters.contains(&settings.argocd.host) {
        problems.push(format!("{settings_file}: field `argocd.host`: not in `clusters`"));
    }
    // Paths as ArgoCD sees them: relative to the repository root (gitops/ sits there).
    let root = gitops_dir.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    let mut dirs = BTreeSet::new();
    walk(gitops_dir, &mut files);
    for f in &files {
        if let Some(parent) = f.parent() {
            dirs.insert(rel(root, parent));
        }
    }
    let mut objects = Vec::new();
    for f in files.iter().filter(|f| is_object_file(gitops_dir, f)) {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: {e}", f.display()));
                continue;
            }
        };
        match serde_saphyr::from_str_multiple_with_options::<Value, Vec<Value>>(
            &text,
            serde_saphyr::options! { strict_booleans: true },
        ) {
            Ok(docs) => objects.extend(docs.into_iter().filter(|d| !d.is_null()).map(|value| Object {
                file: rel(root, f),
                value,
            })),
            Err(e) => problems.push(format!("{}: {e}", f.display())),
        }
    }
    let schema = match settings.load_manifest(cache_dir) {
        Ok(m) => {
            // One validator per kind (JSON Schema draft 4 is what openAPIV3Schema
            // is closest to; the x-kubernetes-* keywords are ignored).
            let validators: BTreeMap<_, _> = crd_schemas(&m.objects)
                .into_iter()
                .map(|(k, schema)| (k, jsonschema::draft4::new(&schema).map_err(|e| e.to_string())))
                .collect();
            for o in &objects {
                validate(o, &validators, problems);
            }
            Some(format!("ArgoCD {} CRD schemas", settings.argocd.version))
        }
        Err(e) => {
            eprintln!("gitops: CRD schema validation skipped: {e}");
            None
        }
    };
    let ctx = rules::Context {
        repo_url: settings.repository.url.clone(),
        directories: dirs,
        clusters: settings.clusters.iter().cloned().collect(),
    };
    let findings = rules::check(&objects, &ctx);
    problems.extend(findings.iter().map(ToString::to_string));
    let generated = objects
        .iter()
        .filter(|o| o.value.get("kind").and_then(Value::as_str) == Some("ApplicationSet"))
        .flat_map(|o| {
            o.value
                .pointer("/spec/generators")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|g| g.pointer("/git/directories").cloned())
        .map(|d| rules::generated_directories(&d, &ctx.directories).0.len())
        .sum();
    Some(Summary {
        objects: objects.len(),
        generated,
        schema,
    })
}

/// ArgoCD objects live under `bootstrap/` and `core/`; `manifests/` holds Helm
/// values, which are not Kubernetes objects.
fn is_object_file(gitops_dir: &Path, f: &Path) -> bool {
    let Ok(r) = f.strip_prefix(gitops_dir) else {
        return false;
    };
    matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        && (r.starts_with("bootstrap") || r.starts_with("core"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// (apiVersion, kind) → the CRD's schema for that version, made strict.
fn crd_schemas(objects: &[kube::api::DynamicObject]) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for o in objects {
        let v = serde_json::to_value(o).unwrap_or(Value::Null);
        if v.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            continue;
        }
        let group = v.pointer("/spec/group").and_then(Value::as_str).unwrap_or("");
        let kind = v
            .pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        for ver in v
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = ver.get("name").and_then(Value::as_str).unwrap_or("");
            if let Some(mut s) = ver.pointer("/schema/openAPIV3Schema").cloned() {
                strict(&mut s);
                out.insert((format!("{group}/{name}"), kind.to_string()), s);
            }
        }
    }
    out
}

/// kube-apiserver rejects unknown fields under strict field validation; a CRD schema
/// says so only implicitly (no `x-kubernetes-preserve-unknown-fields`). Make it
/// explicit so a typo'd field is a finding, not silently pruned.
fn strict(s: &mut Value) {
    if let Value::Object(m) = s {
        let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if m.contains_key("properties") && !preserve && !m.contains_key("additionalProperties") {
            m.insert("additionalProperties".into(), Value::Bool(false));
        }
        for (_, v) in m.iter_mut() {
            strict(v);
        }
    } else if let Value::Array(a) = s {
        a.iter_mut().for_each(strict);
    }
}

fn validate(
    o: &Object,
    validators: &BTreeMap<(String, String), Result<jsonschema::Validator, String>>,
    problems: &mut Vec<String>,
) {
    let s = |p: &str| o.value.get(p).and_then(Value::as_str).unwrap_or("").to_string();
    let (api, kind) = (s("apiVersion"), s("kind"));
    let name = o
        .value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match validators.get(&(api.clone(), kind.clone())) {
        None => problems.push(format!(
            "{}: {kind}/{name}: {api} {kind} is not an ArgoCD kind",
            o.file
        )),
        Some(Err(e)) => problems.push(format!(
            "{}: {kind}/{name}: the CRD schema does not compile: {e}",
            o.file
        )),
        Some(Ok(v)) => {
            for e in v.iter_errors(&o.value) {
                problems.push(format!("{}: {kind}/{name}: {}: {e}", o.file, e.instance_path()));
            }
        }
    }
}
