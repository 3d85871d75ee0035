//! Simulated lab, end to end (issue 6): three QEMU machines with the MACs of a copy of
//! `infra/genmachine.yaml` re-addressed into the lab's `10.77.<n>.0/24` PXE-boot from
//! the appliance (built-in DHCP, full mode, reservations from `infra/`), fetch their
//! one-time Talos configs and start the node agent (`provisioner-lab-agent`, second
//! initrd), which serves the Talos API on :50000 with a certificate issued from the
//! OS CA in the config it fetched. From the host side of the lab, the appliance's own
//! Talos client (mTLS with the identity from the cluster's secrets bundle) reaches
//! every node; a client from another bundle is refused. Then the appliance itself
//! (`serve`'s bootstrap supervisor) calls `Bootstrap` once, on the lowest IP, waits for
//! etcd on all three, fetches the kubeconfig, waits for `/readyz` and installs ArgoCD
//! plus the root app-of-apps into the fake Kubernetes API that holds the VIP (the
//! cluster endpoint), whose scripted Argo CD controller reports the tree's
//! Applications OutOfSync/Progressing, then Synced and Healthy: the cluster is
//! `HandedOff` only after that report. The test measures power-on to `HandedOff`
//! (the Degraded path and its retry are proven against the real `serve` in
//! `provisioner/tests/integration/cluster_handoff_argo.rs`, without QEMU).
//!
//! Three VMs at once under TCG on two cores: timeouts are generous and the test prints
//! `TIMING` lines. Needs root, QEMU, a built appliance and agent (`cargo build
//! --workspace`), and the ArgoCD install fixture (else it prints SKIPPED).

use crate::common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use provisioner::os::talos::api::{
    BundleIdentity, ClusterIdentity, IdentitySource, TalosApi, Target, TonicTalos,
};
use provisioner_core::talos::SecretsBundle;
use provisioner_core::talos::store::{MemSecretStore, SecretStore};
use provisioner_e2e::talos_sim::{CLUSTER, TalosSimSite, agent_bin, agent_initrd};
use provisioner_e2e::{Appliance, Firmware, Lab, Machine, QemuVm, payload, require_root, tail, timeline};

/// Power-on to the agent answering, per VM, with three VMs sharing two cores.
const AGENT_UP_TIMEOUT: Duration = Duration::from_secs(480);
/// From all agents answering to `HandedOff` (in-process this takes seconds).
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(300);

fn fixture(rel: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("PROVISIONER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let p = dir.join(rel);
    if p.is_file() {
        Some(p)
    } else {
        println!("SKIPPED: fixture {rel} not found (set PROVISIONER_FIXTURES)");
        None
    }
}

fn identity_of(bundle: &SecretsBundle) -> Result<ClusterIdentity> {
    let store = Arc::new(MemSecretStore::new());
    store.put(CLUSTER, bundle)?;
    BundleIdentity::new(store)
        .talos_identity(CLUSTER)
        .map_err(anyhow::Error::msg)
}

/// A current-thread runtime on a thread inside the lab namespace: every socket the
/// future opens (tonic, kube-rs) is in the lab.
fn in_lab<T: Send + 'static>(
    lab: &Lab,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    common::in_netns(lab.netns(), move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
}

/// `Version` on every node over mTLS with `id`; (node, result) in order.
async fn versions(id: &ClusterIdentity, ips: &[IpAddr]) -> Vec<(IpAddr, Result<String, String>)> {
    let client = match TonicTalos::new(id, 50000, Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => return ips.iter().map(|ip| (*ip, Err(e.to_string()))).collect(),
    };
    let mut out = Vec::new();
    for ip in ips {
        let r = client
            .version(Target::direct(*ip))
            .await
            .map_err(|e| e.to_string());
        out.push((*ip, r));
    }
    out
}

fn explain(vms: &[QemuVm], appliance: &Appliance) -> String {
    let mut s = format!("--- appliance log ---\n{}\n", tail(&appliance.log(), 30));
    for vm in vms {
        s.push_str(&format!(
            "--- {} serial ---\n{}\n",
            vm.machine().name,
            tail(&vm.serial(), 15)
        ));
    }
    s
}

#[test]
fn simulated_genmachine_from_power_on_to_handed_off() {
    require_root();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let Some(argocd) = fixture("argocd/install-v3.5.1.yaml") else {
        return;
    };
    let lab = Lab::new("talos-sim").unwrap_or_else(|e| panic!("{e:#}"));
    // A panic while the lab lives keeps its directory (consoles, logs) for diagnosis.
    if let Err(e) = run(&lab, &argocd) {
        panic!("{e:#}");
    }
}

fn run(lab: &Lab, argocd: &Path) -> Result<()> {
    let payload = payload()?;
    let agent_gz = agent_initrd()?;
    let agent = agent_bin()?;
    let sim = TalosSimSite::write(lab, &payload, &agent_gz)?;
    sim.enable_bootstrap(argocd)?;
    let bundle = SecretsBundle::from_yaml(&sim.generate_secrets()?).map_err(anyhow::Error::msg)?;
    let identity = identity_of(&bundle)?;
    let ips: Vec<IpAddr> = sim.nodes.iter().map(|n| n.ip.parse()).collect::<Result<_, _>>()?;

    // The fake Kubernetes API holds the VIP, as the control plane would, with a
    // serving certificate from the bundle's Kubernetes CA (handed over in a 0600 file
    // the agent removes once read); it requires client certificates from that CA.
    lab.exec(&["ip", "addr", "add", &format!("{}/32", sim.vip), "dev", "br0"])?;
    let ca_file = lab.dir().join("kube-ca");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&ca_file)?;
        writeln!(f, "{}\n{}", bundle.certs.k8s.crt, bundle.certs.k8s.key)?;
    }
    let (agent_s, ca_s) = (agent.to_string_lossy(), ca_file.to_string_lossy());
    let gitops = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gitops");
    let mut kube = lab.spawn(
        &[
            &agent_s,
            "kube",
            "--listen",
            &format!("{}:6443", sim.vip),
            "--ca-file",
            &ca_s,
            // Argo CD on the cluster: the tree's Applications, Synced and Healthy
            // after 1.5 s of OutOfSync/Progressing.
            "--gitops",
            &gitops.to_string_lossy(),
        ],
        &lab.dir().join("fake-kube.log"),
    )?;
    kube.wait_for_log("LAB-KUBE-LISTENING", Duration::from_secs(30))?;

    let mut appliance = Appliance::start(lab, &sim.site.config)?;
    appliance.wait_for_log("listening for DHCP on", Duration::from_secs(20))?;

    // Power on.
    let t0 = Instant::now();
    let machines = sim
        .nodes
        .iter()
        .map(|n| Machine {
            firmware: Firmware::SeabiosIpxe,
            mac: n.mac.clone(),
            name: n.hostname.clone(),
        })
        .collect();
    let mut vms = lab.boot_group(machines)?;
    for i in 0..vms.len() {
        let r = vms[i].wait_for_serial(
            "LAB-AGENT-LISTENING",
            AGENT_UP_TIMEOUT.saturating_sub(t0.elapsed()),
        );
        if let Err(e) = r {
            bail!("{e:#}\n{}", explain(&vms, &appliance));
        }
        eprintln!(
            "TIMING talos-sim {}: agent listening {:.1}s after power-on",
            vms[i].machine().name,
            t0.elapsed().as_secs_f64()
        );
    }
    for (vm, node) in vms.iter().zip(&sim.nodes) {
        let serial = vm.serial();
        let want = format!("ip={} port=50000 hostname={}", node.ip, node.hostname);
        assert!(
            serial.contains(&want),
            "{}: agent did not come up on its reservation ({want}):\n{}",
            node.hostname,
            tail(&serial, 15)
        );
    }

    // mTLS from the host side: the bundle's identity is accepted by every node (the
    // server certificate chains to the bundle's OS CA with the node IP as name); an
    // identity from another bundle is refused.
    let stranger = identity_of(&provisioner::pki::talos::generate(time_now())?)?;
    let (id, nodes) = (identity.clone(), ips.clone());
    let (ours, theirs) = in_lab(lab, move || {
        Box::pin(async move { (versions(&id, &nodes).await, versions(&stranger, &nodes).await) })
    });
    for (ip, r) in &ours {
        match r {
            Ok(tag) => assert_eq!(tag, "v1.11.6", "{ip}"),
            Err(e) => bail!("Version on {ip} with the bundle's identity failed: {e}"),
        }
    }
    for (ip, r) in &theirs {
        assert!(r.is_err(), "{ip} accepted a client from another cluster's CA");
    }
    if let Some(vm) = vms.iter().find(|vm| vm.serial().contains("LAB-AGENT-FAILED")) {
        bail!(
            "agent on {} failed:\n{}",
            vm.machine().name,
            tail(&vm.serial(), 15)
        );
    }
    eprintln!(
        "TIMING talos-sim: all three answer Version over mTLS {:.1}s after power-on",
        t0.elapsed().as_secs_f64()
    );

    // The appliance bootstraps the cluster and hands it off (its supervisor started
    // the workflow when the first node answered).
    let handed_off = provisioner_e2e::wait_for(HANDOFF_TIMEOUT, "bootstrap phase `done`", || {
        let Ok(body) = appliance.api_get(&format!("/api/v1/clusters/{CLUSTER}")) else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(&body).with_context(|| body.clone())?;
        let b = &v["bootstrap"];
        match b["phase"].as_str() {
            Some("done") => Ok(Some(b.clone())),
            Some("failed") => bail!("the bootstrap failed:\n{b:#}"),
            _ => Ok(None),
        }
    });
    let took = t0.elapsed();
    if let Err(e) = handed_off {
        let status = appliance
            .api_get(&format!("/api/v1/clusters/{CLUSTER}"))
            .unwrap_or_else(|e| format!("{e:#}"));
        bail!(
            "{e:#}\n--- cluster ---\n{status}\n{}--- fake Kubernetes API ---\n{}",
            explain(&vms, &appliance),
            tail(&kube.log(), 20)
        );
    }
    eprintln!(
        "TIMING talos-sim: power-on to HandedOff {:.1}s (target < 300 s)",
        took.as_secs_f64()
    );

    // What the nodes and the API server saw: etcd bootstrapped once, on the lowest IP,
    // and every agent joined it; no agent failed on the way.
    let lowest = ips.iter().min().copied().context("no nodes")?;
    for vm in &vms {
        let serial = vm.serial();
        assert!(
            serial.contains(&format!("LAB-AGENT-JOINED etcd bootstrapped-on={lowest}")),
            "{} did not join etcd bootstrapped on {lowest}:\n{}",
            vm.machine().name,
            tail(&serial, 15)
        );
        assert!(!serial.contains("LAB-AGENT-FAILED"), "{}", tail(&serial, 15));
    }
    let bootstrap_calls: Vec<String> = vms
        .iter()
        .flat_map(|vm| {
            let name = vm.machine().name.clone();
            vm.serial()
                .lines()
                .filter(|l| l.contains("LAB-AGENT-CALL Bootstrap"))
                .map(|l| format!("{name}: {}", l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    let ok: Vec<&String> = bootstrap_calls
        .iter()
        .filter(|l| l.ends_with("code=Ok"))
        .collect();
    assert_eq!(
        ok.len(),
        1,
        "Bootstrap answered OK exactly once: {bootstrap_calls:#?}"
    );
    assert!(
        ok[0].starts_with("talos-1:"),
        "on the lowest IP: {bootstrap_calls:#?}"
    );
    // Nodes that answered Version over mTLS are Installed (next netboot: local disk).
    for node in &sim.nodes {
        let m = appliance.api_machine(&node.mac)?;
        assert_eq!(timeline::state(&m), Some("Installed"), "{}: {m:#}", node.hostname);
    }
    // HandedOff only after Argo CD reported Synced and Healthy: the appliance's
    // events carry each change it read, the last ones before the step change.
    let kube_log = wait_log(&kube, "LAB-KUBE-ARGO root Synced/Healthy")?;
    assert!(
        kube_log.contains("LAB-KUBE-ARGO root OutOfSync/Progressing")
            && kube_log.contains("LAB-KUBE-ARGO cilium-genmachine Synced/Healthy"),
        "{}",
        tail(&kube_log, 30)
    );
    let detail = handed_off_detail(&appliance)?;
    assert!(
        detail.contains("Synced and Healthy"),
        "HandOff -> HandedOff without Argo CD's report: {detail}"
    );
    let kube_log = wait_log(&kube, "LAB-KUBE-APPLIED Application argocd/root")?;
    assert!(
        kube_log.contains("LAB-KUBE-APPLIED Namespace /argocd"),
        "{}",
        tail(&kube_log, 20)
    );
    drop(vms);
    appliance.stop()?;
    Ok(())
}

/// The `HandOff -> HandedOff` event's detail, from the cluster's last events.
fn handed_off_detail(appliance: &Appliance) -> Result<String> {
    let body = appliance.api_get(&format!("/api/v1/clusters/{CLUSTER}"))?;
    let v: serde_json::Value = serde_json::from_str(&body).with_context(|| body.clone())?;
    let e = &v["bootstrap"]["last_event"];
    Ok(format!("{} {}", e["kind"], e["detail"]))
}

fn wait_log(p: &provisioner_e2e::LabProcess, needle: &str) -> Result<String> {
    provisioner_e2e::wait_for(Duration::from_secs(5), needle, || {
        let log = p.log();
        Ok(log.contains(needle).then_some(log))
    })
    .context("the fake Kubernetes API's log")
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
