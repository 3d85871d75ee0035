//! Starting the servers over the opened stores and the loaded inputs (the cluster
//! workflows: `super::workflows`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use provisioner_core::model::Event;
use provisioner_core::render;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::listeners::Listeners;
use super::selftest::Report;
use super::stores::Stores;
use crate::config::Config;
use crate::http::{api, boot};
use crate::images::ImageCache;
use crate::inputs::Inputs;
use crate::ops::Operator;
use crate::ops::bootstrap_view::StoreBootstrap;
use crate::power::PowerDrivers;
use crate::service::BootService;
use crate::tftp::{self, BootFiles};

type Tasks = JoinSet<anyhow::Result<()>>;

/// What the servers and workflows are built from.
pub(super) struct Wiring<'a> {
    pub cfg: &'a Config,
    pub inputs: &'a Inputs,
    pub stores: &'a Stores,
    pub catalog: Arc<provisioner_core::catalog::Catalog>,
    pub service: Arc<BootService>,
    pub adopter: Arc<crate::ops::adopt::Adopter>,
    /// What the inputs decide; DHCP's engine slot.
    pub live: Arc<super::reload::Live>,
    /// The API's cluster views (swapped by reloads).
    pub api: Arc<super::live_api::LiveApi>,
    pub cache: ImageCache,
    pub server_ip: IpAddr,
    pub base: String,
    pub shutdown: CancellationToken,
    /// The stores' health (`/healthz` on both listeners).
    pub health: Arc<crate::service::health::Health>,
}

impl Wiring<'_> {
    /// Starts HTTP, the API, TFTP and DHCP on the `bound` sockets; returns the DHCP
    /// timeline writer's thread (joined at the end of the drain).
    pub fn spawn_servers(
        &self,
        bound: Listeners,
        selftest: &mut Report,
        tasks: &mut Tasks,
    ) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
        let Listeners {
            http,
            api,
            tftp,
            dhcp,
        } = bound;
        let first_stage: Arc<str> = render::ipxe::first_stage(&self.base).into();
        let boot_state = boot::BootState {
            service: self.service.clone(),
            images: Arc::new(self.inputs.catalog.images.clone()),
            cache: self.cache.clone(),
            ipxe_dir: self.cfg.tftp_root.clone(),
            first_stage: first_stage.clone(),
        };
        let zero_copy: Arc<dyn crate::http::zerocopy::AssetResolver> = Arc::new(boot_state.clone());
        let boot_router = boot::router(boot_state).layer(axum::Extension(self.health.clone()));
        tracing::info!("listening for HTTP on {}", http.local_addr()?);
        selftest.listener("HTTP boot (tcp)", http.local_addr()?);
        let token = self.shutdown.clone();
        let limits = self.cfg.http.clone();
        tasks.spawn(async move {
            crate::http::serve::serve(http, boot_router, limits, Some(zero_copy), token)
                .await
                .context("HTTP server")
        });
        self.spawn_api(api, selftest, tasks)?;
        let files = BootFiles::new(
            &self.cfg.tftp_root,
            first_stage.to_string(),
            self.cfg.tftp.cache_max_bytes,
            Some(tftp_hook(self.service.clone())),
        );
        tracing::info!("listening for TFTP on {}", tftp.local_addr()?);
        selftest.listener("TFTP (udp)", tftp.local_addr()?);
        let (tuning, token) = (self.cfg.tftp.clone(), self.shutdown.clone());
        tasks.spawn(async move {
            tftp::serve(tftp, Arc::new(files), &tuning, token)
                .await
                .context("TFTP server")
        });
        self.spawn_dhcp(dhcp, tasks)
    }

    fn spawn_api(
        &self,
        sock: std::net::TcpListener,
        selftest: &mut Report,
        tasks: &mut Tasks,
    ) -> anyhow::Result<()> {
        let cfg = self.cfg;
        let tls_files = api::tls::prepare(
            &cfg.api_tls,
            &cfg.state_dir,
            &[self.server_ip, cfg.api_listen.ip()],
        )?;
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(api::tls::server_config(&tls_files)?);
        tracing::info!(
            ca = %tls_files.ca.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "provided".into()),
            cert = %tls_files.cert.display(),
            "the API serves HTTPS only"
        );
        // Tools read the address as the last word of this line.
        tracing::info!("listening for API on {}", sock.local_addr()?);
        selftest.listener("API (tcp)", sock.local_addr()?);
        let router = api::router(self.api_state()).layer(axum::Extension(self.health.clone()));
        let (token, handle) = (self.shutdown.clone(), axum_server::Handle::new());
        let stopper = handle.clone();
        tasks.spawn(async move {
            token.cancelled().await;
            stopper.graceful_shutdown(Some(Duration::from_secs(3)));
            Ok(())
        });
        let header = cfg.http.header_read_timeout();
        tasks.spawn(async move {
            let mut server = axum_server::from_tcp_rustls(sock, tls)?;
            // The boot listener's header-read timeout here too (axum-server installs
            // hyper's timer, which also bounds idle keep-alive connections); a TLS
            // connection that never sends a request is closed after it too.
            server.http_builder().http1().header_read_timeout(header);
            server
                .first_request_timeout(header)
                .handle(handle)
                .serve(router.into_make_service_with_connect_info::<SocketAddr>())
                .await
                .context("API server")
        });
        Ok(())
    }

    fn api_state(&self) -> api::ApiState {
        let (cfg, stores) = (self.cfg, self.stores);
        api::ApiState {
            ops: Operator {
                service: self.service.clone(),
                catalog: self.catalog.clone(),
                power: Arc::new(PowerDrivers::new(cfg.power.clone(), cfg.interface.clone())),
                resetter: Some(self.api.resetter.clone()),
                adopter: Some(self.adopter.clone()),
            },
            tokens: stores.tokens.clone(),
            sessions: Arc::default(),
            clusters: self.api.clusters.clone(),
            // The orchestrator's progress, from the same store.
            bootstrap: Arc::new(StoreBootstrap(stores.inventory.clone())),
            shutdown: self.shutdown.clone(),
            credentials: self.api.credentials.clone(),
            leases: stores.leases.clone(),
            dashboard: cfg.dashboard.clone(),
        }
    }

    fn spawn_dhcp(
        &self,
        socks: Vec<(provisioner_core::dhcp::reply::Port, std::net::UdpSocket)>,
        tasks: &mut Tasks,
    ) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
        if socks.is_empty() {
            return Ok(None);
        }
        let IpAddr::V4(next_server) = self.server_ip else {
            anyhow::bail!("DHCP needs an IPv4 server_ip, not {}", self.server_ip);
        };
        let d = &self.cfg.dhcp;
        // Full-mode DHCP reserves each armed Talos and k0s node's address for its MAC;
        // a reload swaps the engine when an adoption changed them (`super::reload`).
        self.live.dhcp.set(self.live.full_engine(self.inputs)?);
        let handler = Arc::new(crate::dhcp::handler::Handler {
            personality: d.mode,
            full: self.live.dhcp.clone(),
            leases: self.stores.leases.clone(),
            service: self.service.clone(),
            files: d.boot_files.clone(),
            next_server,
            http_boot_only: d.http_boot_only.iter().copied().collect(),
        });
        let limits = Arc::new(crate::dhcp::limits::Limits::new(
            d.max_in_flight,
            d.per_mac_rate,
            d.per_mac_burst,
        ));
        let (recorder, writer) = crate::dhcp::handler::Recorder::spawn(self.service.clone(), 16_384)?;
        for (port, sock) in socks {
            let (handler, limits, token) = (handler.clone(), limits.clone(), self.shutdown.clone());
            let recorder = recorder.clone();
            tasks.spawn(async move {
                crate::dhcp::server::serve(sock, port, handler, limits, recorder, token)
                    .await
                    .context("DHCP server")
            });
        }
        Ok(Some(writer))
    }
}

/// Records completed TFTP transfers on the machine's timeline (queued: the
/// service's observation writer batches them, `service::observe`). The client's MAC
/// comes from the kernel's ARP table (firmware PXE ARPs for us before its RRQ) or
/// the peer map (`/ipxe` seen).
fn tftp_hook(service: Arc<BootService>) -> tftp::files::CompletionHook {
    Arc::new(move |client: SocketAddr, path: &str, bytes: u64| {
        let event = Event::TftpServed {
            file: path.to_string(),
            bytes,
        };
        service.observe(crate::service::Observed::TftpClient(client.ip()), event);
    })
}
