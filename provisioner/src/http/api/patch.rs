//! `PATCH` and `DELETE /api/v1/machines/{mac}`: operator changes, validated field by
//! field (422 naming the field).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use provisioner_core::power::PowerSpec;
use serde::{Deserialize, Deserializer};

use super::ApiState;
use super::error::{ApiError, Body, ErrorBody};
use super::machines::{MachineView, view};
use super::params::MacParam;
use crate::ops::machines::MachineChanges;

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
        && !st.ops.catalog().profiles.contains_key(profile)
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
            .map_err(|e| ApiError::invalid("power.endpoint", "unknown_power_endpoint", e.to_string()))?;
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
    let ops = st.ops.clone();
    let changes = MachineChanges {
        labels: p.labels,
        profile: p.profile,
        boot_file: p.boot_file,
        power: p.power,
    };
    let (m, last) = tokio::task::spawn_blocking(move || ops.update_machine(mac, &changes))
        .await??
        .ok_or_else(|| ApiError::not_found("machine_not_found", format!("no machine {mac}")))?;
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
    let ops = st.ops.clone();
    if tokio::task::spawn_blocking(move || ops.forget(mac)).await?? {
        tracing::info!(%mac, "machine deleted by an operator");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "machine_not_found",
            format!("no machine {mac}"),
        ))
    }
}
