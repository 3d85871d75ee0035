//! The naive ApplicationSet from the seed documentation fails every rule it breaks;
//! the corrected one (argocd-gitops.md §8.3) passes.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::destination::{ClusterSecret, IN_CLUSTER_SERVER, Registry};
use super::*;

const REPO: &str = "https://github.com/example/homelab.git";

fn ctx() -> Context {
    Context {
        repo_url: REPO.into(),
        directories: [
            "gitops/manifests/cert-manager/genmachine",
            "gitops/manifests/cert-manager/beelink",
            "gitops/manifests/cert-manager/values",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        registry: Registry {
            secrets: vec![
                ClusterSecret {
                    secret: "cluster-genmachine".into(),
                    name: "genmachine".into(),
                    server: IN_CLUSTER_SERVER.into(),
                },
                ClusterSecret {
                    secret: "cluster-beelink".into(),
                    name: "beelink".into(),
                    server: "https://10.0.40.10:6443".into(),
                },
            ],
            in_cluster_enabled: true,
        },
        host: "genmachine".into(),
        charts: BTreeSet::from(["gitops/core/apps".to_string()]),
        settings_file: "gitops/settings.yaml".into(),
    }
}

fn obj(value: Value) -> Vec<Object> {
    vec![Object {
        file: "gitops/core/apps/cert-manager.yaml".into(),
        value,
    }]
}

fn corrected() -> Value {
    json!({
      "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
      "metadata": {"name": "cert-manager", "namespace": "argocd"},
      "spec": {
        "goTemplate": true, "goTemplateOptions": ["missingkey=error"],
        "generators": [{"git": {"repoURL": REPO, "revision": "main", "directories": [
          {"path": "gitops/manifests/cert-manager/*"},
          {"path": "gitops/manifests/cert-manager/values", "exclude": true}]}}],
        "template": {
          "metadata": {"name": "cert-manager-{{.path.basenameNormalized}}"},
          "spec": {"project": "security",
            "destination": {"name": "{{.path.basenameNormalized}}", "namespace": "cert-manager"},
            "sources": [
              {"repoURL": "https://charts.jetstack.io", "chart": "cert-manager", "targetRevision": "v1.16.2",
               "helm": {"valueFiles": ["$values/gitops/manifests/cert-manager/values/common.yaml",
                                       "$values/gitops/manifests/cert-manager/{{.path.basename}}/values.yaml"]}},
              {"repoURL": REPO, "targetRevision": "main", "ref": "values"}]}}}
    })
}

fn naive() -> Value {
    // argocd-gitops.md §8.1 (from the seed documentation), same repository URL.
    json!({
      "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
      "metadata": {"name": "cert-manager", "namespace": "argocd"},
      "spec": {
        "generators": [{"git": {"repoURL": REPO, "revision": "main", "directories": [
          {"path": "gitops/manifests/cert-manager/*", "exclude": false},
          {"path": "gitops/manifests/cert-manager/values/*", "exclude": true}]}}],
        "template": {
          "metadata": {"name": "cert-manager-{{ .path.basenameNormalized }}"},
          "spec": {"project": "security",
            "destination": {"name": "{{ .path.basenameNormalized }}", "namespace": "cert-manager"},
            "sources": [{"path": "gitops/manifests/cert-manager/{{ .path.basenameNormalized }}",
              "repoURL": REPO, "targetRevision": "main",
              "helm": {"valueFiles": ["$values/gitops/manifests/cert-manager/values/common-values.yaml"]}}]}}}
    })
}

#[test]
fn corrected_application_set_passes() {
    let f = check(&obj(corrected()), &ctx());
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn generator_yields_cluster_directories_only() {
    let v = corrected();
    let (dirs, problems) = generated_directories(
        &v["spec"]["generators"][0]["git"]["directories"],
        &ctx().directories,
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        dirs,
        [
            "gitops/manifests/cert-manager/beelink",
            "gitops/manifests/cert-manager/genmachine"
        ]
    );
    let n = naive();
    let (dirs, problems) = generated_directories(
        &n["spec"]["generators"][0]["git"]["directories"],
        &ctx().directories,
    );
    assert!(
        dirs.contains(&"gitops/manifests/cert-manager/values".to_string()),
        "{dirs:?}"
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn naive_application_set_fails_each_rule() {
    let f = check(&obj(naive()), &ctx());
    let all = f.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n");
    for want in [
        "Go template syntax: set `goTemplate: true`",
        "exclude path \"gitops/manifests/cert-manager/values/*\" matches no directory",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    // With goTemplate switched on, the generated Applications are evaluated too: the
    // `values` directory becomes a cluster, and $values has no ref source.
    let mut fixed_mode = naive();
    fixed_mode["spec"]["goTemplate"] = json!(true);
    let all = check(&obj(fixed_mode), &ctx())
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for want in [
        "generated for gitops/manifests/cert-manager/values: field `spec.destination`: Argo CD v3.5.1 refuses it (InvalidSpecError): there are no clusters with this name: values",
        "uses $values but no source has `ref: values`",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn fasttemplate_syntax_with_go_template_is_refused() {
    let mut v = corrected();
    v["spec"]["template"]["metadata"]["name"] = json!("cert-manager-{{path.basename}}");
    let all = check(&obj(v), &ctx())
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        all.contains("fasttemplate syntax but goTemplate is true"),
        "{all}"
    );
}

/// `check` fails, with file and field, on each destination Argo CD v3.5.1 refuses
/// (`util/argo/argo.go` `GetDestinationServer`, `util/db/cluster.go`
/// `GetClusterServersByName`), and on the ones that only work through the
/// `in-cluster` special case.
#[test]
fn destination_rules_follow_argo_cd_v3_5_1_get_destination_server() {
    let app = |dest: Value| {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
          "metadata": {"name": "x", "namespace": "argocd"},
          "spec": {"project": "core", "destination": dest,
                   "source": {"repoURL": REPO, "path": "gitops/x", "targetRevision": "main"}}})
    };
    let mut dup = ctx();
    dup.registry.secrets.push(ClusterSecret {
        secret: "declared-in-tree".into(),
        name: "beelink".into(),
        server: "https://10.0.40.99:6443".into(),
    });
    let cases = [
        (ctx(), json!({"name": "genmachine", "namespace": "a"}), None),
        (ctx(), json!({"name": "beelink", "namespace": "a"}), None),
        (
            ctx(),
            json!({"name": "prod"}),
            Some(
                "field `spec.destination`: Argo CD v3.5.1 refuses it (InvalidSpecError): there are no clusters with this name: prod",
            ),
        ),
        (
            dup,
            json!({"name": "beelink"}),
            Some(
                "there are 2 clusters with the same name: [https://10.0.40.10:6443 https://10.0.40.99:6443]",
            ),
        ),
        (
            ctx(),
            json!({"name": "genmachine", "server": "https://x"}),
            Some("application destination can't have both name and server defined: genmachine https://x"),
        ),
        (
            ctx(),
            json!({"namespace": "a"}),
            Some("Destination server missing from app spec"),
        ),
        (
            ctx(),
            json!({"server": "https://10.1.1.1:6443"}),
            Some("cluster \"https://10.1.1.1:6443\" not found"),
        ),
        // Argo CD takes these; the appliance's naming does not rely on them.
        (
            ctx(),
            json!({"name": "in-cluster", "namespace": "a"}),
            Some(
                "field `spec.destination.name`: \"in-cluster\" works only through Argo CD's in-cluster special case",
            ),
        ),
        (
            ctx(),
            json!({"server": "https://kubernetes.default.svc"}),
            Some("use `destination.name` (\"genmachine\" here)"),
        ),
    ];
    for (c, dest, want) in cases {
        let f = check(&obj(app(dest.clone())), &c);
        match want {
            None => assert!(f.is_empty(), "{dest}: {f:?}"),
            Some(w) => assert!(
                f.iter()
                    .any(|f| f.message.contains(w) && f.file.ends_with(".yaml")),
                "{dest}: {f:?}"
            ),
        }
    }
}

#[test]
fn a_chart_of_the_tree_needs_the_settings_values_file() {
    let app = |helm: Value| {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
          "metadata": {"name": "apps", "namespace": "argocd"},
          "spec": {"project": "argocd", "destination": {"name": "genmachine", "namespace": "argocd"},
                   "source": {"repoURL": REPO, "path": "gitops/core/apps", "targetRevision": "main", "helm": helm}}})
    };
    assert!(check(&obj(app(json!({"valueFiles": ["../../settings.yaml"]}))), &ctx()).is_empty());
    let f = check(&obj(app(json!({}))), &ctx());
    assert!(
        f.iter()
            .any(|f| f.message.contains("is a Helm chart of this tree")),
        "{f:?}"
    );
}

#[test]
fn ref_source_must_not_be_a_chart_and_repo_must_match() {
    let mut v = corrected();
    v["spec"]["template"]["spec"]["sources"][1]["chart"] = json!("oops");
    v["spec"]["generators"][0]["git"]["repoURL"] = json!("https://elsewhere/x.git");
    let all = check(&obj(v), &ctx())
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        all.contains("`ref: values` source must not have a chart"),
        "{all}"
    );
    assert!(all.contains("is not the GitOps repository"), "{all}");
}

#[test]
fn duplicate_names_are_reported_including_generated_ones() {
    let mut objs = obj(corrected());
    objs.push(Object {
        file: "gitops/core/apps/again.yaml".into(),
        value: corrected(),
    });
    objs.push(Object {
        file: "gitops/bootstrap/genmachine/x.yaml".into(),
        value: json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "cert-manager-genmachine", "namespace": "argocd"},
            "spec": {"project": "core", "destination": {"name": "genmachine"},
                     "source": {"repoURL": REPO, "path": "gitops/x", "targetRevision": "main"}}}),
    });
    let f = check(&objs, &ctx());
    assert!(
        f.iter()
            .any(|f| f.object == "ApplicationSet/cert-manager" && f.message.contains("already used")),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|f| f.object == "Application/cert-manager-genmachine" && f.message.contains("already used")),
        "{f:#?}"
    );
}

#[test]
fn render_and_normalize() {
    assert_eq!(
        basename_normalized("gitops/manifests/x/Gen_Machine"),
        "gen-machine"
    );
    assert_eq!(
        render("a-{{.path.basename}}-{{ .path.basenameNormalized }}", "d/My_Dir").unwrap(),
        "a-My_Dir-my-dir"
    );
    assert_eq!(
        render("{{.cluster}}", "d").unwrap_err().to_string(),
        "unsupported template expression `{{.cluster}}`"
    );
    assert_eq!(
        render("x{{", "d").unwrap_err().to_string(),
        "unclosed `{{` in \"x{{\""
    );
}
