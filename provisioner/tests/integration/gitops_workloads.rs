//! `provisioner check` on what `gitops/` deploys, over copies of the shipped
//! `gitops/` and `infra/` with one defect each: the shipped tree passes (and says
//! what it does not check); each defect fails naming file, object and rule.
//! Rules: PodSecurity (pod-security-admission `policy/check_*.go`; Talos' default
//! `enforce: baseline` with `kube-system` exempt, k0s none), Longhorn's kubelet
//! mount on Talos (Longhorn "Talos Linux Support"), one CNI per cluster and the
//! adopted Cilium equal to the bootstrap's, MetalLB pools.

use crate::common;

use std::path::{Path, PathBuf};

use common::cli::{repo, run};

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

/// A copy of gitops/ and infra/ under a temp root, and a config using them.
struct Site {
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        copy_dir(&repo().join("gitops"), &root.join("gitops"));
        copy_dir(&repo().join("infra"), &root.join("infra"));
        let cfg = dir.path().join("provisioner.yaml");
        std::fs::write(
            &cfg,
            format!(
                "state_dir: {d}/state\nprofiles_dir: {r}/profiles\nimages_dir: {r}/images\n\
                 infra_dir: {root}/infra\ngitops_dir: {root}/gitops\n",
                d = dir.path().display(),
                r = repo().display(),
                root = root.display()
            ),
        )
        .unwrap();
        Self { dir, cfg }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("repo").join(rel)
    }

    fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.path(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap();
    }

    fn check(&self) -> (bool, String, String) {
        run(&["check", "--config", &self.cfg.display().to_string()])
    }
}

const MANAGED: &str = "        managedNamespaceMetadata:";

#[test]
fn shipped_tree_passes_and_says_what_is_not_checked() {
    let site = Site::new();
    let (ok, out, err) = site.check();
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: workloads: 21 Application(s)"), "{out}");
    assert!(out.contains("16 chart(s) checked for known needs"), "{out}");
    assert!(
        out.contains("not checked: Pod specs rendered by Helm charts"),
        "{out}"
    );
}

/// (what to break, what `check` must say, in which file).
#[test]
fn each_defect_fails_naming_file_object_and_rule() {
    type Edit = Box<dyn Fn(&Site)>;
    let host_net_ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: probe\n  namespace: NS\n\
                       spec:\n  template:\n    spec:\n      hostNetwork: true\n      containers:\n        - name: p\n          image: x\n";
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "Longhorn namespace not labelled privileged (Talos enforces baseline)",
            Box::new(|s| {
                s.edit(
                    "gitops/core/apps/templates/longhorn.yaml",
                    MANAGED,
                    "        x-removed:",
                )
            }),
            vec![
                "gitops/core/apps/templates/longhorn.yaml: ApplicationSet/longhorn (longhorn-genmachine): chart longhorn needs PodSecurity privileged in namespace \"longhorn-system\" on genmachine",
                "enforces baseline (unlabelled: the PodSecurity defaults of",
            ],
        ),
        (
            "MetalLB speaker namespace not labelled",
            Box::new(|s| {
                s.edit(
                    "gitops/core/apps/templates/metallb.yaml",
                    MANAGED,
                    "        x-removed:",
                )
            }),
            vec!["ApplicationSet/metallb (metallb-genmachine): chart metallb needs PodSecurity privileged"],
        ),
        (
            "two declarations of the monitoring namespace's level disagree",
            Box::new(|s| {
                s.edit(
                    "gitops/manifests/cluster-config/genmachine/namespaces.yaml",
                    "pod-security.kubernetes.io/enforce: privileged",
                    "pod-security.kubernetes.io/enforce: baseline",
                )
            }),
            vec![
                "namespace \"monitoring\" on genmachine: pod-security.kubernetes.io/enforce declared differently",
            ],
        ),
        (
            "a level that is no level",
            Box::new(|s| {
                s.edit(
                    "gitops/core/apps/templates/longhorn.yaml",
                    "pod-security.kubernetes.io/enforce: privileged",
                    "pod-security.kubernetes.io/enforce: superuser",
                )
            }),
            vec![
                "pod-security.kubernetes.io/enforce: \"superuser\" is not privileged, baseline or restricted",
            ],
        ),
        (
            "a hostNetwork DaemonSet in an unlabelled namespace on Talos (baseline: check_hostNamespaces.go)",
            Box::new(move |s| {
                s.write(
                    "gitops/manifests/cluster-config/genmachine/probe.yaml",
                    &host_net_ds.replace("NS", "tools"),
                );
                // The same on k0s (no PodSecurity enforcement) and in Talos' exempt kube-system is admitted.
                s.write(
                    "gitops/manifests/cluster-config/beelink/probe.yaml",
                    &host_net_ds.replace("NS", "tools"),
                );
                s.write(
                    "gitops/manifests/cluster-config/genmachine/ks.yaml",
                    &host_net_ds.replace("NS", "kube-system").replace("probe", "ks"),
                );
            }),
            vec![
                "gitops/manifests/cluster-config/genmachine/probe.yaml: DaemonSet/probe: PodSecurity baseline in namespace \"tools\" on genmachine",
                "refuses its pods: hostNamespaces: hostNetwork=true",
                "(deployed by Application/cluster-config-genmachine)",
            ],
        ),
        (
            "a restricted namespace refuses a pod without seccomp and runAsNonRoot (check_*_restricted.go)",
            Box::new(|s| {
                s.edit(
                    "gitops/manifests/cluster-config/genmachine/namespaces.yaml",
                    "  name: tools\n",
                    "  name: tools\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n",
                );
                s.write(
                    "gitops/manifests/cluster-config/genmachine/web.yaml",
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: tools}\nspec:\n  template:\n    spec:\n      containers: [{name: web, image: x}]\n",
                );
            }),
            vec![
                "web.yaml: Deployment/web: PodSecurity restricted in namespace \"tools\" on genmachine (labelled pod-security.kubernetes.io/enforce=restricted)",
                "allowPrivilegeEscalation",
                "runAsNonRoot",
                "seccompProfile_restricted",
                "capabilities_restricted",
            ],
        ),
        (
            "Talos nodes without the Longhorn kubelet mount",
            Box::new(|s| {
                s.edit(
                    "infra/genmachine.yaml",
                    "          - destination: /var/lib/longhorn",
                    "          - destination: /var/lib/other",
                )
            }),
            vec![
                "infra/genmachine.yaml: node talos-1: ApplicationSet/longhorn (longhorn-genmachine) stores Longhorn data in /var/lib/longhorn",
                "node talos-3:",
            ],
        ),
        (
            "Cilium on k0s told to reach the API at a bare hostname",
            Box::new(|s| {
                s.edit(
                    "gitops/manifests/cilium/beelink/values.yaml",
                    "k8sServiceHost: \"192.168.1.161\"",
                    "k8sServiceHost: beelink-1",
                )
            }),
            vec![
                "gitops/manifests/cilium/beelink/values.yaml: cilium values for beelink: field `k8sServiceHost`: \"beelink-1\" but the bootstrap installed Cilium with \"192.168.1.161\"",
                "\"beelink-1\" is a bare hostname",
            ],
        ),
        (
            "kube-proxy replacement off in the common values while both bootstraps run without kube-proxy",
            Box::new(|s| {
                s.edit(
                    "gitops/manifests/cilium/values/common.yaml",
                    "kubeProxyReplacement: true",
                    "kubeProxyReplacement: false",
                )
            }),
            vec![
                "gitops/manifests/cilium/values/common.yaml: cilium values for beelink: field `kubeProxyReplacement`: false",
                "cilium values for genmachine: field `kubeProxyReplacement`",
            ],
        ),
        (
            "k0s back on kube-router while gitops deploys Cilium: two CNIs",
            Box::new(|s| {
                s.edit(
                    "infra/beelink.yaml",
                    "provider: cilium   # or: kuberouter (k0s's default; then no Cilium in gitops/)\n  cilium:\n    version: 1.18.4\n",
                    "provider: kuberouter\n",
                )
            }),
            vec![
                "gitops/manifests/cilium/beelink/values.yaml: cilium values for beelink: cluster beelink already runs kube-router (network.provider kuberouter); Cilium from ArgoCD would be a second CNI",
            ],
        ),
        (
            "a MetalLB pool over node addresses, and pools of both clusters overlapping",
            Box::new(|s| {
                s.edit(
                    "gitops/manifests/metallb/beelink/pools.yaml",
                    "192.168.1.220-192.168.1.239",
                    "192.168.1.150-192.168.1.210",
                );
            }),
            vec![
                "gitops/manifests/metallb/beelink/pools.yaml: IPAddressPool/beelink-lan: spec.addresses 192.168.1.150-192.168.1.210: includes 192.168.1.161, a node/VIP address of beelink",
                "includes 192.168.1.150, a node/VIP address of cluster genmachine",
                "overlap IPAddressPool/genmachine-lan of cluster genmachine",
            ],
        ),
        (
            "no pools at all, and an advertisement of an unknown pool",
            Box::new(|s| {
                std::fs::remove_file(s.path("gitops/manifests/metallb/genmachine/pools.yaml")).unwrap();
                s.edit(
                    "gitops/manifests/metallb/beelink/pools.yaml",
                    "    - beelink-lan",
                    "    - nope",
                );
            }),
            vec![
                "ApplicationSet/metallb (metallb-genmachine): MetalLB on genmachine has no IPAddressPool",
                "L2Advertisement/beelink-lan: spec.ipAddressPools: no IPAddressPool \"nope\" for beelink",
            ],
        ),
    ];
    for (what, edit, want) in cases {
        let site = Site::new();
        edit(&site);
        let (ok, out, err) = site.check();
        assert!(!ok, "{what}: check passed:\n{out}");
        for w in want {
            assert!(err.contains(w), "{what}: {w:?} missing in:\n{err}");
        }
        assert!(
            !err.contains(
                "probe.yaml: DaemonSet/probe: PodSecurity baseline in namespace \"tools\" on beelink"
            ),
            "{err}"
        );
        assert!(!err.contains("ks.yaml"), "kube-system is exempt on Talos: {err}");
    }
}
