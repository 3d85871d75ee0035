//! `/ui/clusters/live`: Server-Sent Events (WHATWG HTML §9.2) telling the clusters
//! page to re-render: `event: changed` when a machine event is committed (pushed by
//! the journal) or a cluster's bootstrap status changed. The workflows write their
//! progress to the cluster store without a publisher, so the stream compares every
//! cluster's status once a second (a read of the local store) and says so only on a
//! change. It ends at shutdown and when the session's token is revoked (`revoked`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use crate::http::api::ApiState;
use crate::http::api::auth::{self, SessionCheck};
use crate::ops::clusters::BootstrapStatus;

/// How often the cluster store is compared.
const TICK: Duration = Duration::from_secs(1);

fn statuses(st: &ApiState) -> Vec<BootstrapStatus> {
    st.clusters
        .now()
        .iter()
        .map(|c| st.bootstrap.status(&c.name))
        .collect()
}

async fn snapshot(st: &ApiState) -> Vec<BootstrapStatus> {
    let s = st.clone();
    tokio::task::spawn_blocking(move || statuses(&s))
        .await
        .unwrap_or_default()
}

struct Live {
    st: ApiState,
    headers: HeaderMap,
    rx: tokio::sync::broadcast::Receiver<crate::service::MachineEvent>,
    tick: tokio::time::Interval,
    recheck: tokio::time::Interval,
    last: Vec<BootstrapStatus>,
    ended: bool,
}

pub(super) async fn clusters(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    if auth::session(&st, &headers).is_none() {
        return super::login_redirect();
    }
    let start = tokio::time::Instant::now();
    let live = Live {
        rx: st.ops.service.subscribe(),
        last: snapshot(&st).await,
        tick: tokio::time::interval_at(start + TICK, TICK),
        recheck: tokio::time::interval_at(start + auth::RECHECK, auth::RECHECK),
        st,
        headers,
        ended: false,
    };
    let s = futures::stream::unfold(live, |mut live| async move {
        if live.ended {
            return None;
        }
        loop {
            let changed = tokio::select! {
                () = live.st.shutdown.cancelled() => return None,
                _ = live.recheck.tick() => {
                    if let Ok(SessionCheck::Revoked | SessionCheck::Absent) =
                        auth::check_session(&live.st, &live.headers).await
                    {
                        live.ended = true;
                        return Some((Ok(Event::default().event("revoked").data("{}")), live));
                    }
                    false
                }
                _ = live.tick.tick() => {
                    let now = snapshot(&live.st).await;
                    let changed = now != live.last;
                    live.last = now;
                    changed
                }
                r = live.rx.recv() => match r {
                    Ok(_) | Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return None,
                },
            };
            if changed {
                let ev: Result<Event, Infallible> = Ok(Event::default().event("changed").data("{}"));
                return Some((ev, live));
            }
        }
    });
    super::secure(
        Sse::new(s)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
    )
}
