//! `provisioner check` over what `gitops/` deploys, against the clusters of `infra/`:
//! PodSecurity (namespace labels, the Pod specs of directory sources, the known
//! needs of Helm charts), Longhorn's kubelet mount on Talos, MetalLB pools, and one
//! CNI per cluster (`provisioner_core::gitops::{workloads, metallb, cni}`).
//!
//! Helm charts are not rendered offline, so their Pod specs are not evaluated: for
//! charts known to need `privileged` (hostNetwork, hostPath, privileged containers)
//! the check verifies the namespace is labelled for it; other charts are listed as
//! not checked. Kustomize and Helm directories in git are not rendered either.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod facts;

use provisioner_core::gitops::workloads::{ChartSource, Deployment, merge_values};
use provisioner_core::gitops::{self as rules, cni, metallb, path_match};
use serde_json::Value;

/// What the workload checks covered, and what they could not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Applications (written or generated) looked at.
    pub applications: usize,
    /// Pod templates evaluated.
    pub pod_specs: usize,
    /// Chart sources whose namespace needs were checked.
    pub charts_checked: usize,
    /// What was not checked, one phrase each.
    pub not_checked: Vec<String>,
}

fn yaml_docs(path: &Path) -> Result<Vec<Value>, super::tree::TreeError> {
    let text = std::fs::read_to_string(path).map_err(|source| super::tree::TreeError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .map(|d| d.into_iter().filter(|v| !v.is_null()).collect())
        .map_err(|e| super::tree::TreeError::Parse {
            file: path.to_path_buf(),
            message: e.to_string(),
        })
}

fn files_under(dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            if recurse {
                files_under(&p, true, out);
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
}

/// Argo CD's `directory.include`/`exclude`: a glob, or `{a,b}` alternatives.
fn glob(pattern: &str, name: &str) -> bool {
    let p = pattern.trim();
    match p.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        Some(alts) => alts.split(',').any(|a| path_match(a.trim(), name)),
        None => path_match(p, name),
    }
}

struct Tree<'a> {
    root: &'a Path,
    problems: &'a mut Vec<String>,
    not_checked: BTreeSet<String>,
    /// This tree's own Helm charts and their objects, rendered with `settings.yaml`.
    loaded: &'a super::tree::Tree,
}

impl Tree<'_> {
    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(self.root).unwrap_or(p).display().to_string()
    }

    /// One Application spec (already rendered) as a [`Deployment`].
    fn deployment(&mut self, file: &str, object: String, spec: &Value) -> Deployment {
        let s = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        let mut d = Deployment {
            file: file.to_string(),
            object: object.clone(),
            cluster: s("/destination/name"),
            namespace: s("/destination/namespace"),
            ..Deployment::default()
        };
        let create_ns = spec
            .pointer("/syncPolicy/syncOptions")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|x| x.as_str() == Some("CreateNamespace=true")));
        if create_ns
            && let Some(l) = spec
                .pointer("/syncPolicy/managedNamespaceMetadata/labels")
                .and_then(Value::as_object)
        {
            d.managed_labels = l
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect();
        }
        let sources: Vec<&Value> = match spec.get("sources").and_then(Value::as_array) {
            Some(a) => a.iter().collect(),
            None => spec.get("source").into_iter().collect(),
        };
        for src in sources {
            if let Some(chart) = src.get("chart").and_then(Value::as_str) {
                d.charts.push(self.chart(file, &object, chart, src));
            } else if let Some(path) = src.get("path").and_then(Value::as_str) {
                self.directory(file, &object, path, src, &mut d.objects);
            }
        }
        d
    }

    fn chart(&mut self, file: &str, object: &str, chart: &str, src: &Value) -> ChartSource {
        let mut c = ChartSource {
            chart: chart.to_string(),
            values: Value::Object(Default::default()),
            files: Vec::new(),
        };
        for vf in src
            .pointer("/helm/valueFiles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(repo_path) = vf.as_str().and_then(|v| v.strip_prefix("$values/")) else {
                self.not_checked
                    .insert(format!("value files inside chart {chart}"));
                continue;
            };
            match yaml_docs(&self.root.join(repo_path)) {
                Ok(docs) => {
                    let v = docs
                        .into_iter()
                        .next()
                        .unwrap_or(Value::Object(Default::default()));
                    merge_values(&mut c.values, &v);
                    c.files.push((repo_path.to_string(), v));
                }
                Err(e) => self
                    .problems
                    .push(format!("{file}: {object}: helm.valueFiles: {e}")),
            }
        }
        if let Some(text) = src.pointer("/helm/values").and_then(Value::as_str)
            && let Ok(v) = serde_saphyr::from_str::<Value>(text)
        {
            merge_values(&mut c.values, &v);
        }
        if let Some(v) = src.pointer("/helm/valuesObject") {
            merge_values(&mut c.values, v);
        }
        c
    }

    fn directory(
        &mut self,
        file: &str,
        object: &str,
        path: &str,
        src: &Value,
        out: &mut Vec<(String, Value)>,
    ) {
        let dir = self.root.join(path);
        if self.loaded.charts.contains(path.trim_end_matches('/')) {
            // One of this tree's charts: its objects are already rendered.
            let prefix = format!("{}/", path.trim_end_matches('/'));
            out.extend(
                self.loaded
                    .objects
                    .iter()
                    .filter(|o| o.file.starts_with(&prefix))
                    .map(|o| (o.file.clone(), o.value.clone())),
            );
            return;
        }
        if dir.join("Chart.yaml").is_file() || dir.join("kustomization.yaml").is_file() {
            self.not_checked
                .insert(format!("Helm/Kustomize directory {path} (not rendered)"));
            return;
        }
        if !dir.is_dir() {
            self.problems.push(format!(
                "{file}: {object}: source path {path:?} is no directory of the repository"
            ));
            return;
        }
        let recurse = src
            .pointer("/directory/recurse")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let include = src.pointer("/directory/include").and_then(Value::as_str);
        let exclude = src.pointer("/directory/exclude").and_then(Value::as_str);
        let mut files = Vec::new();
        files_under(&dir, recurse, &mut files);
        for f in files {
            let name = f.strip_prefix(&dir).unwrap_or(&f).display().to_string();
            if include.is_some_and(|p| !glob(p, &name)) || exclude.is_some_and(|p| glob(p, &name)) {
                continue;
            }
            match yaml_docs(&f) {
                Ok(docs) => out.extend(docs.into_iter().map(|v| (self.rel(&f), v))),
                Err(e) => self.problems.push(e.to_string()),
            }
        }
    }
}

/// Runs the workload checks; problems are `file: object: message` lines. `None`
/// when there is no `gitops/` or `infra/` could not be loaded (reported elsewhere).
pub fn check(
    gitops_dir: &Path,
    infra: Option<&provisioner_core::infra::Infra>,
    problems: &mut Vec<String>,
) -> Option<Summary> {
    if !gitops_dir.is_dir() {
        return None;
    }
    let infra = infra?;
    let root = gitops_dir.parent().unwrap_or(Path::new("."));
    // The tree as Argo CD renders it (its Helm charts with settings.yaml); files that
    // do not load are reported by the ArgoCD object checks.
    let values = super::tree::values(gitops_dir).ok()?;
    let loaded = super::tree::load(gitops_dir, &values);
    let ctx = rules::Context {
        directories: loaded.directories.clone(),
        ..Default::default()
    };
    let mut tree = Tree {
        root,
        problems,
        not_checked: BTreeSet::new(),
        loaded: &loaded,
    };
    for set in loaded.of_kind("ApplicationSet") {
        let name = set
            .value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let generators = set.value.pointer("/spec/generators").and_then(Value::as_array);
        if generators
            .into_iter()
            .flatten()
            .any(|g| g.pointer("/git/directories").is_none())
        {
            tree.not_checked
                .insert(format!("non-git generators of ApplicationSet/{name}"));
        }
    }
    let mut deployments = Vec::new();
    for app in loaded.applications(&ctx) {
        let name = app
            .value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let spec = app.value.get("spec").cloned().unwrap_or(Value::Null);
        // Generated Applications carry "<file> (generated by ApplicationSet/<set> for <dir>)".
        let (file, object) = match app.file.split_once(" (generated by ") {
            Some((file, rest)) => {
                let set = rest.split(" for ").next().unwrap_or(rest);
                (file.to_string(), format!("{set} ({name})"))
            }
            None => (app.file.clone(), format!("Application/{name}")),
        };
        deployments.push(tree.deployment(&file, object, &spec));
    }
    let not_checked = std::mem::take(&mut tree.not_checked);
    let (facts, cnis) = facts::cluster_facts(infra);
    let (mut findings, s) = provisioner_core::gitops::workloads::check(&deployments, &facts);
    findings.extend(metallb::check(&deployments, &facts));
    for d in &deployments {
        let (Some((boot, talos)), Some(c)) = (
            cnis.get(&d.cluster),
            d.charts.iter().find(|c| c.chart == "cilium"),
        ) else {
            continue;
        };
        let empty = (d.file.clone(), Value::Null);
        let last = c.files.last().unwrap_or(&empty);
        let first = c.files.first().unwrap_or(&empty);
        let nothing = cni::Bootstrap::Cilium(Value::Object(Default::default()));
        findings.extend(cni::check(
            &d.cluster,
            boot.as_ref().unwrap_or(&nothing),
            *talos,
            &c.values,
            &last.0,
            &first.0,
            &last.1,
        ));
    }
    problems.extend(findings.iter().map(ToString::to_string));
    let mut nc: Vec<String> = vec!["Pod specs rendered by Helm charts (charts are not rendered offline; only their namespaces' PodSecurity labels are checked against each chart's known needs)".into()];
    if !s.charts_unknown.is_empty() {
        nc.push(format!(
            "charts with no known needs: {}",
            s.charts_unknown.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    nc.extend(not_checked);
    Some(Summary {
        applications: deployments.len(),
        pod_specs: s.pod_specs,
        charts_checked: s.charts_checked,
        not_checked: nc,
    })
}
