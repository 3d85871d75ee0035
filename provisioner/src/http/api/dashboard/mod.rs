//! The dashboard: server-rendered pages on the API listener (minijinja templates with
//! HTML auto-escaping; no CDN, one small script for the live timeline).
//!
//! Pages need a dashboard session (log in with an API token). The only mutation,
//! re-image, is a form that needs an admin session and echoes the session's CSRF
//! token; the session cookie is `HttpOnly; Secure; SameSite=Strict`. A session whose
//! token was revoked gets 401 and the login page on its next request ([`guard`]).

use std::sync::OnceLock;

use axum::Form;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde::Deserialize;

mod adopt;
mod approvals;
mod cluster_page;
mod fleet;
mod live;
mod waterfall;

pub use fleet::DashboardSettings;

use super::ApiState;
use super::auth::{self, Caller, SESSION_COOKIE, Session};
use super::machines::view;
use super::params::MacParam;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in [
            ("base.html", include_str!("base.html")),
            ("login.html", include_str!("login.html")),
            ("machines.html", include_str!("machines.html")),
            ("fleet.html", include_str!("fleet.html")),
            ("waterfall.html", include_str!("waterfall.html")),
            ("machine.html", include_str!("machine.html")),
            ("clusters.html", include_str!("clusters.html")),
            ("approvals.html", include_str!("approvals.html")),
            ("decide.html", include_str!("decide.html")),
            ("adopt.html", include_str!("adopt.html")),
        ] {
            // Templates are compiled into the binary; a syntax error is a build bug
            // caught by the dashboard tests.
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(template = name, error = %e, "dashboard template does not compile");
            }
        }
        env
    })
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) fn page(status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => {
            secure((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
        }
        Err(e) => {
            tracing::error!(template = name, error = %e, "dashboard page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The dashboard routes (merged into the API router).
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/fleet") }))
        .route("/ui", get(|| async { Redirect::to("/ui/fleet") }))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/fleet", get(fleet::fleet))
        .route("/ui/clusters/live", get(live::clusters))
        .route("/ui/machines", get(machines))
        .route("/ui/machines/{mac}", get(machine))
        .route("/ui/machines/{mac}/reimage", post(reimage))
        .route("/ui/machines/{mac}/approve", post(approvals::approve))
        .route("/ui/machines/{mac}/deny", post(approvals::deny))
        .route("/ui/machines/{mac}/unpin", post(approvals::unpin))
        .route("/ui/machines/{mac}/adopt", post(adopt::adopt))
        .route("/ui/approvals", get(approvals::approvals))
        .route("/ui/clusters", get(cluster_page::clusters_page))
        .route(
            "/ui/static/app.css",
            get(|| async {
                secure(([(header::CONTENT_TYPE, "text/css")], include_str!("app.css")).into_response())
            }),
        )
        .route(
            "/ui/static/timeline.js",
            get(|| async {
                secure(
                    (
                        [(header::CONTENT_TYPE, "text/javascript")],
                        include_str!("timeline.js"),
                    )
                        .into_response(),
                )
            }),
        )
}

pub(super) fn role_name(c: &Caller) -> String {
    c.role.to_string()
}

async fn login_form() -> Response {
    page(StatusCode::OK, "login.html", context! {})
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(st): State<ApiState>, Form(f): Form<LoginForm>) -> Response {
    match auth::verify_token(st.tokens.clone(), f.token.trim().to_string()).await {
        Ok(Some(caller)) => {
            let id = st
                .sessions
                .open(caller, &crate::service::token_key(f.token.trim()));
            let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict");
            let mut r = Redirect::to("/ui/machines").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            secure(r)
        }
        Ok(None) => {
            metrics::counter!("provisioner_api_auth_failures_total", "reason" => "dashboard_login")
                .increment(1);
            tracing::warn!(
                route = "/ui/login",
                reason = "dashboard_login",
                "API authentication failed"
            );
            page(
                StatusCode::UNAUTHORIZED,
                "login.html",
                context! { error => "Unknown or revoked token." },
            )
        }
        Err(e) => e.into_response(),
    }
}

/// Clears the session cookie in the browser.
const CLEAR_COOKIE: &str = "provisioner_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0";

async fn logout(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(id) = auth::session_cookie(&headers) {
        st.sessions.close(&id);
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE));
    secure(r)
}

/// Middleware over the dashboard routes: a request whose session's token was
/// revoked gets 401 with the login page (and its cookie cleared) instead of the
/// page. The login and logout routes and the static files pass, so logging in
/// again works with a stale cookie in the browser.
pub async fn guard(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/ui/login" || path == "/ui/logout" || path.starts_with("/ui/static/") {
        return next.run(req).await;
    }
    match auth::check_session(&st, req.headers()).await {
        Ok(auth::SessionCheck::Revoked) => {
            metrics::counter!("provisioner_api_auth_failures_total", "reason" => "revoked_session")
                .increment(1);
            tracing::warn!(
                route = %path,
                reason = "revoked_session",
                "API authentication failed"
            );
            let mut r = page(
                StatusCode::UNAUTHORIZED,
                "login.html",
                context! { error => "Your session ended: its token was revoked. Log in again." },
            );
            r.headers_mut()
                .insert(header::SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE));
            r
        }
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Where a request without a dashboard session goes.
pub(super) fn login_redirect() -> Response {
    secure(Redirect::to("/ui/login").into_response())
}

/// `/ui/machines?offset=&limit=`: one page of the inventory. Only the page's
/// machines have their timeline read (for the last event), so the page costs the
/// same with 50 machines or 5,000 recorded strangers.
#[derive(Debug, serde::Deserialize)]
struct PageQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    PAGE_DEFAULT
}

const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 500;

async fn machines(
    State(st): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Response {
    let Some(s) = auth::session(&st, &headers) else {
        return login_redirect();
    };
    let (offset, limit) = (q.offset, q.limit.clamp(1, PAGE_MAX));
    let inv = st.ops.clone();
    let rows = tokio::task::spawn_blocking(
        move || -> Result<(usize, Vec<_>), provisioner_core::inventory::InventoryError> {
            let all = inv.machines()?;
            let mut out = Vec::new();
            for m in all.iter().skip(offset).take(limit) {
                let last = inv.timeline(m.mac)?.pop();
                out.push((m.clone(), last));
            }
            Ok((all.len(), out))
        },
    )
    .await;
    match rows {
        Ok(Ok((total, rows))) => {
            let views: Vec<_> = rows.iter().map(|(m, l)| view(&st, m, l.clone())).collect();
            let next = (offset + limit < total).then_some(offset + limit);
            let prev = (offset > 0).then(|| offset.saturating_sub(limit));
            page(
                StatusCode::OK,
                "machines.html",
                context! {
                    role => role_name(&s.caller),
                    machines => Value::from(Serde(&views)),
                    total, offset, limit, next, prev,
                    first => offset + 1,
                    last => offset + views.len(),
                },
            )
        }
        Ok(Err(e)) => super::error::ApiError::from(e).into_response(),
        Err(e) => super::error::ApiError::from(e).into_response(),
    }
}

async fn machine(
    State(st): State<ApiState>,
    headers: HeaderMap,
    MacParam(mac): MacParam,
    q: axum::extract::RawQuery,
) -> Response {
    let Some(s) = auth::session(&st, &headers) else {
        return login_redirect();
    };
    let ops = st.ops.clone();
    let svc = st.ops.service.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<_, crate::service::ServiceError> {
        Ok(match ops.machine(mac)? {
            Some(m) => {
                let mine = mac.to_string();
                let waiting: Vec<_> = svc.pending()?.into_iter().filter(|p| p.mac == mine).collect();
                Some((ops.timeline(mac)?, m, waiting))
            }
            None => None,
        })
    })
    .await;
    let (timeline, m, waiting) = match r {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return (StatusCode::NOT_FOUND, format!("no machine {mac}\n")).into_response(),
        Ok(Err(e)) => return super::error::ApiError::from(e).into_response(),
        Err(e) => return super::error::ApiError::from(e).into_response(),
    };
    let notice = match q.0.as_deref() {
        Some("reimaged=1") => Some("Re-image requested: the next network boot reinstalls this machine."),
        Some("decided=1") => Some("Decision recorded."),
        Some("unpinned=1") => Some("UUID pin cleared: the next UUID this machine presents is pinned."),
        Some("adopted=1") => Some("Adopted: infra/ has its MAC now; its next network boot installs it."),
        _ => None,
    };
    page(
        StatusCode::OK,
        "machine.html",
        context! {
            role => role_name(&s.caller),
            admin => s.caller.role.may_mutate(),
            csrf => s.csrf,
            notice => notice,
            back => format!("/ui/machines/{mac}"),
            waiting => Value::from(Serde(&waiting)),
            m => Value::from(Serde(view(&st, &m, timeline.last().cloned()))),
            attempts => Value::from(Serde(waterfall::view(&timeline))),
            timeline => Value::from(Serde(&timeline)),
        },
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    pub(super) csrf: String,
}

/// The admin session of a dashboard mutation, or the answer refusing it.
pub(super) fn admin(
    st: &ApiState,
    headers: &HeaderMap,
    csrf: &str,
    route: &'static str,
) -> Result<Session, Box<Response>> {
    let Some(s) = auth::session(st, headers) else {
        return Err(Box::new(login_redirect()));
    };
    if !s.caller.role.may_mutate() || csrf != s.csrf {
        metrics::counter!("provisioner_api_auth_failures_total", "reason" => "forbidden").increment(1);
        tracing::warn!(route, reason = "forbidden", "API authentication failed");
        return Err(Box::new(
            (StatusCode::FORBIDDEN, "this needs an admin session\n").into_response(),
        ));
    }
    Ok(s)
}

async fn reimage(
    State(st): State<ApiState>,
    headers: HeaderMap,
    MacParam(mac): MacParam,
    Form(f): Form<CsrfForm>,
) -> Response {
    let s = match admin(&st, &headers, &f.csrf, "/ui/machines/{mac}/reimage") {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match st.ops.reimage(mac).await {
        Ok(_) => {
            tracing::info!(%mac, token = %s.caller.token_id, "re-image requested from the dashboard");
            secure(Redirect::to(&format!("/ui/machines/{mac}?reimaged=1")).into_response())
        }
        Err(e) => super::error::ApiError::from(e).into_response(),
    }
}
