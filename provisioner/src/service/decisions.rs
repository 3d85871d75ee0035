//! The boot path's answers: `/ipxe` (decision, boot-loop guard, tokens),
//! `/config/<token>` and the install callbacks.

use std::net::IpAddr;

use provisioner_core::boot::{BootDecision, BootRequest, InstallPlan};
use provisioner_core::bootloop::Verdict;
use provisioner_core::catalog::ConfigKind;
use provisioner_core::inventory::{TokenPurpose, Update};
use provisioner_core::k0s::progress;
use provisioner_core::lifecycle::{self, Trigger};
use provisioner_core::model::{EventKind, MacAddr, Machine, MachineState};
use provisioner_core::render::config::{ConfigRenderer, PlainRenderer};
use provisioner_core::render::{self, BootUrls};
use time::OffsetDateTime;

use super::tokens::token_key;
use super::{BootService, ConfigBody, ServiceError, event};

impl BootService {
    /// Answers `/ipxe`: decides, records, and renders the machine's script.
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
        let machine = self.inventory.get(mac)?;
        let mut decision = self.booter.decide(req, machine.as_ref());
        let now = OffsetDateTime::now_utc();
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
            BootDecision::Install(plan) => self.issue_tokens(mac, plan)?,
            _ => BootUrls {
                base: self.base.clone(),
                config: String::new(),
                callback: String::new(),
            },
        };
        let record = !matches!(decision, BootDecision::Unknown { record: false, .. });
        if record {
            let detail = match &decision {
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
                m.arch = if req.arch == Default::default() {
                    m.arch
                } else {
                    req.arch
                };
                m.uuid = req.uuid.clone().or(m.uuid.take());
                m.serial = req.serial.clone().or(m.serial.take());
                if install
                    && let Ok(next) = lifecycle::next(m.state, Trigger::InstallScriptServed)
                    && next != m.state
                {
                    events.push(event(EventKind::StateChanged, format!("{} -> {next}", m.state)));
                    m.state = next;
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
            if let Some(ip) = peer {
                self.remember_peer(ip, mac);
            }
        }
        Ok((render::ipxe::machine_script(mac, &decision, &urls), outcome))
    }

    /// The plan a known machine is being installed with, if it is installing.
    fn plan_of(&self, mac: MacAddr, machine: Option<&Machine>) -> Option<InstallPlan> {
        let req = BootRequest {
            mac: Some(mac),
            uuid: machine.and_then(|m| m.uuid.clone()),
            serial: machine.and_then(|m| m.serial.clone()),
            arch: machine.map(|m| m.arch).unwrap_or_default(),
            hostname: None,
        };
        match self.booter.decide(&req, machine) {
            BootDecision::Install(plan) => Some(*plan),
            _ => None,
        }
    }

    /// Answers `/config/<token>`: consumes the token and renders the machine's config.
    /// The state change and timeline entry are durable before the body is returned.
    pub fn config(&self, token: &str, peer: Option<IpAddr>) -> Result<ConfigBody, ServiceError> {
        let rec = self.take(token, TokenPurpose::Config)?;
        let mac = rec.mac;
        let machine = self.inventory.get(mac)?;
        let Some(plan) = self.plan_of(mac, machine.as_ref()) else {
            self.record(
                mac,
                EventKind::TokenRejected,
                "config requested but machine is not installing",
            )?;
            return Err(ServiceError::Conflict(format!("{mac} is not being installed")));
        };
        let state = machine.map(|m| m.state).unwrap_or_default();
        let next = lifecycle::next(state, Trigger::ConfigFetched)
            .map_err(|e| ServiceError::Conflict(e.to_string()))?;
        let renderer: &dyn ConfigRenderer = match self.renderers.get(&plan.profile.config) {
            Some(r) => r.as_ref(),
            None => &PlainRenderer,
        };
        let body = match renderer.render_with(mac, &plan, &self.config_urls(token)) {
            Ok(b) => b,
            Err(why) => {
                // Put the token back: the fault is ours (missing secrets or mirror
                // files), and the machine's retries can succeed once it is fixed.
                self.inventory.issue_token(&token_key(token), &rec)?;
                self.record(
                    mac,
                    EventKind::TokenRejected,
                    &format!("config not rendered: {why}"),
                )?;
                return Err(ServiceError::Render(why));
            }
        };
        let what = match plan.profile.config {
            ConfigKind::Flatcar => format!(" (Flatcar stage-1 Ignition; {})", progress::STAGE1_MARKER),
            k => format!(" ({k:?})"),
        };
        self.transition(
            mac,
            next,
            event(EventKind::ConfigServed, format!("{} bytes{what}", body.len())),
        )?;
        if let Some(ip) = peer {
            self.remember_peer(ip, mac);
        }
        Ok(ConfigBody {
            body,
            content_type: renderer.content_type(),
        })
    }

    /// Answers `/callback/<token>/installed`. On the Flatcar path this is
    /// `DiskInstalled`: the state becomes `Installed` (next netboot: local disk) and
    /// the timeline records the k0s sub-state.
    pub fn installed(&self, token: &str) -> Result<MacAddr, ServiceError> {
        let rec = self.take(token, TokenPurpose::InstalledCallback)?;
        let machine = self.inventory.get(rec.mac)?;
        let state = machine.as_ref().map(|m| m.state).unwrap_or_default();
        let flatcar = self
            .plan_of(rec.mac, machine.as_ref())
            .is_some_and(|p| p.profile.config == ConfigKind::Flatcar);
        let next = lifecycle::next(state, Trigger::InstallReported)
            .map_err(|e| ServiceError::Conflict(e.to_string()))?;
        let ev = if flatcar {
            let (phase, _) = progress::from_timeline(&self.inventory.timeline(rec.mac)?);
            progress::step(phase, progress::Signal::DiskInstalled)
                .map_err(|e| ServiceError::Conflict(e.to_string()))?;
            event(
                EventKind::DiskInstalled,
                "flatcar-install finished; next netboot boots the disk; k0s: DiskInstalled, \
                 waiting for K0sInstalled",
            )
        } else {
            event(EventKind::Installed, "install reported by the machine")
        };
        self.transition(rec.mac, next, ev)?;
        Ok(rec.mac)
    }

    /// Answers `/callback/<token>/k0s-installed`: the Flatcar machine's first disk
    /// boot installed and started k0s. The state stays `Installed`; the timeline
    /// gets `k0s_installed`. Refused unless the k0s phase is `DiskInstalled`.
    pub fn k0s_installed(&self, token: &str) -> Result<MacAddr, ServiceError> {
        let rec = self.take(token, TokenPurpose::K0sInstalledCallback)?;
        let state = self.inventory.get(rec.mac)?.map(|m| m.state).unwrap_or_default();
        let (phase, _) = progress::from_timeline(&self.inventory.timeline(rec.mac)?);
        let refused = |why: String| {
            self.record(
                rec.mac,
                EventKind::TokenRejected,
                &format!("k0s callback refused: {why}"),
            )?;
            Err(ServiceError::Conflict(why))
        };
        if state != MachineState::Installed {
            return refused(format!("{} is {state}, not Installed", rec.mac));
        }
        if let Err(e) = progress::step(phase, progress::Signal::K0sInstalled) {
            return refused(e.to_string());
        }
        self.transition(
            rec.mac,
            state,
            event(
                EventKind::K0sInstalled,
                "k0s installed and started; k0s: K0sInstalled",
            ),
        )?;
        Ok(rec.mac)
    }
}
