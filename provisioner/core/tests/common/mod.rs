//! Helpers shared by the core's conformance tests: the upstream fixtures
//! (`$PROVISIONER_FIXTURES`, default `<repo>/../shared/fixtures`; a clone without them
//! skips loudly) and validation against Talos' v1.11 config schema.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use provisioner_core::talos::{self, SecretsBundle};
use serde_json::Value;

/// The fixtures folder, or `None` after saying loudly that the test skips.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("PROVISIONER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
    if dir.join("talos/v1.11/config.schema.json").is_file() {
        Some(dir)
    } else {
        println!(
            "SKIPPED: no Talos fixtures at {} (set PROVISIONER_FIXTURES)",
            dir.display()
        );
        None
    }
}

/// A fixture file's text.
pub fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The secrets bundle the v1.11 goldens were generated from.
pub fn stability_secrets(dir: &Path) -> SecretsBundle {
    SecretsBundle::from_yaml(&read(dir, "talos/v1.11/stability-secrets.yaml")).unwrap()
}

/// A validator for Talos' v1.11 config schema.
pub fn validator(dir: &Path) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&read(dir, "talos/v1.11/config.schema.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// Fails with every schema error of `doc` (the schema view of it).
pub fn assert_valid(v: &jsonschema::Validator, doc: &Value, what: &str) {
    let doc = talos::machine::schema_instance(doc);
    let errs: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| {
            format!(
                "{} at {}",
                e.to_string().chars().take(300).collect::<String>(),
                e.instance_path()
            )
        })
        .collect();
    assert!(
        errs.is_empty(),
        "{what} does not validate against config.schema.json:\n{}",
        errs.join("\n")
    );
}
