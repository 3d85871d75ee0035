//! How the appliance switches a machine on and off. Each machine record names one
//! driver ([`PowerSpec`]); the daemon's `power` module turns it into a client. Secrets
//! (API tokens, BMC passwords) never live here: drivers that need them name an
//! endpoint of the appliance configuration, which points at a secret file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The power driver of one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "driver", rename_all = "lowercase", deny_unknown_fields)]
pub enum PowerSpec {
    /// Wake-on-LAN magic packet to the machine's MAC (power on only), sent on the
    /// appliance's configured interface. BeeLink-class mini PCs have no BMC.
    Wol {},
    /// A Proxmox VE virtual machine.
    Proxmox {
        /// Endpoint name in the appliance configuration (`power.endpoints`).
        endpoint: String,
        /// Proxmox node the VM runs on.
        node: String,
        /// VM id.
        vmid: u32,
    },
    /// A Redfish BMC.
    Redfish {
        /// Endpoint name in the appliance configuration (`power.endpoints`).
        endpoint: String,
        /// ComputerSystem resource path, e.g. `/redfish/v1/Systems/1`.
        system: String,
    },
    /// No automation: the API answers what the operator must do.
    Manual {
        /// Where the machine is, how to reach its power button.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        instructions: String,
    },
}

impl PowerSpec {
    /// The driver's name, for events and metrics.
    pub fn driver(&self) -> &'static str {
        match self {
            Self::Wol {} => "wol",
            Self::Proxmox { .. } => "proxmox",
            Self::Redfish { .. } => "redfish",
            Self::Manual { .. } => "manual",
        }
    }

    /// The configuration endpoint this spec needs, if any.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Self::Proxmox { endpoint, .. } | Self::Redfish { endpoint, .. } => Some(endpoint),
            Self::Wol {} | Self::Manual { .. } => None,
        }
    }
}

/// What an operator asks of a machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    /// Switch on.
    On,
    /// Switch off hard.
    Off,
    /// Hard reset (off then on).
    Cycle,
}

impl PowerAction {
    /// Every action.
    pub const ALL: [Self; 3] = [Self::On, Self::Off, Self::Cycle];
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Cycle => "cycle",
        })
    }
}

impl FromStr for PowerAction {
    type Err = crate::model::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.to_string() == s)
            .ok_or_else(|| crate::model::UnknownName::new(s, "one of on, off, cycle"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_wire_format() {
        let p: PowerSpec =
            serde_json::from_str(r#"{"driver":"proxmox","endpoint":"pve","node":"n1","vmid":101}"#).unwrap();
        assert_eq!(p.driver(), "proxmox");
        assert_eq!(p.endpoint(), Some("pve"));
        assert_eq!(
            serde_json::to_string(&PowerSpec::Wol {}).unwrap(),
            r#"{"driver":"wol"}"#
        );
        assert!(serde_json::from_str::<PowerSpec>(r#"{"driver":"wol","x":1}"#).is_err());
        assert!(serde_json::from_str::<PowerSpec>(r#"{"driver":"ipmi"}"#).is_err());
    }

    #[test]
    fn actions_parse() {
        for a in PowerAction::ALL {
            assert_eq!(a.to_string().parse::<PowerAction>().unwrap(), a);
        }
        assert!("reboot".parse::<PowerAction>().is_err());
    }
}
