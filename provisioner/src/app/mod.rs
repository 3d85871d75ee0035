//! The composition root: the only place that names concrete types. [`App::open`]
//! loads the inputs once and opens every store once ([`Stores::open`]);
//! [`Listeners::bind`] binds every socket; [`serve_bound`] wires the modules together
//! and serves until the shutdown token is cancelled. `serve` adds the signal handler;
//! tests run the same composition on port 0.

mod listeners;
mod live_api;
mod reload;
pub mod selftest;
mod stores;
mod tasks;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use listeners::Listeners;
pub use stores::{Stores, k0s_secrets, talos_secrets};

use crate::config::Config;
use crate::inputs::Inputs;
use crate::service::BootService;

/// What the daemon serves: its configuration, the inputs (loaded and validated
/// once) and the stores (opened once).
#[derive(Debug)]
pub struct App {
    /// The configuration.
    pub cfg: Config,
    /// `images/`, `profiles/`, `infra/`, `gitops/`.
    pub inputs: Inputs,
    /// Every store.
    pub stores: Stores,
}

impl App {
    /// Loads the inputs and opens the stores of `cfg`.
    pub fn open(cfg: Config) -> anyhow::Result<Self> {
        let inputs = Inputs::load(cfg.input_dirs())
            .context("loading images/, profiles/ and infra/ (run `provisioner check`)")?;
        inputs.clusters.warn();
        let stores = Stores::open(&cfg, &inputs.clusters)?;
        Ok(Self { cfg, inputs, stores })
    }
}

/// Runs the appliance until SIGINT/SIGTERM.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let app = App::open(cfg)?;
    let bound = Listeners::bind(&app.cfg).await?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        crate::sys::shutdown::signal().await;
        tracing::info!("shutting down");
        on_signal.cancel();
    });
    run(app, bound, shutdown, false).await
}

/// `serve --dry-run`: does everything `serve` does up to "ready" (config, inputs,
/// stores, every socket bound), prints what it would serve, then stops cleanly.
pub async fn dry_run(cfg: Config) -> anyhow::Result<()> {
    let app = App::open(cfg)?;
    let bound = Listeners::bind(&app.cfg).await?;
    run(app, bound, CancellationToken::new(), true).await
}

/// Serves `app` on the `bound` sockets until `shutdown` is cancelled (or a server
/// fails), then drains.
pub async fn serve_bound(app: App, bound: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    run(app, bound, shutdown, false).await
}

async fn run(app: App, bound: Listeners, shutdown: CancellationToken, dry_run: bool) -> anyhow::Result<()> {
    let App { cfg, inputs, stores } = app;
    let cache = cfg.image_cache();
    cache.create()?;
    let mut selftest = selftest::Report::new(&cfg, &inputs.catalog);
    if !cfg.tftp_root.join("undionly.kpxe").exists() {
        tracing::warn!(dir = %cfg.tftp_root.display(), "no iPXE binaries found; install Debian's `ipxe` package");
    }
    let (server_ip, base) = crate::config::advertised_on(&cfg, bound.http.local_addr()?.port());
    let live = Arc::new(reload::Live::new(&cfg, &stores, &cache, server_ip));
    let Booted {
        service,
        adopter,
        mut started,
        api,
    } = boot_service(&cfg, &inputs, &stores, &live, &base, (!dry_run, &shutdown))?;
    let health = Arc::new(crate::service::health::Health::new(stores.healed()));
    let service_for_drain = service.clone();
    let wiring = tasks::Wiring {
        health: health.clone(),
        cfg: &cfg,
        inputs: &inputs,
        stores: &stores,
        catalog: Arc::new(inputs.catalog.clone()),
        service,
        adopter,
        live,
        api,
        cache,
        server_ip,
        base: base.clone(),
        shutdown: shutdown.clone(),
    };
    let mut tasks = JoinSet::new();
    let timeline_writer = wiring.spawn_servers(bound, &mut selftest, &mut tasks)?;
    tracing::info!(%server_ip, %base, "provisioner ready");
    if dry_run {
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        print!(
            "{}",
            selftest.finish(&server_ip, &base, stores.inventory.as_ref())?
        );
        return Ok(());
    }
    crate::sys::notify::ready(&format!("serving {base}"));
    let _watchdog = crate::sys::notify::spawn_watchdog(health.answering(), shutdown.clone());
    let token = shutdown.clone();
    tasks.spawn(async move { Ok(health.monitor(token).await?) });
    let inventory: Arc<dyn provisioner_core::inventory::Inventory> = stores.inventory.clone();
    let (keeping, ttl, token) = (cfg.housekeeping.clone(), cfg.config_token_ttl(), shutdown.clone());
    tasks.spawn(async move {
        crate::ops::housekeeping::run(inventory, keeping, ttl, token).await;
        Ok(())
    });
    loop {
        tokio::select! {
            // Checked first: once the token is cancelled the servers end on purpose.
            biased;
            () = shutdown.cancelled() => break,
            // Cluster workflows, at start and after reloads (`workflows`).
            Some(task) = started.recv() => {
                tasks.spawn(task);
            }
            Some(r) = tasks.join_next() => {
                shutdown.cancel();
                r??;
                anyhow::bail!("a server stopped unexpectedly");
            }
        }
    }
    crate::sys::notify::stopping();
    drain(tasks, timeline_writer, service_for_drain).await;
    Ok(())
}

/// The boot service over the catalog and inventory, with the release policy and
/// the renderer of each OS that has armed clusters; the adopter that rewrites
/// `infra/` and reloads them into that service, DHCP and the workflows; and the
/// channel of workflow tasks, those of the clusters armed now already in it.
fn boot_service(
    cfg: &Config,
    inputs: &Inputs,
    stores: &Stores,
    live: &Arc<reload::Live>,
    base: &str,
    (bootstrap, shutdown): (bool, &CancellationToken),
) -> anyhow::Result<Booted> {
    let (booter, renderers, release) = live.parts(inputs)?;
    let catalog = booter.1.clone();
    let service = BootService::new(booter.0.clone(), stores.inventory.clone(), base.to_string())
        .with_loop_guard(cfg.boot_loop.guard())
        .with_config_token_ttl(cfg.config_token_ttl())
        .with_callback_token_ttl(cfg.housekeeping.callback_token_ttl())
        .with_first_seen_rate(cfg.housekeeping.first_seen_per_minute);
    service.reload(booter, renderers, release);
    let service = Arc::new(service);
    let shared = crate::os::k0s::ready::Shared {
        kubeconfigs: stores.kubeconfigs.clone(),
        argo: Arc::new(crate::os::talos::supervisor::CachedArgo::new(
            cfg.gitops_dir.clone(),
            cfg.image_cache(),
            stores.kubeconfigs.clone(),
            &cfg.bootstrap,
        )),
    };
    let (spawn, started) = tokio::sync::mpsc::unbounded_channel();
    let workflows = Arc::new(workflows::Workflows::new(
        cfg,
        bootstrap,
        stores.inventory.clone(),
        service.inventory().clone(),
        shared,
        spawn,
        shutdown.clone(),
    ));
    let secrets = live.secrets();
    workflows.arm(inputs, &catalog, &secrets);
    let api = Arc::new(live_api::LiveApi::new(
        cfg,
        inputs,
        &catalog,
        &secrets,
        stores.kubeconfigs.clone(),
    ));
    let reloading = reload::Reloading {
        live: live.clone(),
        service: service.clone(),
        workflows,
        api: api.clone(),
    };
    let adopter = crate::ops::adopt::Adopter::new(cfg.input_dirs(), Arc::new(reloading));
    Ok(Booted {
        service,
        adopter: Arc::new(adopter),
        started,
        api,
    })
}

/// What [`boot_service`] built.
struct Booted {
    service: Arc<BootService>,
    adopter: Arc<crate::ops::adopt::Adopter>,
    /// Workflow tasks to spawn (`workflows`).
    started: tokio::sync::mpsc::UnboundedReceiver<workflows::Task>,
    api: Arc<live_api::LiveApi>,
}

/// Waits (with a deadline: in-flight downloads get a few seconds) for the servers to
/// stop, then for the DHCP timeline writer to finish the queued notes and the
/// observation writer the queued TFTP and asset events.
async fn drain(
    mut tasks: JoinSet<anyhow::Result<()>>,
    timeline_writer: Option<std::thread::JoinHandle<()>>,
    service: Arc<BootService>,
) {
    let servers = async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "server ended with an error");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), servers)
        .await
        .is_err()
    {
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
    let settled = tokio::task::spawn_blocking(move || service.settle_observations(Duration::from_secs(5)));
    if !matches!(settled.await, Ok(true)) {
        tracing::warn!("timeline events not written within 5 s; exiting anyway");
    }
}
