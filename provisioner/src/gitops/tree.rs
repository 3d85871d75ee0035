//! Reading `gitops/` the way Argo CD will see it: the repository's directories (for
//! the git directory generator), the tree's Helm charts (directories with a
//! `Chart.yaml`) rendered with `settings.yaml` as their values
//! (`provisioner_core::gitops::helm`), and every object under `bootstrap/` and
//! `core/`. `check`, the hand-off (AppProjects, the Applications it waits for) and
//! the fake Argo CD controller all read the tree through here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use provisioner_core::gitops::{self as rules, Object, helm};
use serde_json::Value;

/// The tree as loaded.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// Every object (templates rendered), with its repository-relative file.
    pub objects: Vec<Object>,
    /// Every directory holding a file, repository-relative.
    pub directories: BTreeSet<String>,
    /// Directories holding a `Chart.yaml`, repository-relative.
    pub charts: BTreeSet<String>,
    /// The values file the charts take, repository-relative (`gitops/settings.yaml`).
    pub settings_file: String,
    /// Files that could not be read, rendered or parsed (`file: why`).
    pub problems: Vec<String>,
}

/// Why the tree cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// `settings.yaml` cannot be read.
    #[error("{}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `settings.yaml` does not parse.
    #[error("{}: {message}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A file of the tree could not be read, rendered or parsed (`file: why`), or an
    /// object the caller needs is not there.
    #[error("{0}")]
    Problem(String),
}

/// `gitops_dir/settings.yaml` as Helm values (any YAML value).
pub fn values(gitops_dir: &Path) -> Result<Value, TreeError> {
    let file = gitops_dir.join("settings.yaml");
    let text = std::fs::read_to_string(&file).map_err(|source| TreeError::Read {
        file: file.clone(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| TreeError::Parse {
        file,
        message: e.to_string(),
    })
}

/// Loads `gitops_dir` (which sits at the repository root, as `gitops/`), rendering
/// its charts with `values`.
pub fn load(gitops_dir: &Path, values: &Value) -> Tree {
    let root = gitops_dir.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    walk(gitops_dir, &mut files);
    let mut tree = Tree {
        settings_file: rel(root, &gitops_dir.join("settings.yaml")),
        ..Tree::default()
    };
    let mut chart_dirs = Vec::new();
    for f in &files {
        if let Some(parent) = f.parent() {
            tree.directories.insert(rel(root, parent));
            if f.file_name().and_then(|n| n.to_str()) == Some("Chart.yaml") {
                tree.charts.insert(rel(root, parent));
                chart_dirs.push(parent.to_path_buf());
            }
        }
    }
    for f in files.iter().filter(|f| is_object_file(gitops_dir, f)) {
        let chart = chart_dirs.iter().find(|c| f.starts_with(c));
        if let Some(c) = chart
            && !f.starts_with(c.join("templates"))
        {
            continue; // Chart.yaml, values files: not objects
        }
        let file = rel(root, f);
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                tree.problems.push(format!("{file}: {e}"));
                continue;
            }
        };
        let text = if chart.is_some() {
            match helm::render(&text, values) {
                Ok(t) => t,
                Err(e) => {
                    tree.problems.push(format!("{file}: Helm template: {e}"));
                    continue;
                }
            }
        } else {
            text
        };
        match serde_saphyr::from_str_multiple_with_options::<Value, Vec<Value>>(
            &text,
            serde_saphyr::options! { strict_booleans: true },
        ) {
            Ok(docs) => tree
                .objects
                .extend(docs.into_iter().filter(|d| !d.is_null()).map(|value| Object {
                    file: file.clone(),
                    value,
                })),
            Err(e) => tree.problems.push(format!("{file}: {e}")),
        }
    }
    tree
}

impl Tree {
    /// The rule context for this tree.
    pub fn context(
        &self,
        repo_url: &str,
        host: &str,
        registry: rules::destination::Registry,
    ) -> rules::Context {
        rules::Context {
            repo_url: repo_url.to_string(),
            directories: self.directories.clone(),
            registry,
            host: host.to_string(),
            charts: self.charts.clone(),
            settings_file: self.settings_file.clone(),
        }
    }

    /// Every Application Argo CD will hold once the tree is synced: the plain ones
    /// and the ones its ApplicationSets generate.
    pub fn applications(&self, ctx: &rules::Context) -> Vec<Object> {
        let mut out: Vec<Object> = self
            .objects
            .iter()
            .filter(|o| o.value.get("kind").and_then(Value::as_str) == Some("Application"))
            .cloned()
            .collect();
        out.extend(rules::expand(&self.objects, ctx));
        out
    }

    /// The objects of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Object> {
        self.objects
            .iter()
            .filter(|o| o.value.get("kind").and_then(Value::as_str) == Some(kind))
            .collect()
    }
}

/// ArgoCD objects live under `bootstrap/` and `core/`; `manifests/` holds Helm
/// values, which are not Kubernetes objects.
fn is_object_file(gitops_dir: &Path, f: &Path) -> bool {
    let Ok(r) = f.strip_prefix(gitops_dir) else {
        return false;
    };
    matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        && (r.starts_with("bootstrap") || r.starts_with("core"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}
