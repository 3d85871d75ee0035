//! Config release on the boot path: the settings, the checks (pure decisions from
//! `provisioner_core::release`, fed by a [`PeerFacts`] lookup), and recording a
//! refusal on the named machine's timeline.
//!
//! A refusal is counted in `provisioner_config_refused_total{stage,reason}` every
//! time, but lands on the timeline at most once a minute per (machine, peer,
//! reason): a host hammering the boot path with a victim's MAC cannot push the
//! victim's real events out of its (capped) timeline.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner_core::boot::InstallPlan;
use provisioner_core::catalog::ConfigKind;
use provisioner_core::inventory::{TokenRecord, Update};
use provisioner_core::model::{Event, MacAddr, Machine};
use provisioner_core::release::admission::{self, Admission};
use provisioner_core::release::binding::{self, Bound, Claim, LeaseFact, PeerFacts, Refusal, Stage};
use time::OffsetDateTime;

use super::{BootService, ServiceError};

/// How long a refusal for the same (machine, peer, reason) stays off the timeline.
const REFUSAL_EVENT_EVERY: Duration = Duration::from_secs(60);

/// A [`PeerFacts`] that knows nothing: every peer is unverifiable. The safe default
/// until the composition root gives the service the kernel's facts.
#[derive(Debug, Default)]
pub struct NoFacts;

impl PeerFacts for NoFacts {
    fn neighbour(&self, _: IpAddr) -> Option<MacAddr> {
        None
    }
    fn on_link(&self, _: IpAddr) -> bool {
        false
    }
    fn lease(&self, _: IpAddr) -> LeaseFact {
        LeaseFact::NotFullMode
    }
}

/// The device flow's timing (RFC 8628 §3.2 `expires_in`, `interval`).
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// Lifetime of a device code.
    pub lifetime_secs: u32,
    /// The polling interval handed out.
    pub interval_secs: u32,
    /// Lifetime of an access token (it also works once only).
    pub token_secs: u32,
    /// `verification_uri`: where an operator approves (the dashboard).
    pub verification_uri: String,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            lifetime_secs: 600,
            interval_secs: provisioner_core::release::device::DEFAULT_INTERVAL_SECS,
            token_secs: 600,
            verification_uri: "https://127.0.0.1:9090/ui/approvals".into(),
        }
    }
}

/// Who gets a machine config: the boot path's release settings.
#[derive(Debug, Clone)]
pub struct ReleasePolicy {
    /// Peer binding on (the default) or off (`peer_binding.enabled: false`).
    pub binding: bool,
    /// Neighbour, on-link and lease lookups.
    pub facts: Arc<dyn PeerFacts>,
    /// Global `admission`.
    pub admission: Admission,
    /// Per-cluster `admission` from `infra/`.
    pub cluster_admission: HashMap<String, Admission>,
    /// Boot MAC → the node's other NICs declared in `infra/`.
    pub other_nics: HashMap<MacAddr, Vec<MacAddr>>,
    /// How long an approval lasts (the install window).
    pub approval_window: time::Duration,
    /// Seconds a refused or waiting machine waits before asking again.
    pub retry_secs: u32,
    /// RFC 8628 timing.
    pub device: DeviceSettings,
}

impl Default for ReleasePolicy {
    fn default() -> Self {
        Self {
            binding: true,
            facts: Arc::new(NoFacts),
            admission: Admission::Auto,
            cluster_admission: HashMap::new(),
            other_nics: HashMap::new(),
            approval_window: time::Duration::minutes(60),
            retry_secs: 10,
            device: DeviceSettings::default(),
        }
    }
}

/// The operator's release settings (the configuration's `peer_binding`,
/// `admission`, `approval_window_minutes` and `api_listen`), copied out by the
/// composition root so this layer never sees the whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSettings {
    /// `peer_binding.enabled`.
    pub binding: bool,
    /// `peer_binding.retry_secs`.
    pub retry_secs: u32,
    /// Global `admission`.
    pub admission: Admission,
    /// `approval_window_minutes`.
    pub approval_window_minutes: std::num::NonZeroU32,
    /// `api_listen` (the device flow's verification URI points at it).
    pub api_listen: std::net::SocketAddr,
}

impl ReleasePolicy {
    /// The policy from the operator's settings and `infra/` (cluster `admission`,
    /// nodes' other NICs), with `facts` as the neighbour/lease lookup.
    pub fn from_settings(
        cfg: &ReleaseSettings,
        (talos, k0s): (
            &std::collections::BTreeMap<String, provisioner_core::talos::TalosCluster>,
            &std::collections::BTreeMap<String, provisioner_core::k0s::K0sCluster>,
        ),
        facts: Arc<dyn PeerFacts>,
        server_ip: IpAddr,
    ) -> Self {
        use provisioner_core::release::nodes;
        if !cfg.binding {
            tracing::warn!(
                "peer_binding.enabled is false: any host that knows a machine's MAC gets its config; \
                 use this only on a closed test rig"
            );
        }
        let mut api = cfg.api_listen;
        if api.ip().is_unspecified() {
            api.set_ip(server_ip);
        }
        Self {
            binding: cfg.binding,
            facts,
            admission: cfg.admission,
            cluster_admission: nodes::cluster_admission(talos, k0s),
            other_nics: nodes::other_nics(talos, k0s),
            approval_window: time::Duration::minutes(i64::from(cfg.approval_window_minutes.get())),
            retry_secs: cfg.retry_secs.max(1),
            device: DeviceSettings {
                verification_uri: format!("https://{api}/ui/approvals"),
                ..Default::default()
            },
        }
    }
}

/// What the release checks say about an install script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Release {
    /// Serve it; pin this UUID if it is the first one seen.
    Go {
        /// A UUID to pin.
        pin: Option<String>,
    },
    /// Refused (metric label, reason).
    Refused(&'static str, String),
    /// Wait for an operator; `unverifiable` says binding could not be checked.
    Wait {
        /// Binding was not checkable (relay with external DHCP).
        unverifiable: bool,
    },
}

impl BootService {
    /// Sets the release settings (default: binding on with no facts, `auto`).
    pub fn with_release(self, release: ReleasePolicy) -> Self {
        *super::write(&self.release) = Arc::new(release);
        self
    }

    /// The release settings now.
    pub fn release(&self) -> Arc<ReleasePolicy> {
        super::read(&self.release).clone()
    }

    /// The other NICs declared for a boot MAC.
    pub(super) fn other_nics(&self, mac: MacAddr) -> Vec<MacAddr> {
        self.release().other_nics.get(&mac).cloned().unwrap_or_default()
    }

    /// The boot MAC a NIC belongs to (itself unless declared as another NIC).
    pub(super) fn boot_mac_of(&self, nic: MacAddr) -> MacAddr {
        self.release()
            .other_nics
            .iter()
            .find_map(|(boot, others)| others.contains(&nic).then_some(*boot))
            .unwrap_or(nic)
    }

    /// Binds `peer` to `mac` at `stage` (always bound when binding is off).
    pub(super) fn bind(
        &self,
        stage: Stage,
        mac: MacAddr,
        peer: Option<IpAddr>,
        script_peer: Option<IpAddr>,
        approved: bool,
    ) -> Result<Bound, Refusal> {
        if !self.release().binding {
            return Ok(Bound::Disabled);
        }
        // No peer address at all (not a TCP request): nothing can be checked.
        let Some(peer) = peer else {
            return if approved {
                Ok(Bound::Approved)
            } else {
                Err(Refusal::Unverifiable)
            };
        };
        let nics = self.other_nics(mac);
        let claim = Claim {
            stage,
            peer,
            mac,
            other_nics: &nics,
            script_peer,
            approved,
        };
        binding::bind(&claim, self.release().facts.as_ref())
    }

    /// The admission mode of an install.
    pub(super) fn admission_of(&self, plan: &InstallPlan) -> Admission {
        let cluster = plan
            .profile
            .cluster
            .as_ref()
            .and_then(|c| self.release().cluster_admission.get(c).copied());
        admission::effective(self.release().admission, cluster, plan.profile.admission)
    }

    /// Whether an install plan came from the unknown policy (no group, no operator
    /// override) and carries secrets: such a machine always needs an approval.
    pub(super) fn unknown_with_secrets(plan: &InstallPlan, machine: Option<&Machine>) -> bool {
        plan.group.is_none()
            && machine.and_then(|m| m.profile.as_ref()).is_none()
            && matches!(plan.profile.config, ConfigKind::Talos | ConfigKind::Flatcar)
    }

    /// Checks a later request (config fetch, callback) against the token's machine:
    /// the peer must be bound to it. A refusal is recorded and returned; the token
    /// stays live.
    pub(super) fn check_later(
        &self,
        stage: Stage,
        rec: &TokenRecord,
        peer: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let machine = self.inventory.get(rec.mac)?;
        let now = OffsetDateTime::now_utc();
        let approved = machine.as_ref().is_some_and(|m| {
            admission::covers(
                m.approval.as_ref(),
                m.pinned_uuid.as_deref().or(m.uuid.as_deref()),
                now,
            )
        });
        match self.bind(stage, rec.mac, peer, rec.peer, approved) {
            Ok(_) => Ok(()),
            Err(r) => {
                let reason = r.to_string();
                self.refuse(rec.mac, stage, peer, r.code(), &reason, false)?;
                Err(ServiceError::Refused(reason))
            }
        }
    }

    /// Counts a refusal and records it on `mac`'s timeline (rate-limited per
    /// machine, peer and reason). `create` makes a record for a machine the catalog
    /// knows but the inventory does not yet (its first boot was refused).
    pub(super) fn refuse(
        &self,
        mac: MacAddr,
        stage: Stage,
        peer: Option<IpAddr>,
        code: &'static str,
        reason: &str,
        create: bool,
    ) -> Result<(), ServiceError> {
        metrics::counter!("provisioner_config_refused_total", "stage" => stage.as_str(), "reason" => code)
            .increment(1);
        let peer = peer.map(binding::canonical);
        let shown = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        tracing::warn!(%mac, peer = %shown, stage = stage.as_str(), reason = code, "config release refused");
        let key = format!("{mac}|{shown}|{code}|{}", stage.as_str());
        let fresh = self.refusals_recorded.lock().is_ok_and(|mut seen| {
            let now = Instant::now();
            if seen.len() > 65_536 {
                seen.clear();
            }
            match seen.get(&key) {
                Some(at) if now.duration_since(*at) < REFUSAL_EVENT_EVERY => false,
                _ => {
                    seen.insert(key, now);
                    true
                }
            }
        });
        if !fresh {
            return Ok(());
        }
        let event = Event::ConfigRefused {
            stage,
            peer,
            code: code.to_string(),
            reason: reason.to_string(),
        };
        if !create {
            return self.record(mac, event);
        }
        let now = OffsetDateTime::now_utc();
        let events = vec![event.at(now)];
        self.inventory.apply(mac, &mut |cur| Update {
            // Only the event: a refused request changes nothing about the machine.
            machine: cur.is_none().then(|| Machine::discovered(mac, now)),
            events: events.clone(),
            ..Update::default()
        })?;
        Ok(())
    }
}
