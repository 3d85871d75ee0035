//! `/api/v1/machines`: list with filters, get, timeline (changes: [`super::patch`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use provisioner_core::model::{Arch, Machine, MachineState, TimelineEvent};
use provisioner_core::power::PowerSpec;
use provisioner_core::release::admission::{Approval, PendingApproval};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::params::MacParam;
use crate::ops::assignment;

/// A machine as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MachineView {
    /// Boot MAC, lower-case with colons.
    #[schema(example = "52:54:00:12:34:56")]
    pub mac: String,
    /// Lifecycle state.
    pub state: MachineState,
    /// Last reported architecture.
    pub arch: Arch,
    /// Firmware class: `bios`, `uefi` or `unknown`.
    pub firmware: String,
    /// SMBIOS UUID.
    pub uuid: Option<String>,
    /// SMBIOS serial.
    pub serial: Option<String>,
    /// DHCP vendor class (option 60) it last sent.
    pub vendor_class: Option<String>,
    /// The address it last fetched its boot script from.
    pub ip: Option<String>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Operator's profile override.
    pub profile: Option<String>,
    /// The profile it boots (override or group selection).
    pub assigned_profile: Option<String>,
    /// The group that selected it.
    pub group: Option<String>,
    /// Its cluster in `infra/`.
    pub cluster: Option<String>,
    /// Boot-file override.
    pub boot_file: Option<String>,
    /// Power driver (no secrets: endpoints are names in the appliance configuration).
    pub power: Option<PowerSpec>,
    /// First contact.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Last contact.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Newest timeline event.
    pub last_event: Option<TimelineEvent>,
    /// The SMBIOS UUID pinned to this MAC (another UUID is refused until unpinned).
    pub pinned_uuid: Option<String>,
    /// An operator's approval for the current install window.
    pub approval: Option<Approval>,
    /// Waiting for an operator: the code on its console, its UUID and address.
    pub pending_approval: Option<PendingApproval>,
}

/// A machine with its timeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MachineDetail {
    /// The machine.
    #[serde(flatten)]
    pub machine: MachineView,
    /// Its boot timeline, oldest first.
    pub timeline: Vec<TimelineEvent>,
}

/// The view of `m`.
pub fn view(st: &ApiState, m: &Machine, last_event: Option<TimelineEvent>) -> MachineView {
    let a = assignment(&st.ops.catalog(), m);
    MachineView {
        mac: m.mac.to_string(),
        state: m.state,
        arch: m.arch,
        firmware: m.arch.firmware().into(),
        uuid: m.uuid.clone(),
        serial: m.serial.clone(),
        vendor_class: m.vendor_class.clone(),
        ip: m.ip.map(|i| i.to_string()),
        labels: m.labels.clone(),
        profile: m.profile.clone(),
        assigned_profile: a.as_ref().map(|a| a.profile.clone()),
        group: a.as_ref().and_then(|a| a.group.clone()),
        cluster: a.and_then(|a| a.cluster),
        boot_file: m.boot_file.clone(),
        power: m.power.clone(),
        first_seen: m.first_seen,
        last_seen: m.last_seen,
        last_event,
        pinned_uuid: m.pinned_uuid.clone(),
        approval: m.approval.clone(),
        pending_approval: m.pending_approval.clone(),
    }
}

/// Filters of the machine list (documentation; parsed strictly from the raw query).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListQuery {
    /// Only machines in this state.
    state: Option<MachineState>,
    /// Only machines booting this profile.
    profile: Option<String>,
    /// Only machines of this cluster.
    cluster: Option<String>,
    /// `key=value`; repeat for several (all must match).
    #[param(style = Form, explode)]
    label: Option<Vec<String>>,
}

#[derive(Debug, Default)]
struct Filter {
    state: Option<MachineState>,
    profile: Option<String>,
    cluster: Option<String>,
    labels: Vec<(String, String)>,
}

fn parse_filter(q: Option<&str>) -> Result<Filter, ApiError> {
    let mut f = Filter::default();
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "state" => {
                f.state = Some(v.parse().map_err(|e: provisioner_core::model::UnknownName| {
                    ApiError::invalid("state", "validation_failed", e.to_string())
                })?)
            }
            "profile" => f.profile = Some(v.into_owned()),
            "cluster" => f.cluster = Some(v.into_owned()),
            "label" => {
                let (lk, lv) = v.split_once('=').ok_or_else(|| {
                    ApiError::invalid("label", "validation_failed", format!("{v:?} is not key=value"))
                })?;
                f.labels.push((lk.to_string(), lv.to_string()));
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "validation_failed",
                    format!("unknown query parameter {other:?}"),
                ));
            }
        }
    }
    Ok(f)
}

/// List machines.
#[utoipa::path(get, path = "/api/v1/machines", tag = "machines", params(ListQuery),
    responses(
        (status = 200, description = "Machines ordered by MAC", body = Vec<MachineView>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 422, description = "Bad filter", body = ErrorBody),
    ))]
pub async fn list(
    State(st): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<MachineView>>, ApiError> {
    let f = parse_filter(q.as_deref())?;
    let ops = st.ops.clone();
    let rows = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut out = Vec::new();
        for m in ops.machines()? {
            let last = ops.timeline(m.mac)?.pop();
            out.push((m, last));
        }
        Ok(out)
    })
    .await??;
    let views = rows
        .iter()
        .filter(|(m, _)| f.state.is_none_or(|s| m.state == s))
        .filter(|(m, _)| f.labels.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
        .map(|(m, last)| view(&st, m, last.clone()))
        .filter(|v| f.profile.is_none() || v.assigned_profile == f.profile)
        .filter(|v| f.cluster.is_none() || v.cluster == f.cluster)
        .collect();
    Ok(Json(views))
}

/// One machine with its timeline.
#[utoipa::path(get, path = "/api/v1/machines/{mac}", tag = "machines",
    params(("mac" = String, Path, description = "Boot MAC, any common notation", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    responses(
        (status = 200, description = "The machine", body = MachineDetail),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 422, description = "Not a MAC address", body = ErrorBody),
    ))]
pub async fn get(
    State(st): State<ApiState>,
    MacParam(mac): MacParam,
) -> Result<Json<MachineDetail>, ApiError> {
    let ops = st.ops.clone();
    let (m, timeline) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let m = ops
            .machine(mac)?
            .ok_or_else(|| ApiError::not_found("machine_not_found", format!("no machine {mac}")))?;
        Ok((m, ops.timeline(mac)?))
    })
    .await??;
    Ok(Json(MachineDetail {
        machine: view(&st, &m, timeline.last().cloned()),
        timeline,
    }))
}

/// A machine's boot timeline, oldest first.
#[utoipa::path(get, path = "/api/v1/machines/{mac}/timeline", tag = "machines",
    params(("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    responses(
        (status = 200, description = "Timeline", body = Vec<TimelineEvent>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 422, description = "Not a MAC address", body = ErrorBody),
    ))]
pub async fn timeline(
    State(st): State<ApiState>,
    MacParam(mac): MacParam,
) -> Result<Json<Vec<TimelineEvent>>, ApiError> {
    let ops = st.ops.clone();
    let tl = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        if ops.machine(mac)?.is_none() {
            return Err(ApiError::not_found(
                "machine_not_found",
                format!("no machine {mac}"),
            ));
        }
        Ok(ops.timeline(mac)?)
    })
    .await??;
    Ok(Json(tl))
}
