//! `provisioner-lab-agent`: the simulated lab's stand-in for Talos (issue 6).
//!
//! - `node`: runs inside a QEMU test VM (started by the payload's `/init` in
//!   `lab.mode=talos-sim`). It reads the machine config the VM fetched with its
//!   one-time token, mints an apid server certificate (IP SAN = the node's address)
//!   from the OS CA in that config (`machine.ca.crt` / `machine.ca.key`, present in
//!   control-plane configs), and serves the Talos `MachineService` on port 50000 with
//!   apid's client-certificate rules (`provisioner::testing::fake_apid`). The three
//!   VMs agree on etcd state through a plain-HTTP side channel on etcd's peer port
//!   (2380): see [`peers`].
//! - `kube`: runs on the host side inside the lab namespace and serves the fake
//!   Kubernetes API (`provisioner::testing::fake_kube`) at the cluster endpoint the
//!   nodes' kubeconfigs name.
//!
//! Markers on stdout (the VM's serial console): `LAB-AGENT-LISTENING ...`,
//! `LAB-AGENT-JOINED ...`, `LAB-AGENT-FAILED <why>`. Secrets are never printed.

mod kube_tls;
mod machine;
mod peers;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use provisioner::testing::fake_apid::{self, FakeCluster};
use provisioner::testing::fake_argo::FakeArgo;
use provisioner::testing::fake_kube::FakeKube;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "provisioner-lab-agent", about = "The simulated lab's node agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Stand in for Talos on a lab VM.
    Node {
        /// The fetched machine config (Talos v1alpha1 YAML).
        #[arg(long)]
        config: PathBuf,
        /// This node's address (the DHCP reservation; the certificate's IP SAN).
        #[arg(long)]
        ip: IpAddr,
        /// Every control-plane node's address, comma-separated (this one included or not).
        #[arg(long, value_delimiter = ',')]
        peers: Vec<IpAddr>,
        /// apid port.
        #[arg(long, default_value_t = provisioner::os::talos::api::APID_PORT)]
        port: u16,
        /// Side-channel port for the etcd state (etcd's peer port).
        #[arg(long, default_value_t = peers::PEER_PORT)]
        peer_port: u16,
    },
    /// Serve the fake Kubernetes API (inside the lab namespace).
    Kube {
        /// Listen address, e.g. the cluster endpoint `10.77.<n>.150:6443`.
        #[arg(long)]
        listen: SocketAddr,
        /// The Kubernetes CA: a file of two lines, certificate and key as base64 of
        /// PEM (secrets-bundle form); removed once read.
        #[arg(long)]
        ca_file: PathBuf,
        /// Run the scripted Argo CD controller over this `gitops/` tree
        /// (`provisioner::testing::fake_argo`): Applications report Synced and
        /// Healthy after `--argo-settle-ms`.
        #[arg(long)]
        gitops: Option<PathBuf>,
        /// How long an Application reports OutOfSync/Progressing first.
        #[arg(long, default_value_t = 1500)]
        argo_settle_ms: u64,
    },
}

fn main() {
    // One rustls provider for the process (tonic's server TLS).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            println!("LAB-AGENT-FAILED runtime: {e}");
            std::process::exit(1);
        }
    };
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Node {
                config,
                ip,
                peers,
                port,
                peer_port,
            } => node(&config, ip, &peers, port, peer_port).await,
            Cmd::Kube {
                listen,
                ca_file,
                gitops,
                argo_settle_ms,
            } => kube(listen, &ca_file, gitops.as_deref(), argo_settle_ms).await,
        }
    });
    if let Err(e) = r {
        println!("LAB-AGENT-FAILED {e:#}");
        std::process::exit(1);
    }
}

async fn node(
    config: &std::path::Path,
    ip: IpAddr,
    peers: &[IpAddr],
    port: u16,
    peer_port: u16,
) -> Result<()> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let mc = machine::MachineConfig::parse(&text)?;
    let tls = mc.apid_tls(ip)?;
    let cluster = FakeCluster::new(&[(ip, mc.hostname.as_str())], 0, &mc.kubeconfig()?);
    let shutdown = shutdown_on_signal();

    let apid = tokio::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), port))
        .await
        .with_context(|| format!("binding apid port {port}"))?;
    let side = tokio::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), peer_port))
        .await
        .with_context(|| format!("binding peer port {peer_port}"))?;
    let others: Vec<IpAddr> = peers.iter().copied().filter(|p| *p != ip).collect();
    tokio::spawn(peers::serve(side, ip, cluster.clone(), shutdown.clone()));
    tokio::spawn(peers::follow(
        others,
        peer_port,
        cluster.clone(),
        shutdown.clone(),
    ));
    println!(
        "LAB-AGENT-LISTENING ip={ip} port={port} hostname={} type={}",
        mc.hostname, mc.machine_type
    );
    fake_apid::serve(ip, apid, &tls, cluster, shutdown)
        .await
        .context("apid server")
}

async fn kube(
    listen: SocketAddr,
    ca_file: &std::path::Path,
    gitops: Option<&std::path::Path>,
    settle_ms: u64,
) -> Result<()> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let kube = FakeKube::start_tls_on(listener, kube_tls::server_config(listen.ip(), ca_file)?)?;
    if let Some(dir) = gitops {
        let argo = FakeArgo::from_tree(dir, std::time::Duration::from_millis(settle_ms))
            .map_err(anyhow::Error::msg)?;
        kube.set_argo(std::sync::Arc::new(argo));
    }
    println!("LAB-KUBE-LISTENING {}", kube.addr);
    let shutdown = shutdown_on_signal();
    // Print each apply and each Application status a read answered once, so the
    // test can assert the hand-off from the log.
    let (mut seen, mut argo_seen) = (0, 0);
    loop {
        let stop = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(std::time::Duration::from_millis(250)) => false,
        };
        {
            let journal = kube.journal();
            for a in &journal.applies[seen..] {
                println!(
                    "LAB-KUBE-APPLIED {} {}/{} manager={} force={}",
                    a.kind,
                    a.namespace.as_deref().unwrap_or(""),
                    a.name,
                    a.field_manager,
                    a.force
                );
            }
            seen = journal.applies.len();
            for (_, name, state) in &journal.argo[argo_seen..] {
                println!("LAB-KUBE-ARGO {name} {state}");
            }
            argo_seen = journal.argo.len();
        }
        if stop {
            return Ok(());
        }
    }
}

/// Cancelled on SIGTERM or SIGINT.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        t.cancel();
    });
    token
}
