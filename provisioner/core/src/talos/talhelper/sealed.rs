//! Values from a SOPS-encrypted talenv stay encrypted in what `import talhelper`
//! writes: the infra file keeps `${NAME}` where such a value was, the encrypted
//! talenv is written next to it unchanged (`<cluster>.talenv.sops.yaml`), and infra
//! loading substitutes the placeholders in memory after decrypting it.
//!
//! This is how talhelper itself is used (v3.1.16-20 `39b6979`, `cmd/genconfig.go`,
//! `pkg/substitute/envsubst.go`, `pkg/config/gitignore.go`): `talconfig.yaml` with its
//! `${VAR}`s and `talenv.sops.yaml` are what is committed; `genconfig` decrypts and
//! substitutes when it renders and writes a `.gitignore` for the rendered configs.
//! Here the appliance's render is that step, done in memory.
//!
//! A sealed file follows talhelper's substitution rules ([`super::envsubst`]): `$$` is
//! a literal `$`. [`seal`] writes every `$` of the plain text as `$$`, so
//! [`unseal`] gives back exactly the text the import produced (checked before
//! anything is written).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::envsubst::{self, SubstError};
use crate::catalog::{FieldError, YamlFile};

/// The file name ending of a cluster's encrypted talenv in `infra/`.
pub const TALENV_SUFFIX: &str = ".talenv.sops.yaml";

/// The companion file name of cluster file stem `stem`.
pub fn companion_name(stem: &str) -> String {
    format!("{stem}{TALENV_SUFFIX}")
}

/// The cluster file stem a companion file name belongs to (`None`: not a companion).
pub fn companion_of(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix(TALENV_SUFFIX)
        .or_else(|| file_name.strip_suffix(".talenv.sops.yml"))
}

/// Why text cannot be sealed. Messages name variables and fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A value appears in a form a placeholder cannot stand for (e.g. YAML-escaped).
    #[error(
        "field `{field}`: the value of ${{{name}}} (from an encrypted talenv) appears in a form a `${{{name}}}` placeholder cannot replace; use it as a whole YAML scalar or keep it in a plain talenv"
    )]
    Escaped {
        /// The variable.
        name: String,
        /// Where it still appears.
        field: String,
    },
    /// The sealed text is not YAML, or substituting it did not give back the
    /// original (a bug guard).
    #[error(
        "the text with `${{NAME}}` placeholders is not YAML or does not substitute back to the imported text"
    )]
    RoundTrip,
}

/// Why a sealed file cannot be resolved. Messages never carry values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct UnsealError {
    /// Dotted path of the field using the variable (`(document)` if unknown).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Replaces each occurrence of a `secrets` value in `text` by `${NAME}` (longest
/// value first) and every other `$` by `$$`. Empty values are not secrets.
pub fn seal(text: &str, secrets: &BTreeMap<String, String>) -> Result<String, SealError> {
    let vals = values(secrets);
    let out = replace_values(text, &vals, true);
    // A value the YAML writer escaped or folded is still in the document; a sealed
    // text that is not YAML could hide one, so it is refused too.
    let docs = crate::talos::yaml::from_str_multi(&out).map_err(|_| SealError::RoundTrip)?;
    let mut found = None;
    for d in &docs {
        leaves(d, &mut String::new(), &mut |field, s| {
            let s = strip_placeholders(s);
            if found.is_none()
                && let Some((n, _)) = vals.iter().find(|(_, v)| s.contains(v))
            {
                found = Some((n.to_string(), field.to_string()));
            }
        });
    }
    if let Some((name, field)) = found {
        return Err(SealError::Escaped { name, field });
    }
    match unseal(&out, secrets) {
        Ok(back) if back == text => Ok(out),
        _ => Err(SealError::RoundTrip),
    }
}

/// Non-empty values, longest first (a value containing another is replaced whole).
fn values(vars: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    let mut vals: Vec<(&str, &str)> = vars
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    vals.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    vals
}

/// `text` with each value written `${NAME}` (and, with `escape`, each other `$` `$$`).
fn replace_values(text: &str, vals: &[(&str, &str)], escape: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'scan: while i < text.len() {
        let rest = &text[i..];
        for (name, v) in vals {
            if rest.starts_with(v) {
                out.push_str(&format!("${{{name}}}"));
                i += v.len();
                continue 'scan;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        if escape && c == '$' {
            out.push('$');
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// A message about an unsealed file (a parse error quoting its lines, a validation
/// message quoting a field) with every talenv value written `${NAME}` again.
pub fn redact(message: &str, vars: &BTreeMap<String, String>) -> String {
    replace_values(message, &values(vars), false)
}

fn strip_placeholders(s: &str) -> String {
    envsubst::substitute(s, &|_| Some("\u{0}".into()), &|_| false).unwrap_or_default()
}

/// Substitutes a sealed file with its talenv's `vars` (all references must resolve;
/// `$$` is `$`). Errors name the field that uses the variable.
pub fn unseal(text: &str, vars: &BTreeMap<String, String>) -> Result<String, UnsealError> {
    envsubst::substitute(text, &|n| vars.get(n).cloned(), &|_| true).map_err(|e| {
        let name = match &e {
            SubstError::Unset(n) | SubstError::Empty(n) => Some(n.as_str()),
            SubstError::Unclosed(_) => None,
        };
        UnsealError {
            field: name
                .and_then(|n| fields_using(text, n).into_iter().next())
                .unwrap_or_else(|| "(document)".into()),
            reason: match &e {
                SubstError::Unset(n) => format!("variable ${{{n}}} is not in the encrypted talenv"),
                other => other.to_string(),
            },
        }
    })
}

/// The fields of a sealed file whose value uses `${name}` (first is where an error
/// is reported).
pub fn fields_using(text: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(docs) = crate::talos::yaml::from_str_multi(text) {
        for d in &docs {
            leaves(d, &mut String::new(), &mut |field, s| {
                if envsubst::names(s).iter().any(|n| n == name) {
                    out.push(field.to_string());
                }
            });
        }
    }
    out
}

/// Every placeholder of a sealed file: (field, variable).
pub fn placeholders(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(docs) = crate::talos::yaml::from_str_multi(text) {
        for d in &docs {
            leaves(d, &mut String::new(), &mut |field, s| {
                out.extend(envsubst::names(s).into_iter().map(|n| (field.to_string(), n)));
            });
        }
    }
    out
}

/// Calls `f(field path, string)` for every string leaf and key, paths written as
/// `serde_path_to_error` does (`nodes[0].hostname`), like `check`'s other errors.
fn leaves(v: &Value, path: &mut String, f: &mut dyn FnMut(&str, &str)) {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            leaves(x, path, f);
            path.truncate(len);
        }),
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
            f(path, k);
            leaves(x, path, f);
            path.truncate(len);
        }),
        _ => {}
    }
}

/// Gives the variables of a cluster's encrypted talenv (`<cluster>.talenv.sops.yaml`
/// next to `<cluster>.yaml`, see this module), decrypted in memory by the caller.
pub trait Talenvs {
    /// The variables of `file`, whose (SOPS) text is `text`.
    fn vars(&self, file: &Path, text: &str) -> Result<BTreeMap<String, String>, TalenvUnavailable>;
}

/// Why an encrypted talenv cannot be used (never carries a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TalenvUnavailable(pub String);

/// No key: a cluster file with an encrypted talenv does not load.
#[derive(Debug, Clone, Copy)]
pub struct NoTalenvKey;

impl Talenvs for NoTalenvKey {
    fn vars(&self, _: &Path, _: &str) -> Result<BTreeMap<String, String>, TalenvUnavailable> {
        Err(TalenvUnavailable(
            "no age key is configured (`talenv_age_key_file`)".into(),
        ))
    }
}

fn field_error(file: &Path, field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        file: file.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

/// A sealed cluster file's text with its talenv's values in (memory only), and them.
pub(crate) fn unseal_file(
    path: &Path,
    text: &str,
    talenv: &YamlFile,
    talenvs: &dyn Talenvs,
) -> Result<(String, BTreeMap<String, String>), FieldError> {
    let vars = talenvs.vars(&talenv.0, &talenv.1).map_err(|e| {
        let (field, name) = placeholders(text)
            .into_iter()
            .next()
            .unwrap_or_else(|| ("(document)".into(), "…".into()));
        let why = format!("${{{name}}} is kept encrypted in {}: {e}", talenv.0.display());
        field_error(path, field, why)
    })?;
    match unseal(text, &vars) {
        Ok(t) => Ok((t, vars)),
        Err(e) => Err(field_error(
            path,
            e.field,
            format!("{} ({})", e.reason, talenv.0.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn seal_then_unseal_gives_back_the_text() {
        let text = "endpoint: https://10.9.0.10:6443\nnodes:\n  - hostname: cp-9\n    ipAddress: 10.9.0.100\n    script: echo $HOME $$ ${X}\n";
        let s = vars(&[("VIP", "10.9.0.10"), ("HOST", "cp-9")]);
        let sealed = seal(text, &s).unwrap();
        assert!(
            !sealed.contains("10.9.0.10:") && !sealed.contains("cp-9"),
            "{sealed}"
        );
        assert!(sealed.contains("hostname: ${HOST}"), "{sealed}");
        assert!(sealed.contains("echo $$HOME $$$$ $${X}"), "{sealed}");
        assert_eq!(unseal(&sealed, &s).unwrap(), text);
        assert_eq!(
            placeholders(&sealed)[1],
            ("nodes[0].hostname".to_string(), "HOST".to_string())
        );
    }

    #[test]
    fn missing_variable_names_the_field_not_a_value() {
        let sealed = "clusterName: lab\nnodes:\n  - hostname: ${HOST}\n";
        let e = unseal(sealed, &vars(&[("OTHER", "s3cret")])).unwrap_err();
        assert_eq!(e.field, "nodes[0].hostname");
        assert!(
            e.reason.contains("${HOST}") && !e.to_string().contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn an_escaped_value_is_refused_rather_than_leaked() {
        // The YAML writer escapes a line break; the raw value is not in the text.
        let text = "a: \"line1\\nline2\"\n";
        let e = seal(text, &vars(&[("M", "line1\nline2")])).unwrap_err();
        assert_eq!(
            e,
            SealError::Escaped {
                name: "M".into(),
                field: "a".into()
            }
        );
        assert!(!e.to_string().contains("line1"));
    }

    #[test]
    fn companion_names() {
        assert_eq!(companion_name("lab"), "lab.talenv.sops.yaml");
        assert_eq!(companion_of("lab.talenv.sops.yaml"), Some("lab"));
        assert_eq!(companion_of("lab.yaml"), None);
    }
}
