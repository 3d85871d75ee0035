//! Keeping the state bounded on a network the appliance does not control: with
//! `unknown_policy: record` every new MAC (DHCP or `/ipxe`, spoofable) becomes a
//! machine record, and every install leaves one-time tokens behind. A periodic sweep
//! forgets `Discovered` records that never booted (older than an age, beyond a count;
//! core `inventory::expired_discovered`: nothing an operator touched) and drops live
//! tokens past their TTL and spent tokens past their keep time.

use std::sync::Arc;
use std::time::Duration;

use provisioner_core::inventory::{Inventory, InventoryError, TokenPurpose, TokenRecord, expired_discovered};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// `housekeeping:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Housekeeping {
    /// How often the sweep runs.
    pub every_minutes: u32,
    /// A `Discovered` record not seen for this long is forgotten.
    pub discovered_max_age_hours: u32,
    /// At most this many never-booted `Discovered` records; beyond it the least
    /// recently seen go first.
    pub discovered_max: usize,
    /// Install callback tokens (`/callback/<t>/installed`, `k0s-installed`) work this
    /// long after the install script was rendered.
    pub callback_token_ttl_hours: u32,
    /// Spent tokens are kept this long (a later replay is refused as unknown).
    pub spent_token_days: u32,
    /// New machine records from sightings alone (not installs), per minute, for all
    /// MACs together (0: no limit).
    pub first_seen_per_minute: u32,
}

impl Default for Housekeeping {
    /// A 500-machine site: a week of strangers, 5,000 of them at most; an install
    /// (download, disk write, first boot) well within a day.
    fn default() -> Self {
        Self {
            every_minutes: 10,
            discovered_max_age_hours: 7 * 24,
            discovered_max: 5_000,
            callback_token_ttl_hours: 24,
            spent_token_days: 7,
            first_seen_per_minute: 600,
        }
    }
}

impl Housekeeping {
    /// [`Self::callback_token_ttl_hours`] as a duration.
    pub fn callback_token_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.callback_token_ttl_hours) * 3600)
    }
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Machine records forgotten.
    pub machines: usize,
    /// Tokens dropped (live past the TTL and spent past the keep time).
    pub tokens: usize,
}

/// One sweep at `now`; `config_ttl` is the config tokens' TTL.
pub fn sweep(
    inventory: &dyn Inventory,
    cfg: &Housekeeping,
    config_ttl: Duration,
    now: OffsetDateTime,
) -> Result<Swept, InventoryError> {
    let hours = |h: u32| time::Duration::hours(i64::from(h));
    let machines = inventory.list()?;
    // Only the few never-booted candidates get their timeline read. A read error
    // keeps the record (the safe direction) and is reported below.
    let mut failed = None;
    let expired = expired_discovered(
        &machines,
        now,
        hours(cfg.discovered_max_age_hours),
        cfg.discovered_max,
        &mut |m| match inventory.timeline(m.mac) {
            Ok(t) => !t.is_empty(),
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    );
    if let Some(e) = failed {
        return Err(e);
    }
    for mac in &expired {
        inventory.delete(*mac)?;
    }
    let config_ttl = time::Duration::try_from(config_ttl).unwrap_or(time::Duration::MAX);
    let callback_ttl = hours(cfg.callback_token_ttl_hours);
    let expired_token = |t: &TokenRecord| {
        let ttl = match t.purpose {
            TokenPurpose::Config => config_ttl,
            TokenPurpose::InstalledCallback | TokenPurpose::K0sInstalledCallback => callback_ttl,
        };
        now - t.issued_at > ttl
    };
    let spent_before = now - time::Duration::days(i64::from(cfg.spent_token_days));
    let tokens = inventory.drop_tokens(&expired_token, spent_before)?;
    metrics::counter!("provisioner_discovered_expired_total").increment(expired.len() as u64);
    metrics::counter!("provisioner_tokens_collected_total").increment(tokens as u64);
    Ok(Swept {
        machines: expired.len(),
        tokens,
    })
}

/// Sweeps every [`Housekeeping::every_minutes`] (the first right away) until
/// `shutdown`. A failed sweep is logged and retried next time.
pub async fn run(
    inventory: Arc<dyn Inventory>,
    cfg: Housekeeping,
    config_ttl: Duration,
    shutdown: CancellationToken,
) {
    let every = Duration::from_secs(u64::from(cfg.every_minutes.max(1)) * 60);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let (inv, cfg) = (inventory.clone(), cfg.clone());
                let r = tokio::task::spawn_blocking(move || {
                    sweep(inv.as_ref(), &cfg, config_ttl, OffsetDateTime::now_utc())
                })
                .await;
                match r {
                    Ok(Ok(s)) if s != Swept::default() => {
                        tracing::info!(machines = s.machines, tokens = s.tokens, "housekeeping");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "housekeeping failed"),
                    Err(e) => tracing::warn!(error = %e, "housekeeping task failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use provisioner_core::model::{MacAddr, Machine, MachineState};

    use super::*;
    use crate::store::RedbInventory;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn seen(n: u8, ago: time::Duration, now: OffsetDateTime) -> Machine {
        let mut m = Machine::discovered(mac(n), now - ago);
        m.last_seen = now - ago;
        m
    }

    const REJECTED: provisioner_core::timeline::Rejection =
        provisioner_core::timeline::Rejection::WrongEndpoint;

    /// Stores `m` with the sighting that created it, as the DHCP and `/ipxe` paths do.
    fn sighted(inv: &dyn Inventory, m: &Machine) {
        inv.apply(m.mac, &mut |_| provisioner_core::inventory::Update {
            machine: Some(m.clone()),
            events: vec![provisioner_core::model::TimelineEvent::new(
                m.last_seen,
                // Any event: what matters is that the network put one there.
                provisioner_core::model::Event::TokenRejected(REJECTED),
            )],
            ..Default::default()
        })
        .unwrap();
    }

    fn token(inv: &RedbInventory, key: &str, n: u8, purpose: TokenPurpose, issued: OffsetDateTime) {
        let rec = TokenRecord {
            mac: mac(n),
            purpose,
            issued_at: issued,
            peer: None,
        };
        inv.issue_token(key, &rec).unwrap();
    }

    #[test]
    fn sweep_forgets_strangers_and_stale_tokens_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let inv = RedbInventory::open(&dir.path().join("inv.redb")).unwrap();
        let now = OffsetDateTime::now_utc();
        let h = time::Duration::hours;
        // A stranger seen 8 days ago (past the 7-day age).
        sighted(&inv, &seen(1, h(8 * 24), now));
        // As old, but created by an operator (imported, no sighting): kept.
        inv.put(&seen(4, h(8 * 24), now)).unwrap();
        // The same age, but an operator set its profile: kept.
        let mut operator = seen(2, h(8 * 24), now);
        operator.profile = Some("lab".into());
        sighted(&inv, &operator);
        // Booted long ago: not Discovered any more, kept.
        let mut booted = seen(3, h(30 * 24), now);
        booted.state = MachineState::Installed;
        inv.put(&booted).unwrap();
        // Three young strangers over a cap of two: the least recently seen goes.
        for (n, ago) in [(10, 3), (11, 2), (12, 1)] {
            sighted(&inv, &seen(n, h(ago), now));
        }
        token(&inv, "config-old", 3, TokenPurpose::Config, now - h(2));
        token(
            &inv,
            "config-new",
            10,
            TokenPurpose::Config,
            now - time::Duration::minutes(5),
        );
        token(&inv, "cb-old", 3, TokenPurpose::InstalledCallback, now - h(25));
        token(&inv, "cb-new", 11, TokenPurpose::InstalledCallback, now - h(1));
        token(
            &inv,
            "spent-old",
            12,
            TokenPurpose::InstalledCallback,
            now - h(9 * 24),
        );
        inv.take_token("spent-old", now - h(8 * 24)).unwrap();
        token(&inv, "spent-new", 12, TokenPurpose::Config, now - h(1));
        inv.take_token("spent-new", now - h(1)).unwrap();

        let cfg = Housekeeping {
            discovered_max: 2,
            ..Housekeeping::default()
        };
        let swept = sweep(&inv, &cfg, Duration::from_secs(30 * 60), now).unwrap();
        assert_eq!(
            swept,
            Swept {
                machines: 2,
                tokens: 3
            }
        );
        let left: Vec<MacAddr> = inv.list().unwrap().iter().map(|m| m.mac).collect();
        assert_eq!(left, vec![mac(2), mac(3), mac(4), mac(11), mac(12)]);
        assert!(inv.live_token("config-old").unwrap().is_none());
        assert!(inv.live_token("cb-old").unwrap().is_none());
        assert!(
            inv.live_token("config-new").unwrap().is_none(),
            "mac 10 was forgotten with its tokens"
        );
        assert!(inv.live_token("cb-new").unwrap().is_some());
        assert!(inv.spent_token("spent-old").unwrap().is_none());
        assert!(inv.spent_token("spent-new").unwrap().is_some());
        // A second sweep finds nothing.
        assert_eq!(
            sweep(&inv, &cfg, Duration::from_secs(1800), now).unwrap(),
            Swept::default()
        );
    }

    /// A flood of random MACs stays under the cap however many arrive.
    #[test]
    fn the_cap_holds_under_a_flood() {
        let inv = provisioner_core::inventory::MemInventory::new();
        let now = OffsetDateTime::now_utc();
        let cfg = Housekeeping {
            discovered_max: 100,
            ..Housekeeping::default()
        };
        for round in 0..5u8 {
            for n in 0..=255u8 {
                let mut m = Machine::discovered(MacAddr([2, 0, 0, 0, round, n]), now);
                m.last_seen = now - time::Duration::seconds(i64::from(n));
                sighted(&inv, &m);
            }
            sweep(&inv, &cfg, Duration::from_secs(1800), now).unwrap();
            assert_eq!(inv.list().unwrap().len(), 100);
        }
    }
}
