//! The RFC 8628 endpoints Talos' `talos.config.oauth.*` client talks to (see
//! `provisioner_core::release::device` for what it sends); the operator's decision
//! and the bearer check on `/config/<t>` are in `device_ops`.
//!
//! A device code is bound to the machine (boot MAC, resolved from the `mac` extra
//! variable, which Talos fills with its *first* NIC), the UUID it sent and the peer
//! that passed binding; an operator approves or denies it by MAC and user code. The
//! access token it yields works once, only on that machine's config URL.
//!
//! Grants live in memory (hashed device codes and access tokens, never the values):
//! after a restart a polling node gets `invalid_grant`, Talos' config download
//! fails and is retried from a fresh device authorization.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use provisioner_core::model::{Event, MacAddr};
use provisioner_core::release::admission;
use provisioner_core::release::binding::{self, Stage};
use provisioner_core::release::device::{
    Grant, GrantState, TokenError, parse_device_auth, parse_token_request,
};
use provisioner_core::release::smbios::{PinCheck, UuidField, check_pin};
use provisioner_core::timeline::{ApprovalFlow, ApprovalRequest};
use rand::RngCore;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::tokens::token_key;
use super::{BootService, ServiceError};

/// Most device authorizations kept; the oldest go first.
const MAX_GRANTS: usize = 1024;

/// A refused device-flow request: the RFC 6749 §5.2 error and a description that
/// is safe to show (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRefusal {
    /// The error code.
    pub error: TokenError,
    /// `error_description`.
    pub description: String,
}

/// An issued access token, kept by its hash.
#[derive(Debug, Clone)]
pub(super) struct Access {
    pub(super) mac: MacAddr,
    pub(super) expires_ms: i64,
}

/// Device authorizations and access tokens, by hash.
#[derive(Debug, Default)]
pub(super) struct DeviceFlows {
    pub(super) grants: Mutex<HashMap<String, Grant>>,
    pub(super) access: Mutex<HashMap<String, Access>>,
}

impl DeviceFlows {
    /// Forgets a used access token.
    pub(super) fn spend(&self, key: &str) {
        if let Ok(mut a) = self.access.lock() {
            a.remove(key);
        }
    }
}

pub(super) fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn refusal(error: TokenError, description: impl Into<String>) -> DeviceRefusal {
    metrics::counter!("provisioner_device_flow_requests_total", "outcome" => error.code()).increment(1);
    DeviceRefusal {
        error,
        description: description.into(),
    }
}

impl BootService {
    /// `POST /device/code` (RFC 8628 §3.1-3.2). The outer error is a store failure.
    pub fn device_authorize(
        &self,
        body: &[u8],
        peer: Option<IpAddr>,
    ) -> Result<Result<Value, DeviceRefusal>, ServiceError> {
        let peer = peer.map(binding::canonical);
        let req = match parse_device_auth(body) {
            Ok(r) => r,
            Err(e) => return Ok(Err(refusal(e, "client_id is required"))),
        };
        let nic = match &req.mac {
            Some(Ok(m)) => Some(*m),
            Some(Err(bad)) => {
                return Ok(Err(refusal(
                    TokenError::InvalidRequest,
                    format!("mac {bad:?} is not a MAC address"),
                )));
            }
            None => peer.and_then(|ip| self.release().facts.neighbour(ip)),
        };
        let Some(nic) = nic else {
            return Ok(Err(refusal(
                TokenError::InvalidRequest,
                "which machine? send talos.config.oauth.extra_variable=mac",
            )));
        };
        let mac = self.boot_mac_of(nic);
        let machine = self.inventory.get(mac)?;
        let flow = self
            .plan_of(mac, machine.as_ref())
            .and_then(|p| p.profile.device_flow);
        let (Some(machine), Some(flow)) = (machine, flow) else {
            return Ok(Err(refusal(
                TokenError::InvalidRequest,
                format!("{mac} is not being installed with a device-flow profile"),
            )));
        };
        let denied =
            |code: &'static str, reason: String| -> Result<Result<Value, DeviceRefusal>, ServiceError> {
                self.refuse(mac, Stage::DeviceAuth, peer, code, &reason, false)?;
                Ok(Err(refusal(TokenError::AccessDenied, reason)))
            };
        if flow.client_id != req.client_id {
            return Ok(Err(refusal(TokenError::InvalidClient, "unknown client_id")));
        }
        let uuid = match &req.uuid {
            UuidField::Valid(u) => Some(u.clone()),
            _ => None,
        };
        let now = OffsetDateTime::now_utc();
        let approved = admission::covers(machine.approval.as_ref(), uuid.as_deref(), now);
        let script_peer = peer.filter(|ip| self.peer_mac(*ip) == Some(mac));
        if let Err(r) = self.bind(Stage::DeviceAuth, mac, peer, script_peer, approved) {
            return denied(r.code(), r.to_string());
        }
        if let PinCheck::Refused(r) = check_pin(machine.pinned_uuid.as_deref(), &req.uuid) {
            return denied(r.code(), r.to_string());
        }
        let Some(peer_ip) = peer else {
            return denied("binding_unverifiable", "no peer address".into());
        };
        let device_code = random_hex();
        let mut random = [0u8; 8];
        rand::rng().fill_bytes(&mut random);
        let user_code = admission::user_code(random);
        let release = self.release();
        let d = &release.device;
        let grant = Grant::new(
            mac,
            uuid.clone(),
            peer_ip,
            user_code.clone(),
            req.client_id.clone(),
            now_ms(),
            d.lifetime_secs,
            d.interval_secs,
        );
        if let Ok(mut g) = self.device.grants.lock() {
            let t = now_ms();
            // One live authorization per machine; expired ones go; the map stays bounded.
            g.retain(|_, old| {
                let replaced = old.mac == mac && old.state == GrantState::Pending;
                let stale = old.expired(t) && old.state != GrantState::Issued;
                !(replaced || stale)
            });
            while g.len() >= MAX_GRANTS {
                let Some(oldest) = g.iter().min_by_key(|(_, x)| x.created_ms).map(|(k, _)| k.clone()) else {
                    break;
                };
                g.remove(&oldest);
            }
            g.insert(token_key(&device_code), grant);
        }
        metrics::counter!("provisioner_device_flow_requests_total", "outcome" => "authorization_created")
            .increment(1);
        self.record(
            mac,
            Event::ApprovalRequested(ApprovalRequest {
                flow: ApprovalFlow::Device,
                code: user_code.clone(),
                uuid: uuid.clone(),
                peer: peer_ip,
                mac,
            }),
        )?;
        Ok(Ok(json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": d.verification_uri,
            "verification_uri_complete": format!("{}?code={user_code}", d.verification_uri),
            "expires_in": d.lifetime_secs,
            "interval": d.interval_secs,
        })))
    }

    /// `POST /token` (RFC 8628 §3.4-3.5). The outer error is a store failure.
    pub fn device_token(
        &self,
        body: &[u8],
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Result<Value, DeviceRefusal>, ServiceError> {
        let peer = peer.map(binding::canonical);
        let req = match parse_token_request(body, authorization) {
            Ok(r) => r,
            Err(e) => return Ok(Err(refusal(e, "malformed token request"))),
        };
        let key = token_key(&req.device_code);
        let t = now_ms();
        // Decide under the lock; record after it (a timeline write must not hold it).
        let (mac, grant_peer, client, answer) = {
            let mut grants = self
                .device
                .grants
                .lock()
                .map_err(|_| ServiceError::Conflict("lock".into()))?;
            match grants.get_mut(&key) {
                None => (None, None, true, Err(TokenError::InvalidGrant)),
                Some(g) if g.client_id != req.client_id => {
                    (Some(g.mac), Some(g.peer), false, Err(TokenError::InvalidClient))
                }
                Some(g) => {
                    let (mac, gp) = (g.mac, g.peer);
                    let interval = g.interval_secs;
                    let mut probe = g.clone();
                    let r = probe.poll(t, req.auth);
                    // Binding before the state moves: a stolen device code polled
                    // from elsewhere must not consume the approval.
                    let bound = self.bind(Stage::DeviceAuth, mac, peer, Some(gp), false).is_ok();
                    if bound {
                        *g = probe;
                        (Some(mac), Some(gp), true, r.map(|()| interval))
                    } else {
                        (Some(mac), Some(gp), true, Err(TokenError::AccessDenied))
                    }
                }
            }
        };
        let Some(mac) = mac else {
            // Guessed, or issued before a restart: on the timeline of whichever
            // machine last booted from this address.
            let shown = peer.map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(peer = %shown, "unknown device code presented (guessed, or from before a restart)");
            if let Some(m) = peer.and_then(|ip| self.peer_mac(ip)) {
                self.refuse(
                    m,
                    Stage::DeviceAuth,
                    peer,
                    "unknown_device_code",
                    "unknown device code (guessed, or issued before a restart)",
                    false,
                )?;
            }
            return Ok(Err(refusal(TokenError::InvalidGrant, "unknown device code")));
        };
        if !client {
            self.refuse(
                mac,
                Stage::DeviceAuth,
                peer,
                "invalid_client",
                "token request with another client_id",
                false,
            )?;
            return Ok(Err(refusal(
                TokenError::InvalidClient,
                "client_id does not match the device code",
            )));
        }
        match answer {
            Ok(_) => {
                let access = random_hex();
                let release = self.release();
                let d = &release.device;
                if let Ok(mut a) = self.device.access.lock() {
                    a.retain(|_, x| x.expires_ms > t);
                    a.insert(
                        token_key(&access),
                        Access {
                            mac,
                            expires_ms: t + i64::from(d.token_secs) * 1000,
                        },
                    );
                }
                metrics::counter!("provisioner_device_flow_requests_total", "outcome" => "token_issued")
                    .increment(1);
                self.record(
                    mac,
                    Event::DeviceTokenIssued {
                        peer,
                        token_secs: d.token_secs,
                    },
                )?;
                Ok(Ok(json!({
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": d.token_secs,
                })))
            }
            Err(e) => {
                let why = match e {
                    TokenError::AccessDenied if grant_peer.is_some_and(|gp| Some(gp) != peer) => Some((
                        "device_code_foreign_peer",
                        "device code polled from another host than the one it was issued to".to_string(),
                    )),
                    TokenError::SlowDown => Some((
                        "slow_down",
                        format!(
                            "polled faster than the interval; interval now {} s",
                            self.grant_interval(&key)
                        ),
                    )),
                    TokenError::InvalidGrant => Some((
                        "device_code_replayed",
                        "device code presented again after its token was issued".into(),
                    )),
                    TokenError::ExpiredToken => {
                        Some(("expired_token", "device code polled after it expired".into()))
                    }
                    _ => None,
                };
                if let Some((code, reason)) = why {
                    self.refuse(mac, Stage::DeviceAuth, peer, code, &reason, false)?;
                }
                Ok(Err(refusal(e, e.code())))
            }
        }
    }

    fn grant_interval(&self, key: &str) -> u32 {
        self.device
            .grants
            .lock()
            .ok()
            .and_then(|g| g.get(key).map(|x| x.interval_secs))
            .unwrap_or_default()
    }
}
