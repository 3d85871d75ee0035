//! Config release on the boot path (issue 12, items 1-3): peer binding, the SMBIOS
//! UUID pin and operator approval, through the real routers with a neighbour table
//! the test controls, plus the real daemon refusing loopback by default.
//!
//! The QEMU lab proves the same against the kernel's own neighbour table
//! (tests/tests/lab/config_release_lab.rs).

use crate::common;

use std::time::Duration;

use axum::http::StatusCode;
use common::release::{api_call, events, ipxe, machine, metric, metrics, req, site, url_path};
use common::{BIOS_MAC, EFI_MAC};
use provisioner_core::boot::UnknownPolicy;
use provisioner_core::model::{EventKind, MachineState};

const U1: &str = "0d8c1d3e-1111-4000-8000-000000000001";
const U2: &str = "0d8c1d3e-2222-4000-8000-000000000002";
const ATTACKER: &str = "52:54:00:66:66:66";

fn approve_profile(dir: &std::path::Path) {
    std::fs::write(
        dir.join("profiles/profiles/lab-approve.yaml"),
        "id: lab-approve\nimage: test-img\nconfig: plain\nadmission: approve\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("profiles/groups/bios.yaml"),
        format!("id: bios\nprofile: lab-approve\nselector: {{ mac: \"{BIOS_MAC}\" }}\n"),
    )
    .unwrap();
}

#[tokio::test]
async fn a_host_asking_for_another_machines_mac_gets_nothing_and_costs_it_nothing() {
    let s = site(UnknownPolicy::Record, |_| {}, |_| {});
    metrics();
    s.facts.neighbour_is("10.0.0.2", EFI_MAC);
    s.facts.neighbour_is("10.0.0.66", ATTACKER);
    let before = metric("provisioner_config_refused_total{stage=\"ipxe\",reason=\"neighbour_mismatch\"}");

    let script = ipxe(&s, EFI_MAC, Some(U1), "10.0.0.2").await;
    let config = url_path(&script, "provisioner.config").expect("the machine gets its token");
    let callback = url_path(&script, "provisioner.callback").unwrap();

    // Seven tries with the machine's MAC and UUID from another host: more than the
    // boot-loop guard allows (5), none counts.
    for _ in 0..7 {
        let refused = ipxe(&s, EFI_MAC, Some(U1), "10.0.0.66").await;
        assert!(refused.contains("install refused"), "{refused}");
        assert!(
            refused.contains(&format!("neighbour entry is {ATTACKER}")),
            "{refused}"
        );
        assert!(
            !refused.contains("/config/") && !refused.contains("kernel"),
            "{refused}"
        );
        assert!(
            refused.contains("sleep 10 ||"),
            "retries after a delay: {refused}"
        );
        // The attacker fetches every URL it was given: only the first stage.
        for url in refused.split_whitespace().filter(|w| w.starts_with("http://")) {
            let path = url.strip_prefix(common::BASE).unwrap();
            let (st, _, body) = req(&s.boot, "GET", path, "10.0.0.66", &[], "").await;
            assert_eq!(st, StatusCode::OK);
            assert!(body.starts_with("#!ipxe") && !body.contains("/config/"), "{body}");
        }
    }
    let m = machine(&s, EFI_MAC);
    assert_eq!(m.state, MachineState::Booting);
    assert_eq!(
        m.install_boots.len(),
        1,
        "refusals never count toward the boot-loop guard"
    );
    let refusals = events(&s, EFI_MAC, EventKind::ConfigRefused);
    assert_eq!(
        refusals.len(),
        1,
        "on the timeline once a minute, not per try: {refusals:?}"
    );
    assert!(refusals[0].contains("ipxe: peer 10.0.0.66") && refusals[0].contains("neighbour"));
    assert!(
        metric("provisioner_config_refused_total{stage=\"ipxe\",reason=\"neighbour_mismatch\"}")
            >= before + 7.0,
        "every refusal counted"
    );

    // A stolen config URL is refused from the wrong host and stays good for the
    // machine; so is the callback.
    let (st, _, body) = req(&s.boot, "GET", &config, "10.0.0.66", &[], "").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.starts_with("config refused:"), "{body}");
    let (st, _, _) = req(&s.boot, "POST", &callback, "10.0.0.66", &[], "").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, doc) = req(&s.boot, "GET", &config, "10.0.0.2", &[], "").await;
    assert_eq!(st, StatusCode::OK, "the real machine's token survived: {doc}");
    let (st, _, _) = req(&s.boot, "POST", &callback, "10.0.0.2", &[], "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(machine(&s, EFI_MAC).state, MachineState::Installed);
    let stages: Vec<String> = events(&s, EFI_MAC, EventKind::ConfigRefused);
    assert!(
        stages.iter().any(|d| d.starts_with("config: peer 10.0.0.66")),
        "{stages:?}"
    );
    assert!(
        stages.iter().any(|d| d.starts_with("callback: peer 10.0.0.66")),
        "{stages:?}"
    );
}

#[tokio::test]
async fn peers_are_compared_as_the_kernel_sees_them() {
    let s = site(UnknownPolicy::Record, |_| {}, |_| {});
    s.facts.neighbour_is("10.0.0.2", EFI_MAC);
    s.facts.attached("10.0.0.77");
    // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6.
    let script = ipxe(&s, EFI_MAC, None, "::ffff:10.0.0.2").await;
    assert!(script.contains("provisioner.config="), "{script}");
    for peer in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
        let refused = ipxe(&s, BIOS_MAC, None, peer).await;
        assert!(
            refused.contains("loopback peers are never trusted"),
            "{peer}: {refused}"
        );
    }
    // On the appliance's own network but no neighbour entry, even after a probe.
    let refused = ipxe(&s, BIOS_MAC, None, "10.0.0.77").await;
    assert!(refused.contains("no neighbour entry"), "{refused}");
    let refused = ipxe(&s, BIOS_MAC, None, "0.0.0.0").await;
    assert!(refused.contains("not a unicast address"), "{refused}");
    let ev = events(&s, BIOS_MAC, EventKind::ConfigRefused);
    assert!(
        ev.iter()
            .any(|d| d.contains("peer 127.0.0.1") && d.contains("loopback")),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|d| d.contains("peer 10.0.0.77") && d.contains("no neighbour entry")),
        "{ev:?}"
    );
    let m = machine(&s, BIOS_MAC);
    assert_eq!((m.state, m.install_boots.len()), (MachineState::Discovered, 0));
    assert!(m.pinned_uuid.is_none() && m.uuid.is_none());
}

#[tokio::test]
async fn leases_bind_relayed_peers_and_unverifiable_ones_wait_for_approval() {
    let s = site(UnknownPolicy::Record, |_| {}, |_| {});
    s.facts.lease("10.9.0.5", EFI_MAC);
    s.facts.lease("10.9.0.6", ATTACKER);
    let script = ipxe(&s, EFI_MAC, None, "10.9.0.5").await;
    assert!(
        script.contains("provisioner.config="),
        "a relayed client holding the lease: {script}"
    );
    let refused = ipxe(&s, BIOS_MAC, None, "10.9.0.6").await;
    assert!(refused.contains(&format!("leased to {ATTACKER}")), "{refused}");

    // No lease, not on link: binding cannot be checked; the machine waits.
    let waiting = ipxe(&s, BIOS_MAC, Some(U1), "10.9.0.7").await;
    assert!(waiting.contains("waits for an operator's approval"), "{waiting}");
    assert!(!waiting.contains("/config/"));
    let refusals = events(&s, BIOS_MAC, EventKind::ConfigRefused);
    assert!(
        refusals
            .iter()
            .any(|d| d.contains("binding cannot be checked") && d.contains("machines approve")),
        "{refusals:?}"
    );
    let code = machine(&s, BIOS_MAC).pending_approval.unwrap().code;
    let (st, v) = api_call(
        &s,
        "POST",
        &format!("/api/v1/machines/{BIOS_MAC}/approve"),
        &s.admin,
        Some(serde_json::json!({"code": code})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let script = ipxe(&s, BIOS_MAC, Some(U1), "10.9.0.7").await;
    let config = url_path(&script, "provisioner.config").expect("approved: served");
    // The OS may come back from another routed address: the approval covers it.
    let (st, _, _) = req(&s.boot, "GET", &config, "10.9.0.8", &[], "").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn multi_nic_fetches_come_from_the_script_address_or_a_declared_nic() {
    let other_nic: provisioner_core::model::MacAddr = "52:54:00:00:01:02".parse().unwrap();
    let s = site(
        UnknownPolicy::Record,
        |_| {},
        |p| {
            p.other_nics.insert(EFI_MAC.parse().unwrap(), vec![other_nic]);
        },
    );
    s.facts.neighbour_is("10.0.0.2", EFI_MAC);
    s.facts.neighbour_is("10.0.0.3", "52:54:00:00:01:02");
    s.facts.neighbour_is("10.0.0.4", "52:54:00:00:09:09");
    // The script itself only goes to the boot NIC.
    let refused = ipxe(&s, EFI_MAC, None, "10.0.0.3").await;
    assert!(refused.contains("install refused"), "{refused}");
    let script = ipxe(&s, EFI_MAC, None, "10.0.0.2").await;
    let config = url_path(&script, "provisioner.config").unwrap();
    let callback = url_path(&script, "provisioner.callback").unwrap();
    let (st, _, _) = req(&s.boot, "GET", &config, "10.0.0.4", &[], "").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an undeclared NIC");
    let (st, _, _) = req(&s.boot, "GET", &config, "10.0.0.3", &[], "").await;
    assert_eq!(st, StatusCode::OK, "the node's other NIC from infra/");
    let (st, _, _) = req(&s.boot, "POST", &callback, "10.0.0.2", &[], "").await;
    assert_eq!(st, StatusCode::OK, "the address the script went to");
}

#[tokio::test]
async fn the_uuid_pin_refuses_another_uuid_until_an_operator_unpins_it() {
    let s = site(UnknownPolicy::Record, |_| {}, |_| {});
    metrics();
    s.facts.neighbour_is("10.0.0.2", EFI_MAC);
    let first = ipxe(&s, EFI_MAC, Some(&U1.to_uppercase()), "10.0.0.2").await;
    assert_eq!(machine(&s, EFI_MAC).pinned_uuid.as_deref(), Some(U1));
    assert_eq!(events(&s, EFI_MAC, EventKind::UuidPinned).len(), 1);
    let before = metric("provisioner_config_refused_total{stage=\"ipxe\",reason=\"uuid_mismatch\"}");
    for (uuid, why) in [
        (Some(U2), "differs from the UUID pinned"),
        (None, "(none) differs from the UUID pinned"),
        (Some("not-a-uuid"), "malformed SMBIOS UUID"),
        (Some("%24%7Buuid%7D"), "malformed SMBIOS UUID"),
    ] {
        let refused = ipxe(&s, EFI_MAC, uuid, "10.0.0.2").await;
        assert!(refused.contains(why), "{uuid:?}: {refused}");
        assert!(
            !refused.contains("/config/") && !refused.contains("${"),
            "{refused}"
        );
    }
    assert!(
        metric("provisioner_config_refused_total{stage=\"ipxe\",reason=\"uuid_mismatch\"}") >= before + 2.0
    );
    assert_eq!(
        machine(&s, EFI_MAC).pinned_uuid.as_deref(),
        Some(U1),
        "a refusal pins nothing"
    );
    // The refusals revoked nothing: the first script's config URL still works.
    let config = url_path(&first, "provisioner.config").unwrap();
    let (st, _, _) = req(&s.boot, "GET", &config, "10.0.0.2", &[], "").await;
    assert_eq!(st, StatusCode::OK);

    let path = format!("/api/v1/machines/{EFI_MAC}/unpin");
    let (st, _) = api_call(&s, "POST", &path, &s.reader, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "admin only");
    let (st, v) = api_call(&s, "POST", &path, &s.admin, None).await;
    assert_eq!(
        (st, &v["pinned_uuid"]),
        (StatusCode::OK, &serde_json::Value::Null),
        "{v}"
    );
    let unpinned = events(&s, EFI_MAC, EventKind::UuidUnpinned);
    assert!(
        unpinned[0].contains(U1) && unpinned[0].contains("API token"),
        "{unpinned:?}"
    );
    assert!(
        !unpinned[0].contains(&s.admin),
        "the token itself is never recorded"
    );
    let script = ipxe(&s, EFI_MAC, Some(U2), "10.0.0.2").await;
    assert!(
        script.contains("provisioner.config="),
        "served after unpin: {script}"
    );
    assert_eq!(machine(&s, EFI_MAC).pinned_uuid.as_deref(), Some(U2));
    let (st, _) = api_call(
        &s,
        "POST",
        "/api/v1/machines/52:54:00:00:99:99/unpin",
        &s.admin,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn groups_selecting_on_uuid_are_checked_against_the_pin() {
    const M7: &str = "52:54:00:00:07:07";
    let s = site(
        UnknownPolicy::Record,
        |d| {
            std::fs::write(
                d.join("profiles/groups/by-uuid.yaml"),
                format!(
                    "id: by-uuid\nprofile: lab\nselector: {{ uuid: \"{}\" }}\n",
                    U1.to_uppercase()
                ),
            )
            .unwrap();
        },
        |_| {},
    );
    s.facts.neighbour_is("10.0.7.7", M7);
    let script = ipxe(&s, M7, Some(U1), "10.0.7.7").await;
    assert!(
        script.contains("installing profile lab"),
        "selected by UUID: {script}"
    );
    // The same MAC claiming another UUID is not that machine.
    let refused = ipxe(&s, M7, Some(U2), "10.0.7.7").await;
    assert!(refused.contains("differs from the UUID pinned"), "{refused}");
    // Once unpinned, the new UUID is pinned and selects no group.
    s.service.unpin(M7.parse().unwrap(), "tok-test").unwrap();
    let unknown = ipxe(&s, M7, Some(U2), "10.0.7.7").await;
    assert!(unknown.contains("has no profile here"), "{unknown}");
    assert_eq!(machine(&s, M7).pinned_uuid.as_deref(), Some(U2));
    // A selector that is not a UUID fails `check` with file and field.
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    std::fs::write(
        dir.path().join("profiles/groups/bad.yaml"),
        "id: bad\nprofile: lab\nselector: { uuid: \"not-a-uuid\" }\n",
    )
    .unwrap();
    let err = provisioner_core::catalog::load(&dir.path().join("images"), &dir.path().join("profiles"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.yaml") && err.contains("selector.uuid"), "{err}");
}

#[tokio::test]
async fn approve_mode_waits_with_a_code_until_an_operator_approves() {
    let s = site(UnknownPolicy::Record, approve_profile, |_| {});
    s.facts.neighbour_is("10.0.0.1", BIOS_MAC);
    let waiting = ipxe(&s, BIOS_MAC, Some(U1), "10.0.0.1").await;
    let pending = machine(&s, BIOS_MAC).pending_approval.expect("waiting");
    let code = pending.code.clone();
    for want in [
        format!("code {code}"),
        format!("mac {BIOS_MAC}"),
        format!("uuid {U1}"),
        "ip 10.0.0.1".to_string(),
        format!("provisioner machines approve {BIOS_MAC} --code {code}"),
        "sleep 10 ||".to_string(),
    ] {
        assert!(waiting.contains(&want), "{want} missing: {waiting}");
    }
    assert!(!waiting.contains("/config/") && !waiting.contains("kernel"));
    // Polling keeps the code, adds no event and no boot-loop count.
    for _ in 0..6 {
        let again = ipxe(&s, BIOS_MAC, Some(U1), "10.0.0.1").await;
        assert!(again.contains(&format!("code {code}")), "{again}");
    }
    let m = machine(&s, BIOS_MAC);
    assert_eq!((m.state, m.install_boots.len()), (MachineState::Discovered, 0));
    assert_eq!(events(&s, BIOS_MAC, EventKind::ApprovalRequested).len(), 1);

    let (st, list) = api_call(&s, "GET", "/api/v1/approvals", &s.reader, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list[0]["kind"], "admission");
    assert_eq!(
        (list[0]["code"].as_str(), list[0]["uuid"].as_str()),
        (Some(code.as_str()), Some(U1))
    );
    assert_eq!(list[0]["peer"], "10.0.0.1");

    let approve = format!("/api/v1/machines/{BIOS_MAC}/approve");
    let (st, _) = api_call(&s, "POST", &approve, &s.reader, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "admin only");
    let (st, v) = api_call(
        &s,
        "POST",
        &approve,
        &s.admin,
        Some(serde_json::json!({"code": "ZZZZ-ZZZZ"})),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("nothing_pending")),
        "{v}"
    );
    let (st, v) = api_call(
        &s,
        "POST",
        &format!("/api/v1/machines/{BIOS_MAC}/deny"),
        &s.admin,
        Some(serde_json::json!({"code": code})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let denied = ipxe(&s, BIOS_MAC, Some(U1), "10.0.0.1").await;
    assert!(
        denied.contains("DENIED") && !denied.contains("/config/"),
        "{denied}"
    );

    // Lower-case and without the dash, as an operator may type it.
    let typed = code.to_lowercase().replace('-', "");
    let (st, v) = api_call(
        &s,
        "POST",
        &approve,
        &s.admin,
        Some(serde_json::json!({"code": typed})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["decided"][0]["status"], "approved");
    let m = machine(&s, BIOS_MAC);
    let approval = m.approval.expect("approved");
    assert_eq!(approval.uuid.as_deref(), Some(U1), "bound to MAC and UUID");
    assert!(!approval.token_id.is_empty() && approval.token_id != s.admin);
    assert!(m.pending_approval.is_none());
    let approved = events(&s, BIOS_MAC, EventKind::Approved);
    assert!(
        approved[0].contains(&approval.token_id) && !approved[0].contains(&s.admin),
        "{approved:?}"
    );

    let script = ipxe(&s, BIOS_MAC, Some(U1), "10.0.0.1").await;
    let config = url_path(&script, "provisioner.config").expect("approved: install");
    let callback = url_path(&script, "provisioner.callback").unwrap();
    assert_eq!(
        req(&s.boot, "GET", &config, "10.0.0.1", &[], "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        req(&s.boot, "POST", &callback, "10.0.0.1", &[], "").await.0,
        StatusCode::OK
    );
    let m = machine(&s, BIOS_MAC);
    assert_eq!(m.state, MachineState::Installed);
    assert!(m.approval.is_none(), "the approval ends with the install");
    // A re-image asks again.
    let (st, _) = api_call(
        &s,
        "POST",
        &format!("/api/v1/machines/{BIOS_MAC}/reimage"),
        &s.admin,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let again = ipxe(&s, BIOS_MAC, Some(U1), "10.0.0.1").await;
    assert!(again.contains("waits for an operator's approval"), "{again}");
    // Nothing waits for a machine that is not waiting.
    let (st, v) = api_call(
        &s,
        "POST",
        &format!("/api/v1/machines/{EFI_MAC}/approve"),
        &s.admin,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn approvals_expire_with_the_install_window() {
    let s = site(UnknownPolicy::Record, approve_profile, |p| {
        p.approval_window = time::Duration::seconds(1);
    });
    s.facts.neighbour_is("10.0.0.1", BIOS_MAC);
    ipxe(&s, BIOS_MAC, Some(U1), "10.0.0.1").await;
    s.service
        .approve(BIOS_MAC.parse().unwrap(), None, "tok-test")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let late = ipxe(&s, BIOS_MAC, Some(U1), "10.0.0.1").await;
    assert!(
        late.contains("waits for an operator's approval"),
        "expired: {late}"
    );
}

#[tokio::test]
async fn unknown_machines_never_get_secrets_without_approval() {
    const STRANGER: &str = "52:54:00:00:09:09";
    let s = site(
        UnknownPolicy::Profile("secret".into()),
        |d| {
            std::fs::write(
                d.join("profiles/profiles/secret.yaml"),
                "id: secret\nimage: test-img\nconfig: talos\n",
            )
            .unwrap();
        },
        |_| {},
    );
    s.facts.neighbour_is("10.0.9.9", STRANGER);
    let waiting = ipxe(&s, STRANGER, None, "10.0.9.9").await;
    assert!(
        waiting.contains("waits for an operator's approval"),
        "admission is auto, still: {waiting}"
    );
    s.service
        .approve(STRANGER.parse().unwrap(), None, "tok-test")
        .unwrap();
    let script = ipxe(&s, STRANGER, None, "10.0.9.9").await;
    assert!(script.contains("talos.config="), "{script}");
}

#[tokio::test]
async fn a_service_without_facts_trusts_nobody() {
    let s = site(
        UnknownPolicy::Record,
        |_| {},
        |p| {
            p.facts = std::sync::Arc::new(provisioner::service::NoFacts);
        },
    );
    let waiting = ipxe(&s, EFI_MAC, None, "10.0.0.2").await;
    assert!(waiting.contains("waits for an operator's approval"), "{waiting}");
}

/// The real daemon with its defaults refuses a boot over loopback: the two
/// requests of the issue (`curl /ipxe?mac=…` then `/config/<token>`) get no token.
#[test]
fn the_daemon_refuses_loopback_by_default() {
    use common::daemon::{Daemon, http, write_config};
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let d = Daemon::start(&write_config(dir.path(), dir.path()));
    let (st, body) = http(
        d.http,
        "GET",
        "/ipxe?mac=52-54-00-00-00-02&arch=x86_64&platform=efi",
    )
    .unwrap();
    let body = String::from_utf8(body).unwrap();
    assert_eq!(st, 200);
    assert!(
        body.contains("install refused") && body.contains("loopback"),
        "{body}"
    );
    assert!(!body.contains("/config/"), "{body}");
}

/// The CLI over the real daemon: `machines pending`, `approve --code`, `deny`,
/// `show`, `unpin`. Binding is off here (loopback) so the machine reaches the
/// admission step; `admission: approve` globally.
#[test]
fn cli_lists_approves_denies_and_unpins() {
    use common::daemon::{BIN, Daemon, http, loopback_boot, write_config};
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let cfg = loopback_boot(&write_config(dir.path(), dir.path()));
    let text = std::fs::read_to_string(&cfg).unwrap() + "admission: approve\n";
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(&cfg);
    let admin = d.token("admin");
    let cli = |args: &[&str]| {
        let o = std::process::Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&d.config)
            .env("PROVISIONER_API_URL", d.api_url())
            .env("PROVISIONER_API_TOKEN", &admin)
            .env("PROVISIONER_CLIENT_CONFIG", "/nonexistent")
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        (o.status.success(), out, err)
    };
    let boot = || {
        let (_, b) = http(
            d.http,
            "GET",
            &format!("/ipxe?mac=52-54-00-00-00-02&uuid={U1}&arch=x86_64&platform=efi"),
        )
        .unwrap();
        String::from_utf8(b).unwrap()
    };
    assert!(boot().contains("waits for an operator's approval"));
    let (ok, out, err) = cli(&["machines", "pending"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("KIND") && out.contains("admission") && out.contains(EFI_MAC) && out.contains(U1),
        "{out}"
    );
    let code = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .to_string();
    let (ok, _, err) = cli(&["machines", "approve", EFI_MAC, "--code", "BBBB-BBBB"]);
    assert!(
        !ok && err.contains("409") && err.contains("nothing_pending"),
        "{err}"
    );
    let (ok, out, err) = cli(&["machines", "deny", EFI_MAC, "--code", &code]);
    assert!(ok && out.contains("denied admission"), "{out}{err}");
    assert!(boot().contains("DENIED"));
    let (ok, out, err) = cli(&["machines", "approve", EFI_MAC, "--code", &code]);
    assert!(
        ok && out.contains("approved admission") && out.contains(&code),
        "{out}{err}"
    );
    assert!(boot().contains("provisioner.config="), "approved: installs");
    let (ok, out, _) = cli(&["machines", "show", EFI_MAC]);
    assert!(
        ok && out.contains(&format!("UUID pin    {U1}")) && out.contains("Approved"),
        "{out}"
    );
    let (ok, out, err) = cli(&["machines", "unpin", EFI_MAC]);
    assert!(ok && out.contains("UUID pin cleared"), "{out}{err}");
    let (ok, out, _) = cli(&["machines", "show", EFI_MAC, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && v["pinned_uuid"].is_null(), "{v}");
    assert!(
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "uuid_unpinned")
    );
}

/// The dashboard: `/ui/approvals` shows code, MAC, UUID and peer; an admin
/// session's Approve button (with its CSRF token) approves; a read-only session
/// sees no button and cannot post one.
#[tokio::test]
async fn dashboard_approves_with_an_admin_session() {
    let s = site(UnknownPolicy::Record, approve_profile, |_| {});
    s.facts.neighbour_is("10.0.0.1", BIOS_MAC);
    ipxe(&s, BIOS_MAC, Some(U1), "10.0.0.1").await;
    let code = machine(&s, BIOS_MAC).pending_approval.unwrap().code;
    let login = |token: String| {
        let api = s.api.clone();
        async move {
            let (st, h, _) = req(
                &api,
                "POST",
                "/ui/login",
                "127.0.0.1",
                &[("content-type", "application/x-www-form-urlencoded")],
                &format!("token={token}"),
            )
            .await;
            assert_eq!(st, StatusCode::SEE_OTHER);
            h["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string()
        }
    };
    let reader = login(s.reader.clone()).await;
    let (st, _, page) = req(
        &s.api,
        "GET",
        "/ui/approvals",
        "127.0.0.1",
        &[("cookie", &reader)],
        "",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    for want in [code.as_str(), BIOS_MAC, U1, "10.0.0.1"] {
        assert!(page.contains(want), "{want} not on the page");
    }
    assert!(
        !page.contains("class=\"approve\""),
        "no button for read-only sessions"
    );
    let admin = login(s.admin.clone()).await;
    let (_, _, page) = req(
        &s.api,
        "GET",
        &format!("/ui/machines/{BIOS_MAC}"),
        "127.0.0.1",
        &[("cookie", &admin)],
        "",
    )
    .await;
    assert!(
        page.contains("id=\"waiting\"") && page.contains(&format!("Approve {code}")),
        "{page}"
    );
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("cookie", reader.as_str()),
    ];
    let body = format!("csrf={csrf}&code={code}&back=/ui/approvals");
    let (st, _, _) = req(
        &s.api,
        "POST",
        &format!("/ui/machines/{BIOS_MAC}/approve"),
        "127.0.0.1",
        &form,
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a read-only session cannot approve");
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("cookie", admin.as_str()),
    ];
    let (st, h, _) = req(
        &s.api,
        "POST",
        &format!("/ui/machines/{BIOS_MAC}/approve"),
        "127.0.0.1",
        &form,
        &body,
    )
    .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/ui/approvals?decided=1");
    assert!(machine(&s, BIOS_MAC).approval.is_some());
    let served = ipxe(&s, BIOS_MAC, Some(U1), "10.0.0.1").await;
    assert!(served.contains("provisioner.config="), "{served}");
    assert_eq!(machine(&s, BIOS_MAC).pinned_uuid.as_deref(), Some(U1));
    // Unpin from the machine page.
    let (st, h, _) = req(
        &s.api,
        "POST",
        &format!("/ui/machines/{BIOS_MAC}/unpin"),
        "127.0.0.1",
        &form,
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(
        (st, h["location"].to_str().unwrap()),
        (
            StatusCode::SEE_OTHER,
            format!("/ui/machines/{BIOS_MAC}?unpinned=1").as_str()
        )
    );
    assert!(machine(&s, BIOS_MAC).pinned_uuid.is_none());
}
