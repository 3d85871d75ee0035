//! The simulated Talos lab (issue 6): a copy of the GenMachine cluster definition
//! (`infra/genmachine.yaml`; its nodes' groups are derived from it) re-addressed
//! into the lab's own `10.77.<n>.0/24` (node IPs `.151-.153`, VIP and cluster endpoint
//! `.150`, gateway and nameserver the lab bridge `.1`; the homelab's 192.168.x never
//! appears) and given QEMU MACs `52:54:00:61:01:0N` in place of the placeholder
//! `02:00:00:00:01:0N` (a cluster with placeholder MACs is not armed), the built-in DHCP in full mode (reservations come from `infra/`), and a
//! second initrd holding the node agent (`provisioner-lab-agent`) that stands in for
//! Talos once `/init` has fetched the one-time machine config (`lab.mode=talos-sim`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::appliance::{LabSite, provisioner_bin};
use crate::cpio::Archive;
use crate::lab::Lab;
use crate::payload::{Payload, cache_dir};
use crate::run;

/// Cluster name of the copied definition.
pub const CLUSTER: &str = "genmachine";
/// Image id of the talos-sim image (payload + agent initrd).
pub const IMAGE_ID: &str = "lab-talos-sim";
/// The agent binary's name (workspace member `tests/agent`).
pub const AGENT: &str = "provisioner-lab-agent";
const REPO_HOME_NET: &str = "192.168.1.";
/// The placeholder MACs of infra/genmachine.yaml
/// (`02:00:00:00:01:0N`): a cluster carrying them is not armed (no secrets, no
/// bootstrap), so the lab gives the nodes QEMU MACs instead.
const REPO_PLACEHOLDER_MACS: &str = "02:00:00:00:01:0";
/// `52:54:00:61:01:0N`: the simulated nodes' MACs.
const LAB_MACS: &str = "52:54:00:61:01:0";
const REPO_ENDPOINT_HOST: &str = "talos-cluster.genmachine.fredcorp.com";

/// One node of the copied cluster.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// `talos-N`.
    pub hostname: String,
    /// Its MAC, as in the repository's definition.
    pub mac: String,
    /// Its re-addressed IP (the DHCP reservation).
    pub ip: String,
}

/// A lab site set up for the simulated Talos cluster.
#[derive(Debug, Clone)]
pub struct TalosSimSite {
    /// The underlying site (config file, directories).
    pub site: LabSite,
    /// The three control-plane nodes.
    pub nodes: Vec<SimNode>,
    /// The re-addressed VIP, which is also the cluster endpoint's host.
    pub vip: String,
}

/// The repository root (the workspace).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Locates the agent binary: `$PROVISIONER_LAB_AGENT`, else next to the appliance
/// binary (`cargo build --workspace` puts both in `<target>/debug`).
pub fn agent_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PROVISIONER_LAB_AGENT") {
        return Ok(p.into());
    }
    let next_to = provisioner_bin()?.with_file_name(AGENT);
    if next_to.is_file() {
        return Ok(next_to);
    }
    bail!(
        "{} not found; build it with `cargo build -p {AGENT}` (or `cargo build --workspace`), \
         or set PROVISIONER_LAB_AGENT",
        next_to.display()
    )
}

impl TalosSimSite {
    /// Writes the site: the plain lab site, then the re-addressed GenMachine copy, the
    /// talos-sim image (payload + `agent_initrd`), and full-mode DHCP on `br0`.
    pub fn write(lab: &Lab, payload: &Payload, agent_initrd: &Path) -> Result<Self> {
        let p = lab.subnet_prefix();
        let readdress = |text: &str| {
            text.replace(REPO_HOME_NET, &format!("{p}."))
                .replace(REPO_ENDPOINT_HOST, &format!("{p}.150"))
                .replace(REPO_PLACEHOLDER_MACS, LAB_MACS)
        };
        let repo = repo_root();
        let infra = fs::read_to_string(repo.join("infra/genmachine.yaml"))
            .context("reading infra/genmachine.yaml")?;
        let infra = readdress(&infra);
        if infra.contains("192.168.") {
            bail!("the re-addressed GenMachine copy still names a 192.168.x address");
        }
        // The nodes' MACs live in infra/ only; their groups are derived from it.
        let macs: Vec<String> = (1..=3).map(|i| format!("{LAB_MACS}{i}")).collect();
        for mac in &macs {
            if !infra.contains(&format!("mac: \"{mac}\"")) {
                bail!("the re-addressed GenMachine copy has no node with mac {mac}");
            }
        }
        let refs: Vec<&str> = macs.iter().map(String::as_str).collect();
        let site = LabSite::write(lab, payload, &refs)?;
        let root = &site.root;
        fs::write(root.join("infra/genmachine.yaml"), &infra)?;
        // The lab site's own groups (lab-vmN) select the same MACs: a MAC lives in
        // one place, so they go.
        for i in 1..=3 {
            fs::remove_file(root.join(format!("profiles/groups/lab-vm{i}.yaml")))?;
        }
        let mut sim_nodes = Vec::new();
        for (i, mac) in macs.iter().enumerate() {
            let n = i + 1;
            sim_nodes.push(SimNode {
                hostname: format!("talos-{n}"),
                mac: mac.clone(),
                ip: format!("{p}.{}", 150 + n),
            });
        }
        fs::write(
            root.join("profiles/profiles/genmachine-controlplane-sim.yaml"),
            format!(
                "id: genmachine-controlplane-sim\ndescription: GenMachine control plane, simulated (lab payload + node agent)\n\
                 image: {IMAGE_ID}\nconfig: talos\ncluster: {CLUSTER}\n"
            ),
        )?;
        let cache = root.join("cache").join(IMAGE_ID);
        payload.install_into(&cache)?;
        fs::copy(agent_initrd, cache.join("agent.gz"))?;
        let peers: Vec<&str> = sim_nodes.iter().map(|n| n.ip.as_str()).collect();
        fs::write(
            root.join("images").join(format!("{IMAGE_ID}.yaml")),
            format!(
                "id: {IMAGE_ID}\nkernel: {{ file: vmlinuz }}\ninitrds: [ {{ file: initrd.gz }}, {{ file: agent.gz }} ]\n\
                 args: [\"console=ttyS0\", \"panic=-1\", \"lab.mode=talos-sim\", \"lab.peers={}\"]\n",
                peers.join(",")
            ),
        )?;
        let mut config = fs::read_to_string(&site.config)?;
        config.push_str(&format!(
            "dhcp:\n  mode: full\n  interface: br0\n  subnet: {p}.0/24\n  pool: {{ start: {p}.100, end: {p}.140 }}\n  \
             router: {p}.1\n  probe_secs: 1\n"
        ));
        fs::write(&site.config, config)?;
        Ok(Self {
            site,
            nodes: sim_nodes,
            vip: format!("{p}.150"),
        })
    }

    /// Lets the appliance bootstrap the cluster and hand it off: `gitops_dir` is this
    /// repository's `gitops/`, the `bootstrap:` section polls every second with
    /// timeouts sized for three VMs under TCG, and the pinned ArgoCD manifest
    /// (`argocd_manifest`, the upstream fixture) goes into the image cache with
    /// `provisioner images import argocd`.
    pub fn enable_bootstrap(&self, argocd_manifest: &Path) -> Result<()> {
        let mut config = fs::read_to_string(&self.site.config)?;
        config.push_str(&format!(
            "gitops_dir: \"{}\"\nbootstrap:\n  enabled: true\n  poll_ms: 1000\n  attempt_timeout_secs: 10\n  \
             argocd_wait_secs: 120\n  retry_min_secs: 1\n  retry_max_secs: 5\n  \
             timeouts: {{ wait_nodes_secs: 600, bootstrap_secs: 300, wait_etcd_secs: 300, fetch_kubeconfig_secs: 120, \
             wait_api_secs: 120, hand_off_secs: 300 }}\n",
            repo_root().join("gitops").display()
        ));
        fs::write(&self.site.config, config)?;
        let mut c = Command::new(provisioner_bin()?);
        crate::appliance::scrub_env(&mut c);
        run(c
            .args(["images", "import", "argocd"])
            .arg(argocd_manifest)
            .arg("--config")
            .arg(&self.site.config)
            .current_dir(&self.site.root))?;
        Ok(())
    }

    /// Generates the cluster's secrets bundle with the appliance's CLI (before `serve`,
    /// which would otherwise generate one) and returns it as talosctl `secrets.yaml`
    /// text, for the host-side client identity. Kept in memory only.
    pub fn generate_secrets(&self) -> Result<String> {
        let bin = provisioner_bin()?;
        let config = &self.site.config;
        let cli = |args: &[&str]| {
            let mut c = Command::new(&bin);
            c.args(args)
                .arg("--config")
                .arg(config)
                .current_dir(&self.site.root);
            crate::appliance::scrub_env(&mut c);
            c
        };
        run(&mut cli(&["talos", "secrets", "gen", "--cluster", CLUSTER]))?;
        // Not through `run`: its error would carry stdout, which is the bundle.
        let out = cli(&["talos", "secrets", "export", "--cluster", CLUSTER]).output()?;
        if !out.status.success() {
            bail!(
                "provisioner talos secrets export failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).context("the exported bundle is not UTF-8")
    }
}

/// The agent initrd: a gzip'd newc cpio with the (stripped) agent binary at
/// `/bin/provisioner-lab-agent` and the shared libraries `ldd` lists, at their paths
/// (the binary is dynamically linked; the payload has no libc). Cached in the payload
/// cache under a hash of its contents; older ones are pruned after a day.
pub fn agent_initrd() -> Result<PathBuf> {
    let agent = agent_bin()?;
    let cache = cache_dir();
    fs::create_dir_all(&cache)?;
    let lock = File::create(cache.join(".agent.lock"))?;
    lock.lock().context("locking the agent initrd cache")?;

    let work = tempfile::Builder::new().prefix(".agent-").tempdir_in(&cache)?;
    let stripped = work.path().join(AGENT);
    // Debug info is most of a debug build; without `strip` the full binary goes in.
    let strip_ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(&agent)
        .status()
        .is_ok_and(|s| s.success());
    if !strip_ok {
        fs::copy(&agent, &stripped)?;
    }
    let bin = fs::read(&stripped)?;
    let mut files: Vec<(String, Vec<u8>)> = vec![(format!("bin/{AGENT}"), bin)];
    for lib in shared_libraries(&agent)? {
        let bytes = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        let name = lib.to_string_lossy().trim_start_matches('/').to_string();
        files.push((name, bytes));
    }
    let mut h = Sha256::new();
    for (name, bytes) in &files {
        h.update(name.as_bytes());
        h.update(bytes);
    }
    let key: String = h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let out = cache.join(format!("agent-{key}.gz"));
    if out.is_file() {
        return Ok(out);
    }
    let mut a = Archive::default();
    let mut dirs = std::collections::BTreeSet::new();
    for (name, _) in &files {
        let mut d = Path::new(name).parent();
        while let Some(dir) = d.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            d = dir.parent();
        }
    }
    for d in &dirs {
        a.dir(d);
    }
    for (name, bytes) in &files {
        a.file(name, 0o755, bytes);
    }
    let cpio = work.path().join("agent.cpio");
    a.finish(&mut File::create(&cpio)?)?;
    let staged = work.path().join("agent.gz");
    let status = Command::new("gzip")
        .args(["-6", "-n", "-c"])
        .arg(&cpio)
        .stdout(File::create(&staged)?)
        .status()
        .context("starting gzip")?;
    if !status.success() {
        bail!("gzip failed: {status}");
    }
    fs::rename(&staged, &out)?;
    prune(&cache, &out);
    Ok(out)
}

/// Shared libraries `ldd` resolves for `bin` (the loader included), by path.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = run(Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    if libs.is_empty() {
        bail!("ldd listed no libraries for {}:\n{out}", bin.display());
    }
    Ok(libs)
}

fn prune(cache: &Path, keep: &Path) {
    let day = std::time::Duration::from_secs(86_400);
    let Ok(entries) = fs::read_dir(cache) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if path != keep && old && name.starts_with("agent-") {
            let _ = fs::remove_file(&path);
        }
    }
}
