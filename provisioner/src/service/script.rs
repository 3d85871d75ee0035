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
use provisioner_core::inventory::Update;
use provisioner_core::lifecycle::{self, Trigger};
use provisioner_core::model::{EventKind, MacAddr, Machine};
use provisioner_core::release::admission::{self, PendingApproval};
use provisioner_core::release::binding::{self, Bound, Refusal, Stage};
use provisioner_core::release::smbios::{PinCheck, check_pin};
use provisioner_core::render::{self, BootUrls};
use rand::RngCore;
use time::OffsetDateTime;

use super::release::Release;
use super::{BootService, ServiceError, event};

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
        let mut decision = self.booter.decide(&decide_req, machine.as_ref());
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
                        render::ipxe::refused_script(mac, &reason, &self.base, self.release.retry_secs);
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
                        render::ipxe::waiting_script(mac, &pending, &self.base, self.release.retry_secs);
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
                    let reason = format!(
                        "boot loop: {count} install boots within {} min without reaching Installed; \
                         install stopped until an operator re-images it",
                        self.guard.window_secs / 60
                    );
                    metrics::counter!("provisioner_boot_loops_total").increment(1);
                    tracing::warn!(%mac, count, "boot loop detected; answering local boot");
                    history = Some(h);
                    halted = Some(reason.clone());
                    decision = BootDecision::LocalBoot { reason };
                }
            }
        }
        let outcome = decision.outcome();
        metrics::counter!("provisioner_boot_decisions_total", "outcome" => outcome).increment(1);
        let urls = match &decision {
            BootDecision::Install(plan) => self.issue_tokens(mac, plan, peer)?,
            _ => BootUrls {
                base: self.base.clone(),
                config: String::new(),
                callback: String::new(),
            },
        };
        let record = !matches!(decision, BootDecision::Unknown { record: false, .. });
        if record {
            self.record_script(
                mac,
                req,
                &decision,
                outcome,
                bound.is_ok(),
                pin,
                history,
                halted,
                now,
            )?;
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
        let mut written = Vec::new();
        self.inventory.apply(mac, &mut |cur| {
            if let Some(p) = cur
                .as_ref()
                .and_then(|m| m.pending_approval.as_ref())
                .filter(|p| p.same_request(req.uuid.as_deref(), ip))
            {
                out = p.clone();
                written.clear();
                return Update::default();
            }
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            m.last_seen = now;
            m.pending_approval = Some(fresh.clone());
            out = fresh.clone();
            written = vec![event(
                EventKind::ApprovalRequested,
                format!(
                    "install waits for an operator: code {} uuid {} ip {ip}; approve with \
                     `provisioner machines approve {mac} --code {}`",
                    fresh.code,
                    fresh.uuid.as_deref().unwrap_or("(none)"),
                    fresh.code
                ),
            )];
            Update {
                machine: Some(m),
                events: written.clone(),
            }
        })?;
        if !written.is_empty() {
            metrics::counter!("provisioner_approvals_total", "kind" => "admission", "action" => "requested")
                .increment(1);
            self.publish(mac, &written);
        }
        Ok(out)
    }

    /// Writes what a served script changes, in one commit: the timeline entry,
    /// state, boot-loop history; identity fields and the UUID pin only for a bound
    /// request.
    #[allow(clippy::too_many_arguments)]
    fn record_script(
        &self,
        mac: MacAddr,
        req: &BootRequest,
        decision: &BootDecision,
        outcome: &str,
        bound: bool,
        pin: Option<String>,
        history: Option<Vec<i64>>,
        halted: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), ServiceError> {
        let detail = match decision {
            BootDecision::Install(p) => format!("install profile {} image {}", p.profile.id, p.image.id),
            BootDecision::LocalBoot { reason } | BootDecision::Unknown { reason, .. } => {
                format!("{outcome}: {reason}")
            }
        };
        let install = matches!(decision, BootDecision::Install(_));
        let mut written = Vec::new();
        self.inventory.apply(mac, &mut |cur| {
            let mut events = vec![event(EventKind::IpxeScriptServed, detail.clone())];
            let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, now));
            m.last_seen = now;
            if bound {
                if req.arch != Default::default() {
                    m.arch = req.arch;
                }
                m.uuid = req.uuid.clone().or(m.uuid.take());
                m.serial = req.serial.clone().or(m.serial.take());
                if let Some(u) = pin.as_ref().filter(|_| m.pinned_uuid.is_none()) {
                    m.pinned_uuid = Some(u.clone());
                    events.push(event(
                        EventKind::UuidPinned,
                        format!("SMBIOS UUID {u} pinned to {mac}; another UUID is refused until unpinned"),
                    ));
                }
            }
            if install {
                m.pending_approval = None;
                if let Ok(next) = lifecycle::next(m.state, Trigger::InstallScriptServed)
                    && next != m.state
                {
                    events.push(event(EventKind::StateChanged, format!("{} -> {next}", m.state)));
                    m.state = next;
                }
            }
            if let Some(h) = &history {
                m.install_boots = h.clone();
            }
            if let Some(reason) = &halted {
                events.push(event(EventKind::BootLoopDetected, reason.clone()));
                if let Ok(next) = lifecycle::next(m.state, Trigger::BootLoopDetected) {
                    events.push(event(EventKind::StateChanged, format!("{} -> {next}", m.state)));
                    m.state = next;
                }
            }
            written = events.clone();
            Update {
                machine: Some(m),
                events,
            }
        })?;
        self.publish(mac, &written);
        Ok(())
    }
}
