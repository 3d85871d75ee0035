//! The dashboard's config-release pages: `/ui/approvals` (what waits, with the code
//! each console shows; also the `verification_uri` of the device flow), and the
//! approve, deny and unpin buttons. Mutations need an admin session and echo its
//! CSRF token, like re-image.

use axum::Form;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use minijinja::value::{Serde, Value};
use serde::Deserialize;

use super::super::ApiState;
use super::super::auth;
use super::super::error::ApiError;
use super::super::params::MacParam;
use super::{CsrfForm, admin, login_redirect, page, role_name, secure};

/// `GET /ui/approvals`.
pub(super) async fn approvals(State(st): State<ApiState>, headers: HeaderMap, q: RawQuery) -> Response {
    let Some(s) = auth::session(&st, &headers) else {
        return login_redirect();
    };
    let svc = st.ops.service.clone();
    let pending = match tokio::task::spawn_blocking(move || svc.pending()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let notice = (q.0.as_deref() == Some("decided=1")).then_some("Decision recorded.");
    page(
        StatusCode::OK,
        "approvals.html",
        context! {
            role => role_name(&s.caller),
            admin => s.caller.role.may_mutate(),
            csrf => s.csrf,
            back => "/ui/approvals",
            notice => notice,
            pending => Value::from(Serde(&pending)),
        },
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct DecisionForm {
    csrf: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    back: Option<String>,
}

async fn decide(
    st: ApiState,
    headers: HeaderMap,
    mac: provisioner_core::model::MacAddr,
    f: DecisionForm,
    approve: bool,
) -> Response {
    let s = match admin(&st, &headers, &f.csrf, "/ui/machines/{mac}/approve|deny") {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let svc = st.ops.service.clone();
    let token_id = s.caller.token_id.clone();
    let code = f.code.filter(|c| !c.trim().is_empty());
    let r = tokio::task::spawn_blocking(move || {
        if approve {
            svc.approve(mac, code.as_deref(), &token_id)
        } else {
            svc.deny(mac, code.as_deref(), &token_id)
        }
    })
    .await;
    match r {
        Ok(Ok(_)) => {
            tracing::info!(target: "audit", %mac, token_id = %s.caller.token_id, approve, "config release decision from the dashboard");
            // Only our own pages: never an open redirect.
            let back = match f.back.as_deref() {
                Some("/ui/approvals") => "/ui/approvals?decided=1".to_string(),
                _ => format!("/ui/machines/{mac}?decided=1"),
            };
            secure(Redirect::to(&back).into_response())
        }
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /ui/machines/{mac}/approve`.
pub(super) async fn approve(
    State(st): State<ApiState>,
    headers: HeaderMap,
    MacParam(mac): MacParam,
    Form(f): Form<DecisionForm>,
) -> Response {
    decide(st, headers, mac, f, true).await
}

/// `POST /ui/machines/{mac}/deny`.
pub(super) async fn deny(
    State(st): State<ApiState>,
    headers: HeaderMap,
    MacParam(mac): MacParam,
    Form(f): Form<DecisionForm>,
) -> Response {
    decide(st, headers, mac, f, false).await
}

/// `POST /ui/machines/{mac}/unpin`.
pub(super) async fn unpin(
    State(st): State<ApiState>,
    headers: HeaderMap,
    MacParam(mac): MacParam,
    Form(f): Form<CsrfForm>,
) -> Response {
    let s = match admin(&st, &headers, &f.csrf, "/ui/machines/{mac}/unpin") {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let svc = st.ops.service.clone();
    let token_id = s.caller.token_id.clone();
    match tokio::task::spawn_blocking(move || svc.unpin(mac, &token_id)).await {
        Ok(Ok(_)) => {
            tracing::info!(target: "audit", %mac, token_id = %s.caller.token_id, "UUID unpinned from the dashboard");
            secure(Redirect::to(&format!("/ui/machines/{mac}?unpinned=1")).into_response())
        }
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
