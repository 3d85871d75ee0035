//! One-time tokens: issuing them (hashed in the store), deriving callback tokens
//! from the config token, and taking them back exactly once.

use provisioner_core::boot::InstallPlan;
use provisioner_core::catalog::ConfigKind;
use provisioner_core::inventory::{TokenPurpose, TokenRecord};
use provisioner_core::model::{EventKind, MacAddr};
use provisioner_core::render::BootUrls;
use provisioner_core::render::config::ConfigUrls;
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

    /// Issues a new config token and its callback token(s) for `mac`, revoking older
    /// ones. Flatcar machines also get the `K0sInstalled` callback token.
    pub(super) fn issue_tokens(&self, mac: MacAddr, plan: &InstallPlan) -> Result<BootUrls, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let config = new_token();
        let issue = |token: &str, purpose| {
            self.inventory.issue_token(
                &token_key(token),
                &TokenRecord {
                    mac,
                    purpose,
                    issued_at: now,
                },
            )
        };
        issue(&config, TokenPurpose::Config)?;
        issue(
            &derived_token(&config, INSTALLED),
            TokenPurpose::InstalledCallback,
        )?;
        if plan.profile.config == ConfigKind::Flatcar {
            issue(
                &derived_token(&config, K0S_INSTALLED),
                TokenPurpose::K0sInstalledCallback,
            )?;
        }
        let urls = self.config_urls(&config);
        Ok(BootUrls {
            base: self.base.clone(),
            config: format!("{}/config/{config}", self.base),
            callback: urls.installed,
        })
    }

    pub(super) fn take(&self, token: &str, purpose: TokenPurpose) -> Result<TokenRecord, ServiceError> {
        match self.inventory.take_token(&token_key(token))? {
            Some(rec) if rec.purpose == purpose => Ok(rec),
            Some(rec) => {
                // Presented at the wrong endpoint: it is spent, and that is suspicious.
                self.record(
                    rec.mac,
                    EventKind::TokenRejected,
                    "token used at the wrong endpoint",
                )?;
                Err(ServiceError::BadToken)
            }
            None => Err(ServiceError::BadToken),
        }
    }
}
