//! The operator surface on the real binary over HTTPS: the CLI (`token`, `machines`,
//! `clusters`, `events --follow`) and schemathesis against the served OpenAPI document.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{BIN, Daemon, http, loopback_boot, write_config};

/// A daemon over the common catalog (plus a cluster), Wake-on-LAN kept on loopback,
/// with three machines that fetched install scripts.
fn daemon(dir: &std::path::Path) -> Daemon {
    common::write_catalog(dir);
    std::fs::create_dir_all(dir.join("infra")).unwrap();
    // A valid cluster definition: since the Talos and k0s paths validate infra/ at
    // start, a bare `clusterName` no longer loads.
    std::fs::write(
        dir.join("infra/lab.yaml"),
        "distribution: k0s\nclusterName: lab\nk0sVersion: v1.36.3+k0s.2\nflatcarVersion: 4459.2.0\n\
         nodes: [{hostname: c1, controlPlane: true, ipAddress: 10.0.0.11}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("profiles/profiles/lab.yaml"),
        "id: lab\nimage: test-img\nconfig: plain\ncluster: lab\n",
    )
    .unwrap();
    // Every other machine installs `lab` too.
    std::fs::write(dir.join("profiles/groups/any.yaml"), "id: any\nprofile: lab\n").unwrap();
    let cfg = loopback_boot(&write_config(dir, dir));
    let text = std::fs::read_to_string(&cfg).unwrap() + "power:\n  wol: { target: \"127.0.0.1:9\" }\n";
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(&cfg);
    for n in 1..=3 {
        let (st, _) = http(
            d.http,
            "GET",
            &format!("/ipxe?mac=52-54-00-00-00-0{n}&arch=x86_64&platform=efi"),
        )
        .unwrap();
        assert_eq!(st, 200);
    }
    d
}

fn cli(d: &Daemon, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&d.config)
        .env("PROVISIONER_API_URL", d.api_url())
        .env("PROVISIONER_API_TOKEN", token)
        .env("PROVISIONER_CLIENT_CONFIG", "/nonexistent")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn cli_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let admin = d.token("admin");
    let reader = d.token("read-only");
    assert!(admin.starts_with("pvt_") && admin.len() == 68);

    // The CA comes from the local state dir (--config); only the URL is given.
    let (ok, out, err) = cli(&d, &reader, &["machines", "ls"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("MAC"), "{out}");
    assert!(
        out.contains("52:54:00:00:00:01") && out.contains("Booting") && out.contains("lab"),
        "{out}"
    );
    let (ok, out, _) = cli(&d, &reader, &["machines", "ls", "--json", "--state", "Booting"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    let (ok, _, err) = cli(&d, &reader, &["machines", "ls", "--state", "Sleeping"]);
    assert!(
        !ok && err.contains("422") && err.contains("field `state`"),
        "{err}"
    );

    let (ok, out, _) = cli(&d, &reader, &["machines", "show", "52-54-00-00-00-02"]);
    assert!(
        ok && out.contains("Timeline:") && out.contains("ipxe_script_served"),
        "{out}"
    );

    let (ok, _, err) = cli(&d, &reader, &["machines", "reimage", "52:54:00:00:00:01"]);
    assert!(!ok && err.contains("403"), "read-only cannot re-image: {err}");
    let (ok, out, err) = cli(&d, &admin, &["machines", "reimage", "52:54:00:00:00:01"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("ReimageRequested") && out.contains("power_cycle"),
        "{out}"
    );
    let (ok, out, _) = cli(
        &d,
        &admin,
        &["machines", "power", "52:54:00:00:00:01", "on", "--json"],
    );
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["driver"],
        "manual"
    );

    let (ok, out, _) = cli(&d, &reader, &["clusters", "ls"]);
    assert!(
        ok && out.contains("lab") && out.contains("pending"),
        "bootstrap not started: {out}"
    );
    let (ok, out, _) = cli(&d, &reader, &["clusters", "status", "lab"]);
    assert!(ok && out.contains("52:54:00:00:00:03"), "{out}");
    let (ok, _, err) = cli(&d, "pvt_wrong", &["machines", "ls"]);
    assert!(!ok && err.contains("401"), "{err}");

    // Cluster credentials: admin only; `-o` writes a 0600 file, else stdout.
    let (ok, out, err) = cli(&d, &reader, &["clusters", "kubeconfig", "lab"]);
    assert!(!ok && err.contains("403") && out.is_empty(), "{err}");
    let kc = dir.path().join("lab.kubeconfig");
    let (ok, _, err) = cli(
        &d,
        &admin,
        &["clusters", "kubeconfig", "lab", "-o", kc.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(
        text.contains("kind: Config") && text.contains("https://10.0.0.11:6443"),
        "the k0s admin kubeconfig"
    );
    let (ok, out, _) = cli(&d, &admin, &["clusters", "kubeconfig", "lab"]);
    let doc: serde_json::Value = serde_saphyr::from_str(&out).unwrap_or_default();
    let key = doc["users"][0]["user"]["client-key-data"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ok && key.len() > 100, "stdout carries the kubeconfig");
    let (ok, _, err) = cli(&d, &admin, &["clusters", "talosconfig", "lab"]);
    assert!(
        !ok && err.contains("404") && err.contains("talosconfig_not_available"),
        "{err}"
    );
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("cluster credential downloaded") && !log.contains(&key[..64]),
        "audited, never logged"
    );

    // Or everything from the client file, with no flag, variable or local config.
    let client = d.config.parent().unwrap().join("client.yaml");
    std::fs::write(
        &client,
        format!(
            "url: {}\ntoken: {reader}\nca: {}\n",
            d.api_url(),
            d.ca().display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["machines", "ls", "--json"])
        .env("PROVISIONER_CLIENT_CONFIG", &client)
        .env_remove("PROVISIONER_API_URL")
        .env_remove("PROVISIONER_API_TOKEN")
        .env_remove("PROVISIONER_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // events --follow prints new events as they are written.
    let mut follow = Command::new(BIN)
        .args(["events", "--follow", "--config"])
        .arg(&d.config)
        .env("PROVISIONER_API_URL", d.api_url())
        .env("PROVISIONER_API_TOKEN", &reader)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The stream subscribes when the response starts; boot until an event arrives.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        http(
            d.http,
            "GET",
            "/ipxe?mac=52-54-00-00-00-07&arch=x86_64&platform=efi",
        )
        .unwrap();
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            seen = Some(line);
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let line = seen.expect("an event line within 15 s");
    assert!(
        line.contains("52:54:00:00:00:07") && line.contains("ipxe_script_served"),
        "{line}"
    );

    // Tokens are listed without the secret and can be revoked.
    let (ok, out, _) = common::daemon::run(&["token", "ls", "--config", d.config.to_str().unwrap()]);
    assert!(ok && out.lines().count() == 2 && !out.contains("pvt_"), "{out}");
    let id = out
        .lines()
        .find(|l| l.contains("read-only"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(common::daemon::run(&["token", "revoke", &id, "--config", d.config.to_str().unwrap()]).0);
    let (ok, _, err) = cli(&d, &reader, &["machines", "ls"]);
    assert!(!ok && err.contains("401"), "revoked: {err}");
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let admin = d.token("admin");
    let report = dir.path().join("schemathesis");
    let started = Instant::now();
    // Bounded: few examples per operation, no stateful phase; the event stream never
    // ends by design, so it is left to the router tests.
    let mut child = Command::new("st")
        // Its example cache (.schemathesis/) goes to the temporary directory.
        .current_dir(dir.path())
        .args(["run", &format!("{}/api/v1/openapi.json", d.api_url())])
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .arg("--tls-verify")
        .arg(d.ca())
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args([
            "--max-examples",
            "10",
            "--seed",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
        ])
        .args([
            "--exclude-path",
            "/api/v1/events",
            "--request-timeout",
            "20",
            "--no-color",
        ])
        .arg("--report-dir")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("schemathesis (`st`) not found ({e}): run tests/setup"));
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "schemathesis ran over 240 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("schemathesis: {:.1} s\n{text}", started.elapsed().as_secs_f64());
    assert!(status.success(), "schemathesis failed:\n{text}");
    assert!(text.contains("passed") && !text.contains("failed"), "{text}");
    assert!(!text.contains(&admin), "the token is not echoed");
}
