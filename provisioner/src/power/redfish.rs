//! Redfish (DMTF DSP0266): power through `ComputerSystem.Reset` (`ResetType` `On`,
//! `ForceOff`, `ForceRestart`) and a one-time PXE boot through the system's `Boot`
//! property (`BootSourceOverrideTarget: Pxe`, `BootSourceOverrideEnabled: Once`).
//! HTTP Basic authentication; the reset target is read from the system resource
//! (`Actions."#ComputerSystem.Reset".target`), as the schema asks clients to.

use futures::future::BoxFuture;
use provisioner_core::power::PowerAction;
use serde_json::{Value, json};

use super::{PowerDriver, PowerEndpoint, PowerError, PowerOutcome, check, http_client, read_secret};

const DRIVER: &str = "redfish";

/// One Redfish ComputerSystem.
#[derive(Debug)]
pub struct Redfish {
    client: reqwest::Client,
    endpoint: PowerEndpoint,
    system: String,
}

impl Redfish {
    /// A driver for the system at `system` (e.g. `/redfish/v1/Systems/1`).
    pub fn new(endpoint: &PowerEndpoint, system: String) -> Result<Self, PowerError> {
        if !system.starts_with("/redfish/v1/") {
            return Err(PowerError::Config(format!(
                "redfish system {system:?} must be a path under /redfish/v1/"
            )));
        }
        Ok(Self {
            client: http_client(DRIVER, endpoint)?,
            endpoint: endpoint.clone(),
            system,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.url.trim_end_matches('/'))
    }

    fn creds(&self) -> Result<(String, String), PowerError> {
        let s = read_secret(&self.endpoint)?;
        let (u, p) = s.split_once(':').ok_or_else(|| {
            PowerError::Config(format!(
                "{}: expected user:password",
                self.endpoint.secret_file.display()
            ))
        })?;
        Ok((u.to_string(), p.to_string()))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, PowerError> {
        let (user, pass) = self.creds()?;
        let mut req = self
            .client
            .request(method.clone(), self.url(path))
            .basic_auth(user, Some(pass));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = check(DRIVER, &format!("{method} {path}"), req.send().await).await?;
        // Actions may answer 204 No Content.
        let text = resp.text().await.unwrap_or_default();
        Ok(serde_json::from_str(&text).ok())
    }

    async fn run(&self, action: PowerAction) -> Result<PowerOutcome, PowerError> {
        let system = self
            .send(reqwest::Method::GET, &self.system, None)
            .await?
            .unwrap_or(Value::Null);
        let target = system["Actions"]["#ComputerSystem.Reset"]["target"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/Actions/ComputerSystem.Reset", self.system));
        let reset_type = match action {
            PowerAction::On => "On",
            PowerAction::Off => "ForceOff",
            // ForceRestart is refused by some BMCs while the system is off.
            PowerAction::Cycle if system["PowerState"] == "Off" => "On",
            PowerAction::Cycle => "ForceRestart",
        };
        self.send(
            reqwest::Method::POST,
            &target,
            Some(json!({ "ResetType": reset_type })),
        )
        .await?;
        Ok(PowerOutcome::done(format!(
            "redfish {}: {reset_type}",
            self.system
        )))
    }

    async fn netboot(&self) -> Result<PowerOutcome, PowerError> {
        let body =
            json!({ "Boot": { "BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once" } });
        self.send(reqwest::Method::PATCH, &self.system, Some(body))
            .await?;
        Ok(PowerOutcome::done(format!(
            "redfish {}: next boot PXE (once)",
            self.system
        )))
    }
}

impl PowerDriver for Redfish {
    fn name(&self) -> &'static str {
        DRIVER
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerOutcome, PowerError>> {
        Box::pin(self.run(action))
    }

    fn netboot_next(&self) -> BoxFuture<'_, Result<PowerOutcome, PowerError>> {
        Box::pin(self.netboot())
    }
}
