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
