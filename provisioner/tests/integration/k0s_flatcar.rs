//! The k0s path in-process: a BeeLink-style cluster (controller + worker) with the
//! appliance-owned PKI, the mirror filled by `import`, the Flatcar renderer behind
//! the one-time config URL, and the two callbacks.
//!
//! Proves: every generated Ignition config (controller and worker, stage 1 and 2)
//! passes `ignition-validate` (Debian package `ignition`, installed by tests/setup);
//! `verification.hash` matches the cached k0s binary; the worker's join token decodes
//! to a kubeconfig with the controller URL on 6443, the cluster CA and its bootstrap
//! token, whose Secret on the controller follows Kubernetes' rules; `--single`
//! appears nowhere; the boot flow (DiskInstalled → local boot → K0sInstalled) with
//! replays refused; the mirror route serves only mirror files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use provisioner::http::boot::{BootState, router};
use provisioner::images::{ImageCache, sha256_file};
use provisioner::os::k0s::pull as download;
use provisioner::os::k0s::renderer::{self, FlatcarRenderer};
use provisioner::os::k0s::{ensure_secrets, parse_cluster};
use provisioner::service::{BootService, ReleasePolicy};
use provisioner::testing::peer_facts::StaticFacts;
use provisioner_core::boot::{CatalogBooter, UnknownPolicy};
use provisioner_core::catalog::{self, ConfigKind};
use provisioner_core::inventory::{Inventory, MemInventory};
use provisioner_core::k0s::ignition::{Ignition, MANIFEST_DIR, PKI_DIR, TOKEN_FILE};
use provisioner_core::k0s::mirror::{self, Kind};
use provisioner_core::k0s::store::{K0sSecretStore, K0sSecrets, MemSecretStore};
use provisioner_core::k0s::token::{self, AUTH_EXTRA_GROUP, SECRET_TYPE};
use provisioner_core::k0s::{K0sCluster, clusterconfig};
use provisioner_core::model::{EventKind, MacAddr, MachineState};
use provisioner_core::render::config::ConfigUrls;
use tower::ServiceExt;

const BASE: &str = "http://10.0.0.1:8080";
const CTRL_MAC: &str = "52:54:00:00:05:01";
const WORKER_MAC: &str = "52:54:00:00:05:02";
const K0S: &str = "v1.36.3+k0s.2";
const FLATCAR: &str = "4459.2.0";

fn cluster() -> K0sCluster {
    parse_cluster(&format!(
        "distribution: k0s\nclusterName: lab\nk0sVersion: {K0S}\nflatcarVersion: {FLATCAR}\n\
         apiSans: [k0s-api.lab]\nnodes:\n\
         \x20 - {{hostname: ctrl, controlPlane: true, ipAddress: 10.0.20.11, mac: '{CTRL_MAC}', installDisk: /dev/vda}}\n\
         \x20 - {{hostname: work, ipAddress: 10.0.20.12, mac: '{WORKER_MAC}'}}\n"
    ))
    .unwrap()
}

/// Fills the mirror through `import`, as an air-gapped operator would.
fn fill_mirror(dir: &Path, cache: &ImageCache) {
    let up = dir.join("upstream");
    std::fs::create_dir_all(&up).unwrap();
    let bin = up.join(mirror::k0s_binary(K0S));
    std::fs::write(&bin, b"\x7fELF fake k0s binary for tests").unwrap();
    let sum = sha256_file(&bin).unwrap();
    let sums = up.join(mirror::K0S_SUMS);
    std::fs::write(&sums, format!("{sum}  {}\n", mirror::k0s_binary(K0S))).unwrap();
    download::import(cache, Kind::K0s, K0S, None, &[bin, sums]).unwrap();
    let img = up.join(mirror::FLATCAR_IMAGE);
    let sig = up.join(mirror::FLATCAR_SIG);
    std::fs::write(&img, b"BZh9 fake flatcar image").unwrap();
    std::fs::write(&sig, b"fake signature").unwrap();
    download::import(cache, Kind::Flatcar, FLATCAR, None, &[img, sig]).unwrap();
}

struct Site {
    facts: Arc<StaticFacts>,
    _dir: tempfile::TempDir,
    cache: ImageCache,
    cluster: K0sCluster,
    secrets: K0sSecrets,
    inventory: Arc<dyn Inventory>,
    app: axum::Router,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in [
        "images",
        "profiles/profiles",
        "profiles/groups",
        "cache/flatcar-test",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("images/flatcar-test.yaml"),
        "id: flatcar-test\nkernel: { file: vmlinuz }\ninitrds: [{ file: initrd.gz }]\n\
         args: [console=ttyS0]\n",
    )
    .unwrap();
    std::fs::write(root.join("cache/flatcar-test/vmlinuz"), b"kernel").unwrap();
    std::fs::write(root.join("cache/flatcar-test/initrd.gz"), b"initrd").unwrap();
    std::fs::write(
        root.join("profiles/profiles/k0s.yaml"),
        "id: k0s\nimage: flatcar-test\nconfig: flatcar\ncluster: lab\n",
    )
    .unwrap();
    for (host, mac) in [("ctrl", CTRL_MAC), ("work", WORKER_MAC)] {
        std::fs::write(
            root.join(format!("profiles/groups/{host}.yaml")),
            format!(
                "id: {host}\nprofile: k0s\nselector: {{ mac: \"{mac}\" }}\nmetadata: {{ hostname: {host} }}\n"
            ),
        )
        .unwrap();
    }
    let cache = ImageCache::new(root.join("cache"));
    fill_mirror(root, &cache);
    let cat = catalog::load(&root.join("images"), &root.join("profiles")).unwrap();
    let cluster = cluster();
    let clusters = BTreeMap::from([("lab".to_string(), cluster.clone())]);
    let store = Arc::new(MemSecretStore::default());
    ensure_secrets(&clusters, store.as_ref(), time::OffsetDateTime::now_utc()).unwrap();
    let secrets = store.get("lab").unwrap().unwrap();
    let inventory: Arc<dyn Inventory> = Arc::new(MemInventory::new());
    let images = Arc::new(cat.images.clone());
    let booter = Arc::new(CatalogBooter {
        catalog: cat,
        unknown: UnknownPolicy::Record,
    });
    let facts = Arc::new(StaticFacts::default());
    let service = BootService::new(booter, inventory.clone(), BASE.into())
        .with_renderer(
            ConfigKind::Flatcar,
            Arc::new(FlatcarRenderer::new(clusters, store, cache.clone())),
        )
        .with_release(ReleasePolicy {
            facts: facts.clone(),
            ..Default::default()
        });
    let app = router(BootState {
        service: Arc::new(service),
        images,
        cache: cache.clone(),
        ipxe_dir: root.join("cache/flatcar-test"),
        first_stage: "#!ipxe\n".into(),
    });
    Site {
        facts,
        _dir: dir,
        cache,
        cluster,
        secrets,
        inventory,
        app,
    }
}

/// Every request comes from 10.0.0.50. The machine an `/ipxe` request names sits
/// there (the neighbour table says so); its later fetches come from the address
/// its script was served to (peer binding's rule for later fetches).
async fn call(
    app: &axum::Router,
    facts: &StaticFacts,
    method: &str,
    uri: &str,
) -> (StatusCode, String, Vec<u8>) {
    if let Some(mac) = uri.split("mac=").nth(1).and_then(|m| m.split('&').next()) {
        facts.neighbour_is("10.0.0.50", mac);
    }
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo::<SocketAddr>("10.0.0.50:4000".parse().unwrap()));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        ct,
        resp.into_body().collect().await.unwrap().to_bytes().to_vec(),
    )
}

fn arg<'a>(script: &'a str, key: &str) -> &'a str {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key} missing in:\n{script}"))
}

fn path_of(url: &str) -> &str {
    url.strip_prefix(BASE).unwrap()
}

/// The URL a unit POSTs to (`curl … -X POST <url>`).
fn posted_url(ign: &Ignition, unit: &str) -> String {
    let text = ign
        .systemd
        .units
        .iter()
        .find(|u| u.name == unit)
        .and_then(|u| u.contents.clone())
        .unwrap_or_else(|| panic!("no unit {unit}"));
    text.lines()
        .find_map(|l| l.strip_prefix("ExecStartPost=/usr/bin/curl"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no callback in {unit}"))
        .to_string()
}

fn stage2_of(stage1: &Ignition) -> Ignition {
    let bytes = stage1
        .data_file(provisioner_core::k0s::ignition::STAGE2_PATH)
        .expect("stage 2 inside stage 1");
    serde_json::from_slice(&bytes).unwrap()
}

fn ignition_validate(name: &str, json: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(format!("{name}.ign"));
    std::fs::write(&f, json).unwrap();
    let out = std::process::Command::new("ignition-validate")
        .arg(&f)
        .output()
        .unwrap_or_else(|e| {
            panic!("ignition-validate not runnable ({e}): install Debian's `ignition` (tests/setup does)")
        });
    assert!(
        out.status.success(),
        "{name}: ignition-validate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every string in a config, with data: URLs decoded, for "never appears" checks.
fn all_text(ign: &Ignition) -> String {
    let mut s = ign.to_json();
    for f in &ign.storage.files {
        if let Some(b) = ign.data_file(&f.path) {
            s.push_str(&String::from_utf8_lossy(&b));
            // Tokens are gzip+base64 inside.
            if f.path == TOKEN_FILE {
                s.push_str(&token::decode(&String::from_utf8_lossy(&b)).unwrap().to_yaml());
            }
        }
    }
    s
}

#[test]
fn ignition_for_every_role_and_stage_validates_and_is_consistent() {
    let s = site();
    let urls = ConfigUrls {
        base: BASE.into(),
        installed: format!("{BASE}/callback/aaaa/installed"),
        k0s_installed: format!("{BASE}/callback/bbbb/k0s-installed"),
    };
    let k0s_sha = sha256_file(&s.cache.mirror_dir(Kind::K0s, K0S).join(mirror::k0s_binary(K0S))).unwrap();
    for host in ["ctrl", "work"] {
        let n = renderer::node_configs(&s.cluster, host, &s.secrets, &s.cache, &urls).unwrap();
        ignition_validate(&format!("{host}-stage1"), &n.stage1.to_json());
        ignition_validate(&format!("{host}-stage2"), &n.stage2.to_json());
        assert_eq!(stage2_of(&n.stage1), n.stage2, "stage 1 carries stage 2 verbatim");

        // Stage 1: flatcar-install against the appliance mirror, then DiskInstalled.
        let unit = n.stage1.systemd.units[0].contents.clone().unwrap();
        assert!(
            unit.contains("flatcar-install ")
                && unit.contains(&format!("-b {BASE}/mirror/flatcar -V {FLATCAR}")),
            "{unit}"
        );
        assert_eq!(
            posted_url(&n.stage1, "provisioner-install.service"),
            urls.installed
        );
        assert_eq!(
            posted_url(&n.stage2, "provisioner-k0s-install.service"),
            urls.k0s_installed
        );

        // k0s binary from the mirror, pinned to the cached file's hash.
        let k0s = n
            .stage2
            .storage
            .files
            .iter()
            .find(|f| f.path == "/opt/bin/k0s")
            .unwrap();
        assert_eq!(k0s.mode, 0o755);
        assert_eq!(
            k0s.contents.source,
            format!("{BASE}/mirror/k0s/v1.36.3%2Bk0s.2/k0s-v1.36.3%2Bk0s.2-amd64")
        );
        assert_eq!(
            k0s.contents.verification.as_ref().unwrap().hash,
            format!("sha256-{k0s_sha}")
        );
        assert_eq!(
            n.stage2.data_file("/etc/flatcar/update.conf").as_deref(),
            Some(&b"REBOOT_STRATEGY=off\n"[..])
        );
        assert!(
            n.stage2
                .systemd
                .units
                .iter()
                .any(|u| u.name == "locksmithd.service" && u.mask == Some(true))
        );

        // Never --single, anywhere (it disables Konnectivity and join tokens).
        for ign in [&n.stage1, &n.stage2] {
            assert!(!all_text(ign).contains("--single"), "{host}: --single generated");
        }
    }

    // Controller: PKI, ClusterConfig and the token Secrets.
    let c = renderer::node_configs(&s.cluster, "ctrl", &s.secrets, &s.cache, &urls)
        .unwrap()
        .stage2;
    let file = |p: &str| String::from_utf8(c.data_file(p).unwrap()).unwrap();
    assert_eq!(file(&format!("{PKI_DIR}/ca.crt")), s.secrets.ca_crt);
    assert_eq!(file(&format!("{PKI_DIR}/ca.key")), s.secrets.ca_key);
    assert_eq!(file(&format!("{PKI_DIR}/sa.key")), s.secrets.sa_key);
    assert_eq!(file(&format!("{PKI_DIR}/sa.pub")), s.secrets.sa_pub);
    for key in ["ca.key", "sa.key"] {
        let f = c
            .storage
            .files
            .iter()
            .find(|f| f.path == format!("{PKI_DIR}/{key}"))
            .unwrap();
        assert_eq!(f.mode, 0o600, "{key}");
    }
    assert_eq!(
        file("/etc/k0s/k0s.yaml"),
        clusterconfig::render(&s.cluster).unwrap()
    );
    let unit = c
        .systemd
        .units
        .iter()
        .find(|u| u.name == "provisioner-k0s-install.service")
        .unwrap();
    assert!(
        unit.contents
            .as_ref()
            .unwrap()
            .contains("k0s install controller --enable-worker --no-taints"),
        "{unit:?}"
    );

    // Worker: its join token → kubeconfig on :6443 with the CA and its bootstrap token.
    let w = renderer::node_configs(&s.cluster, "work", &s.secrets, &s.cache, &urls)
        .unwrap()
        .stage2;
    let tok = String::from_utf8(w.data_file(TOKEN_FILE).unwrap()).unwrap();
    let kc = token::decode(&tok).unwrap();
    assert_eq!(kc.clusters[0].cluster.server, "https://10.0.20.11:6443");
    assert_eq!(kc.ca_pem().unwrap(), s.secrets.ca_crt);
    assert_eq!(kc.current_context, "k0s");
    assert_eq!(kc.users[0].name, "kubelet-bootstrap");
    let bearer = kc.users[0].user.token.clone().unwrap();
    let bt = &s.secrets.worker_tokens["work"];
    assert_eq!(bearer, bt.expose());
    let (id, secret) = bearer.split_once('.').unwrap();
    let ok = |t: &str, n| t.len() == n && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    assert!(ok(id, 6) && ok(secret, 16), "[a-z0-9]{{6}}.[a-z0-9]{{16}}");
    let wunit = w
        .systemd
        .units
        .iter()
        .find(|u| u.name == "provisioner-k0s-install.service")
        .unwrap();
    assert!(
        wunit
            .contents
            .as_ref()
            .unwrap()
            .contains(&format!("k0s install worker --token-file {TOKEN_FILE}")),
        "{wunit:?}"
    );

    // The matching Secret, shipped in the controller's manifest directory.
    let manifest = file(&format!("{MANIFEST_DIR}/bootstrap-tokens.yaml"));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&manifest).unwrap();
    assert_eq!(docs.len(), 1, "one worker, one Secret:\n{manifest}");
    let d = &docs[0];
    assert_eq!(d["apiVersion"], "v1");
    assert_eq!(d["kind"], "Secret");
    assert_eq!(d["type"], SECRET_TYPE);
    assert_eq!(d["metadata"]["namespace"], "kube-system");
    assert_eq!(d["metadata"]["name"], format!("bootstrap-token-{id}"));
    let data = &d["stringData"];
    assert_eq!(data["token-id"], id);
    assert_eq!(data["token-secret"], secret);
    assert_eq!(data["usage-bootstrap-authentication"], "true");
    assert_eq!(data["usage-bootstrap-signing"], "true");
    for g in data["auth-extra-groups"].as_str().unwrap().split(',') {
        assert!(g.starts_with("system:bootstrappers:"), "{g}");
    }
    assert_eq!(data["auth-extra-groups"], AUTH_EXTRA_GROUP);
}

#[test]
fn pki_is_a_ca_with_an_admin_client_in_system_masters() {
    use x509_parser::prelude::*;
    let s = site();
    let pem_der = |t: &str| {
        ::x509_parser::pem::parse_x509_pem(t.as_bytes())
            .unwrap()
            .1
            .contents
    };
    let ca_der = pem_der(&s.secrets.ca_crt);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca.is_ca());
    let kc = provisioner::pki::k0s::admin_kubeconfig(
        "lab",
        "https://10.0.20.11:6443",
        &s.secrets,
        ::time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(kc.ca_pem().unwrap(), s.secrets.ca_crt);
    use base64::Engine;
    let crt = base64::engine::general_purpose::STANDARD
        .decode(kc.users[0].user.client_certificate_data.as_ref().unwrap())
        .unwrap();
    let der = pem_der(std::str::from_utf8(&crt).unwrap());
    let (_, admin) = X509Certificate::from_der(&der).unwrap();
    let orgs: Vec<&str> = admin
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    assert_eq!(orgs, ["system:masters"]);
    admin
        .verify_signature(Some(ca.public_key()))
        .expect("signed by the cluster CA");
    assert!(
        !format!("{:?}", s.secrets).contains("PRIVATE KEY"),
        "Debug hides keys"
    );
}

#[tokio::test]
async fn boot_flow_disk_installed_then_local_boot_then_k0s_installed() {
    let s = site();
    let mac: MacAddr = WORKER_MAC.parse().unwrap();
    let (st, _, body) = call(
        &s.app,
        &s.facts,
        "GET",
        "/ipxe?mac=52-54-00-00-05-02&arch=x86_64&platform=efi",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let script = String::from_utf8(body).unwrap();
    // The Flatcar config kind brings the flag; the test image does not have it.
    assert_eq!(script.matches("flatcar.first_boot=1").count(), 1, "{script}");
    let config_url = arg(&script, "ignition.config.url").to_string();
    let kernel_callback = arg(&script, "provisioner.callback").to_string();

    let (st, ct, body) = call(&s.app, &s.facts, "GET", path_of(&config_url)).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/json");
    let stage1: Ignition = serde_json::from_slice(&body).unwrap();
    // The callback inside stage 1 is the one on the kernel line (derived tokens).
    assert_eq!(
        posted_url(&stage1, "provisioner-install.service"),
        kernel_callback
    );
    let k0s_callback = posted_url(&stage2_of(&stage1), "provisioner-k0s-install.service");
    // One-time: the config URL is spent.
    assert_eq!(
        call(&s.app, &s.facts, "GET", path_of(&config_url)).await.0,
        StatusCode::FORBIDDEN
    );
    // k0s cannot report before the disk install.
    let (st, _, _) = call(&s.app, &s.facts, "POST", path_of(&k0s_callback)).await;
    assert_eq!(st, StatusCode::CONFLICT);

    // The machine was re-imaged meanwhile? No: PXE again issues fresh tokens; go on
    // with a fresh boot so the k0s token is live again.
    let (_, _, body) = call(
        &s.app,
        &s.facts,
        "GET",
        "/ipxe?mac=52-54-00-00-05-02&arch=x86_64&platform=efi",
    )
    .await;
    let script = String::from_utf8(body).unwrap();
    let config_url = arg(&script, "ignition.config.url").to_string();
    let kernel_callback = arg(&script, "provisioner.callback").to_string();
    let (st, _, body) = call(&s.app, &s.facts, "GET", path_of(&config_url)).await;
    assert_eq!(st, StatusCode::OK);
    let stage1: Ignition = serde_json::from_slice(&body).unwrap();
    let k0s_callback = posted_url(&stage2_of(&stage1), "provisioner-k0s-install.service");

    // DiskInstalled (what the lab payload posts from the kernel line).
    let (st, _, _) = call(&s.app, &s.facts, "POST", path_of(&kernel_callback)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        s.inventory.get(mac).unwrap().unwrap().state,
        MachineState::Installed
    );
    assert_eq!(
        call(&s.app, &s.facts, "POST", path_of(&kernel_callback)).await.0,
        StatusCode::FORBIDDEN,
        "replay refused"
    );

    // Next netboot: local disk.
    let (_, _, body) = call(
        &s.app,
        &s.facts,
        "GET",
        "/ipxe?mac=52-54-00-00-05-02&arch=x86_64&platform=efi",
    )
    .await;
    let script = String::from_utf8(body).unwrap();
    assert!(
        script.contains("\nexit\n") && !script.contains("kernel "),
        "{script}"
    );

    // K0sInstalled, once.
    assert_eq!(
        call(&s.app, &s.facts, "POST", path_of(&k0s_callback)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&s.app, &s.facts, "POST", path_of(&k0s_callback)).await.0,
        StatusCode::FORBIDDEN,
        "replay refused"
    );
    let tl = s.inventory.timeline(mac).unwrap();
    let kinds: Vec<EventKind> = tl.iter().map(|e| e.kind()).collect();
    let pos = |k| kinds.iter().rposition(|x| *x == k).unwrap();
    assert!(pos(EventKind::ConfigServed) < pos(EventKind::DiskInstalled));
    assert!(pos(EventKind::DiskInstalled) < pos(EventKind::K0sInstalled));
    assert_eq!(
        provisioner_core::k0s::progress::from_timeline(&tl).0,
        provisioner_core::k0s::progress::Phase::K0sInstalled
    );
    assert_eq!(
        s.inventory.get(mac).unwrap().unwrap().state,
        MachineState::Installed
    );
    // The sub-state the API shows (`/api/v1/machines/<mac>/k0s`, checked over HTTP
    // in the QEMU lab test).
    let st =
        provisioner_core::k0s::progress::status(&tl, time::OffsetDateTime::now_utc(), &Default::default());
    assert_eq!((st.phase, st.health), ("K0sInstalled", "on_time"));
    // No secret material in the timeline.
    let all: String = tl.iter().map(|e| e.detail()).collect();
    assert!(!all.contains("PRIVATE KEY") && !all.contains(&s.secrets.worker_tokens["work"].expose()));
}

#[tokio::test]
async fn mirror_route_serves_only_mirror_files() {
    let s = site();
    let ok = format!("/mirror/flatcar/{FLATCAR}/{}", mirror::FLATCAR_IMAGE);
    let (st, _, body) = call(&s.app, &s.facts, "GET", &ok).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, b"BZh9 fake flatcar image");
    assert_eq!(
        call(&s.app, &s.facts, "HEAD", &ok).await.0,
        StatusCode::OK,
        "wget --spider"
    );
    let (st, _, body) = call(
        &s.app,
        &s.facts,
        "GET",
        "/mirror/k0s/v1.36.3%2Bk0s.2/k0s-v1.36.3%2Bk0s.2-amd64",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.starts_with(b"\x7fELF"));
    for bad in [
        "/mirror/flatcar/..%2F..%2F/flatcar_production_image.bin.bz2".to_string(),
        format!("/mirror/flatcar/{FLATCAR}/..%2F..%2F..%2Fsecrets.key"),
        format!("/mirror/flatcar/{FLATCAR}/SHA256SUMS"),
        "/mirror/flatcar/current/version.txt".into(),
        format!("/mirror/k0s/{FLATCAR}/flatcar_production_image.bin.bz2"),
        "/mirror/images/x/y".into(),
    ] {
        assert_eq!(
            call(&s.app, &s.facts, "GET", &bad).await.0,
            StatusCode::NOT_FOUND,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn missing_secrets_answer_503_and_keep_the_token() {
    let s = site();
    // A site whose store is empty: rebuild the renderer over an empty store.
    let dir = s._dir.path();
    let cat = catalog::load(&dir.join("images"), &dir.join("profiles")).unwrap();
    let inventory: Arc<dyn Inventory> = Arc::new(MemInventory::new());
    let images = Arc::new(cat.images.clone());
    let booter = Arc::new(CatalogBooter {
        catalog: cat,
        unknown: UnknownPolicy::Record,
    });
    let store: Arc<dyn K0sSecretStore> = Arc::new(MemSecretStore::default());
    let clusters = BTreeMap::from([("lab".to_string(), s.cluster.clone())]);
    let facts = Arc::new(StaticFacts::default());
    let service = Arc::new(
        BootService::new(booter, inventory, BASE.into())
            .with_renderer(
                ConfigKind::Flatcar,
                Arc::new(FlatcarRenderer::new(
                    clusters.clone(),
                    store.clone(),
                    s.cache.clone(),
                )),
            )
            .with_release(ReleasePolicy {
                facts: facts.clone(),
                ..Default::default()
            }),
    );
    let app = router(BootState {
        service,
        images,
        cache: s.cache.clone(),
        ipxe_dir: dir.join("cache"),
        first_stage: "#!ipxe\n".into(),
    });
    let (_, _, body) = call(&app, &facts, "GET", "/ipxe?mac=52-54-00-00-05-01").await;
    let script = String::from_utf8(body).unwrap();
    let url = arg(&script, "ignition.config.url").to_string();
    let (st, _, body) = call(&app, &facts, "GET", path_of(&url)).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "config not available yet\n",
        "no details to the client"
    );
    ensure_secrets(&clusters, store.as_ref(), time::OffsetDateTime::now_utc()).unwrap();
    let (st, _, body) = call(&app, &facts, "GET", path_of(&url)).await;
    assert_eq!(st, StatusCode::OK, "the same token works once secrets exist");
    let stage1: Ignition = serde_json::from_slice(&body).unwrap();
    let pki = stage2_of(&stage1)
        .data_file(&format!("{PKI_DIR}/ca.crt"))
        .unwrap();
    assert_eq!(pki, store.get("lab").unwrap().unwrap().ca_crt.into_bytes());
}
