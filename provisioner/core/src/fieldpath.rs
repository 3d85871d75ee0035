//! Typed YAML parsing whose errors carry the field path as data: serde-saphyr's
//! deserializer (`with_deserializer_from_str_with_options`, made for such wrappers)
//! wrapped in `serde_path_to_error`, and the unknown or missing field taken from
//! serde-saphyr's own error variants (`SerdeUnknownField`, `SerdeMissingField`), so
//! `check` names the field without reading error text.

use serde::de::DeserializeOwned;

/// A document that does not deserialize, with the path of the offending field.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PathError {
    /// Dotted path (`nodes[0].mac`, `selector.macc`); `None` for the document as a
    /// whole (a syntax error, a wrong top-level shape).
    pub field: Option<String>,
    /// What serde-saphyr said, with its location.
    #[source]
    pub error: Box<serde_saphyr::Error>,
}

impl PathError {
    /// The field, or `(document)` when the error is about the whole document.
    pub fn field_or_document(&self) -> String {
        self.field.clone().unwrap_or_else(|| "(document)".into())
    }
}

/// Deserializes `text` (one YAML document) with `options`.
pub fn from_str<T: DeserializeOwned>(text: &str, options: serde_saphyr::Options) -> Result<T, PathError> {
    let mut at = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            at = Some(e.path().clone());
            e.into_inner()
        })
    })
    .map_err(|error| PathError {
        field: field(at.as_ref(), &error),
        error: Box::new(error),
    })
}

/// The path to the failing value. An unknown key is already its last segment (the
/// key was read before it was refused); a missing field never is (the path ends at
/// the mapping that lacks it), so serde-saphyr's field name is appended.
fn field(at: Option<&serde_path_to_error::Path>, e: &serde_saphyr::Error) -> Option<String> {
    let base = at.map(ToString::to_string).filter(|p| p != ".");
    let leaf = match e.without_snippet() {
        serde_saphyr::Error::SerdeUnknownField { field, .. } => Some(field.clone()),
        serde_saphyr::Error::SerdeMissingField { field, .. } => Some((*field).to_string()),
        _ => None,
    };
    let last = at.and_then(|p| p.iter().next_back()).map(ToString::to_string);
    match (base, leaf) {
        (Some(b), Some(l)) if last.as_deref() == Some(l.as_str()) => Some(b),
        (Some(b), Some(l)) => Some(format!("{b}.{l}")),
        (b, l) => b.or(l),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only the errors are looked at
    struct Doc {
        name: String,
        #[serde(default)]
        nodes: Vec<Node>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Node {
        port: u16,
    }

    fn field_of(text: &str) -> Option<String> {
        from_str::<Doc>(text, serde_saphyr::Options::default())
            .unwrap_err()
            .field
    }

    #[test]
    fn unknown_missing_and_wrong_fields_are_named_by_path() {
        assert_eq!(field_of("name: a\nnmae: b\n").as_deref(), Some("nmae"));
        assert_eq!(field_of("nodes: []\n").as_deref(), Some("name"));
        assert_eq!(
            field_of("name: a\nnodes: [{port: 1}, {prot: 2}]\n").as_deref(),
            Some("nodes[1].prot")
        );
        assert_eq!(
            field_of("name: a\nnodes: [{}]\n").as_deref(),
            Some("nodes[0].port")
        );
        assert_eq!(
            field_of("name: a\nnodes: [{port: 70000}]\n").as_deref(),
            Some("nodes[0].port")
        );
        // A syntax error inside a value is that value's.
        assert_eq!(field_of("name: [\n").as_deref(), Some("name"));
        let e = from_str::<Doc>("[1, 2]\n", serde_saphyr::Options::default()).unwrap_err();
        assert_eq!(e.field_or_document(), "(document)");
    }

    #[test]
    fn the_message_is_serde_saphyrs_own() {
        for text in [
            "name: a\nnmae: b\n",
            "nodes: []\n",
            "name: a\nnodes: [{port: x}]\n",
            "name: [\n",
        ] {
            let ours = from_str::<Doc>(text, serde_saphyr::Options::default()).unwrap_err();
            let theirs = serde_saphyr::from_str::<Doc>(text).unwrap_err();
            assert_eq!(ours.to_string(), theirs.to_string(), "{text:?}");
        }
    }
}
