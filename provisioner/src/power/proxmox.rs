//! Proxmox VE: a VM's power through the PVE REST API (`/api2/json`), authenticated
//! with an API token (`Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`; API
//! tokens need no CSRF header). Calls used (PVE API viewer, `nodes/{node}/qemu/{vmid}`):
//! `GET status/current`, `POST status/start|stop|reset`, `GET config`, `PUT config`
//! (form-encoded `boot=order=…`).
//!
//! PVE has no one-shot boot override, so "network boot next" moves the VM's network
//! devices to the front of its boot order and keeps the disks after them; that stays
//! harmless afterwards because the appliance answers `exit` (local disk) to installed
//! machines.

use futures::future::BoxFuture;
use provisioner_core::power::PowerAction;
use serde_json::Value;

use super::{PowerDriver, PowerEndpoint, PowerError, PowerOutcome, check, http_client, read_secret};

const DRIVER: &str = "proxmox";

/// One Proxmox VM.
#[derive(Debug)]
pub struct Proxmox {
    client: reqwest::Client,
    endpoint: PowerEndpoint,
    node: String,
    vmid: u32,
}

/// The VM's `boot` option is not in the `order=` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("boot order {0:?} is not in the `order=` form; set network first by hand")]
pub struct BootOrderError(String);

/// The VM's new `boot` value with its network devices first, or `None` if they
/// already are. Only the `order=` form (PVE ≥ 6.2) is understood; the legacy
/// `boot: cdn` form names no devices, so it is reported as an error.
pub fn netboot_first(current: Option<&str>) -> Result<Option<String>, BootOrderError> {
    let Some(order) = current.and_then(|c| c.split(',').find_map(|kv| kv.trim().strip_prefix("order=")))
    else {
        return Err(BootOrderError(current.unwrap_or("").to_string()));
    };
    let devs: Vec<&str> = order.split(';').filter(|d| !d.is_empty()).collect();
    let (mut net, rest): (Vec<&str>, Vec<&str>) = devs.iter().partition(|d| d.starts_with("net"));
    if net.is_empty() {
        net.push("net0");
    }
    let new: Vec<&str> = net.into_iter().chain(rest).collect();
    if new == devs {
        return Ok(None);
    }
    Ok(Some(format!("order={}", new.join(";"))))
}

impl Proxmox {
    /// A driver for VM `vmid` on `node`.
    pub fn new(endpoint: &PowerEndpoint, node: String, vmid: u32) -> Result<Self, PowerError> {
        Ok(Self {
            client: http_client(DRIVER, endpoint)?,
            endpoint: endpoint.clone(),
            node,
            vmid,
        })
    }

    fn url(&self, rest: &str) -> String {
        format!(
            "{}/api2/json/nodes/{}/qemu/{}/{rest}",
            self.endpoint.url.trim_end_matches('/'),
            self.node,
            self.vmid
        )
    }

    fn auth(&self) -> Result<String, PowerError> {
        Ok(format!("PVEAPIToken={}", read_secret(&self.endpoint)?))
    }

    async fn get(&self, rest: &str) -> Result<Value, PowerError> {
        let r = self
            .client
            .get(self.url(rest))
            .header(reqwest::header::AUTHORIZATION, self.auth()?)
            .send()
            .await;
        let resp = check(DRIVER, &format!("GET {rest}"), r).await?;
        let v: Value = resp.json().await.map_err(|e| PowerError::Upstream {
            driver: DRIVER,
            message: format!("GET {rest}: {e}"),
        })?;
        Ok(v["data"].clone())
    }

    async fn post_status(&self, verb: &str) -> Result<(), PowerError> {
        let r = self
            .client
            .post(self.url(&format!("status/{verb}")))
            .header(reqwest::header::AUTHORIZATION, self.auth()?)
            .send()
            .await;
        check(DRIVER, &format!("POST status/{verb}"), r).await?;
        Ok(())
    }

    async fn run(&self, action: PowerAction) -> Result<PowerOutcome, PowerError> {
        let verb = match action {
            PowerAction::On => "start",
            PowerAction::Off => "stop",
            PowerAction::Cycle => {
                // `reset` fails on a stopped VM; start it instead.
                let status = self.get("status/current").await?;
                if status["status"] == "running" {
                    "reset"
                } else {
                    "start"
                }
            }
        };
        self.post_status(verb).await?;
        Ok(PowerOutcome::done(format!(
            "proxmox {}/{}: {verb}",
            self.node, self.vmid
        )))
    }

    async fn netboot(&self) -> Result<PowerOutcome, PowerError> {
        let cfg = self.get("config").await?;
        let new = match netboot_first(cfg["boot"].as_str()) {
            Ok(n) => n,
            Err(e) => {
                return Ok(PowerOutcome::manual(format!(
                    "proxmox {}/{}: {e}",
                    self.node, self.vmid
                )));
            }
        };
        let Some(new) = new else {
            return Ok(PowerOutcome::done(format!(
                "proxmox {}/{}: network boot already first",
                self.node, self.vmid
            )));
        };
        let r = self
            .client
            .put(self.url("config"))
            .header(reqwest::header::AUTHORIZATION, self.auth()?)
            .form(&[("boot", new.as_str())])
            .send()
            .await;
        check(DRIVER, "PUT config", r).await?;
        Ok(PowerOutcome::done(format!(
            "proxmox {}/{}: boot {new}",
            self.node, self.vmid
        )))
    }
}

impl PowerDriver for Proxmox {
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

#[cfg(test)]
mod tests {
    use super::netboot_first;

    #[test]
    fn boot_order_rewrite() {
        let t = |c: Option<&str>| netboot_first(c);
        assert_eq!(
            t(Some("order=scsi0;net0")).unwrap().as_deref(),
            Some("order=net0;scsi0")
        );
        assert_eq!(t(Some("order=net0;scsi0")).unwrap(), None);
        assert_eq!(
            t(Some("order=scsi0;ide2")).unwrap().as_deref(),
            Some("order=net0;scsi0;ide2")
        );
        assert_eq!(
            t(Some("order=scsi0;net1;net0")).unwrap().as_deref(),
            Some("order=net1;net0;scsi0")
        );
        assert!(t(Some("cdn")).is_err());
        assert!(t(None).is_err());
    }
}
