//! The subset of talhelper's Go templating that real talconfigs use: node labels,
//! node annotations and patches may contain `{{ … }}` actions evaluated against the
//! node's rendered v1alpha1 config (talhelper `pkg/templating/template.go`
//! `RenderTemplate`: Go `text/template` with the sprig functions, data
//! `v1alpha1.Config`; `pkg/talos/nodeconfig.go` `templateConfig`, v3.1.16-20).
//!
//! Supported: pipelines of field paths (`.MachineConfig.MachineInstall.InstallImage`),
//! string/number/bool literals and the sprig functions `contains`, `hasPrefix`,
//! `hasSuffix`, `lower`, `upper`, `trim`, `trimPrefix`, `trimSuffix`, `replace`,
//! `default`, `quote`, `toString`, `not`, `eq`, `ne`, with `{{-`/`-}}` trimming.
//! Control actions (`if`, `range`, `with`), variables and parentheses are refused
//! with a reason, so the caller lists the field instead of guessing.
//!
//! Go field names are those of Talos' config structs
//! (`pkg/machinery/config/types/v1alpha1/v1alpha1_types.go`): a prefix plus the YAML
//! key (`MachineInstall` → `install`, `InstallImage` → `image`, `MachineConfig` →
//! `machine`). A step resolves to the longest YAML key of the current mapping that the
//! Go name contains (case-insensitive), which holds for every field of those structs.
//! Secret material (CA keys, tokens, cluster secrets) is never templated: the import
//! renders with placeholder secrets.

use serde_json::Value;

/// Why a template is not rendered by the import (the caller lists the field with
/// this reason instead of guessing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed `{{{{`")]
    Unclosed,
    /// `}}` without `{{`.
    #[error("unexpected `}}}}`")]
    UnexpectedClose,
    /// A mapping where text is needed.
    #[error("a mapping cannot be printed by the import")]
    Mapping,
    /// A string literal without its closing quote.
    #[error("unterminated string")]
    UnterminatedString,
    /// Parentheses or variables.
    #[error("`{0}` (parentheses, variables) not supported")]
    Syntax(char),
    /// `if`, `range`, `with` and the other control actions.
    #[error("`{0}` actions not supported")]
    Control(String),
    /// `a | | b`.
    #[error("empty command in pipeline")]
    EmptyCommand,
    /// Arguments after something that is not a function.
    #[error("{0} is not a function")]
    NotAFunction(String),
    /// `{{ }}`.
    #[error("empty action")]
    EmptyAction,
    /// An argument that is neither a field path nor a literal.
    #[error("`{0}`: only field paths and literals are supported as arguments")]
    Operand(String),
    /// A path step below a scalar.
    #[error(".{path}: `{step}` is not inside a mapping")]
    NotAMapping {
        /// The whole path.
        path: String,
        /// The Go field name of the step.
        step: String,
    },
    /// A path step the rendered config does not have.
    #[error(".{path}: `{step}` is not set in the rendered config")]
    NotSet {
        /// The whole path.
        path: String,
        /// The Go field name of the step.
        step: String,
    },
    /// A path into secret material.
    #[error(".{0}: secret material is not templated by the import")]
    Secret(String),
    /// A sprig function called with the wrong number of arguments.
    #[error("{name} takes {want} argument(s), got {got}")]
    Arity {
        /// The function.
        name: String,
        /// How many it takes.
        want: usize,
        /// How many it got.
        got: usize,
    },
    /// A function outside the supported subset.
    #[error("template function `{0}` not supported by the import")]
    Function(String),
    /// The node's config (the template's data) does not render.
    #[error("the node does not render: {0}")]
    NodeDoesNotRender(String),
}

/// Keys whose values are secrets in the rendered config.
const SECRET_KEYS: [&str; 9] = [
    "ca",
    "token",
    "secret",
    "id",
    "key",
    "secretboxEncryptionSecret",
    "aescbcEncryptionSecret",
    "aggregatorCA",
    "serviceAccount",
];

/// Whether `s` contains a template (talhelper `IsStringATemplate`).
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("}}")
}

/// Renders `text` against `data` (the v1alpha1 document).
pub fn render(text: &str, data: &Value) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let mut lit = &rest[..open];
        let mut body = &rest[open + 2..];
        if let Some(b) = body.strip_prefix('-') {
            lit = lit.trim_end();
            body = b;
        }
        out.push_str(lit);
        let close = body.find("}}").ok_or(TemplateError::Unclosed)?;
        let mut action = &body[..close];
        rest = &body[close + 2..];
        if let Some(a) = action.strip_suffix('-') {
            action = a;
            rest = rest.trim_start();
        }
        out.push_str(&text_of(&pipeline(action.trim(), data)?)?);
    }
    if rest.contains("}}") {
        return Err(TemplateError::UnexpectedClose);
    }
    out.push_str(rest);
    Ok(out)
}

fn text_of(v: &Value) -> Result<String, TemplateError> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(text_of).collect::<Result<Vec<_>, _>>()?.join(" ")
        ),
        Value::Object(_) => return Err(TemplateError::Mapping),
    })
}

fn tokens(s: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '`' {
            chars.next();
            let mut tok = String::from('"');
            let mut esc = false;
            loop {
                let (_, d) = chars.next().ok_or(TemplateError::UnterminatedString)?;
                if esc {
                    tok.push(match d {
                        'n' => '\n',
                        't' => '\t',
                        o => o,
                    });
                    esc = false;
                } else if d == '\\' && c == '"' {
                    esc = true;
                } else if d == c {
                    break;
                } else {
                    tok.push(d);
                }
            }
            out.push(tok);
        } else if c == '|' {
            chars.next();
            out.push("|".into());
        } else if c == '(' || c == ')' || c == '$' {
            return Err(TemplateError::Syntax(c));
        } else {
            let start = i;
            let mut end = s.len();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_whitespace() || d == '|' || d == '(' || d == ')' {
                    end = j;
                    break;
                }
                chars.next();
            }
            out.push(s[start..end].to_string());
        }
    }
    Ok(out)
}

fn pipeline(action: &str, data: &Value) -> Result<Value, TemplateError> {
    let toks = tokens(action)?;
    if let Some(kw) = toks.first().filter(|t| {
        matches!(
            t.as_str(),
            "if" | "else" | "end" | "range" | "with" | "define" | "template" | "block"
        )
    }) {
        return Err(TemplateError::Control(kw.clone()));
    }
    let mut prev: Option<Value> = None;
    for cmd in toks.split(|t| t == "|") {
        let (head, args) = cmd.split_first().ok_or(TemplateError::EmptyCommand)?;
        let mut vals = args
            .iter()
            .map(|a| operand(a, data))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(p) = prev.take() {
            vals.push(p);
        }
        prev = Some(
            if head.starts_with('.')
                || head.starts_with('"')
                || !head.starts_with(char::is_alphabetic)
                || head == "true"
                || head == "false"
            {
                if !vals.is_empty() {
                    return Err(TemplateError::NotAFunction(head.clone()));
                }
                operand(head, data)?
            } else {
                call(head, &vals)?
            },
        );
    }
    prev.ok_or(TemplateError::EmptyAction)
}

fn operand(tok: &str, data: &Value) -> Result<Value, TemplateError> {
    if let Some(s) = tok.strip_prefix('"') {
        return Ok(Value::String(s.to_string()));
    }
    match tok {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "." => return Ok(data.clone()),
        _ => {}
    }
    if let Some(path) = tok.strip_prefix('.') {
        return field(data, path);
    }
    if let Ok(n) = tok.parse::<i64>() {
        return Ok(Value::from(n));
    }
    Err(TemplateError::Operand(tok.to_string()))
}

fn field(data: &Value, path: &str) -> Result<Value, TemplateError> {
    let mut cur = data;
    for go in path.split('.') {
        let obj = cur.as_object().ok_or_else(|| TemplateError::NotAMapping {
            path: path.to_string(),
            step: go.to_string(),
        })?;
        let lower = go.to_lowercase();
        let key = obj
            .keys()
            .filter(|k| lower.contains(&k.to_lowercase()))
            .max_by_key(|k| k.len())
            .ok_or_else(|| TemplateError::NotSet {
                path: path.to_string(),
                step: go.to_string(),
            })?;
        if SECRET_KEYS.contains(&key.as_str()) {
            return Err(TemplateError::Secret(path.to_string()));
        }
        cur = &obj[key];
    }
    Ok(cur.clone())
}

fn s(v: &Value) -> Result<String, TemplateError> {
    text_of(v)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn call(name: &str, a: &[Value]) -> Result<Value, TemplateError> {
    let want = |n: usize| {
        if a.len() == n {
            Ok(())
        } else {
            Err(TemplateError::Arity {
                name: name.to_string(),
                want: n,
                got: a.len(),
            })
        }
    };
    let str_v = |x: String| Ok(Value::String(x));
    match name {
        "contains" | "hasPrefix" | "hasSuffix" => {
            want(2)?;
            let (needle, hay) = (s(&a[0])?, s(&a[1])?);
            Ok(Value::Bool(match name {
                "contains" => hay.contains(&needle),
                "hasPrefix" => hay.starts_with(&needle),
                _ => hay.ends_with(&needle),
            }))
        }
        "lower" => want(1).and_then(|_| str_v(s(&a[0])?.to_lowercase())),
        "upper" => want(1).and_then(|_| str_v(s(&a[0])?.to_uppercase())),
        "trim" => want(1).and_then(|_| str_v(s(&a[0])?.trim().to_string())),
        "toString" => want(1).and_then(|_| str_v(s(&a[0])?)),
        "quote" => want(1).and_then(|_| str_v(format!("{:?}", s(&a[0])?))),
        "trimPrefix" => want(2).and_then(|_| {
            let v = s(&a[1])?;
            str_v(v.strip_prefix(&s(&a[0])?).unwrap_or(&v).to_string())
        }),
        "trimSuffix" => want(2).and_then(|_| {
            let v = s(&a[1])?;
            str_v(v.strip_suffix(&s(&a[0])?).unwrap_or(&v).to_string())
        }),
        "replace" => want(3).and_then(|_| str_v(s(&a[2])?.replace(&s(&a[0])?, &s(&a[1])?))),
        "default" => want(2).map(|_| if truthy(&a[1]) { a[1].clone() } else { a[0].clone() }),
        "not" => want(1).map(|_| Value::Bool(!truthy(&a[0]))),
        "eq" | "ne" => want(2).map(|_| Value::Bool((a[0] == a[1]) == (name == "eq"))),
        other => Err(TemplateError::Function(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn talhelper_example_templates() {
        let cfg = json!({"version": "v1alpha1", "machine": {"token": "t", "install": {"image": "factory.talos.dev/metal-installer-secureboot/abc:v1.11.6"}, "network": {"hostname": "cp1"}}});
        let t = "{{\n  .MachineConfig.MachineInstall.InstallImage |\n  contains \"installer-secureboot\"\n}}";
        assert_eq!(render(t, &cfg).unwrap(), "true");
        assert_eq!(
            render("{{ .MachineConfig.MachineInstall.InstallImage }}", &cfg).unwrap(),
            "factory.talos.dev/metal-installer-secureboot/abc:v1.11.6"
        );
        assert_eq!(
            render(
                "name: \"{{ .MachineConfig.MachineNetwork.NetworkHostname | upper }}\"",
                &cfg
            )
            .unwrap(),
            "name: \"CP1\""
        );
        assert_eq!(render("a {{- \"b\" -}} c", &cfg).unwrap(), "abc");
        assert_eq!(
            render(
                "{{ replace \"cp\" \"node\" .MachineConfig.MachineNetwork.NetworkHostname }}",
                &cfg
            )
            .unwrap(),
            "node1"
        );
        assert!(
            render("{{ .MachineConfig.MachineToken }}", &cfg)
                .unwrap_err()
                .to_string()
                .contains("secret")
        );
        assert!(
            render("{{ if .X }}a{{ end }}", &cfg)
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        assert!(
            render("{{ sha256sum .MachineConfig }}", &cfg)
                .unwrap_err()
                .to_string()
                .contains("sha256sum")
        );
        assert!(
            render("{{ .MachineConfig.MachineKernel }}", &cfg)
                .unwrap_err()
                .to_string()
                .contains("not set")
        );
        assert!(is_template("{{ x }}") && !is_template("plain ${VAR}"));
    }
}
