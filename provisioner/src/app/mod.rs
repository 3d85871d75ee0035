//! The composition root: the only place that names concrete types. It loads
//! configuration and data, opens the store, binds every socket, and runs the servers
//! until shutdown.

pub mod selftest;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use provisioner_core::boot::{Booter, CatalogBooter};
use provisioner_core::dhcp::Personality;
use provisioner_core::dhcp::full::FullServer;
use provisioner_core::dhcp::lease::GroupCommit;
use provisioner_core::dhcp::reply::Port;
use provisioner_core::inventory::Inventory;
use provisioner_core::model::EventKind;
use provisioner_core::render;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cmd::commands::{advertised_on, load_catalog};
use crate::config::Config;
use crate::http::{api, boot};
use crate::ops::Operator;
use crate::ops::bootstrap_view::StoreBootstrap;
use crate::power::PowerDrivers;
use crate::service::BootService;
use crate::store::{RedbApiTokens, RedbInventory, RedbLeases};
use crate::tftp::{self, BootFiles};

/// Runs the appliance until SIGINT/SIGTERM.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    run(cfg, false).await
}

/// `serve --dry-run`: does everything `serve` does up to "ready" (config, catalog,
/// store, every socket bound), prints what it would serve, then stops cleanly.
pub async fn dry_run(cfg: Config) -> anyhow::Result<()> {
    run(cfg, true).await
}

async fn run(cfg: Config, dry_run: bool) -> anyhow::Result<()> {
    let catalog = load_catalog(&cfg).context("loading images/ and profiles/ (run `provisioner check`)")?;
    std::fs::create_dir_all(&cfg.state_dir).with_context(|| cfg.state_dir.display().to_string())?;
    // Inventory and (later) secrets live here: owner only.
    std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", cfg.state_dir.display()))?;
    let cache_dir = cfg.cache_dir();
    std::fs::create_dir_all(&cache_dir).with_context(|| cache_dir.display().to_string())?;
    let store = Arc::new(RedbInventory::open(&cfg.inventory_path())?);
    let inventory: Arc<dyn Inventory> = store.clone();
    // Files root left in the state directory (import/restore run as root) become
    // the service user's where possible; a failure here is not fatal to serving.
    if let Err(e) = crate::sys::state::adopt(&cfg.state_dir) {
        tracing::warn!(error = %e, dir = %cfg.state_dir.display(), "could not secure the state directory");
    }
    let mut selftest = crate::app::selftest::Report::new(&cfg, &catalog);
    if !cfg.tftp_root.join("undionly.kpxe").exists() {
        tracing::warn!(dir = %cfg.tftp_root.display(), "no iPXE binaries found; install Debian's `ipxe` package");
    }

    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http_listen))?;
    let (server_ip, base) = advertised_on(&cfg, http.local_addr()?.port());
    let images = Arc::new(catalog.images.clone());
    let catalog = Arc::new(catalog);
    let booter: Arc<dyn Booter> = Arc::new(CatalogBooter {
        catalog: (*catalog).clone(),
        unknown: cfg.unknown_policy.clone(),
    });
    // Only armed clusters (no placeholder MACs) get secrets, reservations and dials.
    let armed =
        crate::inputs::arming::load(&cfg.infra_dir).context("loading infra/ (run `provisioner check`)")?;
    armed.warn();
    let talos = armed.talos.clone();
    // Full-mode DHCP reserves each Talos and k0s node's address for its MAC.
    let mut infra_reservations = crate::dhcp::settings::talos_reservations(&talos);
    let k0s = armed.k0s.clone();
    // Leases live in memory and on disk; concurrent ACKs share one fsync.
    let leases: Arc<dyn provisioner_core::dhcp::lease::LeaseStore> = Arc::new(GroupCommit::new(Arc::new(
        RedbLeases::open(&cfg.state_dir.join("leases.redb"))?,
    ))?);
    let service = BootService::new(booter, inventory.clone(), base.clone())
        .with_loop_guard(cfg.boot_loop.guard())
        .with_config_token_ttl(cfg.config_token_ttl())
        .with_release(crate::service::ReleasePolicy::from_config(
            &cfg,
            (&talos, &k0s),
            Arc::new(crate::sys::netinfo::KernelFacts {
                leases: (cfg.dhcp.mode == Personality::Full).then(|| leases.clone()),
                probe: cfg.peer_binding.arp_probe,
            }),
            server_ip,
        ));
    let talos_secrets = if talos.is_empty() {
        None
    } else {
        Some(crate::cmd::talos::open_secrets(&cfg)?)
    };
    let service = match &talos_secrets {
        None => service,
        Some(secrets) => {
            for name in talos.keys() {
                // Zero-touch: a cluster without a bundle gets one at first start.
                if secrets.get(name)?.is_none() {
                    let bundle = crate::pki::talos::generate(time::OffsetDateTime::now_utc())?;
                    secrets.put(name, &bundle)?;
                    tracing::info!(cluster = %name, "generated the Talos secrets bundle (stored encrypted)");
                }
            }
            let renderer = crate::os::talos::renderer::TalosRenderer::new(talos.clone(), secrets.clone());
            service.with_renderer(provisioner_core::catalog::ConfigKind::Talos, Arc::new(renderer))
        }
    };
    // The bootstrap supervisor's inputs, when there are Talos clusters.
    let bootstrap = talos_secrets.clone().map(|s| (talos.clone(), s));
    let service = Arc::new(crate::os::k0s::attach(service, &cfg, &cache_dir)?);
    infra_reservations.extend(crate::dhcp::settings::k0s_reservations(&k0s));
    let first_stage: Arc<str> = render::ipxe::first_stage(&base).into();

    let api_sock = std::net::TcpListener::bind(cfg.api_listen)
        .with_context(|| format!("binding API on {}", cfg.api_listen))?;
    api_sock.set_nonblocking(true)?;
    let tls_files = api::tls::prepare(&cfg.api_tls, &cfg.state_dir, &[server_ip, cfg.api_listen.ip()])?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(api::tls::server_config(&tls_files)?);
    let tftp_sock = std::net::UdpSocket::bind(cfg.tftp_listen)
        .with_context(|| format!("binding TFTP on {}", cfg.tftp_listen))?;
    let dhcp = dhcp_sockets(&cfg)?;

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    // Admin kubeconfigs (fetched from Talos, minted for k0s), opened once for the
    // workflows and the credentials view; opening creates the secrets key, which a
    // state without clusters does not need.
    let kubeconfigs: Arc<dyn provisioner_core::cluster::KubeconfigStore> =
        if talos.is_empty() && k0s.is_empty() {
            Arc::new(provisioner_core::cluster::MemKubeconfigs::default())
        } else {
            Arc::new(crate::store::AgeKubeconfigs::open_keyed(
                &cfg.state_dir,
                &cfg.secrets_key(),
            )?)
        };
    // One ArgoCD hand-off (manifest loaded on first use) for both workflows.
    let shared = crate::os::k0s::ready::Shared {
        kubeconfigs: kubeconfigs.clone(),
        argo: Arc::new(crate::os::talos::supervisor::CachedArgo::new(
            cfg.gitops_dir.clone(),
            cfg.cache_dir(),
            kubeconfigs.clone(),
            &cfg.bootstrap,
        )),
    };
    // k0s clusters: controller readiness, Ready nodes, ArgoCD hand-off (one task each).
    crate::os::k0s::ready::spawn(
        &cfg,
        catalog.clone(),
        inventory.clone(),
        store.clone(),
        &shared,
        &mut tasks,
        &shutdown,
    )?;

    let boot_router = boot::router(boot::BootState {
        service: service.clone(),
        images,
        cache_dir,
        ipxe_dir: cfg.tftp_root.clone(),
        first_stage: first_stage.clone(),
    });
    tracing::info!("listening for HTTP on {}", http.local_addr()?);
    selftest.listener("HTTP boot (tcp)", http.local_addr()?);
    let token = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(
            http,
            boot_router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(token.cancelled_owned())
        .await
        .context("HTTP server")
    });

    tracing::info!(
        ca = %tls_files.ca.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "provided".into()),
        cert = %tls_files.cert.display(),
        "the API serves HTTPS only"
    );
    // Tools read the address as the last word of this line.
    tracing::info!("listening for API on {}", api_sock.local_addr()?);
    selftest.listener("API (tcp)", api_sock.local_addr()?);
    let api_router = api::router(api::ApiState {
        ops: Operator {
            service: service.clone(),
            catalog: catalog.clone(),
            power: Arc::new(PowerDrivers::new(cfg.power.clone(), cfg.interface.clone())),
            // Re-imaging a Talos node: Reset over the Talos API with the cluster's
            // os:admin identity from its secrets bundle.
            resetter: talos_secrets.as_ref().map(|s| {
                Arc::new(
                    crate::os::talos::reset::TalosResetter::new(
                        talos.clone(),
                        Arc::new(crate::os::talos::api::BundleIdentity::new(s.clone())),
                        cfg.talos.api_port,
                        Duration::from_secs(5),
                    )
                    .with_catalog(catalog.clone()),
                ) as Arc<dyn crate::cluster::seams::NodeResetter>
            }),
        },
        tokens: Arc::new(RedbApiTokens::new(&cfg.api_tokens_path())),
        sessions: Arc::default(),
        infra_dir: cfg.infra_dir.clone(),
        // The orchestrator's progress, from the same store.
        bootstrap: Arc::new(StoreBootstrap(store.clone())),
        shutdown: shutdown.clone(),
        credentials: Arc::new(crate::ops::credentials::StoreCredentials {
            talos: talos.clone(),
            talos_secrets: talos_secrets.clone(),
            kubeconfigs: kubeconfigs.clone(),
            k0s_secrets: if k0s.is_empty() {
                None
            } else {
                Some(crate::cmd::k0s::open_store(&cfg)?)
            },
            k0s,
        }),
        leases: leases.clone(),
    });
    let token = shutdown.clone();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tasks.spawn(async move {
        token.cancelled().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(3)));
        Ok(())
    });
    tasks.spawn(async move {
        axum_server::from_tcp_rustls(api_sock, tls)?
            .handle(handle)
            .serve(api_router.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .context("API server")
    });

    let files = BootFiles::new(
        &cfg.tftp_root,
        first_stage.to_string(),
        cfg.tftp.cache_max_bytes,
        Some(tftp_hook(service.clone())),
    );
    tracing::info!("listening for TFTP on {}", tftp_sock.local_addr()?);
    selftest.listener("TFTP (udp)", tftp_sock.local_addr()?);
    let tuning = cfg.tftp.clone();
    let token = shutdown.clone();
    tasks.spawn(async move {
        tftp::serve(tftp_sock, Arc::new(files), &tuning, token)
            .await
            .context("TFTP server")
    });

    let mut timeline_writer = None;
    if !dhcp.is_empty() {
        let std::net::IpAddr::V4(next_server) = server_ip else {
            anyhow::bail!("DHCP needs an IPv4 server_ip, not {server_ip}");
        };
        let handler = Arc::new(crate::dhcp::handler::Handler {
            personality: cfg.dhcp.mode,
            full: cfg
                .dhcp
                .full_config_with(&infra_reservations)
                .map_err(anyhow::Error::msg)?
                .map(FullServer::new),
            leases,
            service: service.clone(),
            files: cfg.dhcp.boot_files.clone(),
            next_server,
            http_boot_only: cfg.dhcp.http_boot_only.iter().copied().collect(),
        });
        let limits = Arc::new(crate::dhcp::limits::Limits::new(
            cfg.dhcp.max_in_flight,
            cfg.dhcp.per_mac_rate,
            cfg.dhcp.per_mac_burst,
        ));
        let (recorder, writer) = crate::dhcp::handler::Recorder::spawn(service.clone(), 16_384)?;
        timeline_writer = Some(writer);
        for (port, sock) in dhcp {
            let (handler, limits, token) = (handler.clone(), limits.clone(), shutdown.clone());
            let recorder = recorder.clone();
            tasks.spawn(async move {
                crate::dhcp::server::serve(sock, port, handler, limits, recorder, token)
                    .await
                    .context("DHCP server")
            });
        }
    }

    if let Some((clusters, secrets)) = bootstrap.filter(|_| cfg.bootstrap.enabled && !dry_run) {
        let supervisor = crate::os::talos::supervisor::Supervisor {
            settings: cfg.bootstrap.clone(),
            talos_port: cfg.talos.api_port,
            clusters,
            secrets,
            store: store.clone(),
            inventory: inventory.clone(),
            kubeconfigs,
            argo: shared.argo.clone(),
        };
        let token = shutdown.clone();
        tasks.spawn(async move {
            supervisor.run(token).await;
            Ok(())
        });
    }

    tracing::info!(%server_ip, %base, "provisioner ready");
    if dry_run {
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        print!("{}", selftest.finish(&server_ip, &base, inventory.as_ref())?);
        return Ok(());
    }
    crate::sys::notify::ready(&format!("serving {base}"));
    let _watchdog = crate::sys::notify::spawn_watchdog(shutdown.clone());
    tokio::select! {
        () = crate::sys::shutdown::signal() => tracing::info!("shutting down"),
        Some(r) = tasks.join_next() => {
            shutdown.cancel();
            r??;
            anyhow::bail!("a server stopped unexpectedly");
        }
    }
    shutdown.cancel();
    crate::sys::notify::stopping();
    // Drain with a deadline: in-flight downloads get a few seconds.
    let drain = async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "server ended with an error");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
        tracing::warn!("servers did not stop within 5 s; exiting anyway");
    }
    // The DHCP servers (and their recorder clones) are gone: the writer thread now
    // finishes the queued timeline notes and ends.
    if let Some(writer) = timeline_writer {
        let flushed = tokio::task::spawn_blocking(move || writer.join());
        if tokio::time::timeout(Duration::from_secs(5), flushed)
            .await
            .is_err()
        {
            tracing::warn!("DHCP timeline notes not written within 5 s; exiting anyway");
        }
    }
    Ok(())
}

/// Binds the DHCP sockets for `dhcp.mode` (none when `off`). In `full` mode it first
/// probes for another DHCP server and refuses to start if one answers, unless
/// `dhcp.force` is set.
fn dhcp_sockets(cfg: &Config) -> anyhow::Result<Vec<(Port, std::net::UdpSocket)>> {
    let d = &cfg.dhcp;
    if d.mode == Personality::Off {
        return Ok(Vec::new());
    }
    d.full_config().map_err(anyhow::Error::msg)?;
    let iface = d.interface.as_deref().or(cfg.interface.as_deref());
    if d.mode == Personality::Full && d.probe_secs > 0 {
        let answers = crate::dhcp::probe::other_servers(iface, Duration::from_secs(d.probe_secs))
            .context("probing for other DHCP servers (set dhcp.probe_secs: 0 to skip)")?;
        if !answers.is_empty() {
            let list: Vec<String> = answers
                .iter()
                .map(|a| format!("{} (offered {})", a.server, a.offered))
                .collect();
            if !d.force {
                anyhow::bail!(
                    "another DHCP server answers on this segment: {}; refusing to start full mode \
                     (use dhcp.mode: proxy next to it, or set dhcp.force: true)",
                    list.join(", ")
                );
            }
            tracing::warn!(servers = %list.join(", "), "another DHCP server answers; starting anyway (dhcp.force)");
        } else {
            tracing::info!("no other DHCP server answered the probe");
        }
    }
    let mut out = Vec::new();
    let ports = [(Port::Dhcp, d.port), (Port::PxeBootServer, d.pxe_port)];
    for (port, number) in ports {
        if number == 0 {
            continue;
        }
        let addr = std::net::SocketAddrV4::new(d.listen, number);
        let sock = crate::dhcp::socket::bind(addr, iface).with_context(|| {
            format!(
                "binding DHCP on {addr}{}",
                iface.map(|i| format!(" ({i})")).unwrap_or_default()
            )
        })?;
        let what = match port {
            Port::Dhcp => "DHCP",
            Port::PxeBootServer => "PXE boot server",
        };
        tracing::info!(mode = %d.mode, "listening for {what} on {}", sock.local_addr()?);
        out.push((port, sock));
    }
    Ok(out)
}

/// Records completed TFTP transfers on the machine's timeline. The client's MAC comes
/// from the peer map (`/ipxe` seen) or the kernel's ARP table (firmware PXE, which
/// ARPs for us before its RRQ).
fn tftp_hook(service: Arc<BootService>) -> tftp::files::CompletionHook {
    Arc::new(move |client: SocketAddr, path: &str, bytes: u64| {
        let service = service.clone();
        let detail = format!("{path} ({bytes} bytes)");
        tokio::task::spawn_blocking(move || {
            let ip = client.ip();
            let result = match crate::sys::netinfo::arp_lookup(ip) {
                Some(mac) => {
                    service.remember_peer(ip, mac);
                    service.record_seen(mac, EventKind::TftpServed, &detail)
                }
                None => service.record_for_peer(ip, EventKind::TftpServed, &detail),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "recording tftp event failed");
            }
        });
    })
}
