//! The machine page's boot waterfall (`core::timeline::waterfall`) as inline SVG:
//! bar positions are computed here and written as SVG geometry attributes (`x`,
//! `width`), never as `style`, so the strict CSP (`style-src 'self'`) holds.

use provisioner_core::timeline::TimelineEvent;
use provisioner_core::timeline::waterfall::{Attempt, Outcome, duration_label, waterfall};
use serde::Serialize;

/// Where the bars are drawn in the SVG's user space (`viewBox="0 0 1000 h"`): phase
/// names left of `BAR_X`, bars across `BAR_W`, the duration after each bar.
const BAR_X: i64 = 130;
const BAR_W: i64 = 700;
const ROW: i64 = 24;

/// The newest attempts shown (older ones are in the timeline below).
const SHOWN: usize = 5;

#[derive(Debug, Serialize)]
pub(super) struct BarView {
    phase: &'static str,
    label: &'static str,
    x: i64,
    width: i64,
    y: i64,
    text_x: i64,
    text_y: i64,
    duration_ms: i64,
    duration: String,
}

#[derive(Debug, Serialize)]
pub(super) struct AttemptView {
    number: usize,
    started: String,
    total: String,
    total_ms: i64,
    outcome: String,
    height: i64,
    bars: Vec<BarView>,
}

fn outcome(o: Outcome) -> String {
    match o {
        Outcome::Installed => "installed".into(),
        Outcome::LocalBoot => "local boot".into(),
        Outcome::NoProfile => "no profile".into(),
        Outcome::Abandoned { reached } => format!("restarted after {}", reached.label()),
        Outcome::Open { reached } => format!("in progress: {} done", reached.label()),
    }
}

fn attempt(a: &Attempt) -> AttemptView {
    // A scale of at least 1 ms: an attempt of one instant still draws.
    let scale = a.total_ms.max(1);
    let bars = a
        .bars
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let x = BAR_X + b.start_ms * BAR_W / scale;
            // At least 2 units wide, so a bar of a few ms is still seen.
            let width = (b.duration_ms * BAR_W / scale).max(2);
            let y = 4 + i as i64 * ROW;
            BarView {
                phase: phase_key(b.phase),
                label: b.phase.label(),
                x,
                width,
                y,
                text_x: x + width + 6,
                text_y: y + 14,
                duration_ms: b.duration_ms,
                duration: duration_label(b.duration_ms),
            }
        })
        .collect::<Vec<_>>();
    AttemptView {
        number: a.number,
        started: a
            .started
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        total: duration_label(a.total_ms),
        total_ms: a.total_ms,
        outcome: outcome(a.outcome),
        height: 8 + bars.len() as i64 * ROW,
        bars,
    }
}

fn phase_key(p: provisioner_core::timeline::waterfall::Phase) -> &'static str {
    use provisioner_core::timeline::waterfall::Phase;
    match p {
        Phase::Dhcp => "dhcp",
        Phase::Tftp => "tftp",
        Phase::Ipxe => "ipxe",
        Phase::Kernel => "kernel",
        Phase::Config => "config",
        Phase::Installed => "installed",
    }
}

/// The newest attempts of `timeline`, newest first.
pub(super) fn view(timeline: &[TimelineEvent]) -> Vec<AttemptView> {
    let all = waterfall(timeline);
    all.iter().rev().take(SHOWN).map(attempt).collect()
}

#[cfg(test)]
mod tests {
    use provisioner_core::timeline::{Event, ScriptAnswer};
    use time::macros::datetime;

    use super::*;

    /// Bars are placed in proportion across the bar area: a script at 0, the kernel
    /// done 1000 ms later.
    #[test]
    fn bars_are_drawn_in_proportion_with_their_labels() {
        let t0 = datetime!(2026-09-21 12:00 UTC);
        let tl = vec![
            Event::IpxeScriptServed(ScriptAnswer::Install {
                profile: "lab".into(),
                image: "img".into(),
            })
            .at(t0),
            Event::AssetServed {
                file: "img/vmlinuz".into(),
                bytes: 1,
            }
            .at(t0 + time::Duration::milliseconds(1_000)),
        ];
        let v = view(&tl);
        assert_eq!(v.len(), 1);
        let (ipxe, kernel) = (&v[0].bars[0], &v[0].bars[1]);
        // A zero-length bar still shows (2 units), at the left edge.
        assert_eq!((ipxe.x, ipxe.width, ipxe.duration.as_str()), (BAR_X, 2, "0 ms"));
        assert_eq!(
            (kernel.x, kernel.width, kernel.duration.as_str()),
            (BAR_X, BAR_W, "1.0 s")
        );
        assert_eq!(kernel.text_x, BAR_X + BAR_W + 6);
        assert_eq!(
            (v[0].total.as_str(), v[0].outcome.as_str()),
            ("1.0 s", "in progress: kernel/initrd done")
        );
        assert_eq!(v[0].height, 8 + 2 * ROW);
    }
}
