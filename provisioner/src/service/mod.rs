//! The boot service: what the HTTP and TFTP servers call. It asks the [`Booter`] for
//! the decision, issues one-time machine-bound tokens, and records state changes and
//! timeline events in the inventory in one durable write before anything is answered.
//!
//! Methods block on the store (one fsync'd commit); async callers wrap them in
//! `spawn_blocking`.
//!
//! Every write goes through the [`Journal`] (the one timeline writer): one durable
//! commit, then its events are published to live views ([`BootService::subscribe`],
//! the API's Server-Sent Events). State changes come from the pure
//! `Machine::apply` (`provisioner_core::lifecycle`).

mod approvals;
mod decisions;
mod device;
mod device_ops;
pub mod health;
mod journal;
mod observe;
mod release;
mod script;
mod timeline;
mod tokens;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use provisioner_core::boot::Booter;
use provisioner_core::bootloop::LoopGuard;
use provisioner_core::catalog::ConfigKind;
use provisioner_core::inventory::{Inventory, InventoryError, Update};
use provisioner_core::model::{MacAddr, Machine};
use provisioner_core::render::config::ConfigRenderer;
use tokio::sync::broadcast;

pub use approvals::{ApprovalError, Pending, PendingKind};
pub use device::DeviceRefusal;
pub use journal::{Journal, MachineEvent};
pub use observe::{Observed, next_batch};
pub use release::{DeviceSettings, NoFacts, ReleasePolicy, ReleaseSettings};
pub use tokens::token_key;

/// Why a boot-path request cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Unknown, used or revoked token (never echoed: it is a secret).
    #[error("unknown or already used token")]
    BadToken,
    /// A config token presented after its TTL (it is spent now; the machine gets a
    /// fresh one on its next netboot).
    #[error("expired token")]
    Expired,
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
    /// The requester is not tied to the machine (peer binding, device token): the
    /// reason is safe to show (no secret), the token stays live.
    #[error("config refused: {0}")]
    Refused(String),
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
    /// What decides a machine's boot; replaced whole when the inputs are reloaded
    /// ([`BootService::reload`]).
    booter: RwLock<Arc<dyn Booter>>,
    /// The [`Journal`] over the store: every write is committed, then published.
    inventory: Arc<dyn Inventory>,
    journal: Arc<Journal>,
    /// `http://<server_ip>:<port>`, no trailing slash.
    base: String,
    /// Which machine last fetched its script from an address, so asset and TFTP
    /// requests (which carry no MAC) land on the right timeline.
    peers: Mutex<HashMap<IpAddr, MacAddr>>,
    /// Spent-token keys whose replay is already on a timeline: later replays of the
    /// same token are only counted, so a leaked URL cannot flood the (capped)
    /// timeline and push real events out.
    replays_recorded: Mutex<HashSet<String>>,
    /// Config renderers by kind; kinds without one get the plain document.
    renderers: RwLock<HashMap<ConfigKind, Arc<dyn ConfigRenderer>>>,
    /// The catalog the booter decides with, once inputs were (re)loaded into it: the
    /// operator's views show what the booter decides.
    catalog: RwLock<Option<Arc<provisioner_core::catalog::Catalog>>>,
    /// Boot-loop protection limits.
    guard: LoopGuard,
    /// The writer of observations (`observe`), started on first use.
    observer: std::sync::OnceLock<Option<observe::Observer>>,
    /// How long a config token works after its script was rendered.
    config_token_ttl: time::Duration,
    /// How long install callback tokens work after they are issued.
    callback_token_ttl: time::Duration,
    /// Who gets a config: peer binding, admission, device flow settings.
    release: RwLock<Arc<ReleasePolicy>>,
    /// When a refusal for (machine, peer, reason) was last put on a timeline.
    refusals_recorded: Mutex<HashMap<String, std::time::Instant>>,
    /// RFC 8628 device authorizations and their access tokens (in memory).
    device: device::DeviceFlows,
}

/// Default [`BootService::with_config_token_ttl`]: 30 minutes covers downloading
/// the kernel and initramfs and booting to the config fetch, with retries.
pub const DEFAULT_CONFIG_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Default [`BootService::with_callback_token_ttl`]: a day covers an install from
/// script to first boot from disk, however slow the disk or the download.
pub const DEFAULT_CALLBACK_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl BootService {
    /// A service answering with URLs under `base`, writing through a [`Journal`]
    /// over `store`.
    pub fn new(booter: Arc<dyn Booter>, store: Arc<dyn Inventory>, base: String) -> Self {
        let journal = Arc::new(Journal::new(store));
        Self {
            booter: RwLock::new(booter),
            inventory: journal.clone(),
            journal,
            base,
            peers: Mutex::new(HashMap::new()),
            replays_recorded: Mutex::new(HashSet::new()),
            renderers: RwLock::default(),
            catalog: RwLock::default(),
            guard: LoopGuard::default(),
            observer: std::sync::OnceLock::new(),
            config_token_ttl: time::Duration::seconds(DEFAULT_CONFIG_TOKEN_TTL.as_secs() as i64),
            callback_token_ttl: time::Duration::seconds(DEFAULT_CALLBACK_TOKEN_TTL.as_secs() as i64),
            release: RwLock::new(Arc::new(ReleasePolicy::default())),
            refusals_recorded: Mutex::new(HashMap::new()),
            device: device::DeviceFlows::default(),
        }
    }

    /// Sets how long a config token works after it is issued (default
    /// [`DEFAULT_CONFIG_TOKEN_TTL`]); a later fetch gets [`ServiceError::Expired`].
    pub fn with_config_token_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.config_token_ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX);
        self
    }

    /// Sets how long install callback tokens work after they are issued (default
    /// [`DEFAULT_CALLBACK_TOKEN_TTL`]); a later callback is refused.
    pub fn with_callback_token_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.callback_token_ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX);
        self
    }

    /// Records at most `per_minute` new machines a minute from sightings alone
    /// ([`Journal::limit_first_seen`]; 0: no limit).
    pub fn with_first_seen_rate(self, per_minute: u32) -> Self {
        self.journal.limit_first_seen(per_minute);
        self
    }

    /// Serves `kind` configs with `renderer` (the Talos renderer for
    /// `ConfigKind::Talos`, the Flatcar one for `ConfigKind::Flatcar`). Kinds without a renderer get the plain document.
    pub fn with_renderer(self, kind: ConfigKind, renderer: Arc<dyn ConfigRenderer>) -> Self {
        write(&self.renderers).insert(kind, renderer);
        self
    }

    /// Sets the boot-loop protection limits (default: [`LoopGuard::default`]).
    pub fn with_loop_guard(mut self, guard: LoopGuard) -> Self {
        self.guard = guard;
        self
    }

    /// A receiver of every timeline event committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MachineEvent> {
        self.journal.subscribe()
    }

    /// Applies an operator change (API) in one durable commit; its events are
    /// published.
    pub fn update(
        &self,
        mac: MacAddr,
        change: &mut dyn FnMut(Option<Machine>) -> Update,
    ) -> Result<Option<Machine>, ServiceError> {
        Ok(self.inventory.apply(mac, change)?)
    }

    /// The base URL of the boot path.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The inventory, as the [`Journal`]: reads, and writes that are published.
    /// Hand this (never the bare store) to anything that changes machines.
    pub fn inventory(&self) -> &Arc<dyn Inventory> {
        &self.inventory
    }

    /// The booter now (for `render` and DHCP).
    pub fn booter(&self) -> Arc<dyn Booter> {
        read(&self.booter).clone()
    }

    /// The catalog of the last [`BootService::reload`], if any.
    pub fn catalog(&self) -> Option<Arc<provisioner_core::catalog::Catalog>> {
        read(&self.catalog).clone()
    }

    /// The renderer of `kind` now, if one is attached.
    pub(crate) fn renderer(&self, kind: ConfigKind) -> Option<Arc<dyn ConfigRenderer>> {
        read(&self.renderers).get(&kind).cloned()
    }

    /// Swaps in what reloaded inputs decide (an adoption wrote `infra/`): the booter,
    /// the renderers and the release policy, each whole, so a request sees either
    /// the old inputs or the new ones. Tokens, peers and approvals stay.
    pub fn reload(
        &self,
        (booter, catalog): (Arc<dyn Booter>, Arc<provisioner_core::catalog::Catalog>),
        renderers: HashMap<ConfigKind, Arc<dyn ConfigRenderer>>,
        release: ReleasePolicy,
    ) {
        *write(&self.catalog) = Some(catalog);
        *write(&self.release) = Arc::new(release);
        *write(&self.renderers) = renderers;
        *write(&self.booter) = booter;
    }
}

// A panic while holding one of these locks cannot leave a half-written value (each
// write is one assignment), so a poisoned lock is still good.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
