//! One case per upstream check (pod-security-admission `policy/check_*.go`): the spec
//! that trips it, at the lowest level that refuses it, and that `privileged` admits
//! everything.

use serde_json::{Value, json};

use super::*;

fn checks(level: Level, pod: &Value) -> Vec<&'static str> {
    let (m, s) = pod_template(pod).unwrap();
    evaluate(level, m, s).into_iter().map(|v| v.check).collect()
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

fn c(sc: Value) -> Value {
    json!({"containers": [{"name": "app", "image": "x", "securityContext": sc}]})
}

/// A pod `restricted` admits (`check_*_restricted.go` satisfied).
fn hardened() -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "x", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
        }}],
        "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "tmp", "emptyDir": {}}]
    })
}

#[test]
fn baseline_checks_each_refuse_their_field() {
    let cases: Vec<(&str, Value)> = vec![
        ("hostNamespaces", json!({"hostNetwork": true, "containers": []})),
        ("hostNamespaces", json!({"hostPID": true, "containers": []})),
        ("privileged", c(json!({"privileged": true}))),
        (
            "capabilities_baseline",
            c(json!({"capabilities": {"add": ["NET_RAW"]}})),
        ),
        (
            "hostPathVolumes",
            json!({"containers": [], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
        ),
        (
            "hostPorts",
            json!({"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
        ),
        (
            "appArmorProfile",
            c(json!({"appArmorProfile": {"type": "Unconfined"}})),
        ),
        ("seLinuxOptions", c(json!({"seLinuxOptions": {"type": "spc_t"}}))),
        (
            "seLinuxOptions",
            json!({"securityContext": {"seLinuxOptions": {"user": "root"}}, "containers": []}),
        ),
        ("procMount", c(json!({"procMount": "Unmasked"}))),
        (
            "seccompProfile_baseline",
            c(json!({"seccompProfile": {"type": "Unconfined"}})),
        ),
        (
            "sysctls",
            json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}, "containers": []}),
        ),
        (
            "windowsHostProcess",
            c(json!({"windowsOptions": {"hostProcess": true}})),
        ),
        (
            "hostProbesAndHostLifecycle",
            json!({"containers": [{"name": "a", "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}}}]}),
        ),
    ];
    for (want, spec) in cases {
        let p = pod(spec);
        assert_eq!(checks(Level::Baseline, &p), vec![want], "{p}");
        assert!(checks(Level::Restricted, &p).contains(&want), "{p}");
        assert!(checks(Level::Privileged, &p).is_empty(), "{p}");
    }
}

#[test]
fn baseline_allows_the_safe_values() {
    let p = pod(json!({
        "securityContext": {"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}],
                            "seLinuxOptions": {"type": "container_t"}},
        "containers": [{"name": "a", "securityContext": {"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE"]},
                        "procMount": "Default", "appArmorProfile": {"type": "RuntimeDefault"}},
                        "ports": [{"containerPort": 80, "hostPort": 0}]}],
        "volumes": [{"name": "d", "emptyDir": {}}]
    }));
    assert_eq!(checks(Level::Baseline, &p), Vec::<&str>::new());
    let annotated = json!({"kind": "Pod", "metadata": {"annotations": {
        "container.apparmor.security.beta.kubernetes.io/a": "unconfined"}}, "spec": {"containers": [{"name": "a"}]}});
    assert_eq!(checks(Level::Baseline, &annotated), vec!["appArmorProfile"]);
}

#[test]
fn restricted_checks_each_refuse_their_field() {
    assert_eq!(checks(Level::Restricted, &pod(hardened())), Vec::<&str>::new());
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut s = hardened();
        f(&mut s);
        pod(s)
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "restrictedVolumes",
            mutate(&|s| s["volumes"] = json!([{"name": "n", "nfs": {"server": "x", "path": "/"}}])),
        ),
        (
            "allowPrivilegeEscalation",
            mutate(&|s| {
                s["containers"][0]["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("allowPrivilegeEscalation");
            }),
        ),
        (
            "runAsNonRoot",
            mutate(&|s| s["securityContext"]["runAsNonRoot"] = json!(false)),
        ),
        (
            "runAsUser",
            mutate(&|s| s["containers"][0]["securityContext"]["runAsUser"] = json!(0)),
        ),
        (
            "seccompProfile_restricted",
            mutate(&|s| {
                s["securityContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("seccompProfile");
            }),
        ),
        (
            "capabilities_restricted",
            mutate(&|s| s["containers"][0]["securityContext"]["capabilities"] = json!({"drop": ["NET_RAW"]})),
        ),
    ];
    for (want, p) in cases {
        let got = checks(Level::Restricted, &p);
        assert!(got.contains(&want), "{want}: {got:?} for {p}");
        assert!(
            checks(Level::Baseline, &p).is_empty(),
            "{want} is restricted-only: {p}"
        );
    }
}

#[test]
fn workload_templates_are_found() {
    let ds = json!({"kind": "DaemonSet", "spec": {"template": {"metadata": {}, "spec": {"hostNetwork": true, "containers": []}}}});
    assert_eq!(checks(Level::Baseline, &ds), vec!["hostNamespaces"]);
    let cron = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {"hostPID": true}}}}}});
    assert_eq!(checks(Level::Baseline, &cron), vec!["hostNamespaces"]);
    assert!(pod_template(&json!({"kind": "ConfigMap"})).is_none());
    assert_eq!(Level::parse("baseline"), Some(Level::Baseline));
    assert!(Level::Privileged < Level::Baseline && Level::Baseline < Level::Restricted);
}
