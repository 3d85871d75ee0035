//! The small part of Helm's template language the tree's own charts use, so `check`
//! sees the objects Argo CD will render (argo-cd v3.5.1 renders a source whose path
//! holds a `Chart.yaml` with `helm template`, value files resolved relative to the
//! chart inside the repository: `util/io/path/resolved.go`
//! `ResolveValueFilePathOrUrl`).
//!
//! Supported actions, as Go's `text/template` evaluates them:
//! - `{{ .Values.a.b }}`: a scalar from the values (Helm prints a missing key as an
//!   empty string, which would silently empty a `repoURL`, so here it is an error);
//! - `{{ "text" }}` / ``{{ `text` }}``: a string constant, the way to write an
//!   ApplicationSet's own `{{.path.basename}}` inside a chart.
//!
//! Anything else (pipelines, functions, `range`, trim markers) is refused with its
//! position, rather than rendered differently from Helm.

use serde_json::Value;

/// Where in a template a problem is (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line number.
    pub line: usize,
    /// Column, in bytes.
    pub column: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)
    }
}

/// Why a chart template does not render the way Helm would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelmError {
    /// `{{` without its `}}`.
    #[error("{0}: unclosed `{{{{`")]
    Unclosed(Position),
    /// An action that cannot be evaluated.
    #[error("{at}: {problem}")]
    Action {
        /// Where the action starts.
        at: Position,
        /// What is wrong with it.
        problem: ActionError,
    },
}

/// What is wrong with one `{{ … }}` action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// `{{-` / `-}}`.
    #[error("trim markers (`{{{{-`, `-}}}}`) are not used by this tree's charts")]
    TrimMarker,
    /// A `.Values` path with a missing key.
    #[error("`.Values.{path}`: no `{key}` in the values file")]
    MissingKey {
        /// The whole path.
        path: String,
        /// The first key not found.
        key: String,
    },
    /// A `.Values` path naming a map or list.
    #[error("`.Values.{0}` is not a scalar")]
    NotScalar(String),
    /// An escape Go's interpreted strings have but this subset does not.
    #[error("unsupported escape `\\{0}`")]
    Escape(char),
    /// Anything but `.Values.<key>` and string constants.
    #[error("unsupported template action `{{{{{0}}}}}` (only `.Values.<key>` and string constants)")]
    Unsupported(String),
}

/// Renders `template` with `values` (the chart's values file).
pub fn render(template: &str, values: &Value) -> Result<String, HelmError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let at = offset + start;
        let after = &rest[start + 2..];
        let (action, len) = action(after).ok_or_else(|| HelmError::Unclosed(line_col(template, at)))?;
        out.push_str(&evaluate(action, values).map_err(|problem| HelmError::Action {
            at: line_col(template, at),
            problem,
        })?);
        let consumed = start + 2 + len;
        rest = &rest[consumed..];
        offset += consumed;
    }
    out.push_str(rest);
    Ok(out)
}

/// The action text up to its closing `}}` (string constants may contain `}}`), and
/// how many bytes it took including the `}}`.
fn action(s: &str) -> Option<(&str, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some((&s[..i], i + 2)),
            _ => {}
        }
        i += 1;
    }
    None
}

fn evaluate(action: &str, values: &Value) -> Result<String, ActionError> {
    if action.starts_with('-') || action.ends_with('-') {
        return Err(ActionError::TrimMarker);
    }
    let a = action.trim();
    if let Some(path) = a.strip_prefix(".Values.") {
        let mut v = values;
        for key in path.split('.') {
            v = v.get(key).ok_or_else(|| ActionError::MissingKey {
                path: path.to_string(),
                key: key.to_string(),
            })?;
        }
        return match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(ActionError::NotScalar(path.to_string())),
        };
    }
    if let Some(raw) = a.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        return Ok(raw.to_string());
    }
    if a.len() >= 2 && a.starts_with('"') && a.ends_with('"') {
        return unquote(&a[1..a.len() - 1]);
    }
    Err(ActionError::Unsupported(action.to_string()))
}

/// A Go interpreted string literal's body (the escapes a template needs).
fn unquote(s: &str) -> Result<String, ActionError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            other => return Err(ActionError::Escape(other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

fn line_col(text: &str, at: usize) -> Position {
    let before = &text[..at];
    Position {
        line: before.matches('\n').count() + 1,
        column: before.rsplit('\n').next().map_or(0, str::len) + 1,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_and_constants_render_as_helm_does() {
        let v = json!({"repository": {"url": "https://git.lan/gitops.git", "revision": "main"}, "n": 3});
        let t = "repoURL: {{ .Values.repository.url }}\nrev: {{.Values.repository.revision}}\n\
                 name: '{{ \"{{.path.basenameNormalized}}\" }}'\nraw: {{ `{{.path.basename}}` }} {{ .Values.n }}\n";
        assert_eq!(
            render(t, &v).unwrap(),
            "repoURL: https://git.lan/gitops.git\nrev: main\nname: '{{.path.basenameNormalized}}'\nraw: {{.path.basename}} 3\n"
        );
        assert_eq!(render("{{ \"a}}b\\\"c\" }}", &v).unwrap(), "a}}b\"c");
    }

    #[test]
    fn anything_else_is_refused_with_its_position() {
        let v = json!({"repository": {"url": "u"}});
        for (t, want) in [
            (
                "x\n  {{ .Values.repository.revision }}",
                "line 2 column 3: `.Values.repository.revision`: no `revision`",
            ),
            ("{{ .Values.repository }}", "not a scalar"),
            ("{{ .Values.repository.url | quote }}", "no `url | quote`"),
            ("{{ range .Values.clusters }}", "unsupported template action"),
            ("{{- .Values.repository.url }}", "trim markers"),
            ("{{ .Values.repository.url ", "unclosed"),
            ("{{ \"a\\qb\" }}", "unsupported escape `\\q`"),
        ] {
            let e = render(t, &v).unwrap_err().to_string();
            assert!(e.contains(want), "{t:?}: {e}");
        }
    }
}
