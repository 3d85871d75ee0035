//! `/ipxe`: the decision, the release checks (peer binding, UUID pin, admission),
//! the boot-loop guard, the tokens and the machine's script.
//!
//! The release checks run before anything that a refusal must not touch: a refused
//! or waiting request spends no token of the real machine, revokes none, and adds
//! nothing to its boot-loop history. Only a bound request updates the machine's
//! identity (UUID, serial, arch) and pins its UUID.

use std::net::{IpAddr, Ipv4Addr};

use provisioner_core::boot::{BootDecision, BootRequest, InstallPlan};
use provisioner_core::bootloop::Verdict;
use provisioner_core::inventory::{TokenRecord, Update};
use provisioner_core::lifecycle::Trigger;
use provisioner_core::model::{Event, MacAddr, Machine};
use provisioner_core::release::admission::{self, PendingApproval};
use provisioner_core::release::binding::{self, Bound, Refusal, Stage};
use provisioner_core::release::smbios::{PinCheck, check_pin};
use provisioner_core::render::{self, BootUrls};
use provisioner_core::timeline::{ApprovalFlow, ApprovalRequest, ScriptAnswer};
use rand::RngCore;
use time::OffsetDateTime;

use super::release::Release;
use super::{BootService, ServiceError};

/// What one served script writes besides its own entry.
struct Served {
    /// The request was bound to the machine (identity fields may be updated).
    bound: bool,
    /// The requester's address.
    peer: Option<IpAddr>,
    /// A UUID to pin.
    pin: Option<String>,
    /// The new boot-loop history of an install answer.
    history: Option<Vec<i64>>,
    /// Boot-loop protection stopped it: (install scripts in the window, window minutes).
    halted: Option<(usize, i64)>,
    /// One-time tokens issued with an install script.
    tokens: Vec<(String, TokenRecord)>,
}

impl BootService {
    /// Answers `/ipxe`: decides, checks who asks, records, and renders the script.
    pub fn ipxe_script(
        &self,
        req: &BootRequest,
        peer: Option<IpAddr>,
    ) -> Result<(String, &'static str), ServiceError> {
        let Some(mac) = req.mac else {
            return Ok((
                "#!ipxe\necho provisioner: the request carried no usable MAC address\nexit 1\n".into(),
                "invalid",
            ));
        };
        let peer = peer.map(binding::canonical);
        let machine = self.inventory.get(mac)?;
        let now = OffsetDateTime::now_utc();
        // Groups select on the pinned UUID: a selector on `uuid` is checked against
        // the pin, never against what the request claims.
        let pinned = machine.as_ref().and_then(|m| m.pinned_uuid.clone());
        let decide_req = match &pinned {
            Some(p) => BootRequest {
                uuid: Some(p.clone()),
                bad_uuid: None,
                ..req.clone()
            },
            None => req.clone(),
        };
        let mut decision = self.booter().decide(&decide_req, machine.as_ref());
        let approved = machine
            .as_ref()
            .is_some_and(|m| admission::covers(m.approval.as_ref(), req.uuid.as_deref(), now));
        let bound = self.bind(Stage::Script, mac, peer, None, approved);
        let pin_check = check_pin(pinned.as_deref(), &req.uuid_field());
        let mut pin = None;
        if let BootDecision::Install(plan) = &decision {
            match self.release_script(plan, machine.as_ref(), &bound, &pin_check) {
                Release::Go { pin: p } => pin = p,
                Release::Refused(code, reason) => {
                    metrics::counter!("provisioner_boot_decisions_total", "outcome" => "refused")
                        .increment(1);
                    self.refuse(mac, Stage::Script, peer, code, &reason, true)?;
                    let script =
                        render::ipxe::refused_script(mac, &reason, &self.base, self.release().retry_secs);
                    return Ok((script, "refused"));
                }
                Release::Wait { unverifiable } => {
                    metrics::counter!("provisioner_boot_decisions_total", "outcome" => "waiting")
                        .increment(1);
                    if unverifiable {
                        let r = Refusal::Unverifiable;
                        self.refuse(mac, Stage::Script, peer, r.code(), &r.to_string(), true)?;
                    }
                    let pending = self.await_approval(mac, req, peer, now)?;
                    let script =
                        render::ipxe::waiting_script(mac, &pending, &self.base, self.release().retry_secs);
                    return Ok((script, "waiting"));
                }
            }
        } else if bound.is_ok()
            && let PinCheck::Pin(u) = &pin_check
        {
            pin = Some(u.clone());
        }
        // Boot-loop protection (core::bootloop): only install answers count.
        let mut history = None;
        let mut halted = None;
        if matches!(decision, BootDecision::Install(_)) {
            let state = machine.as_ref().map(|m| m.state).unwrap_or_default();
            let past = machine
                .as_ref()
                .map(|m| m.install_boots.as_slice())
                .unwrap_or(&[]);
            match self.guard.on_install_script(state, past, now.unix_timestamp()) {
                Verdict::Install { history: h } => history = Some(h),
                Verdict::Halt { count, history: h } => {
                    let window_min = self.guard.window_secs / 60;
                    let reason = Event::BootLoopDetected { count, window_min }.to_string();
                    metrics::counter!("provisioner_boot_loops_total").increment(1);
                    tracing::warn!(%mac, count, "boot loop detected; answering local boot");
                    history = Some(h);
                    halted = Some((count, window_min));
                    decision = BootDecision::LocalBoot { reason };
                }
            }
        }
        let outcome = decision.outcome();
        metrics::counter!("provisioner_boot_decisions_total", "outcome" => outcome).increment(1);
        let (urls, tokens) = match &decision {
            BootDecision::Install(plan) => self.new_tokens(mac, plan, peer, now),
            _ => (
                BootUrls {
                    base: self.base.clone(),
                    config: String::new(),
                    callback: String::new(),
                },
                Vec::new(),
            ),
        };
        let record = !matches!(decision, BootDecision::Unknown { record: false, .. });
        if record {
            let served = Served {
                bound: bound.is_ok(),
                peer,
                pin,
                history,
                halted,
                tokens,
            };
            self.record_script(mac, req, &decision, served, now)?;
            if let (Some(ip), Ok(_)) = (peer, &bound) {
                self.remember_peer(ip, mac);
            }
        }
        Ok((render::ipxe::machine_script(mac, &decision, &urls), outcome))
    }

    /// The release checks for an install script, in order: peer binding (a
    /// non-checkable peer may still be approved), the UUID pin, admission.
    fn release_script(
        &self,
        plan: &InstallPlan,
        machine: Option<&Machine>,
        bound: &Result<Bound, Refusal>,
        pin_check: &PinCheck,
    ) -> Release {
        let unverifiable = match bound {
            Ok(_) => false,
            Err(Refusal::Unverifiable) => true,
            Err(r) => return Release::Refused(r.code(), r.to_string()),
        };
        let pin = match pin_check {
            PinCheck::Refused(r) => return Release::Refused(r.code(), r.to_string()),
            PinCheck::Pin(u) => Some(u.clone()),
            PinCheck::Match | PinCheck::Unpinned => None,
        };
        // `bound` is Ok(Approved) when an approval covers an unverifiable peer, so
        // an approval check here only concerns admission.
        let approved = matches!(bound, Ok(Bound::Approved))
            || machine.is_some_and(|m| {
                admission::covers(
                    m.approval.as_ref(),
                    pin.as_deref().or(m.pinned_uuid.as_deref()),
                    OffsetDateTime::now_utc(),
                )
            });
        let wait = admission::must_wait(
            self.admission_of(plan),
            Self::unknown_with_secrets(plan, machine),
            approved,
        );
        if unverifiable || wait {
            Release::Wait { unverifiable }
        } else {
            Release::Go { pin }
        }
    }

    /// The machine's pending approval: the stored one if the same machine (UUID and
    /// address) asks again, so the code on the operator's screen stays valid; else a
    /// new code, recorded as `approval_requested`.
    fn await_approval(
        &self,
        mac: MacAddr,
        req: &BootRequest,
        peer: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<PendingApproval, ServiceError> {
        let ip = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let mut random = [0u8; 8];
        rand::rng().fill_bytes(&mut random);
        let fresh = PendingApproval {
            code: admission::user_code(random),
            uuid: req.uuid.clone(),
            peer: ip,
            since: now,
            denied_by: None,
        };
        let mut out = fresh.clone();
        let mut requested = false;
        self.inventory.apply(mac, &mut |cur| {
            if let Some(p) = cur
                .as_ref()
                .and_then(|m| m.pending_approval.as_ref())
                .filter(|p| p.same_request(req.uuid.as_deref(), ip))
            {
                out = p.clone();
                requested = false;
                return Update::default();
            }
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            m.last_seen = now;
            m.pending_approval = Some(fresh.clone());
            out = fresh.clone();
            requested = true;
            let event = Event::ApprovalRequested(ApprovalRequest {
                flow: ApprovalFlow::Admission,
                code: fresh.code.clone(),
                uuid: fresh.uuid.clone(),
                peer: ip,
                mac,
            });
            Update {
                machine: Some(m),
                events: vec![event.at(now)],
                ..Update::default()
            }
        })?;
        if requested {
            metrics::counter!("provisioner_approvals_total", "kind" => "admission", "action" => "requested")
                .increment(1);
        }
        Ok(out)
    }

    /// Writes what a served script changes, in one commit: the timeline entry,
    /// state, boot-loop history and the install's one-time tokens; identity fields
    /// and the UUID pin only for a bound request.
    fn record_script(
        &self,
        mac: MacAddr,
        req: &BootRequest,
        decision: &BootDecision,
        served: Served,
        now: OffsetDateTime,
    ) -> Result<(), ServiceError> {
        let answer = match decision {
            BootDecision::Install(p) => ScriptAnswer::Install {
                profile: p.profile.id.clone(),
                image: p.image.id.clone(),
            },
            BootDecision::LocalBoot { reason } => ScriptAnswer::Local {
                reason: reason.clone(),
            },
            BootDecision::Unknown { reason, .. } => ScriptAnswer::Unknown {
                reason: reason.clone(),
            },
        };
        let install = matches!(decision, BootDecision::Install(_));
        let Served {
            bound,
            peer,
            pin,
            history,
            halted,
            tokens,
        } = served;
        self.inventory.apply(mac, &mut |cur| {
            let mut events = vec![Event::IpxeScriptServed(answer.clone()).at(now)];
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            m.last_seen = now;
            if bound {
                if req.arch != Default::default() {
                    m.arch = req.arch;
                }
                m.uuid = req.uuid.clone().or(m.uuid.take());
                m.serial = req.serial.clone().or(m.serial.take());
                m.ip = peer.or(m.ip);
                if let Some(u) = pin.as_ref().filter(|_| m.pinned_uuid.is_none()) {
                    m.pinned_uuid = Some(u.clone());
                    events.push(Event::UuidPinned { uuid: u.clone(), mac }.at(now));
                }
            }
            // An install script cannot be refused here: the booter answers local
            // boot for the states that refuse it.
            if install && let Ok(changed) = m.apply(Trigger::InstallScriptServed, now) {
                events.extend(changed);
            }
            if let Some(h) = &history {
                m.install_boots = h.clone();
            }
            if let Some((count, window_min)) = halted
                && let Ok(changed) = m.apply(Trigger::BootLoopDetected { count, window_min }, now)
            {
                events.extend(changed);
            }
            Update {
                machine: Some(m),
                events,
                tokens: tokens.clone(),
            }
        })?;
        Ok(())
    }
}
