//! Health of the appliance as its stores see it: `/healthz` on both listeners and
//! the systemd watchdog ask [`Health`], which writes and reads back a row in every
//! store ([`crate::store::Healing::round_trip`]; a failing one reopens its file).
//!
//! A green `/healthz` used to prove only that the runtime answered; a full disk then
//! wedged every lease and `/ipxe` while health stayed `ok`. Now a failed round trip
//! answers 503 `degraded: <store>: <reason>`. Round trips are coalesced (at most one
//! per [`FRESH`]) so an unauthenticated client polling `/healthz` on the boot port
//! cannot turn into an fsync flood, and bounded by [`TIMEOUT`] so a hung disk reports
//! `degraded` instead of hanging the health check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use crate::store::{Healed, Unhealthy};

/// A result younger than this is reused.
pub const FRESH: Duration = Duration::from_secs(1);
/// A round trip slower than this is a failure ("the store does not answer").
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// How often the monitor checks on its own (and feeds the watchdog's view).
pub const EVERY: Duration = Duration::from_secs(2);

/// A store file gave up: it could not be reopened for a reason other than I/O.
#[derive(Debug, thiserror::Error)]
#[error("store failed for good: {0}")]
pub struct FatalStore(pub String);

/// The stores' health, shared by the `/healthz` handlers, `/metrics` and the watchdog.
#[derive(Debug)]
pub struct Health {
    stores: Vec<Arc<dyn Healed>>,
    last: Mutex<Option<(Instant, Result<(), Unhealthy>)>>,
    probing: Arc<AtomicBool>,
    answering: watch::Sender<bool>,
}

impl Health {
    /// Health over these store files.
    pub fn new(stores: Vec<Arc<dyn Healed>>) -> Self {
        Self {
            stores,
            last: Mutex::new(None),
            probing: Arc::new(AtomicBool::new(false)),
            answering: watch::Sender::new(true),
        }
    }

    /// `true` while the last round trip finished within [`TIMEOUT`] and no store is
    /// fatally broken: the systemd watchdog is fed only then (`sys::notify`). A
    /// store that answers with an I/O error still counts as answering: it is healing
    /// itself (reopen), and a restart would not free the disk.
    pub fn answering(&self) -> watch::Receiver<bool> {
        self.answering.subscribe()
    }

    /// Every store's round trip (coalesced, bounded); `Err` names the store and why.
    pub async fn check(&self) -> Result<(), Unhealthy> {
        let mut last = self.last.lock().await;
        if let Some((at, r)) = last.as_ref()
            && at.elapsed() < FRESH
        {
            return r.clone();
        }
        let r = self.round_trip().await;
        *last = Some((Instant::now(), r.clone()));
        r
    }

    async fn round_trip(&self) -> Result<(), Unhealthy> {
        if self.probing.swap(true, Ordering::SeqCst) {
            self.answering.send_replace(false);
            return Err(Unhealthy(
                "store did not answer (the previous check still runs)".into(),
            ));
        }
        let (stores, probing) = (self.stores.clone(), self.probing.clone());
        let job = tokio::task::spawn_blocking(move || {
            let r = stores.iter().try_for_each(|s| s.healing().round_trip());
            probing.store(false, Ordering::SeqCst);
            r
        });
        let out = match tokio::time::timeout(TIMEOUT, job).await {
            Ok(Ok(r)) => {
                self.answering.send_replace(self.fatal().is_none());
                r
            }
            Ok(Err(e)) => {
                self.answering.send_replace(false);
                Err(Unhealthy(format!("health check failed: {e}")))
            }
            Err(_) => {
                self.answering.send_replace(false);
                Err(Unhealthy(format!("store did not answer within {TIMEOUT:?}")))
            }
        };
        metrics::gauge!("provisioner_healthy").set(if out.is_ok() { 1.0 } else { 0.0 });
        out
    }

    fn fatal(&self) -> Option<String> {
        self.stores.iter().find_map(|s| s.healing().fatal())
    }

    /// Checks every [`EVERY`] until `shutdown`, so a failed store heals (reopens) even
    /// when nothing else writes, and health is fresh for the watchdog. Ends with
    /// [`FatalStore`] when a store cannot be reopened: the process then exits non-zero
    /// and systemd restarts it (`Restart=on-failure`).
    pub async fn monitor(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), FatalStore> {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    if let Err(e) = self.check().await {
                        tracing::warn!(reason = %e, "degraded");
                    }
                    if let Some(e) = self.fatal() {
                        return Err(FatalStore(e));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn healthy_stores_answer_ok_and_checks_are_coalesced() {
        let dir = tempfile::tempdir().unwrap();
        let h = Arc::new(crate::store::RedbLeases::open(&dir.path().join("a.redb")).unwrap());
        let health = Health::new(vec![h]);
        health.check().await.unwrap();
        health.check().await.unwrap();
        assert!(*health.answering().borrow());
    }
}
