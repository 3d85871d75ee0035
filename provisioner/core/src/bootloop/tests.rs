//! The boot-loop rule as a state machine: the lifecycle transitions and the guard
//! driven together over event sequences, as the boot service applies them.

use super::*;
use crate::lifecycle::{self, Trigger};
use MachineState::*;

const MIN: i64 = 60;

fn guard() -> LoopGuard {
    LoopGuard {
        max_installs: 3,
        window_secs: 10 * MIN,
    }
}

/// (state, stored history, now, halts?, history kept afterwards)
type Row = (MachineState, &'static [i64], i64, bool, &'static [i64]);

#[test]
fn verdict_table() {
    let g = guard();
    let table: [Row; 8] = [
        (Discovered, &[], 0, false, &[0]),
        (Booting, &[0], 60, false, &[0, 60]),
        (ConfigServed, &[0, 60], 120, false, &[0, 60, 120]),
        // The fourth install inside ten minutes is one too many.
        (Booting, &[0, 60, 120], 180, true, &[0, 60, 120, 180]),
        // Old boots fall out of the window.
        (Booting, &[0, 60, 120], 11 * MIN, false, &[120, 11 * MIN]),
        // A re-imaged machine keeps its recent history (the API clears it on re-image).
        (ReimageRequested, &[0, 60, 120], 180, true, &[0, 60, 120, 180]),
        // A discovered machine starts over whatever is stored.
        (Discovered, &[0, 60, 120], 180, false, &[180]),
        // Timestamps from the future (clock stepped back) do not count.
        (Booting, &[500, 600, 700], 180, false, &[180]),
    ];
    for (state, hist, now, halts, want) in table {
        let v = g.on_install_script(state, hist, now);
        let (got_halt, got_hist) = match &v {
            Verdict::Install { history } => (false, history.clone()),
            Verdict::Halt { history, .. } => (true, history.clone()),
        };
        assert_eq!(got_halt, halts, "{state} {hist:?} @{now}: {v:?}");
        assert_eq!(got_hist, want, "{state} {hist:?} @{now}");
    }
}

#[test]
fn disabled_guard_never_halts_and_history_stays_bounded() {
    let g = LoopGuard {
        max_installs: 0,
        window_secs: 10 * MIN,
    };
    let mut hist = vec![];
    for t in 0..100 {
        match g.on_install_script(Booting, &hist, t) {
            Verdict::Install { history } => hist = history,
            v => panic!("disabled guard halted: {v:?}"),
        }
    }
    assert_eq!(hist.len(), 1);
}

/// What the boot path sees, in order.
#[derive(Debug, Clone, Copy)]
enum Input {
    InstallScript(i64),
    Config,
    Reported,
    Reimage,
}

/// Applies inputs like the boot service does; returns the state after each and whether
/// each install script was answered with an install.
fn run(g: LoopGuard, inputs: &[Input]) -> Vec<(MachineState, Option<bool>)> {
    let mut state = Discovered;
    let mut hist: Vec<i64> = vec![];
    let mut out = vec![];
    for i in inputs {
        let served = match *i {
            Input::InstallScript(now) => {
                if matches!(state, Installed | BootLoop) {
                    Some(false) // local boot, no guard involved
                } else {
                    match g.on_install_script(state, &hist, now) {
                        Verdict::Install { history } => {
                            hist = history;
                            state = lifecycle::next(state, Trigger::InstallScriptServed).unwrap();
                            Some(true)
                        }
                        Verdict::Halt { history, .. } => {
                            hist = history;
                            state = lifecycle::next(
                                state,
                                Trigger::BootLoopDetected {
                                    count: 0,
                                    window_min: 0,
                                },
                            )
                            .unwrap();
                            Some(false)
                        }
                    }
                }
            }
            Input::Config => {
                state = lifecycle::next(
                    state,
                    Trigger::ConfigFetched {
                        bytes: 0,
                        config: crate::catalog::ConfigKind::Talos,
                    },
                )
                .unwrap_or(state);
                None
            }
            Input::Reported => {
                state =
                    lifecycle::next(state, Trigger::InstallReported(lifecycle::Report::Callback)).unwrap();
                hist.clear();
                None
            }
            Input::Reimage => {
                state = lifecycle::next(state, Trigger::Reimage).unwrap();
                hist.clear();
                None
            }
        };
        out.push((state, served));
    }
    out
}

#[test]
fn reinstall_loop_is_stopped_and_reimage_restarts_it() {
    use Input::*;
    let steps = run(
        guard(),
        &[
            InstallScript(0),
            Config,
            InstallScript(2 * MIN), // installer rebooted before reporting back
            Config,
            InstallScript(4 * MIN),
            InstallScript(6 * MIN), // 4th in 10 min: halted
            InstallScript(7 * MIN), // still local boot
            Reimage,
            InstallScript(8 * MIN), // fresh history: installs
            Config,
            Reported,
            InstallScript(9 * MIN), // installed: local boot
        ],
    );
    let want = [
        (Booting, Some(true)),
        (ConfigServed, None),
        (Booting, Some(true)),
        (ConfigServed, None),
        (Booting, Some(true)),
        (BootLoop, Some(false)),
        (BootLoop, Some(false)),
        (ReimageRequested, None),
        (Booting, Some(true)),
        (ConfigServed, None),
        (Installed, None),
        (Installed, Some(false)),
    ];
    assert_eq!(steps, want);
}

#[test]
fn slow_retries_never_trip_the_guard() {
    use Input::*;
    let inputs: Vec<Input> = (0..20).map(|i| InstallScript(i * 4 * MIN)).collect();
    let steps = run(guard(), &inputs);
    assert!(
        steps
            .iter()
            .all(|(s, served)| *s == Booting && *served == Some(true))
    );
}
