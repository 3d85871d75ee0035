//! Reading and editing machines for the operator API and the dashboard: the only way
//! `http::api` reaches the inventory. Edits go through `BootService::update` (one
//! durable commit, then published to live views).

use std::collections::BTreeMap;

use provisioner_core::inventory::{InventoryError, Update};
use provisioner_core::model::{Event, MacAddr, Machine, TimelineEvent};
use provisioner_core::power::PowerSpec;
use time::OffsetDateTime;

use super::Operator;
use crate::service::ServiceError;

/// An operator's change to a machine (`PATCH /api/v1/machines/{mac}`): each field
/// given replaces the stored one (`Some(None)` clears it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineChanges {
    /// Labels (replaced whole).
    pub labels: Option<BTreeMap<String, String>>,
    /// Profile override.
    pub profile: Option<Option<String>>,
    /// Boot file override.
    pub boot_file: Option<Option<String>>,
    /// Power driver.
    pub power: Option<Option<PowerSpec>>,
}

impl Operator {
    /// Every machine.
    pub fn machines(&self) -> Result<Vec<Machine>, InventoryError> {
        self.service.inventory().list()
    }

    /// One machine.
    pub fn machine(&self, mac: MacAddr) -> Result<Option<Machine>, InventoryError> {
        self.service.inventory().get(mac)
    }

    /// A machine's timeline, oldest first.
    pub fn timeline(&self, mac: MacAddr) -> Result<Vec<TimelineEvent>, InventoryError> {
        self.service.inventory().timeline(mac)
    }

    /// Forgets a machine, its timeline and its tokens; `false` when there was none.
    pub fn forget(&self, mac: MacAddr) -> Result<bool, InventoryError> {
        self.service.inventory().delete(mac)
    }

    /// Applies `changes` (a `machine_updated` event naming the fields when any
    /// changed); the stored machine and its last event, `None` when there is no such
    /// machine.
    pub fn update_machine(
        &self,
        mac: MacAddr,
        changes: &MachineChanges,
    ) -> Result<Option<(Machine, Option<TimelineEvent>)>, ServiceError> {
        let mut found = false;
        let stored = self.service.update(mac, &mut |cur| {
            let Some(mut m) = cur else {
                found = false;
                return Update::default();
            };
            found = true;
            let mut changed = Vec::new();
            if let Some(l) = &changes.labels {
                m.labels = l.clone();
                changed.push("labels");
            }
            if let Some(v) = &changes.profile {
                m.profile = v.clone();
                changed.push("profile");
            }
            if let Some(v) = &changes.boot_file {
                m.boot_file = v.clone();
                changed.push("boot_file");
            }
            if let Some(v) = &changes.power {
                m.power = v.clone();
                changed.push("power");
            }
            let events = if changed.is_empty() {
                vec![]
            } else {
                let fields = changed.iter().map(|f| f.to_string()).collect();
                vec![Event::MachineUpdated { fields }.at(OffsetDateTime::now_utc())]
            };
            Update {
                machine: Some(m),
                events,
                ..Update::default()
            }
        })?;
        match stored {
            Some(m) if found => {
                let last = self.timeline(mac)?.pop();
                Ok(Some((m, last)))
            }
            _ => Ok(None),
        }
    }
}

/// Why `adopt` did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdoptFailure {
    /// This appliance has no writable `infra/` (see [`Operator::adopter`]).
    #[error("adopting is not available here: the appliance serves fixed inputs")]
    Unavailable,
    /// Refused or failed; the reason names the node, file and field.
    #[error(transparent)]
    Adopt(#[from] super::adopt::AdoptError),
    /// The store failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A blocking task died.
    #[error("internal: {0}")]
    Internal(String),
}

impl Operator {
    /// Writes `mac` (and the UUID the machine reported, when the node takes one)
    /// into `node` of `infra/`, reloads, and notes it on the machine's timeline
    /// (when it has a record). Its next network boot installs it.
    pub async fn adopt(&self, mac: MacAddr, node: String) -> Result<super::adopt::Adopted, AdoptFailure> {
        let adopter = self.adopter.clone().ok_or(AdoptFailure::Unavailable)?;
        let service = self.service.clone();
        let task = move || -> Result<_, AdoptFailure> {
            let machine = service.inventory().get(mac).map_err(ServiceError::from)?;
            let uuid = machine
                .as_ref()
                .and_then(|m| m.pinned_uuid.clone().or_else(|| m.uuid.clone()));
            let adopted = adopter.adopt(mac, &node, uuid.as_deref())?;
            if machine.is_some() && !adopted.lines.is_empty() {
                let fields = vec![format!("adopted into {} as node {}", adopted.file, adopted.node)];
                service.update(mac, &mut |_| Update {
                    events: vec![
                        Event::MachineUpdated {
                            fields: fields.clone(),
                        }
                        .at(OffsetDateTime::now_utc()),
                    ],
                    ..Update::default()
                })?;
            }
            Ok(adopted)
        };
        tokio::task::spawn_blocking(task)
            .await
            .map_err(|e| AdoptFailure::Internal(e.to_string()))?
    }
}
