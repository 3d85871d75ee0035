//! ArgoCD's git directory generator with `goTemplate`, evaluated over the
//! repository's real directories (argo-cd v3.5.1 `applicationset/generators/git.go`,
//! `applicationset/utils/template_functions.go`): which directories an
//! ApplicationSet yields and the Applications it renders for them. `check` validates
//! what this produces; the hand-off waits for exactly these Applications.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Context, Object, path_match};

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

/// Why an ApplicationSet template does not render (argo-cd renders with
/// `missingkey=error`, so an unknown expression fails the Application).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without its `}}`, in this template text.
    #[error("unclosed `{{{{` in {0:?}")]
    Unclosed(String),
    /// An expression the git directory generator does not provide.
    #[error("unsupported template expression `{{{{{0}}}}}`")]
    Unsupported(String),
}

/// Renders the Go-template expressions ArgoCD's git directory generator provides
/// (`{{.path.path}}`, `{{.path.basename}}`, `{{.path.basenameNormalized}}`) for `dir`.
/// Anything else is an error, as with `missingkey=error`.
pub fn render(template: &str, dir: &str) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(template.to_string()))?;
        let expr = after[..end].trim();
        let value = match expr {
            ".path.path" => dir.to_string(),
            ".path.basename" => dir.rsplit('/').next().unwrap_or(dir).to_string(),
            ".path.basenameNormalized" => basename_normalized(dir),
            other => return Err(TemplateError::Unsupported(other.to_string())),
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn render_value(v: &Value, dir: &str) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => Value::String(render(s, dir)?),
        Value::Array(a) => Value::Array(a.iter().map(|x| render_value(x, dir)).collect::<Result<_, _>>()?),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((render(k, dir)?, render_value(x, dir)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// The Applications `appset` generates over `ctx.directories`, each with the
/// directory it was generated for, or why it cannot be rendered. Empty for an
/// ApplicationSet without `goTemplate` or without a git directories generator.
pub fn generate(appset: &Value, ctx: &Context) -> Vec<(String, Result<Value, TemplateError>)> {
    let spec = appset.get("spec").cloned().unwrap_or(Value::Null);
    if !spec.get("goTemplate").and_then(Value::as_bool).unwrap_or(false) {
        return Vec::new();
    }
    let template = spec.get("template").cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    for g in spec
        .get("generators")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(dirs) = g.pointer("/git/directories") else {
            continue;
        };
        for dir in generated_directories(dirs, &ctx.directories).0 {
            let app = render_value(&template, &dir).map(|mut app| {
                // The ApplicationSet controller creates them as Applications in its
                // own namespace.
                app["apiVersion"] = Value::String("argoproj.io/v1alpha1".into());
                app["kind"] = Value::String("Application".into());
                if let Some(ns) = appset.pointer("/metadata/namespace") {
                    app["metadata"]["namespace"] = ns.clone();
                }
                app
            });
            out.push((dir, app));
        }
    }
    out
}

/// Every Application the ApplicationSets among `objects` generate (the ones that
/// render), as objects named after the ApplicationSet's file.
pub fn expand(objects: &[Object], ctx: &Context) -> Vec<Object> {
    let mut out = Vec::new();
    for o in objects {
        if o.value.get("kind").and_then(Value::as_str) != Some("ApplicationSet") {
            continue;
        }
        let name = o
            .value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        for (dir, app) in generate(&o.value, ctx) {
            if let Ok(value) = app {
                out.push(Object {
                    file: format!("{} (generated by ApplicationSet/{name} for {dir})", o.file),
                    value,
                });
            }
        }
    }
    out
}
