//! Semantic checks over the ArgoCD objects in `gitops/` (argocd-gitops.md §8.2, §12
//! item 14). Schema validation does not catch these (§8.2 item 7): a broken
//! ApplicationSet validates fine against the CRD schema, then generates an Application
//! for a cluster named `values`. So the ApplicationSets are *evaluated* against the
//! repository's real directory list, the way ArgoCD's git directory generator does,
//! and every generated Application is checked like a hand-written one.
//!
//! Rules: exclude paths are full repository paths that match something; `$values`
//! needs a `ref: values` source without `chart`; `goTemplate: true` ⇔ Go template
//! syntax; every destination resolves as Argo CD v3.5.1 resolves it
//! ([`destination`]) and names the cluster the way the appliance registers it (by
//! name, the local one under its own name: never the `in-cluster` special case);
//! git sources use the configured repository URL; a source that is one of this
//! tree's Helm charts gets `settings.yaml` as its values file; names are unique.

pub mod cni;
pub mod destination;
mod generate;
pub mod health;
pub mod helm;
pub mod metallb;
mod path_match;
pub mod podsecurity;
pub mod repo;
pub mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

pub use generate::{TemplateError, basename_normalized, expand, generate, generated_directories, render};
pub use path_match::path_match;

use self::destination::{IN_CLUSTER_NAME, IN_CLUSTER_SERVER, Registry};

/// One object read from a file under `gitops/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Repository-relative file it came from.
    pub file: String,
    /// The object.
    pub value: Value,
}

/// What the objects are checked against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// The GitOps repository URL (the setting in `gitops/settings.yaml`).
    pub repo_url: String,
    /// Every directory of the repository that holds at least one file, relative to
    /// the repository root (`gitops/manifests/cert-manager/genmachine`). Git has no
    /// empty directories, so only these can ever be generated.
    pub directories: BTreeSet<String>,
    /// The cluster Secrets ArgoCD will have: the ones the appliance registers and
    /// any the tree declares.
    pub registry: Registry,
    /// The name the cluster ArgoCD runs on is registered under (`argocd.host`).
    pub host: String,
    /// This tree's Helm charts (directories holding a `Chart.yaml`), repository-relative.
    pub charts: BTreeSet<String>,
    /// The values file every chart of the tree takes (`gitops/settings.yaml`).
    pub settings_file: String,
}

/// One problem, naming the file and the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// File.
    pub file: String,
    /// `Kind/name`.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.object, self.message)
    }
}

/// Runs every rule; returns all findings (empty = ok).
pub fn check(objects: &[Object], ctx: &Context) -> Vec<Finding> {
    let mut findings = Vec::new();
    // (kind, namespace, name) -> first file
    let mut names: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut unique = |kind: &str, ns: &str, name: &str, file: &str, findings: &mut Vec<Finding>| {
        let key = (kind.to_string(), ns.to_string(), name.to_string());
        if let Some(first) = names.get(&key) {
            findings.push(Finding {
                file: file.to_string(),
                object: format!("{kind}/{name}"),
                message: format!("name already used in namespace {ns:?} by {first}"),
            });
        } else {
            names.insert(key, file.to_string());
        }
    };
    for obj in objects {
        let v = &obj.value;
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let ns = v
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("argocd");
        let id = format!("{kind}/{name}");
        let mut push = |message: String| {
            findings.push(Finding {
                file: obj.file.clone(),
                object: id.clone(),
                message,
            });
        };
        match kind {
            "Application" => {
                if let Some(spec) = v.get("spec") {
                    for m in application_spec(spec, ctx) {
                        push(m);
                    }
                }
                if name.contains("{{") {
                    push("template syntax in a plain Application".into());
                }
                unique(kind, ns, name, &obj.file, &mut findings);
            }
            "ApplicationSet" => {
                let generated = application_set(v, ctx, &mut push);
                unique(kind, ns, name, &obj.file, &mut findings);
                for (app, dir) in generated {
                    let app_name = app
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let from = format!("{} (generated by ApplicationSet/{name} for {dir})", obj.file);
                    unique("Application", ns, app_name, &from, &mut findings);
                }
            }
            "AppProject" => unique(kind, ns, name, &obj.file, &mut findings),
            _ => {}
        }
    }
    findings
}

/// Checks an ApplicationSet; returns the Applications it generates (rendered
/// template, directory).
fn application_set(v: &Value, ctx: &Context, push: &mut dyn FnMut(String)) -> Vec<(Value, String)> {
    let spec = v.get("spec").cloned().unwrap_or(Value::Null);
    let go = spec.get("goTemplate").and_then(Value::as_bool).unwrap_or(false);
    let template = spec.get("template").cloned().unwrap_or(Value::Null);
    let mut strings = Vec::new();
    collect_strings(&template, &mut strings);
    for s in &strings {
        for expr in template_exprs(s) {
            let go_syntax = expr.starts_with('.');
            if go && !go_syntax {
                push(format!(
                    "`{{{{{expr}}}}}` is fasttemplate syntax but goTemplate is true; write `{{{{.{expr}}}}}`"
                ));
            } else if !go && go_syntax {
                push(format!(
                    "`{{{{{expr}}}}}` is Go template syntax: set `goTemplate: true` (fasttemplate leaves it literal)"
                ));
            }
        }
    }
    let generators = spec
        .get("generators")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for g in &generators {
        let Some(git) = g.get("git") else { continue };
        let url = git.get("repoURL").and_then(Value::as_str).unwrap_or("");
        if url != ctx.repo_url {
            push(format!(
                "git generator repoURL {url:?} is not the GitOps repository {:?}",
                ctx.repo_url
            ));
        }
        if git.get("files").is_some() {
            push("git files generators are not checked; use a directories generator".into());
        }
        let (dirs, problems) =
            generated_directories(git.get("directories").unwrap_or(&Value::Null), &ctx.directories);
        for p in problems {
            push(p);
        }
        if dirs.is_empty() {
            push("the git generator yields no directory, so no Application is generated".into());
        }
    }
    let mut out = Vec::new();
    for (dir, app) in generate(v, ctx) {
        match app {
            Ok(app) => {
                if let Some(s) = app.get("spec") {
                    for m in application_spec(s, ctx) {
                        push(format!("generated for {dir}: {m}"));
                    }
                }
                out.push((app, dir));
            }
            Err(e) => push(format!("generated for {dir}: {e}")),
        }
    }
    out
}

/// The rules every Application spec (plain or generated) must follow.
fn application_spec(spec: &Value, ctx: &Context) -> Vec<String> {
    let mut out = Vec::new();
    let dest = spec.get("destination").cloned().unwrap_or(Value::Null);
    out.extend(destination_problems(&dest, ctx));
    let mut sources: Vec<&Value> = spec
        .get("sources")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if let Some(s) = spec.get("source") {
        if !sources.is_empty() {
            out.push("both source and sources are set; sources wins and source is ignored".into());
        }
        sources.push(s);
    }
    if sources.is_empty() {
        out.push("no source".into());
    }
    let refs: BTreeMap<&str, &Value> = sources
        .iter()
        .filter_map(|s| s.get("ref").and_then(Value::as_str).map(|r| (r, *s)))
        .collect();
    for s in &sources {
        let chart = s.get("chart").is_some();
        let url = s.get("repoURL").and_then(Value::as_str).unwrap_or("");
        if !chart && url != ctx.repo_url {
            out.push(format!(
                "git source repoURL {url:?} is not the GitOps repository {:?}",
                ctx.repo_url
            ));
        }
        if let Some(path) = s.get("path").and_then(Value::as_str)
            && !chart
            && ctx.charts.contains(path.trim_end_matches('/'))
            && !takes_settings(s, path, &ctx.settings_file)
        {
            out.push(format!(
                "source path {path:?} is a Helm chart of this tree: give it `helm.valueFiles: [{}]` (the relative path of {}), or every templated repoURL renders empty",
                relative(path, &ctx.settings_file),
                ctx.settings_file
            ));
        }
        for vf in s
            .pointer("/helm/valueFiles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let vf = vf.as_str().unwrap_or("");
            if let Some(rest) = vf.strip_prefix('$') {
                let r = rest.split('/').next().unwrap_or("");
                match refs.get(r) {
                    None => out.push(format!(
                        "value file {vf:?} uses ${r} but no source has `ref: {r}`"
                    )),
                    Some(src) if src.get("chart").is_some() => {
                        out.push(format!("the `ref: {r}` source must not have a chart"))
                    }
                    Some(_) => {}
                }
            } else if vf.contains('$') {
                out.push(format!("value file {vf:?}: a $ref may only start the path"));
            }
        }
    }
    out
}

/// Argo CD's answer for `dest` ([`destination`]), then the appliance's convention:
/// clusters by the name it registers them under, the local one included.
fn destination_problems(dest: &Value, ctx: &Context) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = ctx.registry.resolve_value(dest) {
        out.push(format!(
            "field `spec.destination`: Argo CD v3.5.1 refuses it (InvalidSpecError): {e}"
        ));
        return out;
    }
    let name = dest.get("name").and_then(Value::as_str);
    if name == Some(IN_CLUSTER_NAME) {
        out.push(format!(
            "field `spec.destination.name`: {IN_CLUSTER_NAME:?} works only through Argo CD's in-cluster special case (util/db/cluster.go GetClusterServersByName); the appliance registers the local cluster as {:?}: use that",
            ctx.host
        ));
    } else if let Some(server) = dest.get("server").and_then(Value::as_str) {
        let local = if server.trim_end_matches('/') == IN_CLUSTER_SERVER {
            format!(" ({:?} here)", ctx.host)
        } else {
            String::new()
        };
        out.push(format!(
            "field `spec.destination.server`: the appliance registers clusters by name: use `destination.name`{local}"
        ));
    }
    out
}

/// Whether a chart source at `path` lists `settings` among its value files (paths
/// relative to the chart, as Argo CD resolves them).
fn takes_settings(source: &Value, path: &str, settings: &str) -> bool {
    source
        .pointer("/helm/valueFiles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|f| normalize(&format!("{}/{f}", path.trim_end_matches('/'))) == settings)
}

/// `a/b/../c` → `a/c` (no `..` above the root).
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// `settings` relative to the directory `from`.
fn relative(from: &str, settings: &str) -> String {
    let depth = from
        .trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .count();
    format!("{}{settings}", "../".repeat(depth))
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            out.push(k.clone());
            collect_strings(x, out)
        }),
        _ => {}
    }
}

/// The trimmed expressions inside `{{ }}` in `s`.
fn template_exprs(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    out
}

#[cfg(test)]
mod tests;
