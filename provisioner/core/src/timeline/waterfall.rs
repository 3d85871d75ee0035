//! A machine's boot as a waterfall: per attempt, one bar per boot phase
//! (DHCP → TFTP → iPXE → kernel/initrd → config → installed) with its duration.
//!
//! Each bar ends at the last event of its phase (the TFTP transfer completed, the
//! script served, the last kernel/initrd byte sent, the config fetched, the install
//! reported) and starts where the previous bar ended, so the bars of an attempt are
//! contiguous and add up to the attempt's length: "where did the time go". The first
//! bar starts at the attempt's first event (a DHCP bar spans DISCOVER … ACK).
//!
//! A new attempt starts when the machine begins again:
//! - a DHCP DISCOVER after the attempt got past DHCP, except the DISCOVER of the
//!   iPXE binary we just sent over TFTP (client iPXE right after the TFTP phase): that
//!   one is the same boot going on (boot-protocols.md §6: firmware PXE → TFTP iPXE →
//!   iPXE's own DHCP → `/ipxe`);
//! - an `/ipxe` script after the attempt already fetched its kernel (a reboot we saw
//!   no DHCP of, e.g. with an external DHCP server chaining to `/ipxe`).
//!
//! Other events of an earlier phase than the attempt reached (iPXE's own DHCP, a
//! kernel fetched again) belong to the bar that is running and move no boundary.
//! Events outside the boot path (state changes, refusals, power, k0s mirror files
//! the installed OS downloads) are not bars.

use serde::Serialize;
use time::OffsetDateTime;

use super::{Event, ScriptAnswer, TimelineEvent};
use crate::dhcp::classify::ClientKind;

/// A phase of a network boot, in boot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// DHCP exchange (firmware DISCOVER … OFFER/ACK).
    Dhcp,
    /// The iPXE binary over TFTP.
    Tftp,
    /// The `/ipxe` script (after iPXE's own DHCP).
    Ipxe,
    /// Kernel and initrd over HTTP.
    Kernel,
    /// The one-time machine config.
    Config,
    /// The installed OS reported back.
    Installed,
}

impl Phase {
    /// Every phase, in boot order.
    pub const ALL: [Self; 6] = [
        Self::Dhcp,
        Self::Tftp,
        Self::Ipxe,
        Self::Kernel,
        Self::Config,
        Self::Installed,
    ];

    /// The label an operator reads.
    pub fn label(self) -> &'static str {
        match self {
            Self::Dhcp => "DHCP",
            Self::Tftp => "TFTP",
            Self::Ipxe => "iPXE",
            Self::Kernel => "kernel/initrd",
            Self::Config => "config",
            Self::Installed => "installed",
        }
    }

    /// The phase `event` belongs to, if it is a step of the boot path.
    pub fn of(event: &Event) -> Option<Self> {
        Some(match event {
            Event::DhcpSeen(_) | Event::DhcpSent(_) => Self::Dhcp,
            Event::TftpServed { .. } => Self::Tftp,
            Event::IpxeScriptServed(_) => Self::Ipxe,
            // Mirror files (k0s binaries, fetched by the installed OS) are not boot files.
            Event::AssetServed { file, .. } if file.starts_with("mirror ") => return None,
            Event::AssetServed { .. } => Self::Kernel,
            Event::ConfigServed { .. } => Self::Config,
            Event::Installed(_) | Event::DiskInstalled => Self::Installed,
            _ => return None,
        })
    }
}

/// One bar: a phase of one attempt. Offsets are from the attempt's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bar {
    /// Which phase.
    pub phase: Phase,
    /// Where the bar starts, ms after the attempt's start.
    pub start_ms: i64,
    /// Where it ends (the phase's last event), ms after the attempt's start.
    pub end_ms: i64,
    /// `end_ms - start_ms`.
    pub duration_ms: i64,
    /// Events of this phase in the attempt.
    pub events: usize,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The installed OS reported back.
    Installed,
    /// The script said: boot the local disk.
    LocalBoot,
    /// The script said: no profile for this machine.
    NoProfile,
    /// A newer attempt started before this one finished.
    Abandoned {
        /// The last phase it reached.
        reached: Phase,
    },
    /// The newest attempt, still going (or stuck) after `reached`.
    Open {
        /// The last phase it reached.
        reached: Phase,
    },
}

/// One network boot of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// 1 for the oldest attempt in the timeline.
    pub number: usize,
    /// Its first event.
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// The end of its last bar, ms after `started`.
    pub total_ms: i64,
    /// Its bars in boot order (phases it skipped, e.g. TFTP for a machine with iPXE
    /// in ROM, have none).
    pub bars: Vec<Bar>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Per phase reached: first and last event time and the count.
#[derive(Debug, Clone)]
struct Span {
    phase: Phase,
    first: OffsetDateTime,
    last: OffsetDateTime,
    events: usize,
}

#[derive(Debug, Default)]
struct Building {
    spans: Vec<Span>,
    answer: Option<Outcome>,
}

impl Building {
    fn reached(&self) -> Option<Phase> {
        self.spans.last().map(|s| s.phase)
    }

    /// Whether `event` (of `phase`) begins a new boot rather than continuing this one.
    fn restarts(&self, event: &Event, phase: Phase) -> bool {
        let Some(reached) = self.reached() else {
            return false;
        };
        match event {
            // RFC 2131 §4.4.1: DISCOVER (option 53 = 1) is how a client starts over.
            Event::DhcpSeen(d) if d.message.0 == 1 => {
                let chained_ipxe = d.client == ClientKind::Ipxe && reached == Phase::Tftp;
                reached > Phase::Dhcp && !chained_ipxe
            }
            Event::IpxeScriptServed(_) => phase == Phase::Ipxe && reached >= Phase::Kernel,
            _ => false,
        }
    }

    fn add(&mut self, at: OffsetDateTime, event: &Event, phase: Phase) {
        if let Event::IpxeScriptServed(answer) = event {
            self.answer = match answer {
                ScriptAnswer::Install { .. } => None,
                ScriptAnswer::Local { .. } => Some(Outcome::LocalBoot),
                ScriptAnswer::Unknown { .. } => Some(Outcome::NoProfile),
            };
        }
        match self.spans.last_mut() {
            Some(s) if s.phase == phase => {
                s.last = at;
                s.events += 1;
            }
            // An earlier phase's straggler runs inside the current bar.
            Some(s) if s.phase > phase => {}
            _ => self.spans.push(Span {
                phase,
                first: at,
                last: at,
                events: 1,
            }),
        }
    }

    fn finish(self, number: usize, newest: bool) -> Option<Attempt> {
        let first = self.spans.first()?;
        let started = first.first;
        let ms = |t: OffsetDateTime| (t - started).whole_milliseconds() as i64;
        let mut prev_end = 0;
        let bars: Vec<Bar> = self
            .spans
            .iter()
            .map(|s| {
                let end_ms = ms(s.last).max(prev_end);
                let bar = Bar {
                    phase: s.phase,
                    start_ms: prev_end,
                    end_ms,
                    duration_ms: end_ms - prev_end,
                    events: s.events,
                };
                prev_end = end_ms;
                bar
            })
            .collect();
        let reached = self.spans.last()?.phase;
        let outcome = match (reached, self.answer) {
            (Phase::Installed, _) => Outcome::Installed,
            (_, Some(answer)) => answer,
            _ if newest => Outcome::Open { reached },
            _ => Outcome::Abandoned { reached },
        };
        Some(Attempt {
            number,
            started,
            total_ms: prev_end,
            bars,
            outcome,
        })
    }
}

/// The boot attempts in `timeline` (oldest first, as stored), oldest first.
pub fn waterfall(timeline: &[TimelineEvent]) -> Vec<Attempt> {
    let mut done: Vec<Building> = Vec::new();
    let mut cur = Building::default();
    for e in timeline {
        let Some(phase) = Phase::of(&e.event) else {
            continue;
        };
        if cur.restarts(&e.event, phase) {
            done.push(std::mem::take(&mut cur));
        }
        cur.add(e.at, &e.event, phase);
    }
    done.push(cur);
    let n = done.len();
    done.into_iter()
        .enumerate()
        .filter_map(|(i, b)| b.finish(i + 1, i + 1 == n))
        .collect()
}

/// A duration for a bar's label: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`
/// (rounded, integer arithmetic so the label is the same on every platform).
pub fn duration_label(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        if tenths < 600 {
            return format!("{}.{} s", tenths / 10, tenths % 10);
        }
    }
    let secs = (ms + 500) / 1_000;
    if secs < 3_600 {
        return format!("{} min {:02} s", secs / 60, secs % 60);
    }
    let mins = (secs + 30) / 60;
    format!("{} h {:02} min", mins / 60, mins % 60)
}

#[cfg(test)]
#[path = "waterfall_tests.rs"]
mod tests;
