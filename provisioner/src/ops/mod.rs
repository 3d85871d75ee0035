//! Operator actions shared by the API, the dashboard and (through the API) the CLI:
//! re-imaging, power control, and which profile/cluster a machine belongs to.
//!
//! Re-imaging (issue "operator surface" §3): the machine goes to `ReimageRequested`
//! (the booter then installs it on its next network boot with fresh one-time tokens),
//! then
//! - a Talos node is reset over the Talos API ([`NodeResetter`]), which wipes
//!   STATE and EPHEMERAL and reboots it into the network boot;
//! - any other node (Flatcar/k0s, plain) gets "network boot next" and a power cycle
//!   from its power driver.

pub mod bootstrap_view;
pub mod clusters;
pub mod credentials;
pub mod machines;

use std::sync::Arc;

use provisioner_core::boot::BootRequest;
use provisioner_core::catalog::{Catalog, ConfigKind, select_group};
use provisioner_core::inventory::Update;
use provisioner_core::lifecycle::{self, Trigger};
use provisioner_core::model::{EventKind, MacAddr, Machine, MachineState, TimelineEvent};
use provisioner_core::power::PowerAction;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cluster::seams::NodeResetter;
use crate::power::{OutcomeStatus, PowerDrivers, PowerError, PowerOutcome};
use crate::service::{BootService, ServiceError};

/// The profile a machine gets and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Profile id.
    pub profile: String,
    /// The group that selected it (`None` for an operator override).
    pub group: Option<String>,
    /// The profile's cluster in `infra/`.
    pub cluster: Option<String>,
    /// Which config it serves (tells Talos from Flatcar/k0s nodes).
    pub config: ConfigKind,
}

/// The profile `m` boots: its operator override, else the group its identity and
/// labels select (the same rule as the booter, without the state check).
pub fn assignment(catalog: &Catalog, m: &Machine) -> Option<Assignment> {
    let (profile, group) = match &m.profile {
        Some(p) => (p.clone(), None),
        None => {
            // The pinned UUID is the machine's identity (crate::service release checks).
            let req = BootRequest {
                mac: Some(m.mac),
                uuid: m.pinned_uuid.clone().or_else(|| m.uuid.clone()),
                serial: m.serial.clone(),
                arch: m.arch,
                ..Default::default()
            };
            let g = select_group(&catalog.groups, &req.labels(Some(m)))?;
            (g.profile.clone(), Some(g.id.clone()))
        }
    };
    let p = catalog.profiles.get(&profile);
    Some(Assignment {
        cluster: p.and_then(|p| p.cluster.clone()),
        config: p.map(|p| p.config).unwrap_or_default(),
        profile,
        group,
    })
}

/// How one step of an operator action went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Done.
    Done,
    /// The operator must do it; the detail says what.
    Manual,
    /// Tried and failed; the detail says why.
    Failed,
    /// Not possible in this build; the detail says what to do instead.
    Unavailable,
}

/// One step of an operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Step {
    /// `state`, `talos_reset`, `netboot_next`, `power_cycle`.
    pub step: String,
    /// How it went.
    pub status: StepStatus,
    /// Details for people.
    pub detail: String,
}

/// Why an operator action failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No such machine.
    #[error("no machine {0}")]
    NotFound(MacAddr),
    /// The store failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The power driver failed.
    #[error(transparent)]
    Power(#[from] PowerError),
    /// A blocking task died.
    #[error("internal: {0}")]
    Internal(String),
}

/// Carries out operator actions.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Inventory writes (published to live views).
    pub service: Arc<BootService>,
    /// The loaded catalog.
    pub catalog: Arc<Catalog>,
    /// Power drivers.
    pub power: Arc<PowerDrivers>,
    /// Talos reset over the Talos API ([`talos_reset::TalosResetter`]); `None` when
    /// `infra/` has no Talos cluster (the step then names the manual command).
    pub resetter: Option<Arc<dyn NodeResetter>>,
}

fn event(kind: EventKind, detail: impl Into<String>) -> TimelineEvent {
    TimelineEvent {
        at: OffsetDateTime::now_utc(),
        kind,
        detail: detail.into(),
    }
}

fn step_from(step: &str, r: &Result<PowerOutcome, PowerError>) -> Step {
    match r {
        Ok(o) => Step {
            step: step.into(),
            status: match o.status {
                OutcomeStatus::Done => StepStatus::Done,
                OutcomeStatus::Manual => StepStatus::Manual,
            },
            detail: o.detail.clone(),
        },
        Err(e) => Step {
            step: step.into(),
            status: StepStatus::Failed,
            detail: e.to_string(),
        },
    }
}

impl Operator {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<BootService>) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, OpError> {
        let svc = self.service.clone();
        tokio::task::spawn_blocking(move || f(svc))
            .await
            .map_err(|e| OpError::Internal(e.to_string()))?
    }

    /// Re-images `mac`: state first (durable), then reset or power cycle. Failures
    /// after the state change are reported as failed steps, not as an error: the
    /// request itself is recorded and the next network boot reinstalls.
    pub async fn reimage(&self, mac: MacAddr) -> Result<(Machine, Vec<Step>), OpError> {
        let machine = self
            .blocking(move |svc| {
                let mut found = false;
                let stored = svc.update(mac, &mut |cur| {
                    let Some(mut m) = cur else {
                        found = false;
                        return Update::default();
                    };
                    found = true;
                    let mut events = vec![event(EventKind::ReimageRequested, "requested by an operator")];
                    let next =
                        lifecycle::next(m.state, Trigger::Reimage).unwrap_or(MachineState::ReimageRequested);
                    if next != m.state {
                        events.push(event(EventKind::StateChanged, format!("{} -> {next}", m.state)));
                        m.state = next;
                    }
                    m.install_boots.clear();
                    Update {
                        machine: Some(m),
                        events,
                    }
                })?;
                match stored {
                    Some(m) if found => Ok(m),
                    _ => Err(OpError::NotFound(mac)),
                }
            })
            .await?;
        let mut steps = vec![Step {
            step: "state".into(),
            status: StepStatus::Done,
            detail: "ReimageRequested: the next network boot installs with a fresh one-time config token"
                .into(),
        }];
        let assign = assignment(&self.catalog, &machine);
        if assign.as_ref().map(|a| a.config) == Some(ConfigKind::Talos) {
            let cluster = assign.as_ref().and_then(|a| a.cluster.clone());
            let step = match &self.resetter {
                Some(r) => match r.reset(&machine, cluster.as_deref()).await {
                    Ok(detail) => Step {
                        step: "talos_reset".into(),
                        status: StepStatus::Done,
                        detail,
                    },
                    Err(e) => Step {
                        step: "talos_reset".into(),
                        status: StepStatus::Failed,
                        detail: e.to_string(),
                    },
                },
                None => Step {
                    step: "talos_reset".into(),
                    status: StepStatus::Unavailable,
                    detail: format!(
                        "this build has no Talos API client; reset the node by hand: \
                         talosctl -n <node-ip> reset --reboot --system-labels-to-wipe STATE \
                         --system-labels-to-wipe EPHEMERAL (add --graceful=false only if the \
                         node is not a healthy control-plane member); {mac} then reinstalls"
                    ),
                },
            };
            steps.push(step);
        } else {
            let driver = self.power.driver_for(mac, machine.power.as_ref())?;
            let r = driver.netboot_next().await;
            steps.push(step_from("netboot_next", &r));
            let r = driver.power(PowerAction::Cycle).await;
            steps.push(step_from("power_cycle", &r));
        }
        let summary: Vec<String> = steps
            .iter()
            .skip(1)
            .map(|s| {
                let line = format!("{}: {:?}", s.step, s.status).to_lowercase();
                // Whether a Talos reset was graceful belongs on the timeline too.
                if s.step == "talos_reset" {
                    format!("{line} ({})", s.detail)
                } else {
                    line
                }
            })
            .collect();
        let detail = summary.join(", ");
        self.blocking(move |svc| {
            Ok(svc.record(mac, EventKind::PowerAction, &format!("reimage {detail}"))?)
        })
        .await?;
        Ok((machine, steps))
    }

    /// Runs a power action with the machine's driver and records it on the timeline.
    pub async fn power(
        &self,
        mac: MacAddr,
        action: PowerAction,
    ) -> Result<(&'static str, PowerOutcome), OpError> {
        let machine = self
            .blocking(move |svc| svc.inventory().get(mac)?.ok_or(OpError::NotFound(mac)))
            .await?;
        let driver = self.power.driver_for(mac, machine.power.as_ref())?;
        let name = driver.name();
        let r = driver.power(action).await;
        let detail = match &r {
            Ok(o) => format!("{action} via {name}: {:?}: {}", o.status, o.detail).to_lowercase(),
            Err(e) => format!("{action} via {name} failed: {e}"),
        };
        self.blocking(move |svc| Ok(svc.record(mac, EventKind::PowerAction, &detail)?))
            .await?;
        Ok((name, r?))
    }
}

impl From<provisioner_core::inventory::InventoryError> for OpError {
    fn from(e: provisioner_core::inventory::InventoryError) -> Self {
        Self::Service(ServiceError::Inventory(e))
    }
}
