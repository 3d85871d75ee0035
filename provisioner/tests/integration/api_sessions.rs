//! Sessions die with their token, against the served appliance: a dashboard session
//! and two SSE streams (one on a bearer token, one on the session cookie) are open
//! when `provisioner token revoke` runs in another process; the session's next
//! request gets 401 and both streams close with `event: revoked`. Another token's
//! session and stream are untouched.

use crate::common;

use std::io::Read;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, run, write_config};

/// `token create`: (token, id).
fn create_token(d: &Daemon, role: &str) -> (String, String) {
    let (ok, out, err) = run(&[
        "token",
        "create",
        "--role",
        role,
        "--config",
        d.config.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    // stderr: "created <role> token <id> (shown once; store it now)"
    let id = err
        .split_whitespace()
        .skip_while(|w| *w != "token")
        .nth(1)
        .unwrap_or_else(|| panic!("no id in {err:?}"))
        .to_string();
    (out.trim().to_string(), id)
}

/// A client trusting the daemon's CA that never follows redirects nor times out.
fn client(d: &Daemon) -> reqwest::blocking::Client {
    let pem = std::fs::read(d.ca()).unwrap();
    reqwest::blocking::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(None)
        .build()
        .unwrap()
}

/// Logs in to the dashboard; returns the session cookie (`name=value`).
fn login(d: &Daemon, token: &str) -> String {
    let resp = client(d)
        .post(format!("{}/ui/login", d.api_url()))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303, "login");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

fn get_with_cookie(d: &Daemon, path: &str, cookie: &str) -> (u16, String) {
    let resp = client(d)
        .get(format!("{}{path}", d.api_url()))
        .header("cookie", cookie)
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// Opens `/api/v1/events` and reads it on a thread until it ends; the receiver gets
/// everything read once the server closes the stream.
fn open_stream(d: &Daemon, auth: (&str, String)) -> mpsc::Receiver<String> {
    let mut resp = client(d)
        .get(format!("{}/api/v1/events", d.api_url()))
        .header(auth.0, auth.1)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = resp.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let _ = tx.send(text);
    });
    rx
}

#[test]
fn revoking_a_token_ends_its_dashboard_session_and_its_event_streams() {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let d = Daemon::start(&write_config(dir.path(), dir.path()));
    let (doomed, doomed_id) = create_token(&d, "read-only");
    let (kept, _) = create_token(&d, "read-only");

    let cookie = login(&d, &doomed);
    let other = login(&d, &kept);
    assert_eq!(get_with_cookie(&d, "/ui/machines", &cookie).0, 200);
    assert_eq!(get_with_cookie(&d, "/api/v1/machines", &cookie).0, 200);
    let bearer_stream = open_stream(&d, ("authorization", format!("Bearer {doomed}")));
    let cookie_stream = open_stream(&d, ("cookie", cookie.clone()));
    let kept_stream = open_stream(&d, ("authorization", format!("Bearer {kept}")));

    let (ok, out, err) = run(&[
        "token",
        "revoke",
        &doomed_id,
        "--config",
        d.config.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let revoked_at = Instant::now();

    // The session's next request: 401 with the login page, cookie cleared; the API
    // answers 401 on the same cookie, and the session stays dead.
    let (status, page) = get_with_cookie(&d, "/ui/machines", &cookie);
    assert_eq!(status, 401, "{page}");
    assert!(page.contains("its token was revoked"), "{page}");
    let (status, body) = get_with_cookie(&d, "/api/v1/machines", &cookie);
    assert_eq!(status, 401, "{body}");
    assert_eq!(get_with_cookie(&d, "/ui/machines", &cookie).0, 303);
    // The bearer token itself is refused.
    assert_eq!(d.api_get("/api/v1/machines", Some(&doomed)).0, 401);

    // Both streams of the revoked token close, with `event: revoked` last.
    for (name, rx) in [("bearer", &bearer_stream), ("cookie", &cookie_stream)] {
        let text = rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("the {name} stream is still open 15 s after the revocation"));
        assert!(
            text.trim_end().ends_with("event: revoked\ndata: {}"),
            "{name}: {text:?}"
        );
    }
    let closed_after = revoked_at.elapsed();
    assert!(closed_after < Duration::from_secs(10), "{closed_after:?}");

    // The other token's session and stream are untouched.
    assert_eq!(get_with_cookie(&d, "/ui/machines", &other).0, 200);
    assert!(
        kept_stream.recv_timeout(Duration::from_secs(3)).is_err(),
        "the other token's stream closed"
    );
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("reason=\"revoked_session\"") || log.contains("revoked_session"),
        "{log}"
    );
    assert!(!log.contains(&doomed), "the token is never logged");
}
