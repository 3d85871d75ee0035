//! The k0s sub-state of a Flatcar machine, a pure state machine over what the boot
//! path observes. The machine's own [`MachineState`](crate::model::MachineState)
//! stays the coarse one (`DiskInstalled` maps to `Installed`, which is what makes
//! the booter answer local boot); this refines it from the timeline:
//!
//! ```text
//! Pending ─stage 1 served─▶ Stage1Served{n} ─DiskInstalled─▶ DiskInstalled ─K0sInstalled─▶ K0sInstalled
//!             ▲   └─PXE again (install failed, retry unit rebooted)─▶ Stage1Served{n+1}
//!             └──────────────── reimage (from any phase) ───────────────────────────────┘
//! ```
//!
//! The phase is replayed from the machine's typed timeline events ([`signal_of`]),
//! never from their text.
//!
//! Timeouts are evaluated, not scheduled: [`health`] says whether the step the
//! machine is waiting for is overdue, from the time it entered its phase.

use time::{Duration, OffsetDateTime};

use crate::catalog::ConfigKind;
use crate::model::MachineState;
use crate::timeline::{Event, TimelineEvent};

/// Where a k0s node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing served yet (or reimaged).
    Pending,
    /// Stage 1 Ignition served; `attempt` counts PXE installs since the last reimage.
    Stage1Served {
        /// 1 for the first try.
        attempt: u32,
    },
    /// Flatcar is on disk; first disk boot runs stage 2.
    DiskInstalled,
    /// k0s installed and started.
    K0sInstalled,
}

/// What the boot path observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The machine fetched its stage-1 Ignition.
    Stage1Served,
    /// The `DiskInstalled` callback arrived.
    DiskInstalled,
    /// The `K0sInstalled` callback arrived.
    K0sInstalled,
    /// An operator asked for a reinstall.
    Reimage,
}

/// A signal that does not fit the phase (a replayed or out-of-order callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{signal:?} refused in k0s phase {phase:?}")]
pub struct Refused {
    /// Current phase.
    pub phase: Phase,
    /// The signal.
    pub signal: Signal,
}

/// The next phase.
pub fn step(phase: Phase, signal: Signal) -> Result<Phase, Refused> {
    use Phase as P;
    use Signal as S;
    match (phase, signal) {
        (_, S::Reimage) => Ok(P::Pending),
        (P::Pending, S::Stage1Served) => Ok(P::Stage1Served { attempt: 1 }),
        (P::Stage1Served { attempt }, S::Stage1Served) => Ok(P::Stage1Served {
            attempt: attempt.saturating_add(1),
        }),
        (P::Stage1Served { .. }, S::DiskInstalled) => Ok(P::DiskInstalled),
        (P::DiskInstalled, S::K0sInstalled) => Ok(P::K0sInstalled),
        // Everything else is a replay (same signal twice), a callback without its
        // prerequisite, or an install script for a machine already on disk.
        _ => Err(Refused { phase, signal }),
    }
}

/// How long each step may take before it is reported overdue, and how many PXE
/// install attempts are made before the machine is reported failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Stage 1 served → `DiskInstalled` (download ~500 MB, write, reboot).
    pub disk_install: Duration,
    /// `DiskInstalled` → `K0sInstalled` (first disk boot, k0s download, install).
    pub k0s_install: Duration,
    /// Stage-1 attempts before [`Health::Failed`].
    pub max_attempts: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            disk_install: Duration::minutes(45),
            k0s_install: Duration::minutes(30),
            max_attempts: 3,
        }
    }
}

/// Whether the machine is on schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Waiting within its time, or done.
    OnTime,
    /// The awaited callback is late by this much.
    Overdue {
        /// Which signal is awaited.
        waiting_for: Signal,
        /// How late.
        late_by: Duration,
    },
    /// Too many install attempts: needs an operator.
    Failed {
        /// Attempts made.
        attempts: u32,
    },
}

/// Health of a machine in `phase` since `since`, at `now`.
pub fn health(phase: Phase, since: OffsetDateTime, now: OffsetDateTime, t: &Timeouts) -> Health {
    let (waiting_for, limit) = match phase {
        Phase::Stage1Served { attempt } if attempt > t.max_attempts => {
            return Health::Failed { attempts: attempt };
        }
        Phase::Stage1Served { .. } => (Signal::DiskInstalled, t.disk_install),
        Phase::DiskInstalled => (Signal::K0sInstalled, t.k0s_install),
        Phase::Pending | Phase::K0sInstalled => return Health::OnTime,
    };
    let late_by = now - since - limit;
    if late_by > Duration::ZERO {
        Health::Overdue { waiting_for, late_by }
    } else {
        Health::OnTime
    }
}

/// The signal a timeline event stands for, if any: a Flatcar config fetch (the
/// stage-1 Ignition), the two callbacks, and a state change to `ReimageRequested`.
pub fn signal_of(ev: &TimelineEvent) -> Option<Signal> {
    match &ev.event {
        Event::ConfigServed {
            config: ConfigKind::Flatcar,
            ..
        } => Some(Signal::Stage1Served),
        Event::DiskInstalled => Some(Signal::DiskInstalled),
        Event::K0sInstalled => Some(Signal::K0sInstalled),
        Event::StateChanged {
            to: MachineState::ReimageRequested,
            ..
        } => Some(Signal::Reimage),
        _ => None,
    }
}

/// What the API shows about a machine's k0s progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// `Pending`, `Stage1Served`, `DiskInstalled` or `K0sInstalled`.
    pub phase: &'static str,
    /// Stage-1 attempts since the last reimage (0 before the first).
    pub attempt: u32,
    /// When the phase was entered.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub since: Option<OffsetDateTime>,
    /// `on_time`, `overdue` or `failed`.
    pub health: &'static str,
    /// With `overdue`: the awaited callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<&'static str>,
    /// With `overdue`: seconds late.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_by_secs: Option<i64>,
}

/// The status of a machine from its timeline, at `now`.
pub fn status(events: &[TimelineEvent], now: OffsetDateTime, t: &Timeouts) -> Status {
    let (phase, since) = from_timeline(events);
    let (name, attempt) = match phase {
        Phase::Pending => ("Pending", 0),
        Phase::Stage1Served { attempt } => ("Stage1Served", attempt),
        Phase::DiskInstalled => ("DiskInstalled", 0),
        Phase::K0sInstalled => ("K0sInstalled", 0),
    };
    let h = since.map_or(Health::OnTime, |s| health(phase, s, now, t));
    let (health, waiting_for, late_by_secs) = match h {
        Health::OnTime => ("on_time", None, None),
        Health::Failed { .. } => ("failed", None, None),
        Health::Overdue { waiting_for, late_by } => (
            "overdue",
            Some(match waiting_for {
                Signal::DiskInstalled => "DiskInstalled",
                _ => "K0sInstalled",
            }),
            Some(late_by.whole_seconds()),
        ),
    };
    Status {
        phase: name,
        attempt,
        since,
        health,
        waiting_for,
        late_by_secs,
    }
}

/// Replays a Flatcar machine's timeline: its phase and when it entered it. Events
/// that do not fit (refused at the time) are skipped, as the service skipped them.
pub fn from_timeline(events: &[TimelineEvent]) -> (Phase, Option<OffsetDateTime>) {
    let mut phase = Phase::Pending;
    let mut since = None;
    for ev in events {
        if let Some(sig) = signal_of(ev)
            && let Ok(next) = step(phase, sig)
        {
            phase = next;
            since = Some(ev.at);
        }
    }
    (phase, since)
}

#[cfg(test)]
mod tests;
