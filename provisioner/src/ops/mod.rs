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

pub mod adopt;
pub mod bootstrap_view;
pub mod clusters;
pub mod credentials;
pub mod housekeeping;
pub mod machines;

use std::sync::Arc;

use provisioner_core::catalog::{Catalog, ConfigKind};
use provisioner_core::inventory::Update;
use provisioner_core::lifecycle::Trigger;
use provisioner_core::model::{Event, MacAddr, Machine};
use provisioner_core::power::PowerAction;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cluster::seams::NodeResetter;
use crate::power::{OutcomeStatus, PowerDrivers, PowerError, PowerOutcome};
use crate::service::{BootService, ServiceError};

// The one assignment rule lives in core, next to the booter that applies it.
pub use provisioner_core::boot::assign::{Assignment, assignment};

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
    /// Writes adopted machines into `infra/` and reloads; `None` where the inputs
    /// are not files the appliance may write (tests that serve a fixed catalog).
    pub adopter: Option<Arc<adopt::Adopter>>,
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
    /// The catalog the booter decides with now (reloaded after an adoption).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.service.catalog().unwrap_or_else(|| self.catalog.clone())
    }

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
                    // A reimage is allowed in every state.
                    let events = m
                        .apply(Trigger::Reimage, OffsetDateTime::now_utc())
                        .unwrap_or_default();
                    Update {
                        machine: Some(m),
                        events,
                        ..Update::default()
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
        let assign = assignment(&self.catalog(), &machine);
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
        let event = Event::PowerAction {
            detail: format!("reimage {detail}"),
        };
        self.blocking(move |svc| Ok(svc.record(mac, event)?)).await?;
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
        self.blocking(move |svc| Ok(svc.record(mac, Event::PowerAction { detail })?))
            .await?;
        Ok((name, r?))
    }
}

impl From<provisioner_core::inventory::InventoryError> for OpError {
    fn from(e: provisioner_core::inventory::InventoryError) -> Self {
        Self::Service(ServiceError::Inventory(e))
    }
}
