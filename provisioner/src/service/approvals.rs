//! Operator decisions on config release: approve or deny a machine waiting for
//! admission or its device authorization, and clear a UUID pin. Each decision is
//! one durable commit with a timeline event and an `audit` log line that name the
//! API token's id (never the token).

use std::net::IpAddr;

use provisioner_core::inventory::Update;
use provisioner_core::model::{Event, MacAddr, Machine};
use provisioner_core::release::admission::{Approval, codes_equal};
use provisioner_core::release::device::GrantState;
use provisioner_core::timeline::{ApprovalFlow, Verdict};
use serde::Serialize;
use time::OffsetDateTime;

use super::device_ops::GrantInfo;
use super::{BootService, ServiceError};

/// Why an operator decision could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No such machine.
    #[error("no machine {0}")]
    NotFound(MacAddr),
    /// Nothing (with that code) waits for a decision.
    #[error("{0} has no pending approval{1}")]
    NothingPending(MacAddr, String),
    /// The store failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What waits for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    /// An install in `approve` admission mode (or an unverifiable peer, or an
    /// unknown machine with secrets): the code is on its iPXE console.
    Admission,
    /// A Talos OAuth device authorization: the code is on the Talos console.
    DeviceAuthorization,
}

/// One machine waiting for (or just given) a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Pending {
    /// What kind of approval.
    pub kind: PendingKind,
    /// The machine's boot MAC.
    pub mac: String,
    /// The user code its console shows.
    pub code: String,
    /// The SMBIOS UUID it presented.
    pub uuid: Option<String>,
    /// The address it asked from.
    pub peer: String,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    /// When a device authorization's code expires (RFC 3339).
    pub expires: Option<String>,
}

fn from_grant(g: &GrantInfo) -> Pending {
    Pending {
        kind: PendingKind::DeviceAuthorization,
        mac: g.mac.to_string(),
        code: g.user_code.clone(),
        uuid: g.uuid.clone(),
        peer: g.peer.to_string(),
        status: match g.state {
            GrantState::Pending => "pending",
            GrantState::Approved(_) => "approved",
            GrantState::Denied(_) => "denied",
            GrantState::Issued => "issued",
        }
        .into(),
        expires: OffsetDateTime::from_unix_timestamp(g.expires_ms / 1000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
    }
}

fn admission_pending(mac: MacAddr, code: &str, uuid: Option<&str>, peer: IpAddr, status: &str) -> Pending {
    Pending {
        kind: PendingKind::Admission,
        mac: mac.to_string(),
        code: code.to_string(),
        uuid: uuid.map(str::to_string),
        peer: peer.to_string(),
        status: status.into(),
        expires: None,
    }
}

impl BootService {
    /// Approves what `mac` waits for: its admission (the approval binds its MAC and
    /// the UUID it presented, for the install window) and/or its device
    /// authorization. With `code`, only the request showing that code.
    pub fn approve(
        &self,
        mac: MacAddr,
        code: Option<&str>,
        token_id: &str,
    ) -> Result<Vec<Pending>, ApprovalError> {
        self.decide(mac, code, true, token_id)
    }

    /// Denies what `mac` waits for: a denied device authorization gets
    /// `access_denied`; a denied admission keeps waiting and says so on its console.
    pub fn deny(
        &self,
        mac: MacAddr,
        code: Option<&str>,
        token_id: &str,
    ) -> Result<Vec<Pending>, ApprovalError> {
        self.decide(mac, code, false, token_id)
    }

    fn decide(
        &self,
        mac: MacAddr,
        code: Option<&str>,
        approve: bool,
        token_id: &str,
    ) -> Result<Vec<Pending>, ApprovalError> {
        let verb = if approve { "approved" } else { "denied" };
        let event = |v: Verdict| {
            if approve {
                Event::Approved(v)
            } else {
                Event::Denied(v)
            }
        };
        let mut done = Vec::new();
        if let Some(g) = self.device_decide(mac, code, approve, token_id) {
            let v = Verdict {
                flow: ApprovalFlow::Device,
                code: g.user_code.clone(),
                uuid: g.uuid.clone(),
                peer: g.peer,
                token_id: token_id.to_string(),
                until: None,
            };
            self.record(mac, event(v))?;
            done.push(from_grant(&g));
        }
        let now = OffsetDateTime::now_utc();
        let expires = now + self.release().approval_window;
        let mut exists = false;
        let mut decided = None;
        self.inventory
            .apply(mac, &mut |cur| {
                exists = cur.is_some();
                let Some(mut m) = cur else {
                    return Update::default();
                };
                let Some(p) = m
                    .pending_approval
                    .clone()
                    .filter(|p| code.is_none_or(|c| codes_equal(c, &p.code)))
                else {
                    return Update::default();
                };
                if approve {
                    m.approval = Some(Approval {
                        uuid: p.uuid.clone(),
                        token_id: token_id.to_string(),
                        at: now,
                        expires,
                    });
                    m.pending_approval = None;
                } else if let Some(pending) = m.pending_approval.as_mut() {
                    pending.denied_by = Some(token_id.to_string());
                }
                let v = Verdict {
                    flow: ApprovalFlow::Admission,
                    code: p.code.clone(),
                    uuid: p.uuid.clone(),
                    peer: p.peer,
                    token_id: token_id.to_string(),
                    until: approve.then_some(expires),
                };
                decided = Some(admission_pending(mac, &p.code, p.uuid.as_deref(), p.peer, verb));
                Update {
                    machine: Some(m),
                    events: vec![event(v).at(now)],
                    ..Update::default()
                }
            })
            .map_err(ServiceError::from)?;
        done.extend(decided);
        if done.is_empty() {
            if !exists {
                return Err(ApprovalError::NotFound(mac));
            }
            let with = code.map(|c| format!(" with code {c}")).unwrap_or_default();
            return Err(ApprovalError::NothingPending(mac, with));
        }
        for d in &done {
            metrics::counter!("provisioner_approvals_total", "kind" => match d.kind {
                super::PendingKind::Admission => "admission",
                super::PendingKind::DeviceAuthorization => "device",
            }, "action" => verb)
            .increment(1);
            tracing::info!(target: "audit", %mac, token_id, code = %d.code, kind = ?d.kind, action = verb, "config release decision");
        }
        Ok(done)
    }

    /// Clears `mac`'s UUID pin; the next UUID a bound request presents is pinned.
    pub fn unpin(&self, mac: MacAddr, token_id: &str) -> Result<Machine, ApprovalError> {
        let mut unpinned = false;
        let stored = self
            .inventory
            .apply(mac, &mut |cur| {
                let Some(mut m) = cur else {
                    return Update::default();
                };
                let Some(old) = m.pinned_uuid.take() else {
                    return Update::default();
                };
                unpinned = true;
                let event = Event::UuidUnpinned {
                    uuid: old,
                    token_id: token_id.to_string(),
                };
                Update {
                    machine: Some(m),
                    events: vec![event.at(OffsetDateTime::now_utc())],
                    ..Update::default()
                }
            })
            .map_err(ServiceError::from)?;
        let Some(m) = stored else {
            return Err(ApprovalError::NotFound(mac));
        };
        if unpinned {
            metrics::counter!("provisioner_approvals_total", "kind" => "uuid_pin", "action" => "unpinned")
                .increment(1);
            tracing::info!(target: "audit", %mac, token_id, action = "unpin", "UUID pin cleared");
        }
        Ok(m)
    }

    /// Everything waiting for an operator: admissions (stored) and device
    /// authorizations (in memory).
    pub fn pending(&self) -> Result<Vec<Pending>, ServiceError> {
        let mut out: Vec<Pending> = self
            .inventory
            .list()?
            .into_iter()
            .filter_map(|m| {
                let p = m.pending_approval?;
                let status = if p.denied_by.is_some() {
                    "denied"
                } else {
                    "pending"
                };
                Some(admission_pending(
                    m.mac,
                    &p.code,
                    p.uuid.as_deref(),
                    p.peer,
                    status,
                ))
            })
            .collect();
        out.extend(self.device_waiting().iter().map(from_grant));
        Ok(out)
    }
}
