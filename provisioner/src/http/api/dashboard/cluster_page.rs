//! `/ui/clusters`: each cluster of `infra/` with its machines and its bootstrap as a
//! progress line with times (`core::cluster::progress`) and the last event.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use minijinja::value::{Serde, Value};

use super::{login_redirect, page, role_name};
use crate::http::api::{ApiState, auth, clusters};

pub(super) async fn clusters_page(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    let Some(s) = auth::session(&st, &headers) else {
        return login_redirect();
    };
    match clusters::list(State(st.clone())).await {
        Ok(axum::Json(cs)) => {
            let progress = st.bootstrap.clone();
            let names: Vec<_> = cs.iter().map(|c| (c.name.clone(), c.kind.clone())).collect();
            let lines = tokio::task::spawn_blocking(move || {
                names
                    .into_iter()
                    .map(|(n, k)| {
                        let line = progress.line(&n, &k);
                        (n, line)
                    })
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
            .await
            .unwrap_or_default();
            page(
                StatusCode::OK,
                "clusters.html",
                context! {
                    role => role_name(&s.caller),
                    clusters => Value::from(Serde(&cs)),
                    lines => Value::from(Serde(&lines)),
                },
            )
        }
        Err(e) => e.into_response(),
    }
}
