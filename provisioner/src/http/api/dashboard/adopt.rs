//! `POST /ui/machines/{mac}/adopt`: the dashboard's adopt action (admin session and
//! its CSRF token), the same operation as `POST /api/v1/machines/{mac}/adopt`
//! (`ops::adopt`). Its form is the `adopt.html` partial of the machine page.

use axum::Form;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{admin, secure};
use crate::http::api::ApiState;
use crate::http::api::error::ApiError;
use crate::http::api::params::MacParam;

#[derive(Debug, Deserialize)]
pub(super) struct AdoptForm {
    csrf: String,
    node: String,
}

/// Adopts the machine as `node`, then back to its page with a notice.
pub(super) async fn adopt(
    State(st): State<ApiState>,
    headers: HeaderMap,
    MacParam(mac): MacParam,
    Form(f): Form<AdoptForm>,
) -> Response {
    let s = match admin(&st, &headers, &f.csrf, "/ui/machines/{mac}/adopt") {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let node = f.node.trim().to_string();
    let r = st.ops.adopt(mac, node.clone()).await;
    let outcome = match &r {
        Ok(_) => "done".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    tracing::info!(target: "audit", %mac, %node, token_id = %s.caller.token_id, %outcome, "adopt from the dashboard");
    match r {
        Ok(_) => secure(Redirect::to(&format!("/ui/machines/{mac}?adopted=1")).into_response()),
        Err(e) => ApiError::from(e).into_response(),
    }
}
