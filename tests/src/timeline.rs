//! Reading the appliance's export (`{"schema_version":2,"machines":[…]}`)
//! and the per-machine API object, and asserting on timelines.
//!
//! Errors carry the whole timeline so that a failed assertion shows what the
//! appliance actually recorded.

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The machine with `mac` (case-insensitive) in an export document.
pub fn machine<'a>(export: &'a Value, mac: &str) -> Result<&'a Value> {
    export
        .get("machines")
        .and_then(Value::as_array)
        .context("export has no \"machines\" array")?
        .iter()
        .find(|m| {
            m.get("mac")
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(mac))
        })
        .with_context(|| format!("no machine {mac} in export:\n{export:#}"))
}

/// The machine's `state`.
pub fn state(machine: &Value) -> Option<&str> {
    machine.get("state").and_then(Value::as_str)
}

/// The timeline's `(kind, detail)` pairs in order.
pub fn events(machine: &Value) -> Vec<(String, String)> {
    machine
        .get("timeline")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                    (s("kind"), s("detail"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The timeline's kinds in order.
pub fn kinds(machine: &Value) -> Vec<String> {
    events(machine).into_iter().map(|(k, _)| k).collect()
}

/// A readable one-event-per-line rendering, for failure messages.
pub fn render(machine: &Value) -> String {
    let mut out = String::new();
    for e in machine
        .get("timeline")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("  {} {:<20} {}\n", s("at"), s("kind"), s("detail")));
    }
    out
}

/// Asserts that `expected` occurs in the timeline as a subsequence (other
/// events may come in between).
pub fn assert_in_order(machine: &Value, expected: &[&str]) -> Result<()> {
    let kinds = kinds(machine);
    let mut it = kinds.iter();
    for want in expected {
        if !it.any(|k| k == want) {
            bail!(
                "timeline lacks {expected:?} in that order (missing {want:?} after the earlier ones); \
                 state {:?}; timeline:\n{}",
                state(machine),
                render(machine)
            );
        }
    }
    Ok(())
}

/// Number of events of `kind`.
pub fn count(machine: &Value, kind: &str) -> usize {
    kinds(machine).iter().filter(|k| *k == kind).count()
}

/// Asserts the `at` timestamps never go backwards (RFC 3339 strings in the
/// same offset compare lexicographically only if uniformly formatted, so
/// this only checks they are present and non-empty).
pub fn assert_timestamps_present(machine: &Value) -> Result<()> {
    for e in machine
        .get("timeline")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let at = e.get("at").and_then(Value::as_str).unwrap_or("");
        if at.len() < 20 || !at.contains('T') {
            bail!("event without an RFC 3339 `at`: {e}");
        }
    }
    Ok(())
}
