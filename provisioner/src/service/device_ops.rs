//! The operator's side of the device flow (approve or deny a device authorization,
//! list the waiting ones) and the bearer check a device-flow profile's
//! `/config/<t>` needs: the access token must be the one issued for *this*
//! machine's approved device code, unexpired and unused.

use std::net::IpAddr;

use provisioner_core::inventory::TokenRecord;
use provisioner_core::model::MacAddr;
use provisioner_core::release::admission::codes_equal;
use provisioner_core::release::binding::Stage;
use provisioner_core::release::device::{Grant, GrantState};

use super::device::now_ms;
use super::tokens::token_key;
use super::{BootService, ServiceError};

/// One operator-visible device authorization.
#[derive(Debug, Clone)]
pub(super) struct GrantInfo {
    pub mac: MacAddr,
    pub user_code: String,
    pub uuid: Option<String>,
    pub peer: IpAddr,
    pub state: GrantState,
    pub expires_ms: i64,
}

impl BootService {
    /// An operator's decision on `mac`'s pending device authorization (its user
    /// code must match `code` if given). Returns the decided grant's code, if any.
    pub(super) fn device_decide(
        &self,
        mac: MacAddr,
        code: Option<&str>,
        approve: bool,
        token_id: &str,
    ) -> Option<GrantInfo> {
        let t = now_ms();
        let mut grants = self.device.grants.lock().ok()?;
        let g = grants.values_mut().find(|g| {
            g.mac == mac
                && matches!(g.state, GrantState::Pending | GrantState::Denied(_))
                && !g.expired(t)
                && code.is_none_or(|c| codes_equal(c, &g.user_code))
        })?;
        g.state = if approve {
            GrantState::Approved(token_id.to_string())
        } else {
            GrantState::Denied(token_id.to_string())
        };
        Some(info(g))
    }

    /// Device authorizations not yet exchanged and not expired.
    pub(super) fn device_waiting(&self) -> Vec<GrantInfo> {
        let t = now_ms();
        self.device.grants.lock().map_or_else(
            |_| Vec::new(),
            |g| {
                g.values()
                    .filter(|g| !g.expired(t) && g.state != GrantState::Issued)
                    .map(info)
                    .collect()
            },
        )
    }

    /// The bearer check of a device-flow profile's `/config/<t>`: `Some(key)` of the
    /// access token to spend once the config is served; `None` when the profile
    /// does not use the device flow.
    pub(super) fn check_bearer(
        &self,
        rec: &TokenRecord,
        peer: Option<IpAddr>,
        bearer: Option<&str>,
    ) -> Result<Option<String>, ServiceError> {
        let machine = self.inventory.get(rec.mac)?;
        let needed = self
            .plan_of(rec.mac, machine.as_ref())
            .is_some_and(|p| p.profile.device_flow.is_some());
        if !needed {
            return Ok(None);
        }
        let refuse = |code: &'static str, reason: String| -> Result<Option<String>, ServiceError> {
            self.refuse(rec.mac, Stage::Config, peer, code, &reason, false)?;
            Err(ServiceError::Refused(reason))
        };
        let Some(bearer) = bearer else {
            return refuse(
                "device_token_missing",
                "this profile releases its config only with the bearer token of an approved device \
                 authorization (talos.config.oauth.*)"
                    .into(),
            );
        };
        let key = token_key(bearer);
        let access = self.device.access.lock().ok().and_then(|a| a.get(&key).cloned());
        match access {
            Some(a) if a.mac == rec.mac && a.expires_ms > now_ms() => Ok(Some(key)),
            Some(a) if a.mac == rec.mac => refuse("device_token_expired", "the bearer token expired".into()),
            Some(a) => refuse(
                "device_token_foreign",
                format!(
                    "the bearer token belongs to another machine's device authorization ({})",
                    a.mac
                ),
            ),
            None => refuse(
                "device_token_unknown",
                "unknown or already used bearer token".into(),
            ),
        }
    }
}

fn info(g: &Grant) -> GrantInfo {
    GrantInfo {
        mac: g.mac,
        user_code: g.user_code.clone(),
        uuid: g.uuid.clone(),
        peer: g.peer,
        state: g.state.clone(),
        expires_ms: g.expires_ms,
    }
}
