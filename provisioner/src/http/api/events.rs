//! `GET /api/v1/events`: every timeline event as it is written, as Server-Sent Events
//! (WHATWG HTML §9.2). Each message is `event: timeline` with a JSON
//! [`EventMessage`]; a subscriber too slow to keep up gets `event: lagged` with the
//! number of events it missed, then continues. Streams end at shutdown, and when the
//! token they were opened with is revoked (re-checked every [`auth::RECHECK`]; the
//! last message is then `event: revoked`).

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use provisioner_core::model::{EventKind, MacAddr};
use provisioner_core::timeline;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;

use super::ApiState;
use super::auth::{self, TokenKey};
use super::error::{ApiError, ErrorBody};

/// One `timeline` message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventMessage {
    /// Whose timeline.
    pub mac: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What.
    pub kind: EventKind,
    /// Details, for people.
    pub detail: String,
    /// The typed event (`type` names it), absent for entries of an older store
    /// whose text could not be read back.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub event: Option<timeline::Event>,
}

/// Live timeline events.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(("mac" = Option<String>, Query, description = "Only this machine's events")),
    responses(
        (status = 200, description = "`text/event-stream`: `event: timeline` messages whose data is an EventMessage", content_type = "text/event-stream", body = String),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 422, description = "Bad filter", body = ErrorBody),
    ))]
pub async fn stream(
    State(st): State<ApiState>,
    key: Option<Extension<TokenKey>>,
    RawQuery(q): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut only: Option<MacAddr> = None;
    for (k, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "mac" => {
                only = Some(v.parse().map_err(|e: provisioner_core::model::MacParseError| {
                    ApiError::invalid("mac", "invalid_mac", e.to_string())
                })?)
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
    let live = Live {
        rx: st.ops.service.subscribe(),
        shutdown: st.shutdown.clone(),
        tokens: st.tokens.clone(),
        // The auth middleware always sets it; a router without it has no tokens.
        key: key.map(|Extension(k)| k.0),
        recheck: tokio::time::interval_at(tokio::time::Instant::now() + auth::RECHECK, auth::RECHECK),
        ended: false,
    };
    let s = futures::stream::unfold(live, move |mut live| async move {
        if live.ended {
            return None;
        }
        loop {
            let next = tokio::select! {
                () = live.shutdown.cancelled() => return None,
                _ = live.recheck.tick() => {
                    let Some(key) = live.key.clone() else { continue };
                    match auth::verify_key(live.tokens.clone(), key).await {
                        Ok(None) => {
                            tracing::info!("event stream closed: its token was revoked");
                            live.ended = true;
                            let ev = Event::default().event("revoked").data("{}");
                            return Some((Ok(ev), live));
                        }
                        // A store error is not a revocation: check again next time.
                        Ok(Some(_)) | Err(_) => continue,
                    }
                }
                r = live.rx.recv() => r,
            };
            let ev = match next {
                Ok(e) if only.is_none_or(|m| m == e.mac) => {
                    // Rendered to text here, at the edge.
                    let ev = e.event;
                    let msg = EventMessage {
                        mac: e.mac.to_string(),
                        at: ev.at,
                        kind: ev.kind(),
                        detail: ev.detail(),
                        event: (!matches!(ev.event, timeline::Event::Legacy { .. })).then_some(ev.event),
                    };
                    Event::default()
                        .event("timeline")
                        .json_data(&msg)
                        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => Event::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{n}}}")),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(ev), live));
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A stream's state between messages.
struct Live {
    rx: tokio::sync::broadcast::Receiver<crate::service::MachineEvent>,
    shutdown: tokio_util::sync::CancellationToken,
    tokens: std::sync::Arc<dyn provisioner_core::apitoken::ApiTokenStore>,
    key: Option<String>,
    recheck: tokio::time::Interval,
    ended: bool,
}
