//! On the typed cluster: `machineSpec` → installer image, Go templates evaluated
//! against each node's rendered config, schematic kernel args.

use serde_json::{Value, json};

use super::nodes::Pending;
use super::{Dropped, ImportError, Sources, gotmpl};
use crate::talos::cluster::TalosCluster;
use crate::talos::secrets::SecretsBundle;

/// `machineSpec` → installer image, then templates, then schematic kernel args, then
/// talhelper's patch order where it matters. Returns whether patches were reordered.
pub(super) fn finish(
    cluster: &mut TalosCluster,
    pending: Vec<Pending>,
    src: &dyn Sources,
    out: &mut Dropped,
) -> Result<bool, ImportError> {
    let mut uki = vec![false; pending.len()];
    for (i, p) in pending.iter().enumerate() {
        let path = format!("nodes[{i}].machineSpec");
        let (mut mode, mut secureboot) = ("metal".to_string(), false);
        for (k, v) in p.spec.iter().flatten() {
            match (k.as_str(), v) {
                ("mode", Value::String(m)) => mode = m.clone(),
                ("secureboot", Value::Bool(b)) => secureboot = *b,
                ("useUKI", Value::Bool(b)) => uki[i] = *b,
                // The installer is a multi-arch image; boot assets follow the
                // architecture iPXE reports.
                ("arch", Value::String(a)) if matches!(a.as_str(), "amd64" | "arm64") => {}
                ("bootMethod" | "imageSuffix", _) => out.push((
                    format!("{path}.{k}"),
                    "chooses talhelper's boot-media URL; the appliance network-boots".into(),
                )),
                _ => out.push((format!("{path}.{k}"), format!("unsupported value {v}"))),
            }
        }
        let node = &cluster.nodes[i];
        // talhelper's default installer template (`pkg/config/defaults.go`):
        // `{{.RegistryURL}}/{{.Mode}}-installer{{if .Secureboot}}-secureboot{{end}}/{{.ID}}:{{.Version}}`;
        // an explicit talosImageURL wins (`pkg/talos/nodeconfig.go` `installerURL`).
        if node.talos_image_url.is_none() && (mode != "metal" || secureboot) {
            let id = cluster
                .schematic_for(node)
                .id()
                .map_err(|e| ImportError::Invalid(format!("nodes[{i}].schematic: {e}")))?;
            let reg = cluster
                .installer_registry
                .as_deref()
                .unwrap_or("factory.talos.dev");
            let sb = if secureboot { "-secureboot" } else { "" };
            cluster.nodes[i].talos_image_url = Some(format!("{reg}/{mode}-installer{sb}/{id}"));
        }
    }
    let mut generated: Vec<usize> = pending.iter().map(|p| p.generated).collect();
    templates(cluster, pending, src, out)?;
    // talhelper copies the node's (or its group's) schematic kernel args into
    // install.extraKernelArgs unless the node boots a UKI or Talos is 1.12+
    // (grubUseUKICmdline), where Talos ignores them (`pkg/talos/nodeconfig.go`, talhelper issues #1000, #1341).
    let before_112 = cluster.talos().is_ok_and(|t| t.minor_pair() < (1, 12));
    for (i, uki) in uki.into_iter().enumerate() {
        let node = &cluster.nodes[i];
        let args = cluster.schematic_for(node).customization.extra_kernel_args;
        if !args.is_empty() && !uki && before_112 {
            cluster.nodes[i]
                .patches
                .insert(0, json!({"machine": {"install": {"extraKernelArgs": args}}}));
            generated[i] += 1;
        }
    }
    Ok(talhelper_order(cluster, &generated))
}

/// Patch order. talhelper applies a node's generated documents, then its group's
/// patches, its own, and the cluster's last (`pkg/generate/config.go`
/// `GenerateConfig`); the appliance applies cluster, group, then node patches. When
/// that changes any node's config (two layers set the same field, or append to the
/// same list), every patch moves into the nodes in talhelper's order. Returns
/// whether it did.
fn talhelper_order(cluster: &mut TalosCluster, generated: &[usize]) -> bool {
    let mut t = cluster.clone();
    t.patches.clear();
    t.control_plane.patches.clear();
    t.worker.patches.clear();
    for (n, &g) in t.nodes.iter_mut().zip(generated) {
        let group = if n.control_plane {
            &cluster.control_plane
        } else {
            &cluster.worker
        };
        let g = g.min(n.patches.len());
        n.patches.splice(g..g, group.patches.iter().cloned());
        n.patches.extend(cluster.patches.iter().cloned());
    }
    let secrets = SecretsBundle::default();
    let same = cluster.nodes.iter().all(|n| {
        let ours = crate::talos::render(cluster, &n.hostname, &secrets);
        let theirs = crate::talos::render(&t, &n.hostname, &secrets);
        match (ours, theirs) {
            (Ok(a), Ok(b)) => same_config(&a.documents, &b.documents),
            // Unrenderable either way: `check` names the problem; keep it readable.
            _ => true,
        }
    });
    if !same {
        *cluster = t;
    }
    !same
}

/// Same v1alpha1 document and the same other documents in any order (Talos does not
/// order them).
fn same_config(a: &[Value], b: &[Value]) -> bool {
    if a.first() != b.first() || a.len() != b.len() {
        return false;
    }
    let mut rest: Vec<&Value> = b.iter().skip(1).collect();
    a.iter().skip(1).all(|d| match rest.iter().position(|x| *x == d) {
        Some(i) => {
            rest.swap_remove(i);
            true
        }
        None => false,
    })
}

fn templates(
    cluster: &mut TalosCluster,
    pending: Vec<Pending>,
    src: &dyn Sources,
    out: &mut Dropped,
) -> Result<(), ImportError> {
    let mut plain = cluster.clone();
    plain.patches.clear();
    plain.control_plane.patches.clear();
    plain.worker.patches.clear();
    plain.nodes.iter_mut().for_each(|n| n.patches.clear());
    for (i, p) in pending.into_iter().enumerate() {
        if p.labels.is_empty() && p.annotations.is_empty() && p.patches.is_empty() {
            continue;
        }
        let host = cluster.nodes[i].hostname.clone();
        // Talos-side data only: placeholder secrets (templates over secrets refuse).
        let data =
            crate::talos::render(&plain, &host, &SecretsBundle::default()).map(|c| c.documents[0].clone());
        let node = &mut cluster.nodes[i];
        let eval = |t: &str| match &data {
            Ok(d) => gotmpl::render(t, d),
            Err(e) => Err(gotmpl::TemplateError::NodeDoesNotRender(e.to_string())),
        };
        for (k, t) in p.labels {
            match eval(&t) {
                Ok(v) => drop(node.node_labels.insert(k, v)),
                Err(e) => out.push((format!("nodes[{i}].nodeLabels.{k}"), format!("template: {e}"))),
            }
        }
        for (k, t) in p.annotations {
            match eval(&t) {
                Ok(v) => drop(node.node_annotations.insert(k, v)),
                Err(e) => out.push((
                    format!("nodes[{i}].nodeAnnotations.{k}"),
                    format!("template: {e}"),
                )),
            }
        }
        let mut failed = Vec::new();
        for (idx, field, env) in p.patches {
            let t = node
                .patches
                .get(idx)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            match eval(&t) {
                Ok(v) if env => node.patches[idx] = Value::String(super::substitute(&v, src)?),
                Ok(v) => node.patches[idx] = Value::String(v),
                Err(e) => {
                    out.push((field, format!("template: {e}")));
                    failed.push(idx);
                }
            }
        }
        for idx in failed.into_iter().rev() {
            node.patches.remove(idx);
        }
    }
    Ok(())
}
