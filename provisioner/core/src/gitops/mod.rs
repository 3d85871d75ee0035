//! Semantic checks over the ArgoCD objects in `gitops/` (argocd-gitops.md §8.2, §12
//! item 14). Schema validation does not catch these (§8.2 item 7): a broken
//! ApplicationSet validates fine against the CRD schema, then generates an Application
//! for a cluster named `values`. So the ApplicationSets are *evaluated* against the
//! repository's real directory list, the way ArgoCD's git directory generator does,
//! and every generated Application is checked like a hand-written one.
//!
//! Rules: exclude paths are full repository paths that match something; `$values`
//! needs a `ref: values` source without `chart`; `goTemplate: true` ⇔ Go template
//! syntax; `destination` has `name` xor `server`, and names are registered clusters;
//! git sources use the configured repository URL; names are unique.

pub mod cni;
pub mod metallb;
mod path_match;
pub mod podsecurity;
pub mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

pub use path_match::path_match;

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
    /// Cluster names registered in ArgoCD (cluster Secrets). `in-cluster` is always
    /// valid.
    pub clusters: BTreeSet<String>,
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

/// ArgoCD's `basenameNormalized`: lower-case, every character outside `[-a-z0-9.]`
/// replaced by `-` (argo-cd `applicationset/utils/template_functions.go`
/// `SanitizeName`).
pub fn basename_normalized(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The directories a git `directories` generator yields over `dirs`: matched by an
/// include pattern and by no exclude pattern (exclude wins; argo-cd
/// `applicationset/generators/git.go` `filterApps`), and the problems with the patterns.
pub fn generated_directories(directories: &Value, dirs: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    let mut problems = Vec::new();
    for d in directories.as_array().into_iter().flatten() {
        let Some(path) = d.get("path").and_then(Value::as_str) else {
            problems.push("a directories entry has no `path`".to_string());
            continue;
        };
        if d.get("exclude").and_then(Value::as_bool).unwrap_or(false) {
            exclude.push(path);
        } else {
            include.push(path);
        }
    }
    for ex in &exclude {
        if !dirs.iter().any(|d| path_match(ex, d)) {
            problems.push(format!(
                "exclude path {ex:?} matches no directory of the repository (ArgoCD matches the full repository-relative path, and `dir/*` never matches `dir` itself)"
            ));
        }
    }
    let generated = dirs
        .iter()
        .filter(|d| include.iter().any(|p| path_match(p, d)) && !exclude.iter().any(|p| path_match(p, d)))
        .cloned()
        .collect();
    (generated, problems)
}

/// Renders the Go-template expressions ArgoCD's git directory generator provides
/// (`{{.path.path}}`, `{{.path.basename}}`, `{{.path.basenameNormalized}}`) for `dir`.
/// Anything else is an error, as with `missingkey=error`.
pub fn render(template: &str, dir: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed `{{{{` in {template:?}"))?;
        let expr = after[..end].trim();
        let value = match expr {
            ".path.path" => dir.to_string(),
            ".path.basename" => dir.rsplit('/').next().unwrap_or(dir).to_string(),
            ".path.basenameNormalized" => basename_normalized(dir),
            other => return Err(format!("unsupported template expression `{{{{{other}}}}}`")),
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
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
    let mut out = Vec::new();
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
        if !go {
            continue; // already reported; rendering needs Go syntax
        }
        for dir in dirs {
            match render_value(&template, &dir) {
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
    }
    out
}

/// The rules every Application spec (plain or generated) must follow.
fn application_spec(spec: &Value, ctx: &Context) -> Vec<String> {
    let mut out = Vec::new();
    match spec.get("destination") {
        None => out.push("no destination".into()),
        Some(d) => {
            let name = d.get("name").and_then(Value::as_str);
            let server = d.get("server").and_then(Value::as_str);
            match (name, server) {
                (Some(_), Some(_)) => out.push("destination has both name and server; use one".into()),
                (None, None) => out.push("destination has neither name nor server".into()),
                (Some(n), None) if n != "in-cluster" && !ctx.clusters.contains(n) => out.push(format!(
                    "destination name {n:?} is not a registered cluster (known: in-cluster, {})",
                    ctx.clusters.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
                _ => {}
            }
        }
    }
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

fn render_value(v: &Value, dir: &str) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(render(s, dir)?),
        Value::Array(a) => Value::Array(a.iter().map(|x| render_value(x, dir)).collect::<Result<_, _>>()?),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((render(k, dir)?, render_value(x, dir)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests;
