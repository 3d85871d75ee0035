//! The boot path's later answers: `/config/<token>` and the install callbacks. Each
//! first checks who asks (peer binding; the device flow's bearer token) while the
//! token is still live, so a refused requester spends nothing of the machine's.

use std::net::IpAddr;

use provisioner_core::boot::{BootDecision, BootRequest, InstallPlan};
use provisioner_core::catalog::ConfigKind;
use provisioner_core::inventory::TokenPurpose;
use provisioner_core::k0s::progress;
use provisioner_core::lifecycle::{self, Report, Trigger};
use provisioner_core::model::{Event, MacAddr, Machine, MachineState};
use provisioner_core::release::binding::Stage;
use provisioner_core::render::config::{ConfigRenderer, PlainRenderer};
use provisioner_core::timeline::Rejection;

use super::tokens::token_key;
use super::{BootService, ConfigBody, ServiceError};

impl BootService {
    /// The plan a known machine is being installed with, if it is installing.
    /// Groups select on the pinned UUID when there is one.
    pub(super) fn plan_of(&self, mac: MacAddr, machine: Option<&Machine>) -> Option<InstallPlan> {
        let req = BootRequest {
            mac: Some(mac),
            uuid: machine.and_then(|m| m.pinned_uuid.clone().or_else(|| m.uuid.clone())),
            serial: machine.and_then(|m| m.serial.clone()),
            arch: machine.map(|m| m.arch).unwrap_or_default(),
            ..Default::default()
        };
        match self.booter().decide(&req, machine) {
            BootDecision::Install(plan) => Some(*plan),
            _ => None,
        }
    }

    /// Answers `/config/<token>`: consumes the token and renders the machine's config.
    /// The state change and timeline entry are durable before the body is returned.
    /// `bearer` is the `Authorization: Bearer` token a device-flow profile needs.
    pub fn config(
        &self,
        token: &str,
        peer: Option<IpAddr>,
        bearer: Option<&str>,
    ) -> Result<ConfigBody, ServiceError> {
        let mut device_token = None;
        if let Some(live) = self.inventory.live_token(&token_key(token))? {
            self.check_later(Stage::Config, &live, peer)?;
            if live.purpose == TokenPurpose::Config {
                device_token = self.check_bearer(&live, peer, bearer)?;
            }
        }
        let rec = self.take(token, TokenPurpose::Config)?;
        let mac = rec.mac;
        let machine = self.inventory.get(mac)?;
        let Some(plan) = self.plan_of(mac, machine.as_ref()) else {
            self.record(mac, Event::TokenRejected(Rejection::NotInstalling))?;
            return Err(ServiceError::Conflict(format!("{mac} is not being installed")));
        };
        let state = machine.map(|m| m.state).unwrap_or_default();
        let fetched = |bytes| Trigger::ConfigFetched {
            bytes,
            config: plan.profile.config,
        };
        lifecycle::next(state, fetched(0)).map_err(|e| ServiceError::Conflict(e.to_string()))?;
        let attached = self.renderer(plan.profile.config);
        let renderer: &dyn ConfigRenderer = match &attached {
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
                    Event::TokenRejected(Rejection::NotRendered {
                        reason: why.to_string(),
                    }),
                )?;
                return Err(ServiceError::Render(why.to_string()));
            }
        };
        self.trigger(mac, fetched(body.len() as u64))?;
        if let Some(key) = device_token {
            // Single use: the access token was good for this one download.
            self.device.spend(&key);
        }
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
    pub fn installed(&self, token: &str, peer: Option<IpAddr>) -> Result<MacAddr, ServiceError> {
        self.check_callback(token, peer)?;
        let rec = self.take(token, TokenPurpose::InstalledCallback)?;
        let machine = self.inventory.get(rec.mac)?;
        let state = machine.as_ref().map(|m| m.state).unwrap_or_default();
        let flatcar = self
            .plan_of(rec.mac, machine.as_ref())
            .is_some_and(|p| p.profile.config == ConfigKind::Flatcar);
        let report = if flatcar {
            let (phase, _) = progress::from_timeline(&self.inventory.timeline(rec.mac)?);
            progress::step(phase, progress::Signal::DiskInstalled)
                .map_err(|e| ServiceError::Conflict(e.to_string()))?;
            Report::FlatcarDisk
        } else {
            Report::Callback
        };
        let trigger = Trigger::InstallReported(report);
        lifecycle::next(state, trigger).map_err(|e| ServiceError::Conflict(e.to_string()))?;
        self.trigger(rec.mac, trigger)?;
        Ok(rec.mac)
    }

    /// Answers `/callback/<token>/k0s-installed`: the Flatcar machine's first disk
    /// boot installed and started k0s. The state stays `Installed`; the timeline
    /// gets `k0s_installed`. Refused unless the k0s phase is `DiskInstalled`.
    pub fn k0s_installed(&self, token: &str, peer: Option<IpAddr>) -> Result<MacAddr, ServiceError> {
        self.check_callback(token, peer)?;
        let rec = self.take(token, TokenPurpose::K0sInstalledCallback)?;
        let state = self.inventory.get(rec.mac)?.map(|m| m.state).unwrap_or_default();
        let (phase, _) = progress::from_timeline(&self.inventory.timeline(rec.mac)?);
        let refused = |why: String| {
            self.record(
                rec.mac,
                Event::TokenRejected(Rejection::K0sCallbackRefused { reason: why.clone() }),
            )?;
            Err(ServiceError::Conflict(why))
        };
        if state != MachineState::Installed {
            return refused(format!("{} is {state}, not Installed", rec.mac));
        }
        if let Err(e) = progress::step(phase, progress::Signal::K0sInstalled) {
            return refused(e.to_string());
        }
        self.trigger(rec.mac, Trigger::K0sReported)?;
        Ok(rec.mac)
    }

    /// Peer binding for a callback whose token is live (unknown and spent tokens go
    /// on to [`BootService::take`], which refuses and records them).
    fn check_callback(&self, token: &str, peer: Option<IpAddr>) -> Result<(), ServiceError> {
        match self.inventory.live_token(&token_key(token))? {
            Some(live) => self.check_later(Stage::Callback, &live, peer),
            None => Ok(()),
        }
    }
}
