//! talhelper's `${VAR}` substitution, applied to the talconfig text before it is
//! parsed (talhelper `pkg/config/loader.go` `LoadAndValidateFromFile`, v3.1.16-20
//! `39b6979`: env files loaded, then `substitute.SubstituteEnvFromByte`, then YAML).
//!
//! talhelper uses `a8m/envsubst` (v1.4.3, `parse/lex.go`, `parse/node.go`) in its
//! restricted mode (`BytesRestricted(b, noUnset=true, noEmpty=true)`), whose rules
//! this follows:
//! - `$NAME` and `${NAME}` (NAME: letters, digits, `_`; a lone `$_` is text);
//! - `${NAME-x}` / `${NAME=x}`: `x` when unset; `${NAME:-x}` / `${NAME:=x}`: `x` when
//!   unset or empty; `${NAME+x}` / `${NAME:+x}`: `x` when set, else empty; `x` is text
//!   or one `$OTHER` reference;
//! - `$$` is a literal `$`; a `$` followed by anything else is text;
//! - restricted: a plain reference to an unset variable, or to one set but empty, is
//!   an error (`variable ${NAME} not set` / `set but empty`); an unclosed `${` before
//!   the end of the line is an error.
//!
//! talhelper strips YAML comments before substituting, so references inside comments
//! never fail; here the caller says which names must resolve (those used outside
//! comments) and references to other unset names are left as written.

/// Why the text could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstError {
    /// A referenced variable is not set (neither in the environment nor in talenv).
    #[error("variable ${{{0}}} not set (export it or add it to talenv.yaml)")]
    Unset(String),
    /// A referenced variable is set to the empty string.
    #[error("variable ${{{0}}} set but empty")]
    Empty(String),
    /// `${` with no `}` on the same line.
    #[error("line {0}: closing brace expected after `${{`")]
    Unclosed(usize),
}

fn name_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// A parsed reference: name, operator (`""`, `-`, `=`, `:-`, `:=`, `+`, `:+`) and
/// the alternative (text, or `$OTHER`).
struct Ref<'a> {
    name: &'a str,
    op: &'a str,
    alt: &'a str,
}

/// Every variable name `text` references (for deciding which must resolve).
pub fn names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let _ = walk(text, &mut |r: &Ref<'_>| {
        out.push(r.name.to_string());
        if let Some(o) = other(r.alt) {
            out.push(o.to_string());
        }
        Ok(None)
    });
    out
}

/// `$OTHER` / `${OTHER}` as an alternative: the name.
fn other(alt: &str) -> Option<&str> {
    let o = alt.strip_prefix('$')?;
    let o = o.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(o);
    (!o.is_empty() && o.chars().all(name_char)).then_some(o)
}

/// Substitutes `text`. `lookup` gives a variable's value; `required(name)` says
/// whether an unresolvable plain reference is an error (else it is kept verbatim).
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    required: &dyn Fn(&str) -> bool,
) -> Result<String, SubstError> {
    walk(text, &mut |r: &Ref<'_>| {
        let val = lookup(r.name);
        let alt = || match other(r.alt) {
            Some(o) => plain(o, lookup(o), required),
            None => Ok(Some(r.alt.to_string())),
        };
        match r.op {
            ":-" | ":=" => match val {
                Some(v) if !v.is_empty() => Ok(Some(v)),
                _ => alt(),
            },
            "+" | ":+" => match val {
                Some(_) => alt(),
                None => Ok(Some(String::new())),
            },
            "-" | "=" if val.is_none() => alt(),
            _ => plain(r.name, val, required),
        }
    })
}

/// A plain reference's value; `None` keeps the reference as written.
fn plain(
    name: &str,
    val: Option<String>,
    required: &dyn Fn(&str) -> bool,
) -> Result<Option<String>, SubstError> {
    match val {
        Some(v) if v.is_empty() => Err(SubstError::Empty(name.to_string())),
        Some(v) => Ok(Some(v)),
        None if required(name) => Err(SubstError::Unset(name.to_string())),
        None => Ok(None),
    }
}

type OnRef<'f> = dyn FnMut(&Ref<'_>) -> Result<Option<String>, SubstError> + 'f;

/// Scans `text`, replacing each reference by what `f` returns (`None`: keep it).
fn walk(text: &str, f: &mut OnRef<'_>) -> Result<String, SubstError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut line = 1;
    while let Some(i) = rest.find('$') {
        line += rest[..i].matches('\n').count();
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (consumed, replaced) = if after.starts_with('$') {
            // `$$` escapes: one `$`, and what follows is plain text.
            (2, Some("$".to_string()))
        } else if let Some(inner) = after.strip_prefix('{') {
            if !inner.starts_with(name_char) {
                (2, None)
            } else {
                match inner.find(['}', '\n', '\r']) {
                    Some(e) if inner.as_bytes()[e] == b'}' => {
                        let body = &inner[..e];
                        let n = body.find(|c: char| !name_char(c)).unwrap_or(body.len());
                        let (name, tail) = body.split_at(n);
                        let op = [":-", ":=", ":+", "-", "=", "+"]
                            .into_iter()
                            .find(|o| tail.starts_with(o))
                            .unwrap_or("");
                        let r = Ref {
                            name,
                            op,
                            alt: &tail[op.len()..],
                        };
                        (2 + e + 1, f(&r)?)
                    }
                    _ => return Err(SubstError::Unclosed(line)),
                }
            }
        } else {
            let n = after.find(|c: char| !name_char(c)).unwrap_or(after.len());
            if n == 0 || &after[..n] == "_" {
                (1, None)
            } else {
                let r = Ref {
                    name: &after[..n],
                    op: "",
                    alt: "",
                };
                (1 + n, f(&r)?)
            }
        };
        match replaced {
            Some(s) => out.push_str(&s),
            None => out.push_str(&rest[i..i + consumed]),
        }
        line += rest[i..i + consumed].matches('\n').count();
        rest = &rest[i + consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "HOST" => Some("cp1".into()),
            "EMPTY" => Some(String::new()),
            "IP" => Some("10.0.0.11".into()),
            _ => None,
        }
    }

    fn sub(t: &str) -> Result<String, SubstError> {
        substitute(t, &env, &|_| true)
    }

    #[test]
    fn a8m_envsubst_rules() {
        assert_eq!(sub("hostname: ${HOST}").unwrap(), "hostname: cp1");
        assert_eq!(sub("ip: $IP/24").unwrap(), "ip: 10.0.0.11/24");
        assert_eq!(sub("${NOPE:-dflt} ${EMPTY:-e} ${NOPE-d2}").unwrap(), "dflt e d2");
        assert_eq!(sub("${NOPE:=x} ${HOST:=y}").unwrap(), "x cp1");
        assert_eq!(sub("[${HOST+set}][${NOPE:+set}]").unwrap(), "[set][]");
        assert_eq!(sub("${NOPE:-$IP}").unwrap(), "10.0.0.11");
        assert_eq!(
            sub("cost: $$HOST and $ 5 and $_ and ${ x").unwrap(),
            "cost: $HOST and $ 5 and $_ and ${ x"
        );
        assert_eq!(sub("a: ${NOPE}"), Err(SubstError::Unset("NOPE".into())));
        assert_eq!(sub("a: $EMPTY"), Err(SubstError::Empty("EMPTY".into())));
        assert_eq!(sub("a: 1\nb: ${HOST\n"), Err(SubstError::Unclosed(2)));
        // Names only used in comments are not required: kept as written.
        let kept = substitute("# ${OLD}\nh: ${HOST}", &env, &|n| n != "OLD").unwrap();
        assert_eq!(kept, "# ${OLD}\nh: cp1");
        assert_eq!(names("a ${X:-$Y} $Z $$W"), vec!["X", "Y", "Z"]);
    }
}
