//! `provisioner check` over gitops/: the shipped tree validates against the ArgoCD
//! v3.5.1 CRD schemas and passes the semantic rules; a broken copy fails, naming the
//! file, the object and the rule.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A cache directory holding the pinned manifest where the appliance keeps it.
fn cache_with_manifest(dir: &Path) -> Option<PathBuf> {
    let fixture = common::fixture("argocd/install-v3.5.1.yaml")?;
    let cache = dir.join("cache");
    std::fs::create_dir_all(cache.join("argocd")).unwrap();
    std::fs::copy(fixture, cache.join("argocd/install-v3.5.1.yaml")).unwrap();
    Some(cache)
}

fn check(cfg: &Path) -> (bool, String, String) {
    let out = Command::new(common::daemon::BIN)
        .args(["check", "--config", &cfg.display().to_string()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn config(dir: &Path, cache: &Path, gitops: &Path) -> PathBuf {
    let r = repo();
    let cfg = dir.join("provisioner.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {d}/state\nprofiles_dir: {r}/profiles\nimages_dir: {r}/images\ninfra_dir: {r}/infra\n\
             gitops_dir: {g}\ncache_dir: {c}\n",
            d = dir.display(),
            r = r.display(),
            g = gitops.display(),
            c = cache.display()
        ),
    )
    .unwrap();
    cfg
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let t = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

#[test]
fn shipped_gitops_tree_passes_schema_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cache) = cache_with_manifest(dir.path()) else {
        return;
    };
    let (ok, out, err) = check(&config(dir.path(), &cache, &repo().join("gitops")));
    assert!(ok, "{out}{err}");
    // 5 bootstrap Applications, 7 AppProjects, 10 ApplicationSets.
    assert!(out.contains("ok: gitops: 22 ArgoCD object(s)"), "{out}");
    assert!(out.contains("schemas: ArgoCD v3.5.1 CRD schemas"), "{out}");
    // cilium, traefik, metallb, cert-manager, external-secrets, kube-prometheus-stack
    // on both clusters (12) + vault, authentik, loki, longhorn on one (4).
    assert!(out.contains("16 generated Application(s)"), "{out}");
    // The shipped setting is the seed author's repository: a warning, not an error.
    assert!(
        err.contains("warning: ")
            && err.contains("field `repository.url`: still the seed author's repository"),
        "{err}"
    );
}

/// A copy of the shipped tree at `<dir>/repo/gitops` (repository-relative paths as
/// ArgoCD sees them).
fn tree_copy(dir: &Path) -> PathBuf {
    let gitops = dir.join("repo/gitops");
    copy_dir(&repo().join("gitops"), &gitops);
    gitops
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn the_operators_repository_is_templated_everywhere_and_must_be_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cache) = cache_with_manifest(dir.path()) else {
        return;
    };
    let gitops = tree_copy(dir.path());
    let settings = gitops.join("settings.yaml");
    // One setting: the operator's URL renders into every Application and
    // ApplicationSet (the charts), so the tree checks clean and without a warning.
    edit(
        &settings,
        "url: https://github.com/ixxeL-DevOps/fullstack.git",
        "url: ssh://git@git.lan/homelab/gitops.git",
    );
    let (ok, out, err) = check(&config(dir.path(), &cache, &gitops));
    assert!(ok && !err.contains("warning"), "{out}{err}");
    // Not a URL: an error naming the file and the field.
    edit(
        &settings,
        "url: ssh://git@git.lan/homelab/gitops.git",
        "url: homelab gitops",
    );
    let (ok, out, err) = check(&config(dir.path(), &cache, &gitops));
    assert!(!ok, "{out}");
    let want = format!(
        "{}: field `repository.url`: \"homelab gitops\" contains whitespace",
        settings.display()
    );
    assert!(err.contains(&want), "{want} not in:\n{err}");
}

#[test]
fn destinations_argo_cd_refuses_fail_check_with_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cache) = cache_with_manifest(dir.path()) else {
        return;
    };
    let gitops = tree_copy(dir.path());
    let t = gitops.join("bootstrap/templates");
    // Unknown name (util/argo/argo.go GetDestinationServer, v3.5.1).
    edit(
        &t.join("beelink/cluster-config.yaml"),
        "name: beelink",
        "name: beelinc",
    );
    // Name and server together.
    edit(
        &t.join("genmachine/argocd.yaml"),
        "    name: genmachine\n",
        "    name: genmachine\n    server: https://kubernetes.default.svc\n",
    );
    // The in-cluster special case instead of the registered name.
    edit(
        &t.join("genmachine/projects.yaml"),
        "name: genmachine",
        "name: in-cluster",
    );
    // A cluster Secret declared in the tree with a name already registered.
    std::fs::write(
        t.join("genmachine/extra-cluster.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: beelink-again\n  namespace: argocd\n  labels:\n    argocd.argoproj.io/secret-type: cluster\nstringData:\n  name: genmachine\n  server: https://10.0.40.10:6443\n",
    )
    .unwrap();
    let (ok, out, err) = check(&config(dir.path(), &cache, &gitops));
    assert!(!ok, "{out}");
    for want in [
        "gitops/bootstrap/templates/beelink/cluster-config.yaml: Application/cluster-config-beelink: field `spec.destination`: Argo CD v3.5.1 refuses it (InvalidSpecError): there are no clusters with this name: beelinc",
        "gitops/bootstrap/templates/genmachine/argocd.yaml: Application/argocd: field `spec.destination`: Argo CD v3.5.1 refuses it (InvalidSpecError): application destination can't have both name and server defined: genmachine https://kubernetes.default.svc",
        "gitops/bootstrap/templates/genmachine/projects.yaml: Application/projects: field `spec.destination.name`: \"in-cluster\" works only through Argo CD's in-cluster special case",
        "gitops/bootstrap/templates/genmachine/apps.yaml: Application/apps: field `spec.destination`: Argo CD v3.5.1 refuses it (InvalidSpecError): there are 2 clusters with the same name: [https://kubernetes.default.svc https://10.0.40.10:6443]",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn broken_tree_fails_naming_file_object_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cache) = cache_with_manifest(dir.path()) else {
        return;
    };
    // Keep the repository-relative layout (<root>/gitops) so paths match ArgoCD's.
    let gitops = dir.path().join("repo/gitops");
    copy_dir(&repo().join("gitops"), &gitops);
    let cm = gitops.join("core/apps/templates/cert-manager.yaml");
    let text = std::fs::read_to_string(&cm).unwrap().replace(
        "- path: gitops/manifests/cert-manager/values\n",
        "- path: gitops/manifests/cert-manager/values/*\n",
    );
    std::fs::write(&cm, text).unwrap();
    let app = gitops.join("bootstrap/templates/genmachine/apps.yaml");
    let text = std::fs::read_to_string(&app)
        .unwrap()
        .replace("  project: argocd\n", "  project: argocd\n  sourcez: typo\n");
    std::fs::write(&app, text).unwrap();
    let tr = gitops.join("core/apps/templates/traefik.yaml");
    let text = std::fs::read_to_string(&tr)
        .unwrap()
        .replace("goTemplate: true", "goTemplate: false");
    std::fs::write(&tr, text).unwrap();
    // A typo in an ApplicationSet's template reaches every Application it generates:
    // each is validated against the Application CRD schema as Argo CD will create it.
    edit(
        &gitops.join("core/apps/templates/vault.yaml"),
        "      project: security\n",
        "      project: security\n      syncPolicyy: {}\n",
    );
    let (ok, out, err) = check(&config(dir.path(), &cache, &gitops));
    assert!(!ok, "{out}");
    for want in [
        "gitops/core/apps/templates/cert-manager.yaml: ApplicationSet/cert-manager: exclude path \"gitops/manifests/cert-manager/values/*\" matches no directory",
        "gitops/core/apps/templates/cert-manager.yaml: ApplicationSet/cert-manager: generated for gitops/manifests/cert-manager/values: field `spec.destination`: Argo CD v3.5.1 refuses it (InvalidSpecError): there are no clusters with this name: values",
        "gitops/bootstrap/templates/genmachine/apps.yaml: Application/apps: /spec",
        "sourcez",
        "gitops/core/apps/templates/traefik.yaml: ApplicationSet/traefik: `{{.path.basenameNormalized}}` is Go template syntax",
        "gitops/core/apps/templates/vault.yaml (generated by ApplicationSet/vault for gitops/manifests/vault/beelink): Application/vault-beelink: /spec: Additional properties are not allowed ('syncPolicyy' was unexpected)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
