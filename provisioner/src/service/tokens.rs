//! One-time tokens: issuing them (hashed in the store), deriving callback tokens
//! from the config token, and taking them back exactly once. Config tokens also
//! expire (`config_token_ttl_minutes`). The store keeps spent tokens (hashed, per
//! machine, bounded), so a replay is refused *and* lands on the timeline of the
//! machine the token was issued to, not just in a counter.

use provisioner_core::boot::InstallPlan;
use provisioner_core::catalog::ConfigKind;
use provisioner_core::inventory::{SpentToken, TokenPurpose, TokenRecord};
use provisioner_core::model::{Event, MacAddr};
use provisioner_core::render::BootUrls;
use provisioner_core::render::config::ConfigUrls;
use provisioner_core::timeline::Rejection;
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{BootService, ServiceError};

/// A fresh 256-bit token, hex-encoded.
fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A callback token derived from the config token the machine presents, so the
/// config renderer can embed the same callback URLs the kernel command line
/// carries without the store keeping any token in the clear. SHA-256 with a label
/// per purpose: the callback token reveals nothing about the config token.
fn derived_token(config_token: &str, label: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"provisioner callback token\0");
    h.update(label.as_bytes());
    h.update(b"\0");
    h.update(config_token.as_bytes());
    hex::encode(h.finalize())
}

const INSTALLED: &str = "installed";
const K0S_INSTALLED: &str = "k0s-installed";

/// Stores key tokens by SHA-256, so a copy of the store holds no usable token.
pub fn token_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl BootService {
    /// The callback URLs that belong to a config token.
    pub(super) fn config_urls(&self, config_token: &str) -> ConfigUrls {
        ConfigUrls {
            base: self.base.clone(),
            installed: format!(
                "{}/callback/{}/{INSTALLED}",
                self.base,
                derived_token(config_token, INSTALLED)
            ),
            k0s_installed: format!(
                "{}/callback/{}/{K0S_INSTALLED}",
                self.base,
                derived_token(config_token, K0S_INSTALLED)
            ),
        }
    }

    /// A new config token and its callback token(s) for `mac`, as the URLs of its
    /// script and the records to issue in the same commit as the script's timeline
    /// entry (issuing revokes the machine's older tokens). Flatcar machines also get
    /// the `K0sInstalled` callback token. `peer` is the address the script goes to:
    /// the machine's later fetches are accepted from there (peer binding's multi-NIC
    /// rule).
    pub(super) fn new_tokens(
        &self,
        mac: MacAddr,
        plan: &InstallPlan,
        peer: Option<std::net::IpAddr>,
        now: OffsetDateTime,
    ) -> (BootUrls, Vec<(String, TokenRecord)>) {
        let config = new_token();
        let record = |purpose| TokenRecord {
            mac,
            purpose,
            issued_at: now,
            peer,
        };
        let mut tokens = vec![
            (token_key(&config), record(TokenPurpose::Config)),
            (
                token_key(&derived_token(&config, INSTALLED)),
                record(TokenPurpose::InstalledCallback),
            ),
        ];
        if plan.profile.config == ConfigKind::Flatcar {
            tokens.push((
                token_key(&derived_token(&config, K0S_INSTALLED)),
                record(TokenPurpose::K0sInstalledCallback),
            ));
        }
        let urls = self.config_urls(&config);
        let urls = BootUrls {
            base: self.base.clone(),
            config: format!("{}/config/{config}", self.base),
            callback: urls.installed,
        };
        (urls, tokens)
    }

    /// Takes the live token `token` for `purpose`. Refusals are recorded on the
    /// machine the token was bound to: at the wrong endpoint (`token_rejected`), an
    /// expired config token (`config_token_expired`; the age counts from the stored
    /// issue time, so a restart does not extend it), a replayed config token
    /// (`config_replay_refused`) or callback token (`token_rejected`).
    pub(super) fn take(&self, token: &str, purpose: TokenPurpose) -> Result<TokenRecord, ServiceError> {
        let key = token_key(token);
        let now = OffsetDateTime::now_utc();
        match self.inventory.take_token(&key, now)? {
            Some(rec) if rec.purpose != purpose => {
                // Presented at the wrong endpoint: it is spent, and that is suspicious.
                self.record(rec.mac, Event::TokenRejected(Rejection::WrongEndpoint))?;
                Err(ServiceError::BadToken)
            }
            Some(rec) if purpose == TokenPurpose::Config && now - rec.issued_at > self.config_token_ttl => {
                metrics::counter!("provisioner_config_tokens_expired_total").increment(1);
                self.record(
                    rec.mac,
                    Event::ConfigTokenExpired {
                        age_secs: (now - rec.issued_at).whole_seconds(),
                        ttl_secs: self.config_token_ttl.whole_seconds(),
                    },
                )?;
                Err(ServiceError::Expired)
            }
            Some(rec) if purpose != TokenPurpose::Config && now - rec.issued_at > self.callback_token_ttl => {
                self.record(
                    rec.mac,
                    Event::TokenRejected(Rejection::Expired {
                        age_secs: (now - rec.issued_at).whole_seconds(),
                        ttl_secs: self.callback_token_ttl.whole_seconds(),
                    }),
                )?;
                Err(ServiceError::Expired)
            }
            Some(rec) => Ok(rec),
            None => {
                if let Some(spent) = self.inventory.spent_token(&key)? {
                    self.replayed(&key, &spent, purpose)?;
                }
                Err(ServiceError::BadToken)
            }
        }
    }

    /// Counts a spent token presented again and records it on its machine's
    /// timeline, the first time this process sees that token replayed.
    fn replayed(&self, key: &str, spent: &SpentToken, endpoint: TokenPurpose) -> Result<(), ServiceError> {
        let what = provisioner_core::timeline::purpose_label(spent.record.purpose);
        metrics::counter!("provisioner_token_replays_total", "purpose" => what).increment(1);
        let first = self.replays_recorded.lock().is_ok_and(|mut seen| {
            // Bounded like the peer map.
            if seen.len() > 65_536 {
                seen.clear();
            }
            seen.insert(key.to_owned())
        });
        if !first {
            return Ok(());
        }
        let (how, at) = (spent.how, spent.at);
        let event = if spent.record.purpose == TokenPurpose::Config && endpoint == TokenPurpose::Config {
            Event::ConfigReplayRefused { how, at }
        } else {
            Event::TokenRejected(Rejection::Spent {
                purpose: spent.record.purpose,
                how,
                at,
            })
        };
        self.record(spent.record.mac, event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use provisioner_core::boot::{CatalogBooter, UnknownPolicy};
    use provisioner_core::inventory::{Inventory, MemInventory, TokenPurpose, TokenRecord};
    use time::OffsetDateTime;

    use crate::service::{BootService, ServiceError, token_key};

    fn callback(inv: &MemInventory, token: &str, age: time::Duration) {
        let rec = TokenRecord {
            mac: "52:54:00:00:00:09".parse().unwrap(),
            purpose: TokenPurpose::InstalledCallback,
            issued_at: OffsetDateTime::now_utc() - age,
            peer: None,
        };
        inv.issue_token(&token_key(token), &rec).unwrap();
    }

    #[test]
    fn callback_tokens_expire_after_their_ttl() {
        let inv = Arc::new(MemInventory::new());
        let booter = Arc::new(CatalogBooter {
            catalog: Default::default(),
            unknown: UnknownPolicy::Record,
        });
        let service = BootService::new(booter, inv.clone(), "http://127.0.0.1".into())
            .with_callback_token_ttl(std::time::Duration::from_secs(3600))
            // Peer binding is proven elsewhere (config_release.rs); here only the age.
            .with_release(crate::service::ReleasePolicy {
                binding: false,
                ..Default::default()
            });
        let mac = "52:54:00:00:00:09".parse().unwrap();
        inv.put(&provisioner_core::model::Machine::discovered(
            mac,
            OffsetDateTime::now_utc(),
        ))
        .unwrap();
        callback(&inv, "old-callback", time::Duration::hours(2));
        let r = service.installed("old-callback", None);
        assert!(matches!(r, Err(ServiceError::Expired)), "{r:?}");
        let timeline: Vec<String> = inv
            .timeline(mac)
            .unwrap()
            .iter()
            .map(|e| e.event.to_string())
            .collect();
        assert!(
            timeline.iter().any(|t| t.contains("callback token expired")),
            "{timeline:?}"
        );
        // Within the TTL the same kind of token is honoured.
        callback(&inv, "fresh-callback", time::Duration::minutes(5));
        assert!(
            !matches!(
                service.installed("fresh-callback", None),
                Err(ServiceError::Expired)
            ),
            "a fresh callback is not expired"
        );
    }
}
