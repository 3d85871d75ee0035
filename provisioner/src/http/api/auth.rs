//! Authentication and authorization for the API listener.
//!
//! - API clients send `Authorization: Bearer <token>`. Tokens are created with
//!   `provisioner token create --role admin|read-only`; the store keeps only their
//!   SHA-256 ([`crate::service::token_key`]).
//! - The dashboard logs in once with a token and gets an in-memory session cookie
//!   (`HttpOnly; Secure; SameSite=Strict`); the cookie authenticates reads only, and
//!   the dashboard's one mutation (re-image) carries a per-session CSRF token.
//! - Sessions and live streams die with their token: a session remembers the hash of
//!   the token it was opened with and every request re-checks it ([`check_session`]);
//!   an SSE stream re-checks its token every [`RECHECK`]. `provisioner token revoke`
//!   (another process) is seen through the store's generation file at the next check.
//! - Reads (GET/HEAD) need any role; everything else needs `admin` (403 otherwise).
//!   No or an unknown token is 401. Failures are logged with the peer and route,
//!   never the token, and counted in `provisioner_api_auth_failures_total{reason}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use provisioner_core::apitoken::{ApiTokenStore, Role};
use rand::RngCore;

use super::ApiState;
use super::error::ApiError;
use crate::service::token_key;

/// Name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "provisioner_session";
/// How long a dashboard session lives.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept; the oldest go first.
const MAX_SESSIONS: usize = 1024;
/// How often a live stream re-checks that its token still exists.
pub const RECHECK: Duration = Duration::from_secs(2);

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its role.
    pub role: Role,
    /// The token's public id.
    pub token_id: String,
}

/// A dashboard session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who logged in.
    pub caller: Caller,
    /// Token the dashboard's forms must echo (double-submit protection on top of
    /// `SameSite=Strict`).
    pub csrf: String,
    /// SHA-256 of the token the session was opened with (never the token).
    token_key: String,
    expires: Instant,
}

/// The hash of the token a request was authenticated with, for handlers that keep
/// working after the request (SSE streams) and must stop when it is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenKey(pub String);

/// What a request's session cookie amounts to.
#[derive(Debug, Clone)]
pub enum SessionCheck {
    /// No cookie, or no session (unknown or expired) behind it.
    Absent,
    /// A live session whose token still exists.
    Live(Session),
    /// The session's token was revoked: the session is now closed.
    Revoked,
}

/// In-memory dashboard sessions, keyed by the SHA-256 of the cookie value.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Opens a session for `caller`, who logged in with the token whose
    /// [`token_key`] is `key`; returns the cookie value.
    pub fn open(&self, caller: Caller, key: &str) -> String {
        let id = random_hex();
        let now = Instant::now();
        if let Ok(mut m) = self.map.lock() {
            m.retain(|_, s| s.expires > now);
            if m.len() >= MAX_SESSIONS
                && let Some(oldest) = m.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
            m.insert(
                token_key(&id),
                Session {
                    caller,
                    csrf: random_hex(),
                    token_key: key.to_string(),
                    expires: now + SESSION_TTL,
                },
            );
        }
        id
    }

    /// The live session for a cookie value.
    pub fn get(&self, id: &str) -> Option<Session> {
        let m = self.map.lock().ok()?;
        m.get(&token_key(id))
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&token_key(id));
        }
    }
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(SESSION_COOKIE)?
                .strip_prefix('=')
                .map(str::to_string)
        })
}

/// The dashboard session of a request.
pub fn session(st: &ApiState, headers: &HeaderMap) -> Option<Session> {
    st.sessions.get(&session_cookie(headers)?)
}

/// Looks a bearer token up in the store (blocking I/O off the runtime).
pub async fn verify_token(tokens: Arc<dyn ApiTokenStore>, token: String) -> Result<Option<Caller>, ApiError> {
    verify_key(tokens, token_key(&token)).await
}

/// Looks a token up by its [`token_key`] (blocking I/O off the runtime): `None` once
/// it is revoked.
pub async fn verify_key(tokens: Arc<dyn ApiTokenStore>, key: String) -> Result<Option<Caller>, ApiError> {
    let rec = tokio::task::spawn_blocking(move || tokens.lookup(&key)).await??;
    Ok(rec.map(|r| Caller {
        role: r.role,
        token_id: r.id,
    }))
}

/// The request's dashboard session, with its token re-checked against the store. A
/// session whose token is gone (revoked) is closed here, so it stays dead even if a
/// token with the same id came back.
pub async fn check_session(st: &ApiState, headers: &HeaderMap) -> Result<SessionCheck, ApiError> {
    let Some(cookie) = session_cookie(headers) else {
        return Ok(SessionCheck::Absent);
    };
    let Some(s) = st.sessions.get(&cookie) else {
        return Ok(SessionCheck::Absent);
    };
    match verify_key(st.tokens.clone(), s.token_key.clone()).await? {
        Some(c) if c.token_id == s.caller.token_id => Ok(SessionCheck::Live(s)),
        _ => {
            st.sessions.close(&cookie);
            tracing::info!(token = %s.caller.token_id, "dashboard session ended: its token was revoked");
            Ok(SessionCheck::Revoked)
        }
    }
}

impl Session {
    /// The hash of the session's token.
    pub fn token_key(&self) -> TokenKey {
        TokenKey(self.token_key.clone())
    }
}

fn fail(reason: &'static str, req: &Request, status: StatusCode, code: &str, message: &str) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    metrics::counter!("provisioner_api_auth_failures_total", "reason" => reason).increment(1);
    tracing::warn!(%peer, method = %req.method(), %route, reason, "API authentication failed");
    ApiError::new(status, code, message).into_response()
}

/// Middleware over every protected route.
pub async fn require(State(st): State<ApiState>, mut req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    let (caller, key) = match bearer {
        Some(Some(token)) if !token.is_empty() => {
            match verify_token(st.tokens.clone(), token.clone()).await {
                Ok(Some(c)) => (c, TokenKey(token_key(&token))),
                Ok(None) => {
                    return fail(
                        "invalid",
                        &req,
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "unknown or revoked token",
                    );
                }
                Err(e) => return e.into_response(),
            }
        }
        Some(_) => {
            return fail(
                "malformed",
                &req,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "expected `Authorization: Bearer <token>`",
            );
        }
        // Session cookies authenticate reads only: mutations need a bearer token
        // (or the dashboard's own CSRF-checked form).
        None => match check_session(&st, req.headers()).await {
            Ok(SessionCheck::Live(s)) if safe => {
                let key = s.token_key();
                (s.caller, key)
            }
            Ok(SessionCheck::Revoked) => {
                return fail(
                    "revoked_session",
                    &req,
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "session ended: its token was revoked",
                );
            }
            Err(e) => return e.into_response(),
            _ => {
                return fail(
                    "missing",
                    &req,
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing bearer token",
                );
            }
        },
    };
    if !safe && !caller.role.may_mutate() {
        return fail(
            "forbidden",
            &req,
            StatusCode::FORBIDDEN,
            "forbidden",
            "this call needs an admin token",
        );
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(key);
    next.run(req).await
}
