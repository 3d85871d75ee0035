//! talhelper compatibility: talhelper's own example `talconfig.yaml` (fixture
//! `talhelper/talconfig.yaml`, budimanjojo/talhelper `example/`) imports with every
//! field Talos v1.11 supports carried over, and each node's rendered config
//! validates against Talos' v1.11 schema; hand-made cases cover `${VAR}` templating,
//! `@file` patches and every node field.
//!
//! The example names three files next to it (`uservolumeconfig3.yaml`,
//! `extraNodeLabels-patch.yaml`, `tsauth.env`) and two talenv variables
//! (`myDomainName`, `tsAuth`) that the fixture set does not carry; the tests give
//! hand-made equivalents.

use std::collections::BTreeMap;

use provisioner_core::talos::{self, talhelper};
use serde_json::{Value, json};
use talhelper::{Given, Imported};

mod common;
use common::{assert_valid, fixtures, read, stability_secrets, validator};

fn example_sources() -> Given {
    let mut g = Given::default();
    g.vars.insert("myDomainName".into(), "home.example".into());
    g.vars.insert("tsAuth".into(), "tskey-auth-123".into());
    g.files.insert(
        "uservolumeconfig3.yaml".into(),
        "apiVersion: v1alpha1\nkind: UserVolumeConfig\nname: sata3\nprovisioning:\n  diskSelector:\n    match: disk.transport == \"sata\"\n  minSize: 100GiB\n".into(),
    );
    g.files.insert(
        "extraNodeLabels-patch.yaml".into(),
        "machine:\n  nodeLabels:\n    domainname: \"${myDomainName}\"\n".into(),
    );
    g.files
        .insert("tsauth.env".into(), "TS_AUTHKEY=${tsAuth}\n".into());
    g
}

/// Every document of every node validates against the v1.11 schema.
fn render_all(imported: &Imported, dir: &std::path::Path) -> BTreeMap<String, Vec<Value>> {
    let v = validator(dir);
    let secrets = stability_secrets(dir);
    let mut out = BTreeMap::new();
    for n in &imported.cluster.nodes {
        let cfg = talos::render(&imported.cluster, &n.hostname, &secrets)
            .unwrap_or_else(|e| panic!("{}: {e}", n.hostname));
        for d in &cfg.documents {
            assert_valid(&v, d, &n.hostname);
        }
        out.insert(n.hostname.clone(), cfg.documents);
    }
    out
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .skip(1)
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn talhelper_example_imports_everything_talos_supports() {
    let Some(dir) = fixtures() else { return };
    let imported = talhelper::import(&read(&dir, "talhelper/talconfig.yaml"), &example_sources()).unwrap();
    let dropped: Vec<&str> = imported.unsupported.iter().map(|(f, _)| f.as_str()).collect();
    println!("dropped: {:#?}", imported.unsupported);
    assert_eq!(dropped, Vec::<&str>::new());
    assert!(
        !imported.reordered,
        "no two layers of the example set the same field"
    );
    let c = &imported.cluster;
    assert_eq!(
        c.domain.as_deref(),
        Some("home.example"),
        "${{myDomainName}} substituted"
    );
    assert_eq!(c.allow_scheduling_on_control_planes, Some(true));
    let docs = render_all(&imported, &dir);
    let cp = &docs["kmaster1"];
    let m = &cp[0]["machine"];
    assert_eq!(
        m["install"]["image"].as_str().unwrap(),
        format!(
            "factory.talos.dev/metal-installer-secureboot/{}:v1.12.0",
            c.schematic_for(&c.nodes[0]).id().unwrap()
        ),
        "machineSpec.secureboot selects the secure-boot installer"
    );
    assert_eq!(m["nodeLabels"]["isSecureBootEnabled"], "true", "templated label");
    assert_eq!(m["nodeLabels"]["rack"], "rack1a");
    assert_eq!(
        m["nodeLabels"]["domainname"], "home.example",
        "@file group patch, substituted"
    );
    assert_eq!(m["nodeAnnotations"]["installerUrl"], m["install"]["image"]);
    assert_eq!(
        m["kernel"]["modules"],
        json!([{"name": "br_netfilter", "parameters": ["nf_conntrack_max=131072"]}])
    );
    assert_eq!(m["files"][0]["content"], "TS_AUTHKEY=123456\n");
    assert_eq!(m["files"][0]["permissions"], 420, "0o644");
    assert_eq!(
        m["files"][1]["content"], "TS_AUTHKEY=tskey-auth-123\n",
        "@file content substituted"
    );
    assert!(m["files"][1].get("skipEnvsubst").is_none());
    assert_eq!(
        kinds(cp),
        [
            "UserVolumeConfig/sata2",
            "UserVolumeConfig/sata3",
            "NetworkDefaultActionConfig/",
            "NetworkRuleConfig/kubelet-ingress",
            "ExtensionServiceConfig/nut-client",
            "VolumeConfig/EPHEMERAL",
            "UserVolumeConfig/ceph-data",
            "UserVolumeConfig/sata",
        ]
    );
    let fw = cp.iter().find(|d| d["kind"] == "NetworkRuleConfig").unwrap();
    assert_eq!(
        fw["ingress"],
        json!([{"subnet": "172.20.0.0/24", "except": "172.20.0.1/32"}])
    );
    let uv = cp.iter().find(|d| d["name"] == "ceph-data").unwrap();
    assert_eq!(uv["encryption"]["keys"][1]["static"]["passphrase"], "topsecret");
    let w = &docs["kworker1"];
    assert_eq!(
        w[0]["machine"]["nodeLabels"]["domainname"], "home.example",
        "@file node patch"
    );
    assert_eq!(
        kinds(w),
        [
            "UserVolumeConfig/sata2",
            "UserVolumeConfig/sata3",
            "NetworkDefaultActionConfig/",
            "NetworkRuleConfig/apid-ingress",
        ],
        "worker.ingressFirewall reaches the worker"
    );
    assert_eq!(
        w[0]["machine"]["install"]["image"].as_str().unwrap(),
        format!(
            "factory.talos.dev/metal-installer/{}:v1.12.0",
            c.schematic_for(&c.nodes[1]).id().unwrap()
        )
    );
    // The infra text round-trips.
    let back: talos::TalosCluster = serde_saphyr::from_str(&imported.to_yaml()).unwrap();
    assert_eq!(&back, c);
}

/// A talconfig exercising every node field, templated from variables.
const OWN: &str = r#"# ${ONLY_IN_A_COMMENT} is never required
clusterName: lab
talosVersion: ${TALOS_VERSION:-v1.11.6}
kubernetesVersion: v1.34.1
endpoint: https://${VIP}:6443
imageFactory:
  registryURL: factory.example.net
patches:
  - "@./patches/common.yaml"
  - "@./patches/empty.yaml"
controlPlane:
  certSANs: [cp.${DOMAIN}]
  nodeLabels:
    role: control
  patches:
    - "@./patches/cp.yaml"
worker:
  kernelModules:
    - name: nvme_tcp
  machineSpec:
    secureboot: true
nodes:
  - hostname: ${HOST1}
    ipAddress: ${IP1}
    controlPlane: true
    installDisk: /dev/sda
    certSANs: [${HOST1}.${DOMAIN}]
    networkInterfaces:
      - interface: eth0
        addresses: [$IP1/24]
        vip:
          ip: ${VIP}
    schematic:
      customization:
        extraKernelArgs: [net.ifnames=0]
    machineSpec:
      mode: metal
      arch: arm64
      useUKI: false
    kernelModules:
      - name: br_netfilter
        parameters: [nf_conntrack_max=131072]
    machineFiles:
      - content: "@./files/motd"
        path: /var/etc/motd
        permissions: 0o600
        op: create
      - content: "@./files/raw.tmpl"
        skipEnvsubst: true
        path: /var/etc/raw
        permissions: 0o644
        op: create
    extensionServices:
      - name: nut-client
        configFiles:
          - content: "MONITOR ${UPS_HOST} 1 remote pass password"
            mountPath: /usr/local/etc/nut/upsmon.conf
        environment: [UPS_NAME=ups]
    volumes:
      - name: EPHEMERAL
        provisioning:
          maxSize: 40GiB
    userVolumes:
      - name: data
        volumeType: directory
        provisioning:
          diskSelector:
            match: disk.transport == "nvme"
          minSize: 10GiB
        filesystem:
          type: xfs
    ingressFirewall:
      defaultAction: accept
      rules:
        - name: etcd
          portSelector:
            ports: [2379, 2380]
            protocol: tcp
          ingress:
            - subnet: ${SUBNET}
    nodeLabels:
      zone: a
      image: "{{ .MachineConfig.MachineInstall.InstallImage | trimPrefix \"factory.example.net/\" }}"
    nodeAnnotations:
      host: "{{ .MachineConfig.MachineNetwork.NetworkHostname }}"
      bad: "{{ .MachineConfig.MachineToken }}"
    patches:
      - |-
        machine:
          sysctls:
            node.hostname: "{{ .MachineConfig.MachineNetwork.NetworkHostname }}"
      - "@./patches/templated.yaml"
    machineDisks:
      - device: /dev/sdb
    imageSchematic:
      customization: {}
  - hostname: ${HOST2}
    ipAddress: ${IP2}
    installDisk: /dev/sda
    overridePatches: true
    ignoreHostname: false
    userVolumes:
      - name: logs
        provisioning:
          diskSelector:
            match: system_disk
          maxSize: 5GiB
    machineSpec:
      mode: nocloud
      bootMethod: pxe
"#;

fn own_sources() -> Given {
    let mut g = Given::default();
    for (k, v) in [
        ("VIP", "10.5.0.10"),
        ("HOST1", "cp-1"),
        ("HOST2", "w-1"),
        ("IP1", "10.5.0.11"),
        ("IP2", "10.5.0.21"),
        ("DOMAIN", "lab.example"),
        ("UPS_HOST", "ups.lab"),
        ("SUBNET", "10.5.0.0/24"),
        ("MOTD", "welcome"),
    ] {
        g.vars.insert(k.into(), v.into());
    }
    for (k, v) in [
        (
            "patches/common.yaml",
            "machine:\n  time:\n    servers: [time.${DOMAIN}]\n",
        ),
        ("patches/empty.yaml", "  \n\n"),
        (
            "patches/cp.yaml",
            "cluster:\n  apiServer:\n    extraArgs:\n      audit-log-maxage: \"30\"\n",
        ),
        (
            "patches/templated.yaml",
            "machine:\n  env:\n    NODE: \"{{ .MachineConfig.MachineNetwork.NetworkHostname }}\"\n    DOMAIN: ${DOMAIN}\n",
        ),
        ("files/motd", "${MOTD} to ${HOST1}\n"),
        ("files/raw.tmpl", "keep ${THIS} as is\n"),
    ] {
        g.files.insert(k.into(), v.into());
    }
    g
}

#[test]
fn templated_talconfig_with_every_node_field() {
    let Some(dir) = fixtures() else { return };
    let imported = talhelper::import(OWN, &own_sources()).unwrap();
    let c = &imported.cluster;
    // The hostnames and addresses came from variables (no `missing field hostname`).
    assert_eq!(c.talos_version, "v1.11.6", "default applied");
    assert_eq!(c.endpoint, "https://10.5.0.10:6443");
    assert_eq!(
        (c.nodes[0].hostname.as_str(), c.nodes[0].ip_address.as_str()),
        ("cp-1", "10.5.0.11")
    );
    assert_eq!(
        (c.nodes[1].hostname.as_str(), c.nodes[1].ip_address.as_str()),
        ("w-1", "10.5.0.21")
    );
    assert_eq!(c.installer_registry.as_deref(), Some("factory.example.net"));
    let mut dropped: Vec<(&str, &str)> = imported
        .unsupported
        .iter()
        .map(|(f, w)| (f.as_str(), w.as_str()))
        .collect();
    dropped.sort();
    let paths: Vec<&str> = dropped.iter().map(|d| d.0).collect();
    assert_eq!(
        paths,
        [
            "nodes[0].imageSchematic",
            "nodes[0].machineDisks",
            "nodes[0].nodeAnnotations.bad",
            "nodes[0].userVolumes[0].volumeType",
            "nodes[1].machineSpec.bootMethod",
        ],
        "{dropped:#?}"
    );
    assert!(dropped[2].1.contains("secret material"), "{dropped:?}");
    assert!(dropped[3].1.contains("1.12"), "{dropped:?}");
    let docs = render_all(&imported, &dir);

    let cp = &docs["cp-1"];
    let m = &cp[0]["machine"];
    assert_eq!(
        m["network"]["interfaces"][0]["addresses"],
        json!(["10.5.0.11/24"])
    );
    assert_eq!(m["network"]["interfaces"][0]["vip"]["ip"], "10.5.0.10");
    assert_eq!(
        m["certSANs"],
        json!(["cp-1.lab.example", "cp.lab.example"]),
        "group certSANs appended"
    );
    assert_eq!(
        m["time"]["servers"],
        json!(["time.lab.example"]),
        "@file cluster patch"
    );
    assert_eq!(
        cp[0]["cluster"]["apiServer"]["extraArgs"]["audit-log-maxage"], "30",
        "@file group patch"
    );
    assert_eq!(
        m["kernel"]["modules"][0]["name"], "br_netfilter",
        "node value wins over none"
    );
    assert_eq!(m["files"][0]["content"], "welcome to cp-1\n");
    assert_eq!(m["files"][0]["permissions"], 0o600);
    assert_eq!(m["files"][1]["content"], "keep ${THIS} as is\n", "skipEnvsubst");
    let image = format!(
        "factory.example.net/metal-installer/{}:v1.11.6",
        c.schematic_for(&c.nodes[0]).id().unwrap()
    );
    assert_eq!(m["install"]["image"], image.as_str());
    assert_eq!(
        m["install"]["extraKernelArgs"],
        json!(["net.ifnames=0"]),
        "schematic kernel args copied (no UKI, Talos < 1.12)"
    );
    let expect_label = image.trim_start_matches("factory.example.net/");
    assert_eq!(m["nodeLabels"]["image"], expect_label, "templated label");
    assert_eq!(m["nodeLabels"]["zone"], "a");
    assert!(
        m["nodeLabels"].get("role").is_none(),
        "node labels replace the group's (talhelper)"
    );
    assert_eq!(m["nodeAnnotations"]["host"], "cp-1");
    assert_eq!(m["sysctls"]["node.hostname"], "cp-1", "templated inline patch");
    assert_eq!(
        m["env"],
        json!({"NODE": "cp-1", "DOMAIN": "lab.example"}),
        "templated @file patch"
    );
    assert_eq!(
        kinds(cp),
        [
            "NetworkDefaultActionConfig/",
            "NetworkRuleConfig/etcd",
            "ExtensionServiceConfig/nut-client",
            "VolumeConfig/EPHEMERAL",
            "UserVolumeConfig/data",
        ]
    );
    assert_eq!(cp[1]["ingress"], "accept");
    assert_eq!(cp[2]["portSelector"]["ports"], json!([2379, 2380]));
    assert_eq!(cp[2]["ingress"], json!([{"subnet": "10.5.0.0/24"}]));
    assert_eq!(
        cp[3]["configFiles"][0]["content"],
        "MONITOR ups.lab 1 remote pass password"
    );

    let w = &docs["w-1"];
    let m = &w[0]["machine"];
    assert_eq!(
        m["kernel"]["modules"],
        json!([{"name": "nvme_tcp"}]),
        "group kernelModules"
    );
    assert!(
        m["install"]["image"]
            .as_str()
            .unwrap()
            .starts_with("factory.example.net/nocloud-installer/"),
        "the node's machineSpec replaces the group's: {}",
        m["install"]["image"]
    );
    assert!(w[0]["cluster"].get("apiServer").is_none());
    assert_eq!(
        m["time"]["servers"],
        json!(["time.lab.example"]),
        "cluster patches still apply"
    );
    assert_eq!(kinds(w), ["UserVolumeConfig/logs"]);
}

#[test]
fn group_machine_spec_and_override_patches() {
    let text = "clusterName: c\ntalosVersion: v1.11.6\nkubernetesVersion: v1.34.1\nendpoint: https://10.0.0.1:6443\n\
        worker:\n  patches:\n    - \"machine:\\n  sysctls:\\n    a: b\\n\"\n  machineSpec:\n    secureboot: true\n\
        nodes:\n  - {hostname: w1, installDisk: /dev/sda}\n  - {hostname: w2, installDisk: /dev/sda, overridePatches: true}\n";
    let imported = talhelper::import(text, &Given::default()).unwrap();
    let c = &imported.cluster;
    assert!(imported.unsupported.is_empty(), "{:?}", imported.unsupported);
    assert!(c.worker.patches.is_empty(), "moved into the nodes that take them");
    assert_eq!(c.nodes[0].patches.len(), 1);
    assert!(c.nodes[1].patches.is_empty(), "overridePatches");
    for n in &c.nodes {
        assert!(
            n.talos_image_url
                .as_deref()
                .unwrap()
                .contains("/metal-installer-secureboot/"),
            "group machineSpec"
        );
    }
}

#[test]
fn errors_name_the_variable_or_field() {
    let text = "clusterName: c\nkubernetesVersion: v1.34.1\nendpoint: https://10.0.0.1:6443\ntalosVersion: v1.11.6\n\
        nodes:\n  - hostname: ${HOSTNAME1}\n    patches: [\"@./missing.yaml\"]\n";
    let err = talhelper::import(text, &Given::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("variable ${HOSTNAME1} not set"), "{err}");
    assert!(!err.contains("missing field"), "{err}");
    let mut g = Given::default();
    g.vars.insert("HOSTNAME1".into(), "n1".into());
    let err = talhelper::import(text, &g).unwrap_err().to_string();
    assert!(
        err.contains("nodes[0].patches[0]") && err.contains("missing.yaml"),
        "{err}"
    );
    g.vars.insert("HOSTNAME1".into(), String::new());
    let err = talhelper::import(text, &g).unwrap_err().to_string();
    assert!(err.contains("set but empty"), "{err}");
}

#[test]
fn talenv_values_are_scalars() {
    let env = talhelper::parse_talenv("A: x\nB: 42\nC: true\nsops: {mac: y}\n").unwrap();
    assert_eq!(
        env.into_iter().collect::<Vec<_>>(),
        [
            ("A".into(), "x".into()),
            ("B".into(), "42".into()),
            ("C".into(), "true".into())
        ]
    );
    assert!(talhelper::parse_talenv("A: [1]\n").is_err());
}

#[test]
fn manifests_legacy_fields_and_what_is_listed() {
    let Some(dir) = fixtures() else { return };
    let text = r#"clusterName: c
talosVersion: v1.11.6
kubernetesVersion: v1.34.1
endpoint: https://10.0.0.1:6443
someTypo: 1
imageFactory:
  ISOURLTmpl: "{{.Protocol}}://x"
inlineManifests:
  - name: ns
    contents: "@./manifests/ns.yaml"
  - name: inline
    contents: |
      apiVersion: v1
      kind: Namespace
      metadata:
        name: inline
patches:
  - "machine:\n  env:\n    H: \"{{ .MachineConfig.MachineNetwork.NetworkHostname }}\"\n"
controlPlane:
  inlinePatch:
    machine:
      env:
        A: b
nodes:
  - hostname: cp
    controlPlane: true
    installDisk: /dev/sda
    configPatches:
      - op: add
        path: /machine/sysctls
        value:
          vm.max_map_count: "262144"
    extraManifests:
      - ./docs/trim.yaml
"#;
    let mut g = Given::default();
    g.vars.insert("NS".into(), "team-a".into());
    g.files.insert(
        "manifests/ns.yaml".into(),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${NS}\n".into(),
    );
    g.files.insert(
        "docs/trim.yaml".into(),
        "apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: \"{{ .MachineConfig.MachineNetwork.NetworkHostname }}-svc\"\nenvironment: [X=$NOT_A_VAR]\n".into(),
    );
    let imported = talhelper::import(text, &g).unwrap();
    let paths: Vec<&str> = imported.unsupported.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        paths,
        [
            "imageFactory.ISOURLTmpl",
            "someTypo",
            "patches[0]",
            "controlPlane.inlinePatch"
        ],
        "{:#?}",
        imported.unsupported
    );
    assert!(imported.unsupported[2].1.contains("per node"));
    assert!(imported.unsupported[3].1.contains("talhelper v1"));
    let docs = render_all(&imported, &dir);
    let cp = &docs["cp"];
    let ims = &cp[0]["cluster"]["inlineManifests"];
    assert_eq!(ims[0]["name"], "ns");
    assert_eq!(
        ims[0]["contents"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n"
    );
    assert_eq!(ims[1]["name"], "inline");
    assert_eq!(
        cp[0]["machine"]["sysctls"]["vm.max_map_count"], "262144",
        "configPatches (RFC 6902)"
    );
    assert_eq!(
        kinds(cp),
        ["ExtensionServiceConfig/cp-svc"],
        "templated extraManifests file"
    );
    assert_eq!(
        cp[1]["environment"][0], "X=$NOT_A_VAR",
        "extraManifests are not substituted"
    );
}

#[test]
fn conflicting_layers_keep_talhelpers_patch_order() {
    let Some(dir) = fixtures() else { return };
    let text = r#"clusterName: c
talosVersion: v1.11.6
kubernetesVersion: v1.34.1
endpoint: https://10.0.0.1:6443
patches:
  - "machine:\n  env:\n    WHO: cluster\n"
worker:
  patches:
    - "machine:\n  env:\n    GROUP: worker\n"
nodes:
  - hostname: cp
    controlPlane: true
    installDisk: /dev/sda
    patches:
      - "machine:\n  env:\n    WHO: node\n"
  - hostname: w
    installDisk: /dev/sda
"#;
    let imported = talhelper::import(text, &Given::default()).unwrap();
    assert!(imported.reordered);
    assert!(imported.to_yaml().contains("in talhelper's order"));
    let c = &imported.cluster;
    assert!(c.patches.is_empty() && c.worker.patches.is_empty());
    assert_eq!(c.nodes[1].patches.len(), 2, "group, then cluster");
    let docs = render_all(&imported, &dir);
    // talhelper applies the cluster's patches last: they win.
    assert_eq!(docs["cp"][0]["machine"]["env"], json!({"WHO": "cluster"}));
    assert_eq!(
        docs["w"][0]["machine"]["env"],
        json!({"GROUP": "worker", "WHO": "cluster"})
    );

    // Without a conflict the layers stay where they were written.
    let calm = text.replace("WHO: node", "OTHER: node");
    let imported = talhelper::import(&calm, &Given::default()).unwrap();
    assert!(!imported.reordered);
    assert_eq!(imported.cluster.patches.len(), 1);
    assert_eq!(imported.cluster.worker.patches.len(), 1);
}
