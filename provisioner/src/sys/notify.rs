//! systemd service notifications (`sd_notify(3)`): `READY=1` once every listener is
//! bound (the unit is `Type=notify`, so dependants start only then), `WATCHDOG=1`
//! pings while the runtime is alive when the unit sets `WatchdogSec=`, and
//! `STOPPING=1` on shutdown. Outside systemd (`$NOTIFY_SOCKET` unset) every call is a
//! no-op, so `provisioner serve` behaves the same from a shell.
//!
//! The datagrams are sent by the `sd-notify` crate; it also reads `$WATCHDOG_USEC`
//! and `$WATCHDOG_PID` as `sd_watchdog_enabled(3)` specifies.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Tells systemd the service is ready, with a status line for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the service is stopping (so a slow drain is not a hang).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// The ping period for `WatchdogSec=`: half the interval, as `sd_watchdog_enabled(3)`
/// recommends, so one late tick does not get the service killed.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Pings the watchdog from a runtime task until `shutdown`, but only while `answering`
/// is `true` (the stores answered their last health round trip in time,
/// `service::health`). A wedged runtime or a hung store stops the pings and systemd
/// restarts the service (`Restart=on-failure` covers `WatchdogSec` timeouts).
pub fn spawn_watchdog(
    answering: watch::Receiver<bool>,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let period = watchdog_period()?;
    tracing::info!(?period, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if *answering.borrow() {
                        send(&[NotifyState::Watchdog]);
                    } else {
                        tracing::warn!("store not answering: withholding the watchdog ping");
                    }
                }
            }
        }
    }))
}

fn send(state: &[NotifyState<'_>]) {
    // A failed notification must not stop the appliance: systemd then times the start
    // out (or kills on watchdog), which is the visible failure we want.
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
