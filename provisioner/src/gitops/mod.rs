//! `provisioner check` over `gitops/`: every ArgoCD object under `bootstrap/` and
//! `core/` (the tree's Helm charts rendered with `settings.yaml`, [`tree`]) and every
//! Application its ApplicationSets generate must validate against its CRD's
//! `openAPIV3Schema` from the pinned install manifest, then pass the semantic rules
//! of `provisioner_core::gitops` (evaluated against the tree's real directories and
//! the cluster Secrets Argo CD will hold). The repository setting must be a clone
//! URL; pointing at the seed author's repository is a warning.

pub mod settings;
pub mod tree;
pub mod workloads;

use std::collections::BTreeMap;
use std::path::Path;

use provisioner_core::gitops::destination::{ClusterSecret, IN_CLUSTER_SERVER, Registry};
use provisioner_core::gitops::{self as rules, Object};
use serde_json::Value;

use self::settings::Settings;

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

/// Checks `gitops_dir`; problems are appended as `file: object: message` lines,
/// warnings (the tree still points at the seed author's repository) to `warnings`.
/// `clusters` are the cluster names `infra/` defines.
/// A configuration without a `gitops/` directory (e.g. an appliance that only
/// netboots) skips these checks.
pub fn check(
    gitops_dir: &Path,
    cache: &crate::images::ImageCache,
    clusters: &[String],
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Summary> {
    if !gitops_dir.is_dir() {
        eprintln!("gitops: skipped: no directory {}", gitops_dir.display());
        return None;
    }
    let settings = match Settings::load(gitops_dir) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e.to_string());
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
    let url = &settings.repository.url;
    if let Err(e) = rules::repo::validate(url) {
        problems.push(format!("{settings_file}: field `repository.url`: {e}"));
    } else if url == rules::repo::SEED_REPOSITORY {
        warnings.push(format!(
            "{settings_file}: field `repository.url`: still the seed author's repository ({url}), whose tree is not this gitops/; push gitops/ to your own repository and set its URL here (gitops/README.md)"
        ));
    }
    let values = match tree::values(gitops_dir) {
        Ok(v) => v,
        Err(e) => {
            problems.push(e.to_string());
            return None;
        }
    };
    let tree = tree::load(gitops_dir, &values);
    problems.extend(tree.problems.iter().cloned());
    let objects = &tree.objects;
    let ctx = tree.context(url, &settings.argocd.host, registry(&settings, objects));
    let generated = rules::expand(objects, &ctx);
    let schema = match settings.load_manifest(cache) {
        Ok(m) => {
            // One validator per kind (JSON Schema draft 4 is what openAPIV3Schema
            // is closest to; the x-kubernetes-* keywords are ignored).
            let validators: BTreeMap<_, _> = crd_schemas(&m.objects)
                .into_iter()
                .map(|(k, schema)| (k, jsonschema::draft4::new(&schema)))
                .collect();
            // Every Application the ApplicationSets generate is validated like a
            // hand-written one: the CRD schema sees what Argo CD will create.
            for o in objects.iter().chain(&generated) {
                if ClusterSecret::from_secret(&o.value).is_none() {
                    validate(o, &validators, problems);
                }
            }
            Some(format!("ArgoCD {} CRD schemas", settings.argocd.version))
        }
        Err(e) => {
            eprintln!("gitops: CRD schema validation skipped: {e}");
            None
        }
    };
    let findings = rules::check(objects, &ctx);
    problems.extend(findings.iter().map(ToString::to_string));
    Some(Summary {
        objects: objects.len(),
        generated: generated.len(),
        schema,
    })
}

/// The cluster Secrets Argo CD will hold: the ones the appliance registers (the
/// host under its own name at the in-cluster address; the others at their API
/// server, known only at registration), plus any the tree declares.
pub fn registry(settings: &Settings, objects: &[Object]) -> Registry {
    let mut secrets: Vec<ClusterSecret> = settings
        .clusters
        .iter()
        .map(|c| ClusterSecret {
            secret: format!("cluster-{c}"),
            name: c.clone(),
            server: if *c == settings.argocd.host {
                IN_CLUSTER_SERVER.to_string()
            } else {
                format!("<{c}'s API server, registered at hand-off>")
            },
        })
        .collect();
    for o in objects {
        if let Some(s) = ClusterSecret::from_secret(&o.value) {
            // Same Secret name: one object, the tree's version wins.
            secrets.retain(|x| x.secret != s.secret);
            secrets.push(s);
        }
    }
    Registry {
        secrets,
        in_cluster_enabled: true,
    }
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
    validators: &BTreeMap<
        (String, String),
        Result<jsonschema::Validator, jsonschema::ValidationError<'static>>,
    >,
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
