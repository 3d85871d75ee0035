//! Boot-loop protection.
//!
//! An `Installed` machine already gets local boot, so the real risk is a machine that
//! keeps *re-installing*: its installer fails or reboots before reporting back, the
//! firmware netboots again, and every round serves another install script. The rule:
//! if a machine is served more than `max_installs` install scripts within `window`
//! without reaching `Installed`, stop offering install, answer local boot, move it to
//! [`MachineState::BootLoop`] and raise a `boot_loop_detected` event. Reaching
//! `Installed` or an operator re-image clears the history.

use crate::model::MachineState;

/// The configurable limits (N installs in M seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopGuard {
    /// More install scripts than this inside the window is a loop. 0 disables the guard.
    pub max_installs: u32,
    /// The window, in seconds.
    pub window_secs: i64,
}

impl Default for LoopGuard {
    /// 5 installs in 30 minutes: a real install takes a few minutes and a retry or two
    /// after a transient failure is normal.
    fn default() -> Self {
        Self {
            max_installs: 5,
            window_secs: 30 * 60,
        }
    }
}

/// What to do with an install script about to be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; store `history` (this boot included) on the machine.
    Install {
        /// The new install history, oldest first.
        history: Vec<i64>,
    },
    /// Do not install: answer local boot and move the machine to `BootLoop`.
    Halt {
        /// Install scripts in the window, this one included.
        count: usize,
        /// The new install history, oldest first.
        history: Vec<i64>,
    },
}

impl LoopGuard {
    /// Decides for an install script requested at `now` (Unix seconds) by a machine in
    /// `state` whose earlier install boots are `history`. Only install decisions reach
    /// this: `Installed` and `BootLoop` machines get local boot before it.
    pub fn on_install_script(&self, state: MachineState, history: &[i64], now: i64) -> Verdict {
        // A discovered machine or one re-imaged on purpose starts a fresh count; the
        // caller also clears the history on `Installed` and on re-image.
        let mut kept: Vec<i64> = match state {
            MachineState::Discovered => Vec::new(),
            _ => history
                .iter()
                .copied()
                .filter(|t| *t > now - self.window_secs && *t <= now)
                .collect(),
        };
        kept.push(now);
        // Bounded: only the last max_installs + 1 entries can matter.
        let keep = self.max_installs as usize + 1;
        if kept.len() > keep {
            kept.drain(..kept.len() - keep);
        }
        if self.max_installs > 0 && kept.len() > self.max_installs as usize {
            Verdict::Halt {
                count: kept.len(),
                history: kept,
            }
        } else {
            Verdict::Install { history: kept }
        }
    }
}

#[cfg(test)]
mod tests;
