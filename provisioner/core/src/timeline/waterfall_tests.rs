//! The waterfall of real boot sequences, with exact numbers.

use time::Duration;
use time::macros::datetime;

use super::*;
use crate::catalog::ConfigKind;
use crate::dhcp::Personality;
use crate::timeline::{DhcpMessage, DhcpSeen, DhcpSent, Reporter};

fn t0() -> OffsetDateTime {
    datetime!(2026-09-21 12:00 UTC)
}

fn seen(message: u8, port: u16, client: ClientKind) -> Event {
    Event::DhcpSeen(DhcpSeen {
        message: DhcpMessage(message),
        port,
        personality: Personality::Proxy,
        client,
        arch: Some(7),
        relay: None,
    })
}

fn sent(message: u8) -> Event {
    Event::DhcpSent(DhcpSent {
        message: DhcpMessage(message),
        address: None,
        boot_file: Some("snponly.efi".into()),
        to: "10.9.0.50:68".parse().unwrap(),
    })
}

fn script(answer: ScriptAnswer) -> Event {
    Event::IpxeScriptServed(answer)
}

fn install() -> Event {
    script(ScriptAnswer::Install {
        profile: "talos-cp".into(),
        image: "talos-1.11".into(),
    })
}

fn asset(file: &str) -> Event {
    Event::AssetServed {
        file: file.into(),
        bytes: 1,
    }
}

fn config() -> Event {
    Event::ConfigServed {
        bytes: 1,
        config: ConfigKind::Talos,
    }
}

/// `(ms after t0, event)` → timeline.
fn tl(steps: Vec<(i64, Event)>) -> Vec<TimelineEvent> {
    steps
        .into_iter()
        .map(|(ms, e)| e.at(t0() + Duration::milliseconds(ms)))
        .collect()
}

fn bars(a: &Attempt) -> Vec<(Phase, i64, i64)> {
    a.bars
        .iter()
        .map(|b| (b.phase, b.start_ms, b.duration_ms))
        .collect()
}

/// Firmware PXE → TFTP iPXE → iPXE's DHCP → script → kernel + initrd → config →
/// installed: one attempt, six contiguous bars.
#[test]
fn a_full_pxe_boot_is_one_attempt_of_six_bars() {
    let events = tl(vec![
        (0, seen(1, 67, ClientKind::Pxe)),
        (2, sent(2)),
        (1_000, seen(3, 4011, ClientKind::Pxe)),
        (1_003, sent(5)),
        (
            3_500,
            Event::TftpServed {
                file: "snponly.efi".into(),
                bytes: 200_000,
            },
        ),
        // The chain-loaded iPXE's own DHCP: the same boot going on.
        (4_000, seen(1, 67, ClientKind::Ipxe)),
        (4_001, sent(2)),
        (5_250, install()),
        (9_000, asset("talos-1.11/vmlinuz")),
        (21_400, asset("talos-1.11/initramfs.xz")),
        (48_000, config()),
        (
            48_010,
            Event::StateChanged {
                from: crate::model::MachineState::Booting,
                to: crate::model::MachineState::ConfigServed,
            },
        ),
        (170_000, Event::Installed(Reporter::Callback)),
    ]);
    let w = waterfall(&events);
    assert_eq!(w.len(), 1);
    let a = &w[0];
    assert_eq!((a.number, a.started, a.total_ms), (1, t0(), 170_000));
    assert_eq!(a.outcome, Outcome::Installed);
    assert_eq!(
        bars(a),
        [
            (Phase::Dhcp, 0, 1_003),
            (Phase::Tftp, 1_003, 2_497),
            (Phase::Ipxe, 3_500, 1_750),
            (Phase::Kernel, 5_250, 16_150),
            (Phase::Config, 21_400, 26_600),
            (Phase::Installed, 48_000, 122_000),
        ]
    );
    assert_eq!(a.bars[0].events, 4);
    assert_eq!(a.bars[3].events, 2);
    assert_eq!(a.bars.iter().map(|b| b.duration_ms).sum::<i64>(), a.total_ms);
}

/// A boot that stopped after the kernel, a fresh DISCOVER (the firmware retried):
/// two attempts, the first abandoned at kernel/initrd; the second, with iPXE in ROM,
/// has no TFTP bar and is still open at config.
#[test]
fn a_new_discover_after_progress_starts_a_new_attempt() {
    let events = tl(vec![
        (0, seen(1, 67, ClientKind::Pxe)),
        (10, sent(2)),
        (
            500,
            Event::TftpServed {
                file: "ipxe.efi".into(),
                bytes: 1,
            },
        ),
        (700, seen(1, 67, ClientKind::Ipxe)),
        (900, install()),
        (2_900, asset("vmlinuz")),
        // Rebooted: iPXE in ROM this time.
        (60_000, seen(1, 67, ClientKind::Ipxe)),
        (60_040, sent(2)),
        (60_300, install()),
        (61_300, asset("vmlinuz")),
        (64_800, asset("initrd")),
        (65_000, config()),
        // A kernel fetched again after the config runs inside the open bar; the k0s
        // mirror files the installed OS downloads are no boot step.
        (65_500, asset("vmlinuz")),
        (66_000, asset("mirror k0s/v1.33/k0s")),
    ]);
    let w = waterfall(&events);
    assert_eq!(w.len(), 2);
    assert_eq!(
        w[0].outcome,
        Outcome::Abandoned {
            reached: Phase::Kernel
        }
    );
    assert_eq!(
        bars(&w[0]),
        [
            (Phase::Dhcp, 0, 10),
            (Phase::Tftp, 10, 490),
            (Phase::Ipxe, 500, 400),
            (Phase::Kernel, 900, 2_000),
        ]
    );
    assert_eq!(w[0].total_ms, 2_900);
    let b = &w[1];
    assert_eq!(b.number, 2);
    assert_eq!(b.started, t0() + Duration::seconds(60));
    assert_eq!(
        b.outcome,
        Outcome::Open {
            reached: Phase::Config
        }
    );
    assert_eq!(
        bars(b),
        [
            (Phase::Dhcp, 0, 40),
            (Phase::Ipxe, 40, 260),
            (Phase::Kernel, 300, 4_500),
            (Phase::Config, 4_800, 200),
        ]
    );
    assert_eq!(b.total_ms, 5_000);
}

/// Without DHCP seen (an external server chains to `/ipxe`), a script after the
/// kernel was fetched is a new attempt; script answers name the outcome.
#[test]
fn scripts_split_attempts_and_name_outcomes() {
    let events = tl(vec![
        (
            0,
            script(ScriptAnswer::Unknown {
                reason: "no group".into(),
            }),
        ),
        (1_000, install()),
        (1_500, asset("vmlinuz")),
        (9_000, install()),
        (9_100, Event::ReimageRequested),
        (
            20_000,
            script(ScriptAnswer::Local {
                reason: "installed".into(),
            }),
        ),
        // The installed k0s node fetches its binaries from the mirror: no bar.
        (25_000, asset("mirror k0s/v1.33/k0s")),
    ]);
    let w = waterfall(&events);
    assert_eq!(w.len(), 2);
    // The first two scripts are one iPXE bar (iPXE retried before any kernel).
    assert_eq!(
        bars(&w[0]),
        [(Phase::Ipxe, 0, 1_000), (Phase::Kernel, 1_000, 500)]
    );
    assert_eq!(w[0].bars[0].events, 2);
    assert_eq!(
        w[0].outcome,
        Outcome::Abandoned {
            reached: Phase::Kernel
        }
    );
    // Its second script was an install: the answer that counts is the last one.
    assert_eq!(bars(&w[1]), [(Phase::Ipxe, 0, 11_000)]);
    assert_eq!(w[1].outcome, Outcome::LocalBoot);
    assert_eq!(w[1].started, t0() + Duration::seconds(9));
    assert!(waterfall(&[]).is_empty());
    let only_state = tl(vec![(0, Event::ReimageRequested)]);
    assert!(waterfall(&only_state).is_empty());
}

#[test]
fn durations_read_as_people_write_them() {
    assert_eq!(duration_label(0), "0 ms");
    assert_eq!(duration_label(999), "999 ms");
    assert_eq!(duration_label(1_000), "1.0 s");
    assert_eq!(duration_label(1_003), "1.0 s");
    assert_eq!(duration_label(2_497), "2.5 s");
    assert_eq!(duration_label(59_949), "59.9 s");
    assert_eq!(duration_label(59_950), "1 min 00 s");
    assert_eq!(duration_label(122_000), "2 min 02 s");
    assert_eq!(duration_label(3_599_499), "59 min 59 s");
    assert_eq!(duration_label(7_380_000), "2 h 03 min");
    assert_eq!(duration_label(-5), "0 ms");
}
