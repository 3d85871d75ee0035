//! Machine state transitions, as pure functions: [`next`] is the table of
//! (state, trigger) → state, and [`Machine::apply`] applies a trigger to a record
//! and returns the timeline events it causes. The daemon runs `apply` inside one
//! store transaction, so the record and its events are committed together.

use std::net::IpAddr;

use time::OffsetDateTime;

use crate::catalog::ConfigKind;
use crate::model::{Machine, MachineState};
use crate::timeline::{Event, Reporter, TimelineEvent};

/// Something the boot path observed, with the facts its timeline event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An install script was served (its `ipxe_script_served` entry is written by
    /// the script answer itself, also for other answers).
    InstallScriptServed,
    /// The machine's one-time config was fetched.
    ConfigFetched {
        /// Its size.
        bytes: u64,
        /// Which config.
        config: ConfigKind,
    },
    /// The installed OS reported back.
    InstallReported(Report),
    /// Flatcar: k0s was installed and started on the first disk boot.
    K0sReported,
    /// An operator asked for a reinstall.
    Reimage,
    /// Boot-loop protection stopped installing it ([`crate::bootloop`]).
    BootLoopDetected {
        /// Install scripts in the window.
        count: usize,
        /// The window, minutes.
        window_min: i64,
    },
}

/// Who says a machine is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Its `installed` callback.
    Callback,
    /// Flatcar's `installed` callback: `flatcar-install` finished (k0s comes next).
    FlatcarDisk,
    /// The node answered the Talos API over mTLS.
    TalosApi(IpAddr),
}

/// Why a transition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{trigger:?} is not allowed in state {state}")]
pub struct Refused {
    /// The state the machine is in.
    pub state: MachineState,
    /// What was attempted.
    pub trigger: Trigger,
}

/// The next state, or why the trigger is refused in `state`.
pub fn next(state: MachineState, trigger: Trigger) -> Result<MachineState, Refused> {
    use MachineState::*;
    use Trigger::*;
    let refused = Err(Refused { state, trigger });
    match (state, trigger) {
        // An installed machine only installs again after an explicit reimage, and so
        // does one that boot-loop protection stopped.
        (Installed | BootLoop, InstallScriptServed | ConfigFetched { .. }) => refused,
        // Only an install in progress can loop.
        (Discovered | Booting | ConfigServed | ReimageRequested, BootLoopDetected { .. }) => Ok(BootLoop),
        (Installed | BootLoop, BootLoopDetected { .. }) => refused,
        (_, InstallScriptServed) => Ok(Booting),
        // The config token is only issued with an install script, so a fetch without
        // one (Discovered) means a stale or forged token: refuse.
        (Discovered, ConfigFetched { .. }) => refused,
        (_, ConfigFetched { .. }) => Ok(ConfigServed),
        (_, InstallReported(_)) => Ok(Installed),
        // k0s runs on the installed disk: only an installed machine reports it.
        (Installed, K0sReported) => Ok(Installed),
        (_, K0sReported) => refused,
        (_, Reimage) => Ok(ReimageRequested),
    }
}

impl Trigger {
    /// The event that records the trigger itself, before any state change.
    fn event(self) -> Option<Event> {
        match self {
            Self::InstallScriptServed => None,
            Self::ConfigFetched { bytes, config } => Some(Event::ConfigServed { bytes, config }),
            Self::InstallReported(Report::Callback) => Some(Event::Installed(Reporter::Callback)),
            Self::InstallReported(Report::TalosApi(ip)) => Some(Event::Installed(Reporter::TalosApi { ip })),
            Self::InstallReported(Report::FlatcarDisk) => Some(Event::DiskInstalled),
            Self::K0sReported => Some(Event::K0sInstalled),
            Self::Reimage => Some(Event::ReimageRequested),
            Self::BootLoopDetected { count, window_min } => {
                Some(Event::BootLoopDetected { count, window_min })
            }
        }
    }
}

impl Machine {
    /// Applies `trigger` at `now`: the new state and what goes with it, and the
    /// events to append in the same commit (the trigger's own event, then
    /// `state_changed` when the state moved). A refused trigger changes nothing.
    pub fn apply(&mut self, trigger: Trigger, now: OffsetDateTime) -> Result<Vec<TimelineEvent>, Refused> {
        let to = next(self.state, trigger)?;
        let mut events = Vec::with_capacity(2);
        events.extend(trigger.event().map(|e| e.at(now)));
        if to != self.state {
            events.push(Event::StateChanged { from: self.state, to }.at(now));
            self.state = to;
        }
        match trigger {
            // An operator's request is not the machine talking.
            Trigger::Reimage => self.install_boots.clear(),
            Trigger::InstallScriptServed => {
                self.last_seen = now;
                self.pending_approval = None;
            }
            _ => self.last_seen = now,
        }
        if to == MachineState::Installed {
            // It made it: boot-loop counting starts over, and its approval (one
            // install window) is used up; a re-image asks again.
            self.install_boots.clear();
            self.approval = None;
            self.pending_approval = None;
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MachineState::*;
    use Trigger::*;

    const FETCHED: Trigger = ConfigFetched {
        bytes: 1,
        config: ConfigKind::Talos,
    };
    const REPORTED: Trigger = InstallReported(Report::Callback);
    const LOOP: Trigger = BootLoopDetected {
        count: 5,
        window_min: 60,
    };

    #[test]
    fn transition_table() {
        let table = [
            (Discovered, InstallScriptServed, Some(Booting)),
            (Booting, InstallScriptServed, Some(Booting)),
            (ConfigServed, InstallScriptServed, Some(Booting)),
            (ReimageRequested, InstallScriptServed, Some(Booting)),
            (Installed, InstallScriptServed, None),
            (Discovered, FETCHED, None),
            (Booting, FETCHED, Some(ConfigServed)),
            (ConfigServed, FETCHED, Some(ConfigServed)),
            (ReimageRequested, FETCHED, Some(ConfigServed)),
            (Installed, FETCHED, None),
            (Booting, REPORTED, Some(Installed)),
            (ConfigServed, REPORTED, Some(Installed)),
            (Installed, REPORTED, Some(Installed)),
            (Installed, Reimage, Some(ReimageRequested)),
            (Discovered, Reimage, Some(ReimageRequested)),
            (BootLoop, Reimage, Some(ReimageRequested)),
            (BootLoop, InstallScriptServed, None),
            (BootLoop, FETCHED, None),
            (BootLoop, REPORTED, Some(Installed)),
            (Booting, LOOP, Some(BootLoop)),
            (ConfigServed, LOOP, Some(BootLoop)),
            (ReimageRequested, LOOP, Some(BootLoop)),
            (Installed, LOOP, None),
            (Installed, K0sReported, Some(Installed)),
            (ConfigServed, K0sReported, None),
        ];
        for (from, t, want) in table {
            assert_eq!(next(from, t).ok(), want, "{from} + {t:?}");
        }
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_790_000_000 + secs).unwrap()
    }

    fn machine(state: MachineState) -> Machine {
        let mut m = Machine::discovered(crate::model::MacAddr([0x52, 0x54, 0, 0, 0, 1]), at(0));
        m.state = state;
        m
    }

    #[test]
    fn apply_records_the_trigger_then_the_state_change() {
        let mut m = machine(Booting);
        let ip: IpAddr = "10.9.0.11".parse().unwrap();
        m.install_boots = vec![1, 2];
        let events = m.apply(InstallReported(Report::TalosApi(ip)), at(5)).unwrap();
        let got: Vec<Event> = events.into_iter().map(|e| e.event).collect();
        assert_eq!(
            got,
            [
                Event::Installed(Reporter::TalosApi { ip }),
                Event::StateChanged {
                    from: Booting,
                    to: Installed
                }
            ]
        );
        assert_eq!((m.state, m.last_seen), (Installed, at(5)));
        assert!(m.install_boots.is_empty(), "boot-loop history starts over");
        // Reported again: the event, no state change.
        let again = m.apply(InstallReported(Report::Callback), at(6)).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].event, Event::Installed(Reporter::Callback));
    }

    #[test]
    fn refused_trigger_changes_nothing() {
        let mut m = machine(Installed);
        let before = m.clone();
        assert_eq!(
            m.apply(FETCHED, at(9)),
            Err(Refused {
                state: Installed,
                trigger: FETCHED
            })
        );
        assert_eq!(m, before);
    }

    #[test]
    fn reimage_is_not_the_machine_talking() {
        let mut m = machine(Installed);
        m.install_boots = vec![1];
        let events = m.apply(Reimage, at(9)).unwrap();
        assert_eq!(events[0].event, Event::ReimageRequested);
        assert_eq!(m.last_seen, at(0), "an operator's request leaves last_seen alone");
        assert!(m.install_boots.is_empty());
        assert_eq!(m.state, ReimageRequested);
    }

    #[test]
    fn install_script_has_no_own_event_and_ends_waiting() {
        let mut m = machine(Discovered);
        m.pending_approval = Some(crate::release::admission::PendingApproval {
            code: "ABCD-EFGH".into(),
            uuid: None,
            peer: "10.0.0.9".parse().unwrap(),
            since: at(0),
            denied_by: None,
        });
        let events = m.apply(InstallScriptServed, at(3)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind(), crate::timeline::EventKind::StateChanged);
        assert!(m.pending_approval.is_none());
    }
}
