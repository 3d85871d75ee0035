//! `/api/v1/machines`: list with filters, get, patch, delete, timeline.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use provisioner_core::inventory::Update;
use provisioner_core::model::{Arch, EventKind, Machine, MachineState, TimelineEvent};
use provisioner_core::power::PowerSpec;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

use super::ApiState;
use super::error::{ApiError, Body, ErrorBody};
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
    let a = assignment(&st.ops.catalog, m);
    MachineView {
        mac: m.mac.to_string(),
        state: m.state,
        arch: m.arch,
        firmware: m.arch.firmware().into(),
        uuid: m.uuid.clone(),
        serial: m.serial.clone(),
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
                f.state = Some(
                    v.parse()
                        .map_err(|e: String| ApiError::invalid("state", "validation_failed", e))?,
                )
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
    let inv = st.ops.service.inventory().clone();
    let rows = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut out = Vec::new();
        for m in inv.list()? {
            let last = inv.timeline(m.mac)?.pop();
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
    let inv = st.ops.service.inventory().clone();
    let (m, timeline) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let m = inv
            .get(mac)?
            .ok_or_else(|| ApiError::not_found("machine_not_found", format!("no machine {mac}")))?;
        Ok((m, inv.timeline(mac)?))
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
    let inv = st.ops.service.inventory().clone();
    let tl = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        if inv.get(mac)?.is_none() {
            return Err(ApiError::not_found(
                "machine_not_found",
                format!("no machine {mac}"),
            ));
        }
        Ok(inv.timeline(mac)?)
    })
    .await??;
    Ok(Json(tl))
}

/// `Some(v)` when the field is present (even `null`), `None` when absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Changes to a machine. Absent fields stay as they are; `null` clears.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachinePatch {
    /// Replaces every operator label.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Profile override (must exist); `null` returns the machine to group selection.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub profile: Option<Option<String>>,
    /// Boot-file override (a plain file name); `null` clears.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub boot_file: Option<Option<String>>,
    /// Power driver; `null` means manual.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<PowerSpec>)]
    pub power: Option<Option<PowerSpec>>,
}

/// Labels the boot request sets itself; an operator label would be shadowed.
const RESERVED_LABELS: [&str; 6] = ["mac", "uuid", "serial", "hostname", "arch", "firmware"];

fn plain_name(s: &str, max: usize, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c))
}

fn validate(st: &ApiState, p: &MachinePatch) -> Result<(), ApiError> {
    if let Some(labels) = &p.labels {
        if labels.len() > 64 {
            return Err(ApiError::invalid(
                "labels",
                "validation_failed",
                "at most 64 labels",
            ));
        }
        for (k, v) in labels {
            let field = format!("labels.{k}");
            if !plain_name(k, 63, &['/']) {
                return Err(ApiError::invalid(
                    &field,
                    "validation_failed",
                    "label keys are 1-63 characters of A-Z a-z 0-9 . _ - /",
                ));
            }
            if RESERVED_LABELS.contains(&k.as_str()) {
                return Err(ApiError::invalid(
                    &field,
                    "validation_failed",
                    format!("{k:?} is set from the boot request and cannot be a label"),
                ));
            }
            if v.len() > 256 || v.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    &field,
                    "validation_failed",
                    "label values are at most 256 characters, no control characters",
                ));
            }
        }
    }
    if let Some(Some(profile)) = &p.profile
        && !st.ops.catalog.profiles.contains_key(profile)
    {
        return Err(ApiError::invalid(
            "profile",
            "unknown_profile",
            format!("no profile {profile:?}"),
        ));
    }
    if let Some(Some(f)) = &p.boot_file
        && !plain_name(f, 128, &[])
    {
        return Err(ApiError::invalid(
            "boot_file",
            "validation_failed",
            "a plain file name: 1-128 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    if let Some(Some(spec)) = &p.power {
        match spec {
            PowerSpec::Proxmox { node, .. } if !plain_name(node, 63, &[]) => {
                return Err(ApiError::invalid(
                    "power.node",
                    "validation_failed",
                    "a Proxmox node name",
                ));
            }
            PowerSpec::Redfish { system, .. }
                if !system.starts_with("/redfish/v1/") || system.contains("..") =>
            {
                return Err(ApiError::invalid(
                    "power.system",
                    "validation_failed",
                    "a path under /redfish/v1/",
                ));
            }
            PowerSpec::Manual { instructions } if instructions.len() > 1024 => {
                return Err(ApiError::invalid(
                    "power.instructions",
                    "validation_failed",
                    "at most 1024 characters",
                ));
            }
            _ => {}
        }
        st.ops
            .power
            .validate(spec)
            .map_err(|e| ApiError::invalid("power.endpoint", "unknown_power_endpoint", e))?;
    }
    Ok(())
}

/// Change labels, profile override, boot-file override or power driver.
#[utoipa::path(patch, path = "/api/v1/machines/{mac}", tag = "machines",
    params(("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    request_body = MachinePatch,
    responses(
        (status = 200, description = "The updated machine", body = MachineView),
        (status = 400, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid field (named in `field`)", body = ErrorBody),
    ))]
pub async fn patch(
    State(st): State<ApiState>,
    MacParam(mac): MacParam,
    Body(p): Body<MachinePatch>,
) -> Result<Json<MachineView>, ApiError> {
    validate(&st, &p)?;
    let svc = st.ops.service.clone();
    let (m, last) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut found = false;
        let stored = svc.update(mac, &mut |cur| {
            let Some(mut m) = cur else {
                found = false;
                return Update::default();
            };
            found = true;
            let mut changed = Vec::new();
            if let Some(l) = &p.labels {
                m.labels = l.clone();
                changed.push("labels");
            }
            if let Some(v) = &p.profile {
                m.profile = v.clone();
                changed.push("profile");
            }
            if let Some(v) = &p.boot_file {
                m.boot_file = v.clone();
                changed.push("boot_file");
            }
            if let Some(v) = &p.power {
                m.power = v.clone();
                changed.push("power");
            }
            let events = if changed.is_empty() {
                vec![]
            } else {
                vec![TimelineEvent {
                    at: OffsetDateTime::now_utc(),
                    kind: EventKind::MachineUpdated,
                    detail: format!("changed {}", changed.join(", ")),
                }]
            };
            Update {
                machine: Some(m),
                events,
            }
        })?;
        match stored {
            Some(m) if found => {
                let last = svc.inventory().timeline(mac)?.pop();
                Ok((m, last))
            }
            _ => Err(ApiError::not_found(
                "machine_not_found",
                format!("no machine {mac}"),
            )),
        }
    })
    .await??;
    Ok(Json(view(&st, &m, last)))
}

/// Forget a machine, its timeline and its tokens.
#[utoipa::path(delete, path = "/api/v1/machines/{mac}", tag = "machines",
    params(("mac" = String, Path, description = "Boot MAC", pattern = r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$", example = "52:54:00:12:34:56")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 422, description = "Not a MAC address", body = ErrorBody),
    ))]
pub async fn delete(State(st): State<ApiState>, MacParam(mac): MacParam) -> Result<StatusCode, ApiError> {
    let inv = st.ops.service.inventory().clone();
    if tokio::task::spawn_blocking(move || inv.delete(mac)).await?? {
        tracing::info!(%mac, "machine deleted by an operator");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "machine_not_found",
            format!("no machine {mac}"),
        ))
    }
}
