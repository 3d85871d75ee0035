//! `GET /api/v1/events`: every timeline event as it is written, as Server-Sent Events
//! (WHATWG HTML §9.2). Each message is `event: timeline` with a JSON
//! [`EventMessage`]; a subscriber too slow to keep up gets `event: lagged` with the
//! number of events it missed, then continues. Streams end at shutdown.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use provisioner_core::model::{EventKind, MacAddr};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;

use super::ApiState;
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
    /// Details.
    pub detail: String,
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
    let rx = st.ops.service.subscribe();
    let shutdown = st.shutdown.clone();
    let s = futures::stream::unfold((rx, shutdown), move |(mut rx, shutdown)| async move {
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return None,
                r = rx.recv() => r,
            };
            let ev = match next {
                Ok(e) if only.is_none_or(|m| m == e.mac) => {
                    let msg = EventMessage {
                        mac: e.mac.to_string(),
                        at: e.event.at,
                        kind: e.event.kind,
                        detail: e.event.detail,
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
            return Some((Ok(ev), (rx, shutdown)));
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
