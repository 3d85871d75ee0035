//! Reading timeline entries written before the typed timeline (inventory schema
//! version 1, and exports of it): they carry only `kind` and the `detail` sentence.
//!
//! The sentences were rendered by this appliance from a few fixed formats, so the
//! typed event can be recovered for the ones code depends on (state changes, the
//! k0s signals, installs, config fetches): [`parse`] reads the text back and keeps
//! the result only if it renders to exactly the same text and kind. Anything else
//! stays [`Event::Legacy`], shown as it was and never read as a signal. This is the
//! one place that reads event text; it runs once per entry, when a store is
//! migrated or an old export is imported.

use std::net::IpAddr;

use super::text::{DISK_INSTALLED, INSTALLED_CALLBACK, K0S_INSTALLED, REIMAGE, STAGE1};
use super::{Event, EventKind, Reporter};
use crate::catalog::ConfigKind;
use crate::model::MachineState;

/// The typed event a schema-1 entry stands for, or [`Event::Legacy`].
pub fn parse(kind: EventKind, detail: &str) -> Event {
    match recover(kind, detail) {
        Some(ev) if ev.kind() == kind && ev.to_string() == detail => ev,
        _ => Event::Legacy {
            kind,
            detail: detail.to_string(),
        },
    }
}

fn recover(kind: EventKind, detail: &str) -> Option<Event> {
    Some(match kind {
        EventKind::StateChanged => {
            let (from, to) = detail.split_once(" -> ")?;
            Event::StateChanged {
                from: from.parse::<MachineState>().ok()?,
                to: to.parse::<MachineState>().ok()?,
            }
        }
        EventKind::ConfigServed => {
            let (bytes, what) = detail.split_once(" bytes (")?;
            let what = what.strip_suffix(')')?;
            let config = match what {
                STAGE1 => ConfigKind::Flatcar,
                "Talos" => ConfigKind::Talos,
                "Plain" => ConfigKind::Plain,
                "None" => ConfigKind::None,
                _ => return None,
            };
            Event::ConfigServed {
                bytes: bytes.parse().ok()?,
                config,
            }
        }
        EventKind::DiskInstalled if detail == DISK_INSTALLED => Event::DiskInstalled,
        EventKind::K0sInstalled if detail == K0S_INSTALLED => Event::K0sInstalled,
        EventKind::Installed if detail == INSTALLED_CALLBACK => Event::Installed(Reporter::Callback),
        EventKind::Installed => {
            let ip = detail.strip_suffix(" answered Talos Version over mTLS")?;
            Event::Installed(Reporter::TalosApi {
                ip: ip.parse::<IpAddr>().ok()?,
            })
        }
        EventKind::ReimageRequested if detail == REIMAGE => Event::ReimageRequested,
        EventKind::TftpServed | EventKind::AssetServed => {
            let (file, bytes) = detail.rsplit_once(" (")?;
            let bytes = bytes.strip_suffix(" bytes)")?.parse().ok()?;
            let file = file.to_string();
            if kind == EventKind::TftpServed {
                Event::TftpServed { file, bytes }
            } else {
                Event::AssetServed { file, bytes }
            }
        }
        EventKind::PowerAction => Event::PowerAction {
            detail: detail.to_string(),
        },
        EventKind::MachineUpdated => Event::MachineUpdated {
            fields: detail
                .strip_prefix("changed ")?
                .split(", ")
                .map(str::to_string)
                .collect(),
        },
        _ => return None,
    })
}
