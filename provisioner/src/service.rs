//! The boot service: what the HTTP and TFTP servers call. It asks the [`Booter`] for
//! the decision, issues one-time machine-bound tokens, and records state changes and
//! timeline events in the inventory in one durable write before anything is answered.
//!
//! Methods block on the store (one fsync'd commit); async callers wrap them in
//! `spawn_blocking`.
//!
//! Every event written to a timeline is then published on a broadcast channel
//! ([`BootService::subscribe`]) for live views (the API's Server-Sent Events): the
//! inventory write comes first, so a subscriber never sees an event the store lost.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use provisioner_core::boot::{BootDecision, BootRequest, Booter, InstallPlan};
use provisioner_core::bootloop::{LoopGuard, Verdict};
use provisioner_core::catalog::ConfigKind;
use provisioner_core::inventory::{Inventory, InventoryError, TokenPurpose, TokenRecord, Update};
use provisioner_core::k0s::progress;
use provisioner_core::lifecycle::{self, Trigger};
use provisioner_core::model::{EventKind, MacAddr, Machine, MachineState, TimelineEvent};
use provisioner_core::render::config::{ConfigRenderer, ConfigUrls, PlainRenderer};
use provisioner_core::render::{self, BootUrls};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::broadcast;

/// One timeline event as published to live subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineEvent {
    /// Whose timeline it was written to.
    pub mac: MacAddr,
    /// The event as stored.
    pub event: TimelineEvent,
}

/// Events buffered per subscriber before a slow one starts missing some (it is told
/// how many it missed: `broadcast::error::RecvError::Lagged`).
const EVENT_BUFFER: usize = 1024;

/// Why a boot-path request cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Unknown, used or revoked token (never echoed: it is a secret).
    #[error("unknown or already used token")]
    BadToken,
    /// The machine's state does not allow this (e.g. config for an installed machine).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The machine's config cannot be rendered now (e.g. no secrets yet); the token
    /// stays valid so the machine's retries can succeed once it is fixed.
    #[error("config not available: {0}")]
    Render(String),
}

/// A rendered config and its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigBody {
    /// The document.
    pub body: String,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// Shared boot-path logic.
#[derive(Debug)]
pub struct BootService {
    booter: Arc<dyn Booter>,
    inventory: Arc<dyn Inventory>,
    /// `http://<server_ip>:<port>`, no trailing slash.
    base: String,
    /// Which machine last fetched its script from an address, so asset and TFTP
    /// requests (which carry no MAC) land on the right timeline.
    peers: Mutex<HashMap<IpAddr, MacAddr>>,
    /// Config renderers by kind; kinds without one get the plain document.
    renderers: HashMap<ConfigKind, Arc<dyn ConfigRenderer>>,
    /// Live timeline events, published after each durable write.
    events: broadcast::Sender<MachineEvent>,
    /// Boot-loop protection limits.
    guard: LoopGuard,
}

/// A fresh 256-bit token, hex-encoded.
fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A callback token derived from the config token the machine presents, so the
/// config renderer can embed the same callback URLs the kernel command line
/// carries without the store keeping any token in the clear. SHA-256 with a label
/// per purpose: the callback token reveals nothing about the config token.
fn derived_token(config_token: &str, label: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"provisioner callback token\0");
    h.update(label.as_bytes());
    h.update(b"\0");
    h.update(config_token.as_bytes());
    hex::encode(h.finalize())
}

const INSTALLED: &str = "installed";
const K0S_INSTALLED: &str = "k0s-installed";

/// Stores key tokens by SHA-256, so a copy of the store holds no usable token.
pub fn token_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn event(kind: EventKind, detail: impl Into<String>) -> TimelineEvent {
    TimelineEvent {
        at: OffsetDateTime::now_utc(),
        kind,
        detail: detail.into(),
    }
}

impl BootService {
    /// A service answering with URLs under `base`.
    pub fn new(booter: Arc<dyn Booter>, inventory: Arc<dyn Inventory>, base: String) -> Self {
        Self {
            booter,
            inventory,
            base,
            peers: Mutex::new(HashMap::new()),
            renderers: HashMap::new(),
            events: broadcast::channel(EVENT_BUFFER).0,
            guard: LoopGuard::default(),
        }
    }

    /// The callback URLs that belong to a config token.
    fn config_urls(&self, config_token: &str) -> ConfigUrls {
        ConfigUrls {
            base: self.base.clone(),
            installed: format!(
                "{}/callback/{}/{INSTALLED}",
                self.base,
                derived_token(config_token, INSTALLED)
            ),
            k0s_installed: format!(
                "{}/callback/{}/{K0S_INSTALLED}",
                self.base,
                derived_token(config_token, K0S_INSTALLED)
            ),
        }
    }

    /// Serves `kind` configs with `renderer` (the Talos renderer for
    /// `ConfigKind::Talos`, the Flatcar one for `ConfigKind::Flatcar`). Kinds without a renderer get the plain document.
    pub fn with_renderer(mut self, kind: ConfigKind, renderer: Arc<dyn ConfigRenderer>) -> Self {
        self.renderers.insert(kind, renderer);
        self
    }

    /// Sets the boot-loop protection limits (default: [`LoopGuard::default`]).
    pub fn with_loop_guard(mut self, guard: LoopGuard) -> Self {
        self.guard = guard;
        self
    }

    /// A receiver of every timeline event written from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MachineEvent> {
        self.events.subscribe()
    }

    /// Publishes events already written to `mac`'s timeline. No subscriber is fine.
    fn publish(&self, mac: MacAddr, events: &[TimelineEvent]) {
        for event in events {
            let _ = self.events.send(MachineEvent {
                mac,
                event: event.clone(),
            });
        }
    }

    /// Applies an operator change (API) in one durable commit, then publishes the
    /// events it wrote.
    pub fn update(
        &self,
        mac: MacAddr,
        change: &mut dyn FnMut(Option<Machine>) -> Update,
    ) -> Result<Option<Machine>, ServiceError> {
        let mut written = Vec::new();
        let stored = self.inventory.apply(mac, &mut |cur| {
            let u = change(cur);
            written = u.events.clone();
            u
        })?;
        self.publish(mac, &written);
        Ok(stored)
    }

    /// The base URL of the boot path.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The inventory (for read-only API views).
    pub fn inventory(&self) -> &Arc<dyn Inventory> {
        &self.inventory
    }

    /// The booter (for `render`).
    pub fn booter(&self) -> &Arc<dyn Booter> {
        &self.booter
    }

    /// Answers `/ipxe`: decides, records, and renders the machine's script.
    pub fn ipxe_script(
        &self,
        req: &BootRequest,
        peer: Option<IpAddr>,
    ) -> Result<(String, &'static str), ServiceError> {
        let Some(mac) = req.mac else {
            return Ok((
                "#!ipxe\necho provisioner: the request carried no usable MAC address\nexit 1\n".into(),
                "invalid",
            ));
        };
        let machine = self.inventory.get(mac)?;
        let mut decision = self.booter.decide(req, machine.as_ref());
        let now = OffsetDateTime::now_utc();
        // Boot-loop protection (core::bootloop): only install answers count.
        let mut history = None;
        let mut halted = None;
        if matches!(decision, BootDecision::Install(_)) {
            let state = machine.as_ref().map(|m| m.state).unwrap_or_default();
            let past = machine
                .as_ref()
                .map(|m| m.install_boots.as_slice())
                .unwrap_or(&[]);
            match self.guard.on_install_script(state, past, now.unix_timestamp()) {
                Verdict::Install { history: h } => history = Some(h),
                Verdict::Halt { count, history: h } => {
                    let reason = format!(
                        "boot loop: {count} install boots within {} min without reaching Installed; \
                         install stopped until an operator re-images it",
                        self.guard.window_secs / 60
                    );
                    metrics::counter!("provisioner_boot_loops_total").increment(1);
                    tracing::warn!(%mac, count, "boot loop detected; answering local boot");
                    history = Some(h);
                    halted = Some(reason.clone());
                    decision = BootDecision::LocalBoot { reason };
                }
            }
        }
        let outcome = decision.outcome();
        metrics::counter!("provisioner_boot_decisions_total", "outcome" => outcome).increment(1);
        let urls = match &decision {
            BootDecision::Install(plan) => self.issue_tokens(mac, plan)?,
            _ => BootUrls {
                base: self.base.clone(),
                config: String::new(),
                callback: String::new(),
            },
        };
        let record = !matches!(decision, BootDecision::Unknown { record: false, .. });
        if record {
            let detail = match &decision {
                BootDecision::Install(p) => format!("install profile {} image {}", p.profile.id, p.image.id),
                BootDecision::LocalBoot { reason } | BootDecision::Unknown { reason, .. } => {
                    format!("{outcome}: {reason}")
                }
            };
            let install = matches!(decision, BootDecision::Install(_));
            let mut written = Vec::new();
            self.inventory.apply(mac, &mut |cur| {
                let mut events = vec![event(EventKind::IpxeScriptServed, detail.clone())];
                let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
                m.last_seen = now;
                m.arch = if req.arch == Default::default() {
                    m.arch
                } else {
                    req.arch
                };
                m.uuid = req.uuid.clone().or(m.uuid.take());
                m.serial = req.serial.clone().or(m.serial.take());
                if install
                    && let Ok(next) = lifecycle::next(m.state, Trigger::InstallScriptServed)
                    && next != m.state
                {
                    events.push(event(EventKind::StateChanged, format!("{} -> {next}", m.state)));
                    m.state = next;
                }
                if let Some(h) = &history {
                    m.install_boots = h.clone();
                }
                if let Some(reason) = &halted {
                    events.push(event(EventKind::BootLoopDetected, reason.clone()));
                    if let Ok(next) = lifecycle::next(m.state, Trigger::BootLoopDetected) {
                        events.push(event(EventKind::StateChanged, format!("{} -> {next}", m.state)));
                        m.state = next;
                    }
                }
                written = events.clone();
                Update {
                    machine: Some(m),
                    events,
                }
            })?;
            self.publish(mac, &written);
            if let Some(ip) = peer {
                self.remember_peer(ip, mac);
            }
        }
        Ok((render::ipxe::machine_script(mac, &decision, &urls), outcome))
    }

    /// Issues a new config token and its callback token(s) for `mac`, revoking older
    /// ones. Flatcar machines also get the `K0sInstalled` callback token.
    fn issue_tokens(&self, mac: MacAddr, plan: &InstallPlan) -> Result<BootUrls, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let config = new_token();
        let issue = |token: &str, purpose| {
            self.inventory.issue_token(
                &token_key(token),
                &TokenRecord {
                    mac,
                    purpose,
                    issued_at: now,
                },
            )
        };
        issue(&config, TokenPurpose::Config)?;
        issue(
            &derived_token(&config, INSTALLED),
            TokenPurpose::InstalledCallback,
        )?;
        if plan.profile.config == ConfigKind::Flatcar {
            issue(
                &derived_token(&config, K0S_INSTALLED),
                TokenPurpose::K0sInstalledCallback,
            )?;
        }
        let urls = self.config_urls(&config);
        Ok(BootUrls {
            base: self.base.clone(),
            config: format!("{}/config/{config}", self.base),
            callback: urls.installed,
        })
    }

    fn take(&self, token: &str, purpose: TokenPurpose) -> Result<TokenRecord, ServiceError> {
        match self.inventory.take_token(&token_key(token))? {
            Some(rec) if rec.purpose == purpose => Ok(rec),
            Some(rec) => {
                // Presented at the wrong endpoint: it is spent, and that is suspicious.
                self.record(
                    rec.mac,
                    EventKind::TokenRejected,
                    "token used at the wrong endpoint",
                )?;
                Err(ServiceError::BadToken)
            }
            None => Err(ServiceError::BadToken),
        }
    }

    /// The plan a known machine is being installed with, if it is installing.
    fn plan_of(&self, mac: MacAddr, machine: Option<&Machine>) -> Option<InstallPlan> {
        let req = BootRequest {
            mac: Some(mac),
            uuid: machine.and_then(|m| m.uuid.clone()),
            serial: machine.and_then(|m| m.serial.clone()),
            arch: machine.map(|m| m.arch).unwrap_or_default(),
            hostname: None,
        };
        match self.booter.decide(&req, machine) {
            BootDecision::Install(plan) => Some(*plan),
            _ => None,
        }
    }

    /// Answers `/config/<token>`: consumes the token and renders the machine's config.
    /// The state change and timeline entry are durable before the body is returned.
    pub fn config(&self, token: &str, peer: Option<IpAddr>) -> Result<ConfigBody, ServiceError> {
        let rec = self.take(token, TokenPurpose::Config)?;
        let mac = rec.mac;
        let machine = self.inventory.get(mac)?;
        let Some(plan) = self.plan_of(mac, machine.as_ref()) else {
            self.record(
                mac,
                EventKind::TokenRejected,
                "config requested but machine is not installing",
            )?;
            return Err(ServiceError::Conflict(format!("{mac} is not being installed")));
        };
        let state = machine.map(|m| m.state).unwrap_or_default();
        let next = lifecycle::next(state, Trigger::ConfigFetched)
            .map_err(|e| ServiceError::Conflict(e.to_string()))?;
        let renderer: &dyn ConfigRenderer = match self.renderers.get(&plan.profile.config) {
            Some(r) => r.as_ref(),
            None => &PlainRenderer,
        };
        let body = match renderer.render_with(mac, &plan, &self.config_urls(token)) {
            Ok(b) => b,
            Err(why) => {
                // Put the token back: the fault is ours (missing secrets or mirror
                // files), and the machine's retries can succeed once it is fixed.
                self.inventory.issue_token(&token_key(token), &rec)?;
                self.record(
                    mac,
                    EventKind::TokenRejected,
                    &format!("config not rendered: {why}"),
                )?;
                return Err(ServiceError::Render(why));
            }
        };
        let what = match plan.profile.config {
            ConfigKind::Flatcar => format!(" (Flatcar stage-1 Ignition; {})", progress::STAGE1_MARKER),
            k => format!(" ({k:?})"),
        };
        self.transition(
            mac,
            next,
            event(EventKind::ConfigServed, format!("{} bytes{what}", body.len())),
        )?;
        if let Some(ip) = peer {
            self.remember_peer(ip, mac);
        }
        Ok(ConfigBody {
            body,
            content_type: renderer.content_type(),
        })
    }

    /// Answers `/callback/<token>/installed`. On the Flatcar path this is
    /// `DiskInstalled`: the state becomes `Installed` (next netboot: local disk) and
    /// the timeline records the k0s sub-state.
    pub fn installed(&self, token: &str) -> Result<MacAddr, ServiceError> {
        let rec = self.take(token, TokenPurpose::InstalledCallback)?;
        let machine = self.inventory.get(rec.mac)?;
        let state = machine.as_ref().map(|m| m.state).unwrap_or_default();
        let flatcar = self
            .plan_of(rec.mac, machine.as_ref())
            .is_some_and(|p| p.profile.config == ConfigKind::Flatcar);
        let next = lifecycle::next(state, Trigger::InstallReported)
            .map_err(|e| ServiceError::Conflict(e.to_string()))?;
        let ev = if flatcar {
            let (phase, _) = progress::from_timeline(&self.inventory.timeline(rec.mac)?);
            progress::step(phase, progress::Signal::DiskInstalled)
                .map_err(|e| ServiceError::Conflict(e.to_string()))?;
            event(
                EventKind::DiskInstalled,
                "flatcar-install finished; next netboot boots the disk; k0s: DiskInstalled, \
                 waiting for K0sInstalled",
            )
        } else {
            event(EventKind::Installed, "install reported by the machine")
        };
        self.transition(rec.mac, next, ev)?;
        Ok(rec.mac)
    }

    /// Answers `/callback/<token>/k0s-installed`: the Flatcar machine's first disk
    /// boot installed and started k0s. The state stays `Installed`; the timeline
    /// gets `k0s_installed`. Refused unless the k0s phase is `DiskInstalled`.
    pub fn k0s_installed(&self, token: &str) -> Result<MacAddr, ServiceError> {
        let rec = self.take(token, TokenPurpose::K0sInstalledCallback)?;
        let state = self.inventory.get(rec.mac)?.map(|m| m.state).unwrap_or_default();
        let (phase, _) = progress::from_timeline(&self.inventory.timeline(rec.mac)?);
        let refused = |why: String| {
            self.record(
                rec.mac,
                EventKind::TokenRejected,
                &format!("k0s callback refused: {why}"),
            )?;
            Err(ServiceError::Conflict(why))
        };
        if state != MachineState::Installed {
            return refused(format!("{} is {state}, not Installed", rec.mac));
        }
        if let Err(e) = progress::step(phase, progress::Signal::K0sInstalled) {
            return refused(e.to_string());
        }
        self.transition(
            rec.mac,
            state,
            event(
                EventKind::K0sInstalled,
                "k0s installed and started; k0s: K0sInstalled",
            ),
        )?;
        Ok(rec.mac)
    }

    /// Sets the state and appends `ev` (plus a `state_changed` entry) in one commit.
    fn transition(&self, mac: MacAddr, next: MachineState, ev: TimelineEvent) -> Result<(), ServiceError> {
        let now = OffsetDateTime::now_utc();
        let mut written = Vec::new();
        self.inventory.apply(mac, &mut |cur| {
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            m.last_seen = now;
            let mut events = vec![ev.clone()];
            if m.state != next {
                events.push(event(EventKind::StateChanged, format!("{} -> {next}", m.state)));
                m.state = next;
            }
            if next == MachineState::Installed {
                // It made it: boot-loop counting starts over.
                m.install_boots.clear();
            }
            written = events.clone();
            Update {
                machine: Some(m),
                events,
            }
        })?;
        self.publish(mac, &written);
        Ok(())
    }

    /// Appends one event to a known machine's timeline (unknown machines are skipped:
    /// the unknown policy decides who gets a record, and only `/ipxe` applies it).
    pub fn record(&self, mac: MacAddr, kind: EventKind, detail: &str) -> Result<(), ServiceError> {
        if self.inventory.get(mac)?.is_some() {
            let events = [event(kind, detail)];
            self.inventory.append(mac, &events)?;
            self.publish(mac, &events);
        }
        Ok(())
    }

    /// Records an event for `mac`, creating its record (state `Discovered`) if the
    /// machine is new and the unknown policy lets it be recorded. Used for traffic
    /// that arrives before `/ipxe`, such as firmware PXE fetching iPXE over TFTP.
    pub fn record_seen(&self, mac: MacAddr, kind: EventKind, detail: &str) -> Result<(), ServiceError> {
        if self.inventory.get(mac)?.is_none() {
            let req = BootRequest {
                mac: Some(mac),
                ..Default::default()
            };
            if matches!(
                self.booter.decide(&req, None),
                BootDecision::Unknown { record: false, .. }
            ) {
                return Ok(());
            }
        }
        let now = OffsetDateTime::now_utc();
        let events = vec![event(kind, detail)];
        self.inventory.apply(mac, &mut |cur| {
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            m.last_seen = now;
            Update {
                machine: Some(m),
                events: events.clone(),
            }
        })?;
        self.publish(mac, &events);
        Ok(())
    }

    /// Records an event for whichever machine last booted from `ip`, if known.
    pub fn record_for_peer(&self, ip: IpAddr, kind: EventKind, detail: &str) -> Result<(), ServiceError> {
        let mac = self.peers.lock().ok().and_then(|p| p.get(&ip).copied());
        match mac {
            Some(mac) => self.record(mac, kind, detail),
            None => Ok(()),
        }
    }

    /// Learns that `ip` belongs to `mac` (from `/ipxe`, or the ARP table for TFTP).
    pub fn remember_peer(&self, ip: IpAddr, mac: MacAddr) {
        if let Ok(mut p) = self.peers.lock() {
            // Bounded: a flood of addresses cannot grow it without limit.
            if p.len() > 65_536 {
                p.clear();
            }
            p.insert(ip, mac);
        }
    }
}
