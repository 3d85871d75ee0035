//! `/ui/fleet`: counts by state and the machines needing an operator
//! (`core::fleet`), each linking to its machine page.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use minijinja::value::{Serde, Value};
use provisioner_core::fleet::{self, Attention};
use provisioner_core::model::{MacAddr, MachineState};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{login_redirect, page, role_name};
use crate::http::api::{ApiState, auth};
use crate::service::PendingKind;

/// `dashboard:` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSettings {
    /// Minutes after its config was fetched that a machine with no installed report
    /// is listed as a stuck install (default 30: a Talos or Flatcar install takes a
    /// few minutes; image pulls on a slow link take longer).
    pub stuck_install_minutes: NonZeroU32,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            stuck_install_minutes: NonZeroU32::new(30).expect("literal"),
        }
    }
}

#[derive(Debug, Serialize)]
struct Row {
    mac: String,
    reason: fleet::Reason,
    label: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
    detail: String,
}

impl From<Attention> for Row {
    fn from(a: Attention) -> Self {
        Self {
            mac: a.mac.to_string(),
            reason: a.reason,
            label: a.reason.label(),
            since: a.since,
            detail: a.detail,
        }
    }
}

type Summary = (usize, Vec<(MachineState, usize)>, Vec<Attention>);

/// Reads the fleet. Timelines are read only for machines that could need an
/// operator: assigned a profile, past `Discovered`, or waiting; unknown strangers
/// (possibly thousands) are only counted.
fn summary(st: &ApiState, now: OffsetDateTime) -> Result<Summary, crate::service::ServiceError> {
    let ops = &st.ops;
    let machines = ops.machines()?;
    let device: BTreeMap<MacAddr, String> = ops
        .service
        .pending()?
        .into_iter()
        .filter(|p| p.kind == PendingKind::DeviceAuthorization && p.status == "pending")
        .filter_map(|p| Some((p.mac.parse().ok()?, p.code)))
        .collect();
    let stuck = time::Duration::minutes(i64::from(st.dashboard.stuck_install_minutes.get()));
    let mut list = Vec::new();
    for m in &machines {
        let code = device.get(&m.mac).map(String::as_str);
        let assigned = crate::ops::assignment(&ops.catalog, m).is_some();
        if !assigned && m.state == MachineState::Discovered && m.pending_approval.is_none() && code.is_none()
        {
            continue;
        }
        let timeline = ops.timeline(m.mac)?;
        list.extend(fleet::attention(m, &timeline, code, now, stuck));
    }
    fleet::sort(&mut list);
    let (total, by_state) = fleet::counts(&machines);
    Ok((total, by_state, list))
}

pub(super) async fn fleet(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    let Some(s) = auth::session(&st, &headers) else {
        return login_redirect();
    };
    let state = st.clone();
    let r = tokio::task::spawn_blocking(move || summary(&state, OffsetDateTime::now_utc())).await;
    let (total, by_state, list) = match r {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return crate::http::api::error::ApiError::from(e).into_response(),
        Err(e) => return crate::http::api::error::ApiError::from(e).into_response(),
    };
    let states: Vec<_> = by_state
        .iter()
        .map(|(s, n)| context! { state => s.to_string(), n => *n })
        .collect();
    let rows: Vec<Row> = list.into_iter().map(Row::from).collect();
    page(
        StatusCode::OK,
        "fleet.html",
        context! {
            role => role_name(&s.caller),
            total,
            states,
            attention => Value::from(Serde(&rows)),
            stuck_minutes => st.dashboard.stuck_install_minutes.get(),
        },
    )
}
