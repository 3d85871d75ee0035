//! YAML for Talos and Kubernetes documents (crates.md §5.7): parse with
//! `strict_booleans` so `auto: off` stays a string, and emit the way talosctl does
//! (4-space indentation, sequences indented under their key, long single-line
//! strings such as base64 PEM kept on one line, multi-line strings as `|` blocks).

use serde::Serialize;
use serde_json::Value;

/// A document that does not parse or serialise (the parser's message: line, column
/// and what it expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(pub String);

/// Serialises one document in talosctl's layout.
pub fn to_string<T: Serialize>(doc: &T) -> Result<String, YamlError> {
    let opts = serde_saphyr::ser_options! {
        indent_step: 4,
        compact_list_indent: false,
        // Never fold long single-line scalars (base64 PEM, tokens) into `>` blocks.
        folded_wrap_chars: usize::MAX,
    };
    serde_saphyr::to_string_with_options(doc, opts).map_err(|e| YamlError(e.to_string()))
}

/// Serialises several documents separated by `---` lines (Talos multi-document
/// configs put the v1alpha1 document first).
pub fn to_string_multi(docs: &[Value]) -> Result<String, YamlError> {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_string(d)?);
    }
    Ok(out)
}

/// Parses one YAML document into a JSON tree with YAML 1.2 booleans only.
pub fn from_str(text: &str) -> Result<Value, YamlError> {
    serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
        .map_err(|e| YamlError(e.to_string()))
}

/// Parses every document of a YAML stream (empty documents are dropped).
pub fn from_str_multi(text: &str) -> Result<Vec<Value>, YamlError> {
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple_with_options(text, serde_saphyr::options! { strict_booleans: true })
            .map_err(|e| YamlError(e.to_string()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talosctl_layout_and_strict_booleans() {
        let v = from_str("a:\n  auto: off\n  list: [x, y]\n  long: \"AAAA\"\n").unwrap();
        assert_eq!(v["a"]["auto"], Value::String("off".into()));
        let long = "QUJD".repeat(100);
        let doc = serde_json::json!({"k": {"list": ["x"], "b64": long, "text": "l1\nl2\n"}});
        let out = to_string(&doc).unwrap();
        assert!(out.contains("k:\n    list:\n        - x\n"), "{out}");
        assert!(out.contains(&format!("    b64: {long}\n")), "{out}");
        assert!(out.contains("    text: |\n        l1\n        l2\n"), "{out}");
        assert_eq!(from_str(&out).unwrap(), doc);
        let multi = to_string_multi(&[doc.clone(), serde_json::json!({"kind": "X"})]).unwrap();
        assert_eq!(from_str_multi(&multi).unwrap().len(), 2);
    }
}
