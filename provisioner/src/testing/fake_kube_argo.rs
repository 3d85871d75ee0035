//! The fake API server's Application reads (its scripted Argo CD controller is
//! [`super::super::fake_argo`]): the list, and the journal of what reads answered.

use std::time::Instant;

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Inner, Stored, fake_argo, key, lock};

/// Argo CD syncs the root app-of-apps (applied at `now`): its Applications appear.
pub(super) fn sync_root(s: &Inner, stored: &mut Stored, now: Instant) {
    if let Some(argo) = lock(&s.argo).clone() {
        for (k, child, at) in argo.children_of_root(now) {
            stored.objects.entry(k).or_insert((child, at));
        }
    }
}

/// The stored object `k` as a GET at `now` answers it (an Application with the
/// controller's status, and only once it exists).
pub(super) fn get_object(s: &Inner, kind: &str, k: &str, now: Instant) -> Option<(Value, Instant)> {
    let found = {
        let stored = lock(&s.stored);
        let (obj, at) = stored.objects.get(k).cloned()?;
        if kind != "Application" {
            return Some((obj, at));
        }
        let argo = lock(&s.argo).clone();
        (
            fake_argo::view(argo.as_deref(), &obj, at, now, &stored.objects)?,
            at,
        )
    };
    note_application(s, &found.0, now);
    Some(found)
}

/// `GET .../namespaces/<ns>/applications`: the Applications that exist now, with
/// the controller's status.
pub(super) fn list_applications(s: &Inner, ns: &str, now: Instant) -> Response {
    let prefix = format!("Application/{ns}/");
    let items: Vec<Value> = {
        let stored = lock(&s.stored);
        let argo = lock(&s.argo).clone();
        stored
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, (obj, at))| fake_argo::view(argo.as_deref(), obj, *at, now, &stored.objects))
            .collect()
    };
    for app in &items {
        note_application(s, app, now);
    }
    axum::Json(
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationList",
                      "metadata": {"resourceVersion": "1"}, "items": items}),
    )
    .into_response()
}

/// Journals a read Application's state when it changed (and when it is first
/// Synced and Healthy).
fn note_application(s: &Inner, app: &Value, now: Instant) {
    let name = app
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ns = app
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("argocd");
    let state = fake_argo::state(app);
    let mut j = lock(&s.journal);
    let last = j
        .argo
        .iter()
        .rev()
        .find(|(_, n, _)| *n == name)
        .map(|(_, _, st)| st.clone());
    if last.as_deref() != Some(state.as_str()) {
        j.argo.push((now, name.clone(), state.clone()));
    }
    if state == "Synced/Healthy" {
        j.observed_ready
            .entry(key("Application", Some(ns), &name))
            .or_insert(now);
    }
}
