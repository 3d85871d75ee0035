//! The fleet at a glance: machines counted by state, and the machines that need an
//! operator, each with why and since when.
//!
//! Needing attention:
//! - **boot loop**: the machine is in [`MachineState::BootLoop`] ([`crate::bootloop`]
//!   stopped installing it; it waits for a re-image);
//! - **waiting for approval**: an install (`admission: approve`) or a device
//!   authorization waits for an operator's decision;
//! - **refused**: the config release refused it (peer binding, UUID pin, a replayed or
//!   expired config token; [`crate::release`]) and nothing has resolved that since
//!   (installed, approved, unpinned or re-imaged);
//! - **stuck install**: its config was fetched more than `stuck_after` ago and it has
//!   not reported installed.

use std::collections::BTreeMap;

use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::model::{MacAddr, Machine, MachineState};
use crate::timeline::{Event, TimelineEvent};

/// Why a machine needs an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Boot-loop protection stopped installing it.
    BootLoop,
    /// The config release refused it.
    Refused,
    /// It waits for an approval.
    WaitingApproval,
    /// Config fetched, no installed report for longer than the limit.
    StuckInstall,
}

impl Reason {
    /// The label an operator reads.
    pub fn label(self) -> &'static str {
        match self {
            Self::BootLoop => "boot loop",
            Self::Refused => "refused",
            Self::WaitingApproval => "waiting for approval",
            Self::StuckInstall => "stuck install",
        }
    }
}

/// One machine needing an operator, for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attention {
    /// The machine.
    pub mac: MacAddr,
    /// Why.
    pub reason: Reason,
    /// Since when (the event that raised it).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// For people (the event's sentence, or how long it has been stuck).
    pub detail: String,
}

/// The fleet summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fleet {
    /// Machines in the inventory.
    pub total: usize,
    /// Machines per state, every state listed (0 included), in lifecycle order.
    pub by_state: Vec<(MachineState, usize)>,
    /// Machines needing an operator, by reason, then oldest first.
    pub attention: Vec<Attention>,
}

/// Counts `machines` by state.
pub fn counts<'a>(machines: impl IntoIterator<Item = &'a Machine>) -> (usize, Vec<(MachineState, usize)>) {
    let mut by: BTreeMap<usize, usize> = BTreeMap::new();
    let mut total = 0;
    for m in machines {
        total += 1;
        let i = MachineState::ALL.iter().position(|s| *s == m.state).unwrap_or(0);
        *by.entry(i).or_default() += 1;
    }
    let by_state = MachineState::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, by.get(&i).copied().unwrap_or(0)))
        .collect();
    (total, by_state)
}

fn is_refusal(e: &Event) -> bool {
    matches!(
        e,
        Event::ConfigRefused { .. } | Event::ConfigReplayRefused { .. } | Event::ConfigTokenExpired { .. }
    )
}

/// What settles an earlier refusal: the machine installed, or an operator acted on it.
fn resolves_refusal(e: &Event) -> bool {
    matches!(
        e,
        Event::Installed(_)
            | Event::DiskInstalled
            | Event::Approved(_)
            | Event::UuidUnpinned { .. }
            | Event::ReimageRequested
    )
}

/// Why `m` (with its `timeline`, oldest first) needs an operator at `now`.
/// `device_code` is the user code of a device authorization waiting for it, if any
/// (those live outside the machine record).
pub fn attention(
    m: &Machine,
    timeline: &[TimelineEvent],
    device_code: Option<&str>,
    now: OffsetDateTime,
    stuck_after: Duration,
) -> Vec<Attention> {
    let mut out = Vec::new();
    let mut push = |reason, since, detail: String| {
        out.push(Attention {
            mac: m.mac,
            reason,
            since,
            detail,
        })
    };
    let last = |pred: &dyn Fn(&Event) -> bool| timeline.iter().rev().find(|e| pred(&e.event));
    if m.state == MachineState::BootLoop {
        match last(&|e| matches!(e, Event::BootLoopDetected { .. })) {
            Some(e) => push(Reason::BootLoop, e.at, e.detail()),
            None => push(Reason::BootLoop, m.last_seen, "in BootLoop".into()),
        }
    }
    let refusal = timeline.iter().rposition(|e| is_refusal(&e.event));
    if let Some(i) = refusal
        && !timeline[i + 1..].iter().any(|e| resolves_refusal(&e.event))
    {
        let e = &timeline[i];
        push(Reason::Refused, e.at, e.detail());
    }
    if let Some(p) = m.pending_approval.as_ref().filter(|p| p.denied_by.is_none()) {
        push(
            Reason::WaitingApproval,
            p.since,
            format!("install code {}", p.code),
        );
    }
    if let Some(code) = device_code {
        let since = last(&|e| matches!(e, Event::ApprovalRequested(_)))
            .map(|e| e.at)
            .unwrap_or(m.last_seen);
        push(Reason::WaitingApproval, since, format!("device code {code}"));
    }
    if m.state == MachineState::ConfigServed {
        let since = last(&|e| matches!(e, Event::ConfigServed { .. }))
            .map(|e| e.at)
            .unwrap_or(m.last_seen);
        let waited = now - since;
        if waited > stuck_after {
            push(
                Reason::StuckInstall,
                since,
                format!(
                    "config fetched {} min ago, no installed report (limit {} min)",
                    waited.whole_minutes(),
                    stuck_after.whole_minutes()
                ),
            );
        }
    }
    out
}

/// Orders a fleet's attention list: by reason, then oldest first, then by MAC.
pub fn sort(list: &mut [Attention]) {
    list.sort_by_key(|a| (a.reason, a.since, a.mac));
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
