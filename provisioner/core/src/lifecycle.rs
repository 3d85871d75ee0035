//! Machine state transitions, as pure functions of (state, event). The daemon applies
//! them inside one store transaction together with the timeline events they cause.

use crate::model::MachineState;

/// Something the boot path observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An install script was served.
    InstallScriptServed,
    /// The machine's one-time config was fetched.
    ConfigFetched,
    /// The installed OS reported back.
    InstallReported,
    /// An operator asked for a reinstall.
    Reimage,
    /// Boot-loop protection stopped installing it ([`crate::bootloop`]).
    BootLoopDetected,
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
    match (state, trigger) {
        // An installed machine only installs again after an explicit reimage, and so
        // does one that boot-loop protection stopped.
        (Installed | BootLoop, InstallScriptServed | ConfigFetched) => Err(Refused { state, trigger }),
        // Only an install in progress can loop.
        (Discovered | Booting | ConfigServed | ReimageRequested, BootLoopDetected) => Ok(BootLoop),
        (Installed | BootLoop, BootLoopDetected) => Err(Refused { state, trigger }),
        (_, InstallScriptServed) => Ok(Booting),
        // The config token is only issued with an install script, so a fetch without
        // one (Discovered) means a stale or forged token: refuse.
        (Discovered, ConfigFetched) => Err(Refused { state, trigger }),
        (_, ConfigFetched) => Ok(ConfigServed),
        (_, InstallReported) => Ok(Installed),
        (_, Reimage) => Ok(ReimageRequested),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MachineState::*;
    use Trigger::*;

    #[test]
    fn transition_table() {
        let table = [
            (Discovered, InstallScriptServed, Some(Booting)),
            (Booting, InstallScriptServed, Some(Booting)),
            (ConfigServed, InstallScriptServed, Some(Booting)),
            (ReimageRequested, InstallScriptServed, Some(Booting)),
            (Installed, InstallScriptServed, None),
            (Discovered, ConfigFetched, None),
            (Booting, ConfigFetched, Some(ConfigServed)),
            (ConfigServed, ConfigFetched, Some(ConfigServed)),
            (ReimageRequested, ConfigFetched, Some(ConfigServed)),
            (Installed, ConfigFetched, None),
            (Booting, InstallReported, Some(Installed)),
            (ConfigServed, InstallReported, Some(Installed)),
            (Installed, InstallReported, Some(Installed)),
            (Installed, Reimage, Some(ReimageRequested)),
            (Discovered, Reimage, Some(ReimageRequested)),
            (BootLoop, Reimage, Some(ReimageRequested)),
            (BootLoop, InstallScriptServed, None),
            (BootLoop, ConfigFetched, None),
            (BootLoop, InstallReported, Some(Installed)),
            (Booting, BootLoopDetected, Some(BootLoop)),
            (ConfigServed, BootLoopDetected, Some(BootLoop)),
            (ReimageRequested, BootLoopDetected, Some(BootLoop)),
            (Installed, BootLoopDetected, None),
        ];
        for (from, t, want) in table {
            assert_eq!(next(from, t).ok(), want, "{from} + {t:?}");
        }
    }
}
