//! `provisioner check` over gitops/: the shipped tree validates against the ArgoCD
//! v3.5.1 CRD schemas and passes the semantic rules; a broken copy fails, naming the
//! file, the object and the rule.

mod common;

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
    let cm = gitops.join("core/apps/cert-manager.yaml");
    let text = std::fs::read_to_string(&cm).unwrap().replace(
        "- path: gitops/manifests/cert-manager/values\n",
        "- path: gitops/manifests/cert-manager/values/*\n",
    );
    std::fs::write(&cm, text).unwrap();
    let app = gitops.join("bootstrap/genmachine/apps.yaml");
    let text = std::fs::read_to_string(&app)
        .unwrap()
        .replace("  project: argocd\n", "  project: argocd\n  sourcez: typo\n");
    std::fs::write(&app, text).unwrap();
    let tr = gitops.join("core/apps/traefik.yaml");
    let text = std::fs::read_to_string(&tr)
        .unwrap()
        .replace("goTemplate: true", "goTemplate: false");
    std::fs::write(&tr, text).unwrap();
    let (ok, out, err) = check(&config(dir.path(), &cache, &gitops));
    assert!(!ok, "{out}");
    for want in [
        "gitops/core/apps/cert-manager.yaml: ApplicationSet/cert-manager: exclude path \"gitops/manifests/cert-manager/values/*\" matches no directory",
        "gitops/core/apps/cert-manager.yaml: ApplicationSet/cert-manager: generated for gitops/manifests/cert-manager/values: destination name \"values\" is not a registered cluster",
        "gitops/bootstrap/genmachine/apps.yaml: Application/apps: /spec",
        "sourcez",
        "gitops/core/apps/traefik.yaml: ApplicationSet/traefik: `{{.path.basenameNormalized}}` is Go template syntax",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
