//! Conformance of the Talos path against upstream fixtures (read from
//! `$PROVISIONER_FIXTURES`, default `<repo>/../shared/fixtures`; never copied here):
//! secrets bundles re-export byte for byte, every rendered config validates against
//! Talos' v1.11 JSON schema, rendered configs match talosctl's golden output for
//! the fields both set (talhelper imports: `talhelper_import.rs`).

use std::path::Path;

use provisioner_core::infra;
use provisioner_core::talos::{self, SecretsBundle, TalosCluster};
use serde_json::Value;

mod common;
use common::{assert_valid, fixtures, read, stability_secrets, validator};

fn genmachine() -> TalosCluster {
    let infra = infra::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra"))
        .unwrap_or_else(|e| panic!("infra/ does not validate:\n{e}"));
    infra.talos["genmachine"].clone()
}

#[test]
fn secrets_bundles_reexport_identically() {
    let Some(dir) = fixtures() else { return };
    let text = read(&dir, "talos/v1.11/gen-secrets.yaml");
    let b = SecretsBundle::from_yaml(&text).unwrap();
    b.check().unwrap();
    assert_eq!(b.to_yaml(), text, "gen-secrets.yaml re-export differs");
    // The stability bundle starts with a comment line; the rest is identical.
    let text = read(&dir, "talos/v1.11/stability-secrets.yaml");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(stability_secrets(&dir).to_yaml(), body);
}

#[test]
fn talos_goldens_validate_against_the_schema() {
    // Proves the validator is wired right: Talos' own output must pass.
    let Some(dir) = fixtures() else { return };
    let v = validator(&dir);
    for f in [
        "base-controlplane.yaml",
        "base-worker.yaml",
        "overrides-controlplane.yaml",
    ] {
        let doc = talos::yaml::from_str(&read(&dir, &format!("talos/v1.11/{f}"))).unwrap();
        assert_valid(&v, &doc, f);
    }
    let mut bad = talos::yaml::from_str(&read(&dir, "talos/v1.11/base-worker.yaml")).unwrap();
    bad["machine"]["bogus"] = Value::Bool(true);
    assert!(
        !v.is_valid(&talos::machine::schema_instance(&bad)),
        "an unknown field must fail validation"
    );
}

#[test]
fn genmachine_configs_validate_and_carry_the_issue_fields() {
    let Some(dir) = fixtures() else { return };
    let v = validator(&dir);
    let cluster = genmachine();
    let secrets = stability_secrets(&dir);
    let schematic = "65cf8364cd0de4cf7b851dc7067a2db83d0ba04f11d8635c6cd3334be6ffb825";
    for (i, host) in ["talos-1", "talos-2", "talos-3"].into_iter().enumerate() {
        let cfg = talos::render(&cluster, host, &secrets).unwrap();
        assert_eq!(cfg.documents.len(), 1);
        let doc = &cfg.documents[0];
        assert_valid(&v, doc, host);
        // The YAML Talos fetches parses back to the same tree.
        assert_eq!(
            talos::yaml::from_str_multi(&cfg.to_yaml()).unwrap(),
            cfg.documents
        );
        let m = &doc["machine"];
        let c = &doc["cluster"];
        assert_eq!(m["type"], "controlplane");
        assert_eq!(m["network"]["hostname"], host);
        let nic = &m["network"]["interfaces"][0];
        assert_eq!(nic["addresses"][0], format!("192.168.1.15{}/24", i + 1));
        assert_eq!(nic["vip"]["ip"], "192.168.1.150");
        assert_eq!(
            nic["deviceSelector"]["hardwareAddr"],
            format!("02:00:00:00:01:0{}", i + 1)
        );
        assert_eq!(nic["routes"][0]["gateway"], "192.168.1.1");
        assert_eq!(m["network"]["nameservers"][0], "192.168.1.1");
        assert_eq!(m["install"]["disk"], "/dev/nvme0n1");
        assert_eq!(
            m["install"]["image"],
            format!("factory.talos.dev/metal-installer/{schematic}:v1.11.6")
        );
        assert_eq!(
            m["features"]["kubePrism"],
            serde_json::json!({"enabled": true, "port": 7445})
        );
        assert_eq!(
            c["controlPlane"]["endpoint"],
            "https://talos-cluster.genmachine.fredcorp.com:6443"
        );
        assert_eq!(c["network"]["cni"]["name"], "none");
        assert_eq!(c["proxy"]["disabled"], true);
        // Longhorn's data path reaches the containerised kubelet (infra/genmachine.yaml
        // cluster patch; Longhorn "Talos Linux Support", Data Path Mounts) and the
        // config still validates with it.
        assert_eq!(
            m["kubelet"]["extraMounts"],
            serde_json::json!([{"destination": "/var/lib/longhorn", "type": "bind",
                "source": "/var/lib/longhorn", "options": ["bind", "rshared", "rw"]}])
        );
        // Talos' PodSecurity default (init.go `PodSecurityAdmissionEnabled`): baseline,
        // kube-system exempt; the gitops/ namespaces that need more are labelled.
        let psa = &c["apiServer"]["admissionControl"][0];
        assert_eq!(psa["name"], "PodSecurity");
        assert_eq!(psa["configuration"]["defaults"]["enforce"], "baseline");
        assert_eq!(
            psa["configuration"]["exemptions"]["namespaces"],
            serde_json::json!(["kube-system"])
        );
        assert_eq!(c["allowSchedulingOnControlPlanes"], true);
        assert!(
            c["apiServer"]["certSANs"]
                .as_array()
                .unwrap()
                .contains(&"192.168.1.150".into())
        );
        // Secrets land where talosctl puts them.
        assert_eq!(m["token"], secrets.trustdinfo.token);
        assert_eq!(m["ca"]["key"], secrets.certs.os.key);
        assert_eq!(c["etcd"]["ca"]["key"], secrets.certs.etcd.key);
        assert_eq!(c["serviceAccount"]["key"], secrets.certs.k8sserviceaccount.key);
        // Cilium Job: host network, tolerations, kube-proxy replacement via KubePrism.
        let manifest = &c["inlineManifests"][0];
        assert_eq!(manifest["name"], "cilium-install");
        let objs = talos::yaml::from_str_multi(manifest["contents"].as_str().unwrap()).unwrap();
        let job = objs.iter().find(|o| o["kind"] == "Job").unwrap();
        let spec = &job["spec"]["template"]["spec"];
        assert_eq!(spec["hostNetwork"], true);
        assert!(
            spec["tolerations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == &serde_json::json!({"operator": "Exists"}))
        );
        let cmd: Vec<&str> = spec["containers"][0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        for want in [
            "kubeProxyReplacement=true",
            "k8sServiceHost=localhost",
            "k8sServicePort=7445",
            "--version=1.18.2",
        ] {
            assert!(cmd.contains(&want), "{want} missing in {cmd:?}");
        }
    }
}

#[test]
fn a_worker_gets_ca_certs_without_keys_and_validates() {
    let Some(dir) = fixtures() else { return };
    let v = validator(&dir);
    let mut cluster = genmachine();
    let mut w = cluster.nodes[0].clone();
    w.hostname = "talos-w1".into();
    w.control_plane = false;
    w.ip_address = "192.168.1.161".into();
    w.mac = Some("02:00:00:00:01:11".parse().unwrap());
    w.network_interfaces =
        vec![serde_json::json!({"deviceSelector": {"hardwareAddr": "02:00:00:00:01:11"}, "dhcp": true})];
    cluster.nodes.push(w);
    let secrets = stability_secrets(&dir);
    let doc = &talos::render(&cluster, "talos-w1", &secrets).unwrap().documents[0];
    assert_valid(&v, doc, "worker");
    assert_eq!(doc["machine"]["type"], "worker");
    assert_eq!(doc["machine"]["ca"]["crt"], secrets.certs.os.crt);
    assert_eq!(doc["machine"]["ca"]["key"], "");
    assert_eq!(doc["cluster"]["ca"]["key"], "");
    for cp_only in [
        "aggregatorCA",
        "serviceAccount",
        "etcd",
        "apiServer",
        "inlineManifests",
        "secretboxEncryptionSecret",
    ] {
        assert!(
            doc["cluster"].get(cp_only).is_none(),
            "worker has cluster.{cp_only}"
        );
    }
    // A VIP on a worker is rejected with the field named.
    let mut bad = cluster.clone();
    bad.nodes.last_mut().unwrap().network_interfaces[0]["vip"] = serde_json::json!({"ip": "192.168.1.150"});
    let errs = bad.validate();
    assert!(
        errs.iter()
            .any(|(f, m)| f == "nodes[3].networkInterfaces[0].vip" && m.contains("control-plane")),
        "{errs:?}"
    );
}

/// A step in a tree: a mapping key or a sequence index.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Leaf paths of a tree; empty containers are leaves.
fn leaves(v: &Value, path: Vec<Step>, out: &mut Vec<(Vec<Step>, Value)>) {
    let with = |s: Step| {
        let mut p = path.clone();
        p.push(s);
        p
    };
    match v {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .for_each(|(k, x)| leaves(x, with(Step::Key(k.clone())), out)),
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| leaves(x, with(Step::Index(i)), out)),
        _ => out.push((path, v.clone())),
    }
}

fn lookup<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, s| match s {
        Step::Key(k) => cur.get(k),
        Step::Index(i) => cur.get(i),
    })
}

/// Every leaf talosctl sets is set identically by the renderer (where the renderer
/// fills an empty golden container such as `machine.network: {}`, it extends it).
fn compare_with_golden(golden: &Value, ours: &Value) -> Vec<String> {
    let mut g = Vec::new();
    leaves(golden, Vec::new(), &mut g);
    let mut problems = Vec::new();
    for (steps, gv) in g {
        let path = format!("{steps:?}");
        match lookup(ours, &steps) {
            None => problems.push(format!("{path}: missing (golden {gv})")),
            Some(o) if o == &gv => {}
            Some(o) if gv.as_object().is_some_and(|m| m.is_empty()) && o.is_object() => {}
            Some(o) => problems.push(format!("{path}: {o} != golden {gv}")),
        }
    }
    problems
}

#[test]
fn structure_matches_talosctl_goldens() {
    let Some(dir) = fixtures() else { return };
    let cluster: TalosCluster = serde_saphyr::from_str(
        "clusterName: base\ntalosVersion: v1.11.6\nkubernetesVersion: v1.28.0\nendpoint: https://base:6443\n\
         nodes:\n  - {hostname: cp, controlPlane: true, installDisk: /dev/sda}\n  - {hostname: w, installDisk: /dev/sda}\n",
    )
    .unwrap();
    let secrets = stability_secrets(&dir);
    for (host, file) in [("cp", "base-controlplane.yaml"), ("w", "base-worker.yaml")] {
        let golden = talos::yaml::from_str(&read(&dir, &format!("talos/v1.11/{file}"))).unwrap();
        let ours = &talos::render(&cluster, host, &secrets).unwrap().documents[0];
        let problems = compare_with_golden(&golden, ours);
        assert!(problems.is_empty(), "{file}:\n{}", problems.join("\n"));
        // And nothing the golden omits on a worker appears in ours.
        if host == "w" {
            assert_eq!(
                ours["cluster"].as_object().unwrap().keys().collect::<Vec<_>>(),
                golden["cluster"].as_object().unwrap().keys().collect::<Vec<_>>()
            );
        }
    }
}
