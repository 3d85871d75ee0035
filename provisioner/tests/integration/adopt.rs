//! Issue 17 item 1, "adopt, don't type", against the real binary: an unknown machine
//! is `Discovered` with what it reported; `machines adopt` (CLI and API) writes its MAC
//! (and UUID) into its node of `infra/` as a line edit (comments kept, nothing else
//! changed), refusals leave the file as it was, the running daemon serves the
//! adopted machine its install on its next `/ipxe` without a restart, and `check`
//! refuses a MAC claimed twice, naming both files and fields.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::cli::repo;
use super::common::daemon::{Daemon, http, loopback_boot, run, write_config};
use super::common::live::{client_socket, proxy_dhcp, pxe_request, send};
use provisioner_core::dhcp::v4::MessageType;

const UNKNOWN_1: &str = "52:54:00:17:00:01";
const UNKNOWN_2: &str = "52:54:00:17:00:02";
const UUID_1: &str = "8c4e3c1a-1b2c-4d5e-8f90-000000001701";
/// talos-3 already has a real MAC; a group outside the clusters has OUTSIDE.
const TALOS_3: &str = "52:54:00:17:00:03";
const OUTSIDE: &str = "52:54:00:17:00:99";

/// The repository's images/, the GenMachine profile, a plain profile with a group
/// for a machine outside the clusters, and `infra/genmachine.yaml` (talos-3 with a
/// real MAC, talos-2 with no `mac` line at all).
fn site(dir: &Path) {
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    for f in ["flatcar-stable-amd64.yaml", "talos-genmachine-v1.11.6-amd64.yaml"] {
        copy(&repo().join("images").join(f), &dir.join("images").join(f));
    }
    let p = "profiles/profiles/genmachine-controlplane.yaml";
    copy(&repo().join(p), &dir.join(p));
    std::fs::write(
        dir.join("profiles/profiles/rescue.yaml"),
        "id: rescue\nimage: flatcar-stable-amd64\nconfig: plain\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("profiles/groups")).unwrap();
    std::fs::write(
        dir.join("profiles/groups/outside.yaml"),
        format!("id: outside\nprofile: rescue\nselector: {{ mac: \"{OUTSIDE}\" }}\n"),
    )
    .unwrap();
    let text = std::fs::read_to_string(repo().join("infra/genmachine.yaml"))
        .unwrap()
        .replace("02:00:00:00:01:03", TALOS_3)
        .replace("    mac: \"02:00:00:00:01:02\"\n", "");
    std::fs::create_dir_all(dir.join("infra")).unwrap();
    std::fs::write(dir.join("infra/genmachine.yaml"), text).unwrap();
}

fn config(dir: &Path) -> PathBuf {
    let tftp = dir.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    let cfg = loopback_boot(&write_config(dir, &tftp));
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    // No node is ever dialled (the 192.168.1.x addresses are the homelab's).
    text.push_str(&format!(
        "gitops_dir: {}/gitops\nbootstrap: {{ enabled: false }}\n",
        dir.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn ipxe(d: &Daemon, mac: &str, uuid: Option<&str>) -> String {
    let mac = mac.replace(':', "-");
    let uuid = uuid.map(|u| format!("&uuid={u}")).unwrap_or_default();
    let (st, body) = http(
        d.http,
        "GET",
        &format!("/ipxe?mac={mac}&arch=x86_64&platform=efi{uuid}"),
    )
    .unwrap();
    assert_eq!(st, 200);
    String::from_utf8(body).unwrap()
}

fn adopt_api(d: &Daemon, token: &str, mac: &str, body: &str) -> (u16, Value) {
    let r = d
        .api_client()
        .post(format!("{}/api/v1/machines/{mac}/adopt", d.api_url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().unwrap_or(Value::Null))
}

/// Lines of `new` not in `old` and lines of `old` not in `new` (the files keep their
/// order; an adoption changes or adds single lines).
fn diff(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
    let o: Vec<&str> = old.lines().collect();
    let n: Vec<&str> = new.lines().collect();
    (
        o.iter()
            .filter(|l| !n.contains(l))
            .map(|l| l.to_string())
            .collect(),
        n.iter()
            .filter(|l| !o.contains(l))
            .map(|l| l.to_string())
            .collect(),
    )
}

#[test]
fn a_discovered_machine_is_adopted_by_cli_and_api_and_installs_on_its_next_boot() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let cfg = config(dir.path());
    let ports = proxy_dhcp(&cfg);
    let infra = dir.path().join("infra/genmachine.yaml");
    let original = std::fs::read_to_string(&infra).unwrap();
    let d = Daemon::start(&cfg);
    let admin = d.token("admin");

    // Its firmware's PXE DISCOVER (proxy DHCP) records its vendor class.
    let discover = pxe_request(UNKNOWN_1, MessageType::Discover);
    let client = client_socket();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        send(&client, ports.dhcp, &discover);
        let (_, body) = d.api_get(&format!("/api/v1/machines/{UNKNOWN_1}"), Some(&admin));
        let m: Value = serde_json::from_str(&body).unwrap_or_default();
        if m["vendor_class"] == "PXEClient:Arch:00007:UNDI:003016" {
            assert_eq!(m["state"], "Discovered", "{m}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no vendor class recorded: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // An unknown machine boots: no install, a Discovered record with what it said.
    let script = ipxe(&d, UNKNOWN_1, Some(UUID_1));
    assert!(!script.contains("talos.config="), "{script}");
    let (st, body) = d.api_get(&format!("/api/v1/machines/{UNKNOWN_1}"), Some(&admin));
    assert_eq!(st, 200, "{body}");
    let m: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["state"], "Discovered", "{m}");
    assert_eq!(m["uuid"], UUID_1);
    assert_eq!(m["firmware"], "uefi");
    assert_eq!(m["ip"], "127.0.0.1");
    assert!(m["group"].is_null(), "{m}");

    // Refusals: each names what is wrong; the file is untouched.
    let (st, e) = adopt_api(&d, &admin, UNKNOWN_1, r#"{"node":"talos-9"}"#);
    assert_eq!((st, e["code"].as_str()), (404, Some("node_not_found")), "{e}");
    let (st, e) = adopt_api(&d, &admin, UNKNOWN_1, r#"{"node":"talos-3"}"#);
    assert_eq!((st, e["code"].as_str()), (409, Some("mac_conflict")), "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains(&format!("already has mac {TALOS_3}")),
        "{e}"
    );
    let (st, e) = adopt_api(&d, &admin, OUTSIDE, r#"{"node":"talos-1"}"#);
    assert_eq!((st, e["code"].as_str()), (409, Some("mac_conflict")), "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("outside.yaml") && msg.contains("selector.mac"),
        "{e}"
    );
    let (st, e) = adopt_api(&d, &admin, TALOS_3, r#"{"node":"talos-1"}"#);
    assert_eq!(st, 409, "{e}");
    assert!(e["message"].as_str().unwrap().contains("nodes[2].mac"), "{e}");
    let read_only = d.token("read-only");
    let (st, _) = adopt_api(&d, &read_only, UNKNOWN_1, r#"{"node":"talos-1"}"#);
    assert_eq!(st, 403);
    assert_eq!(
        std::fs::read_to_string(&infra).unwrap(),
        original,
        "a refusal wrote the file"
    );

    // Adopt through the CLI (which goes through the API).
    let (ok, out, err) = run(&[
        "machines",
        "adopt",
        UNKNOWN_1,
        "--node",
        "talos-1",
        "--api-url",
        &d.api_url(),
        "--token",
        &admin,
        "--ca",
        d.ca().to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("adopted as node talos-1") && out.contains("reloaded"),
        "{out}"
    );
    let after_cli = std::fs::read_to_string(&infra).unwrap();
    let (gone, came) = diff(&original, &after_cli);
    assert_eq!(
        gone,
        [
            "    mac: \"02:00:00:00:01:01\"",
            "      - deviceSelector: { hardwareAddr: \"02:00:00:00:01:01\" }"
        ]
    );
    assert_eq!(
        came,
        [
            format!("    mac: \"{UNKNOWN_1}\""),
            format!("    uuid: \"{UUID_1}\""),
            format!("      - deviceSelector: {{ hardwareAddr: \"{UNKNOWN_1}\" }}"),
        ]
    );
    assert_eq!(after_cli.lines().count(), original.lines().count() + 1);
    let comments = |t: &str| {
        t.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(comments(&after_cli), comments(&original));
    assert!(
        !dir.path().join("infra").read_dir().unwrap().any(|e| {
            let name = e.unwrap().file_name();
            name.to_string_lossy().starts_with('.')
        }),
        "no temp file left"
    );
    // Adopting again with the same values writes nothing.
    let (st, again) = adopt_api(&d, &admin, UNKNOWN_1, r#"{"node":"talos-1"}"#);
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["lines"], serde_json::json!([]));
    assert_eq!(std::fs::read_to_string(&infra).unwrap(), after_cli);

    // The cluster is not armed yet (talos-2 has no MAC, but talos-1 had the only
    // placeholder): armed now, so its next boot installs, without a restart.
    let script = ipxe(&d, UNKNOWN_1, Some(UUID_1));
    assert!(script.contains("talos.config="), "{script}");
    let config_path = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("talos.config="))
        .map(|u| {
            u.trim_start_matches("http://")
                .split_once('/')
                .unwrap()
                .1
                .to_string()
        })
        .unwrap();
    let (st, config) = http(d.http, "GET", &format!("/{config_path}")).unwrap();
    let config = String::from_utf8_lossy(&config).to_string();
    assert_eq!(st, 200, "{config}");
    assert!(config.contains("hostname: talos-1"), "{config}");
    assert!(
        config.contains(UNKNOWN_1),
        "the NIC selector follows the MAC: {config}"
    );
    let (_, body) = d.api_get(&format!("/api/v1/machines/{UNKNOWN_1}"), Some(&admin));
    let m: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["cluster"], "genmachine", "{m}");

    // Adopt a second machine through the API onto a node with no `mac` line: one line.
    ipxe(&d, UNKNOWN_2, None);
    let (st, a) = adopt_api(&d, &admin, UNKNOWN_2, r#"{"node":"talos-2"}"#);
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        a["lines"],
        serde_json::json!([format!("mac: \"{UNKNOWN_2}\"")]),
        "{a}"
    );
    assert!(a["reload_error"].is_null(), "{a}");
    let after_api = std::fs::read_to_string(&infra).unwrap();
    let (gone, came) = diff(&after_cli, &after_api);
    assert!(gone.is_empty(), "{gone:?}");
    assert_eq!(came, [format!("    mac: \"{UNKNOWN_2}\"")]);
    assert!(ipxe(&d, UNKNOWN_2, None).contains("talos.config="));

    // What the daemon wrote passes `check` (the loader it validated with).
    let (ok, out, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!err.contains("genmachine.yaml: field"), "{out}{err}");
    let _ = ok;
}

#[test]
fn check_refuses_a_mac_claimed_twice_naming_both_files_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let cfg = config(dir.path());
    let check = || {
        let (ok, out, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
        assert!(!ok, "{out}");
        err
    };
    // A node and a group (the old "both places").
    let group = dir.path().join("profiles/groups/talos-3-old.yaml");
    std::fs::write(
        &group,
        format!("id: talos-3-old\nprofile: rescue\nselector: {{ mac: \"{TALOS_3}\" }}\n"),
    )
    .unwrap();
    let err = check();
    let line = err
        .lines()
        .find(|l| l.contains("talos-3-old.yaml"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("field `selector.mac`"), "{line}");
    assert!(line.contains("genmachine.yaml field `nodes[2].mac`"), "{line}");
    assert!(line.contains("need no group"), "{line}");
    std::fs::remove_file(&group).unwrap();

    // Two groups.
    std::fs::write(
        dir.path().join("profiles/groups/outside-2.yaml"),
        // Not the same selector (the catalog refuses that by itself): the same MAC.
        format!(
            "id: outside-2\nprofile: rescue\nselector: {{ mac: \"{}\", arch: amd64 }}\n",
            OUTSIDE.to_uppercase()
        ),
    )
    .unwrap();
    let err = check();
    assert!(
        err.lines()
            .any(|l| l.contains("outside-2.yaml: field `selector.mac`")
                && l.contains("outside.yaml field `selector.mac`")
                || l.contains("outside.yaml: field `selector.mac`")
                    && l.contains("outside-2.yaml field `selector.mac`")),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("profiles/groups/outside-2.yaml")).unwrap();

    // Two infra nodes of two clusters.
    let beelink = std::fs::read_to_string(repo().join("infra/beelink.yaml"))
        .unwrap()
        .replace("02:00:00:00:02:03", TALOS_3);
    std::fs::write(dir.path().join("infra/beelink.yaml"), beelink).unwrap();
    let err = check();
    assert!(
        err.lines()
            .any(|l| l.contains("beelink.yaml: field `nodes[2].mac`")
                && l.contains("genmachine.yaml field `nodes[2].mac`")),
        "{err}"
    );
}

/// The dashboard's adopt action: an admin session sees the form on a discovered
/// machine's page (a read-only one does not), posting it (with the session's CSRF
/// token) writes the MAC and shows the machine in its cluster.
#[test]
fn the_dashboard_adopts_a_discovered_machine() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let cfg = config(dir.path());
    let infra = dir.path().join("infra/genmachine.yaml");
    let original = std::fs::read_to_string(&infra).unwrap();
    let d = Daemon::start(&cfg);
    ipxe(&d, UNKNOWN_1, Some(UUID_1));
    let client = reqwest::blocking::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&std::fs::read(d.ca()).unwrap()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: &str| {
        let r = client
            .post(format!("{}/ui/login", d.api_url()))
            .form(&[("token", token)])
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 303, "login");
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };
    let page = |cookie: &str| {
        let r = client
            .get(format!("{}/ui/machines/{UNKNOWN_1}", d.api_url()))
            .header("cookie", cookie)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().unwrap()
    };
    assert!(!page(&login(&d.token("read-only"))).contains("id=\"adopt\""));
    let cookie = login(&d.token("admin"));
    let html = page(&cookie);
    assert!(html.contains("id=\"adopt\""), "{html}");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let post = |csrf: &str| {
        client
            .post(format!("{}/ui/machines/{UNKNOWN_1}/adopt", d.api_url()))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf), ("node", "talos-1")])
            .send()
            .unwrap()
    };
    assert_eq!(post("not-the-token").status().as_u16(), 403);
    assert_eq!(std::fs::read_to_string(&infra).unwrap(), original);
    let r = post(&csrf);
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(
        r.headers()["location"],
        format!("/ui/machines/{UNKNOWN_1}?adopted=1")
    );
    let (_, came) = diff(&original, &std::fs::read_to_string(&infra).unwrap());
    assert!(came.contains(&format!("    mac: \"{UNKNOWN_1}\"")), "{came:?}");
    let html = page(&cookie);
    assert!(!html.contains("id=\"adopt\""), "adopted: in a cluster now");
    assert!(html.contains("genmachine"), "{html}");
}
