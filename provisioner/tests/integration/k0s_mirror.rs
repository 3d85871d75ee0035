//! The k0s path's mirror and secrets through the CLI and the library:
//! `images pull k0s|flatcar` against stand-in upstream sites on loopback (k0s binary
//! checked against the release's sha256sums.txt, a tampered one refused and never
//! installed; Flatcar disk image + signature into the mirror, PXE files into the
//! image cache), `images import --mirror` for air-gapped sites, the encrypted
//! secret store, `provisioner check` on infra/beelink.yaml, and `k0s kubeconfig`.

use crate::common;

use common::cli::{repo, repo_config, run};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::get;
use provisioner::images::{ImageCache, sha256_file};
use provisioner::os::k0s::pull as download;
use provisioner::pki::k0s as pki;
use provisioner::store::FileSecretStore;
use provisioner_core::k0s::mirror::{self, Kind};
use provisioner_core::k0s::store::K0sSecretStore;

const K0S: &str = "v1.36.3+k0s.2";
const FLATCAR: &str = "4459.2.0";

/// Serves `<root>/<a>/<b>` at `/<a>/<b>` (percent-decoded, as GitHub does for `%2B`).
async fn upstream(root: PathBuf) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route(
            "/{dir}/{file}",
            get(
                |State(root): State<Arc<PathBuf>>,
                 UrlPath((d, f)): UrlPath<(String, String)>,
                 h: HeaderMap| async move {
                    provisioner::http::assets::serve_file(&root.join(d).join(f), &h, None).await
                },
            ),
        )
        .with_state(Arc::new(root));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    (format!("http://{addr}"), h)
}

fn publish_k0s(root: &Path, binary: &[u8], listed: &[u8]) {
    let d = root.join(K0S);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(mirror::k0s_binary(K0S)), binary).unwrap();
    let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(listed));
    std::fs::write(
        d.join(mirror::K0S_SUMS),
        format!(
            "{sum}  {}\n{}  k0s-{K0S}-arm64\n",
            mirror::k0s_binary(K0S),
            "0".repeat(64)
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_k0s_checks_the_release_sums_and_refuses_a_tampered_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, cache) = (tmp.path().join("up"), ImageCache::new(tmp.path().join("cache")));
    let good = b"\x7fELF the real k0s".to_vec();
    publish_k0s(&root, &good, &good);
    let (base, server) = upstream(root.clone()).await;
    let client = reqwest::Client::new();
    let placed = download::pull_k0s(&client, &cache, &base, K0S).await.unwrap();
    let bin = cache.mirror_dir(Kind::K0s, K0S).join(mirror::k0s_binary(K0S));
    assert_eq!(std::fs::read(&bin).unwrap(), good);
    let sha = sha256_file(&bin).unwrap();
    assert!(placed.iter().any(|p| p.path == bin && p.sha256 == sha));
    assert_eq!(
        cache.mirror_sha256(Kind::K0s, K0S, &mirror::k0s_binary(K0S)),
        Some(sha.clone())
    );

    // Upstream now serves different bytes than its list says: refused, not installed.
    let cache2 = ImageCache::new(tmp.path().join("cache2"));
    publish_k0s(&root, b"\x7fELF tampered", &good);
    let err = download::pull_k0s(&client, &cache2, &base, K0S)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    let dir2 = cache2.mirror_dir(Kind::K0s, K0S);
    assert!(!dir2.join(mirror::k0s_binary(K0S)).exists());
    assert!(!dir2.join(format!("{}.part", mirror::k0s_binary(K0S))).exists());
    assert_eq!(
        cache2.mirror_sha256(Kind::K0s, K0S, &mirror::k0s_binary(K0S)),
        None
    );
    server.abort();
}

#[test]
fn cli_pulls_flatcar_and_k0s_then_imports_for_air_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("up");
    let fdir = root.join(FLATCAR);
    std::fs::create_dir_all(&fdir).unwrap();
    for (f, b) in [
        (mirror::FLATCAR_IMAGE, &b"BZh9 disk"[..]),
        (mirror::FLATCAR_SIG, b"sig"),
        ("flatcar_production_pxe.vmlinuz", b"pxe kernel"),
        ("flatcar_production_pxe_image.cpio.gz", b"pxe initrd"),
    ] {
        std::fs::write(fdir.join(f), b).unwrap();
    }
    let k0s = b"\x7fELF k0s".to_vec();
    publish_k0s(&root, &k0s, &k0s);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (base, _server) = rt.block_on(upstream(root.clone()));
    let cfg = repo_config(tmp.path(), &repo().join("infra"), "server_ip: 10.0.0.1\n");
    let cfg = cfg.to_str().unwrap();

    let (ok, out, err) = run(&[
        "images",
        "pull",
        "flatcar",
        "--version",
        FLATCAR,
        "--base",
        &base,
        "--config",
        cfg,
    ]);
    assert!(ok, "{out}{err}");
    let cache = ImageCache::new(tmp.path().join("state/images"));
    let m = cache.mirror_dir(Kind::Flatcar, FLATCAR);
    assert_eq!(
        std::fs::read(m.join(mirror::FLATCAR_IMAGE)).unwrap(),
        b"BZh9 disk"
    );
    assert_eq!(std::fs::read(m.join(mirror::FLATCAR_SIG)).unwrap(), b"sig");
    let pxe = cache.image_dir("flatcar-stable-amd64");
    assert_eq!(
        std::fs::read(pxe.join("flatcar_production_pxe.vmlinuz")).unwrap(),
        b"pxe kernel"
    );
    assert!(
        cache
            .mirror_sha256(Kind::Flatcar, FLATCAR, mirror::FLATCAR_IMAGE)
            .is_some()
    );

    let (ok, out, err) = run(&[
        "images",
        "pull",
        "k0s",
        "--version",
        K0S,
        "--base",
        &base,
        "--config",
        cfg,
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("downloaded"), "{out}");

    // With the mirror filled, `k0s ignition` prints a node's config (stdout is a
    // pipe here; on a terminal it refuses, the config holds keys).
    for (node, stage) in [("beelink-1", "1"), ("beelink-2", "2")] {
        let (ok, out, err) = run(&[
            "k0s", "ignition", "--node", node, "--stage", stage, "--config", cfg,
        ]);
        assert!(ok, "{err}");
        let ign: provisioner_core::k0s::ignition::Ignition = serde_json::from_str(&out).unwrap();
        assert_eq!(ign.ignition.version, "3.3.0");
        let f = tmp.path().join(format!("{node}.ign"));
        std::fs::write(&f, &out).unwrap();
        let v = Command::new("ignition-validate")
            .arg(&f)
            .output()
            .expect("ignition-validate (tests/setup installs it)");
        assert!(
            v.status.success(),
            "{node}: {}",
            String::from_utf8_lossy(&v.stderr)
        );
    }

    // Air-gapped: a second site imports the same files; a file whose bytes differ
    // from the release list is refused.
    let site2 = tempfile::tempdir().unwrap();
    let cfg2 = repo_config(site2.path(), &repo().join("infra"), "server_ip: 10.0.0.1\n");
    let cfg2 = cfg2.to_str().unwrap();
    let kd = root.join(K0S);
    let (b, s) = (kd.join(mirror::k0s_binary(K0S)), kd.join(mirror::K0S_SUMS));
    let (ok, out, err) = run(&[
        "images",
        "import",
        "--mirror",
        "k0s",
        "--version",
        K0S,
        b.to_str().unwrap(),
        s.to_str().unwrap(),
        "--config",
        cfg2,
    ]);
    assert!(ok, "{out}{err}");
    let cache2 = ImageCache::new(site2.path().join("state/images"));
    assert!(
        cache2
            .mirror_sha256(Kind::K0s, K0S, &mirror::k0s_binary(K0S))
            .is_some()
    );
    let bad = tmp.path().join(mirror::k0s_binary(K0S));
    std::fs::write(&bad, b"\x7fELF other").unwrap();
    let (ok, _, err) = run(&[
        "images",
        "import",
        "--mirror",
        "k0s",
        "--version",
        K0S,
        bad.to_str().unwrap(),
        "--config",
        cfg2,
    ]);
    assert!(!ok && err.contains("does not match"), "{err}");
    let (ok, out, err) = run(&[
        "images",
        "import",
        "--mirror",
        "flatcar",
        "--version",
        FLATCAR,
        fdir.join(mirror::FLATCAR_IMAGE).to_str().unwrap(),
        fdir.join("flatcar_production_pxe.vmlinuz").to_str().unwrap(),
        "--config",
        cfg2,
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        cache2
            .image_file("flatcar-stable-amd64", "flatcar_production_pxe.vmlinuz")
            .is_file()
    );
    let (ok, _, err) = run(&[
        "images",
        "import",
        "--mirror",
        "flatcar",
        "--version",
        FLATCAR,
        b.to_str().unwrap(),
        "--config",
        cfg2,
    ]);
    assert!(!ok && err.contains("not a file of flatcar"), "{err}");
}

#[test]
fn secrets_are_encrypted_at_rest_and_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let s = pki::generate("lab", ["w1", "w2"], time::OffsetDateTime::now_utc()).unwrap();
    let store = FileSecretStore::open(tmp.path()).unwrap();
    assert_eq!(store.get("lab").unwrap(), None);
    store.put("lab", &s).unwrap();
    let file = tmp.path().join("secrets/k0s/lab.age");
    let raw = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&raw);
    for secret in ["PRIVATE KEY", "BEGIN CERTIFICATE", s.worker_tokens["w1"].secret()] {
        assert!(!text.contains(secret), "plaintext {secret:?} on disk");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = FileSecretStore::open(tmp.path()).unwrap();
    assert_eq!(again.get("lab").unwrap(), Some(s));
    // A missing key is not silently replaced next to what it encrypted.
    let key = tmp.path().join("secrets/secrets.key");
    std::fs::remove_file(&key).unwrap();
    let err = FileSecretStore::open(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("is missing") && err.contains("put the key back"),
        "{err}"
    );
    // Another key cannot read it: a clear error, not garbage.
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let other = FileSecretStore::open(tmp.path()).unwrap();
    let err = other.get("lab").unwrap_err().to_string();
    assert!(err.contains("cannot be read"), "{err}");
}

#[test]
fn check_validates_beelink_and_names_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let infra = tmp.path().join("infra");
    std::fs::create_dir_all(&infra).unwrap();
    std::fs::copy(
        repo().join("infra/genmachine.yaml"),
        infra.join("genmachine.yaml"),
    )
    .unwrap();
    std::fs::copy(repo().join("infra/beelink.yaml"), infra.join("beelink.yaml")).unwrap();
    let cfg = repo_config(tmp.path(), &infra, "server_ip: 10.0.0.1\n");
    let (ok, out, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "the shipped tree must pass: {out}{err}");

    let text = std::fs::read_to_string(repo().join("infra/beelink.yaml")).unwrap();
    std::fs::write(
        infra.join("beelink.yaml"),
        text.replace("k0sVersion: v1.36.3+k0s.2", "k0sVersion: latest")
            .replace(
                "  - hostname: beelink-2\n",
                "  - hostname: beelink-2\n    controlPlane: true\n",
            )
            .replace("  cilium:\n    version: 1.18.4\n", ""),
    )
    .unwrap();
    let (ok, _, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    for want in [
        "beelink.yaml: field `k0sVersion`",
        "beelink.yaml: field `nodes`: 2 controlPlane nodes",
        "beelink.yaml: field `network.cilium`",
    ] {
        assert!(err.contains(want), "{want} missing in:\n{err}");
    }
}

#[test]
fn kubeconfig_for_the_cluster_is_written_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = repo_config(tmp.path(), &repo().join("infra"), "server_ip: 10.0.0.1\n");
    let out = tmp.path().join("beelink.kubeconfig");
    let (ok, stdout, err) = run(&[
        "k0s",
        "kubeconfig",
        "--cluster",
        "beelink",
        "-o",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{err}");
    assert!(stdout.is_empty(), "no credential on stdout with -o");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let kc: provisioner_core::k0s::token::Kubeconfig =
        serde_saphyr::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(kc.clusters[0].cluster.server, "https://192.168.1.161:6443");
    // The CA in the kubeconfig is the one stored (encrypted) for the cluster, which
    // the controller gets through Ignition.
    let store = FileSecretStore::open(&tmp.path().join("state")).unwrap();
    assert_eq!(
        kc.ca_pem().unwrap(),
        store.get("beelink").unwrap().unwrap().ca_crt
    );
    assert!(kc.users[0].user.client_certificate_data.is_some());
}
