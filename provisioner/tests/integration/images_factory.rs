//! `images pull talos` against a fake Image Factory that behaves as
//! siderolabs/image-factory v1.5.0 does (`provisioner::testing::fake_factory`):
//! unknown schematic IDs are `404 schematic ID "…" not found` until the schematic is
//! POSTed to `/schematics`, invalid schematics are `400` with the decoder's message,
//! and an Enterprise factory hashes `owner` into the ID. The CLI tests run the real
//! binary over the repository's own `infra/` and `images/`.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use common::cli::{repo_config, run};
use provisioner::images::{self, SUMS};
use provisioner::os::talos::factory::{FactoryError, ensure_schematic};
use provisioner::testing::fake_factory::FakeFactory;
use provisioner_core::talos::schematic::Schematic;

/// The shipped GenMachine schematic (infra/genmachine.yaml) and image descriptor.
const GENMACHINE: &str = "65cf8364cd0de4cf7b851dc7067a2db83d0ba04f11d8635c6cd3334be6ffb825";
const IMAGE: &str = "talos-genmachine-v1.11.6-amd64";

fn publish(root: &Path, file: &str, bytes: &[u8]) {
    let d = root.join("v1.11.6");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(file), bytes).unwrap();
}

fn factory(root: &Path, owner: Option<&str>) -> Arc<FakeFactory> {
    Arc::new(FakeFactory {
        root: root.to_path_buf(),
        enterprise_owner: owner.map(str::to_string),
        ..FakeFactory::default()
    })
}

fn log(f: &FakeFactory) -> Vec<String> {
    f.log.lock().unwrap().clone()
}

/// The fake itself answers as the upstream handlers do (status codes and bodies from
/// `internal/frontend/http/{http,configuration,image}.go`).
#[tokio::test]
async fn fake_factory_refuses_unknown_schematics_until_posted() {
    let tmp = tempfile::tempdir().unwrap();
    publish(tmp.path(), "kernel-amd64", b"kernel");
    let f = factory(tmp.path(), None);
    let (base, server) = f.clone().serve().await;
    let c = reqwest::Client::new();
    let image_url = format!("{base}/image/{GENMACHINE}/v1.11.6/kernel-amd64");

    let r = c.get(&image_url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; charset=utf-8",
        "Go's http.Error"
    );
    assert_eq!(
        r.text().await.unwrap(),
        format!("schematic ID \"{GENMACHINE}\" not found\n")
    );
    let r = c
        .get(format!("{base}/schematics/{GENMACHINE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (404, "schematic not found\n".into())
    );
    let r = c
        .get(format!("{base}/image/not-hex/v1.11.6/kernel-amd64"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "an ID that is no digest is not found either");

    // Invalid bodies: 400 with the reason, nothing stored.
    for (body, reason) in [
        ("", "EOF"),
        ("customization: {bogus: 1}", "bogus"),
        (
            "owner: alice\ncustomization: {}",
            "owner field is only supported in Enterprise edition",
        ),
        (
            "customization: {bootloader: lilo}",
            "lilo does not belong to BootloaderKind values",
        ),
    ] {
        let r = c
            .post(format!("{base}/schematics"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body:?}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains(reason) && text.ends_with('\n'),
            "{body:?}: {text:?}"
        );
    }
    assert!(f.schematics.lock().unwrap().is_empty());

    // POST is idempotent: 201 and the same ID every time; then the image is served.
    let s = Schematic::with_extensions([
        "siderolabs/util-linux-tools",
        "siderolabs/amd-ucode",
        "siderolabs/iscsi-tools",
        "siderolabs/amdgpu",
    ]);
    for _ in 0..2 {
        assert_eq!(ensure_schematic(&c, &base, &s).await.unwrap(), GENMACHINE);
    }
    assert_eq!(f.schematics.lock().unwrap().len(), 1);
    let r = c.get(&image_url).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec()),
        (200, b"kernel".to_vec())
    );
    let posts = log(&f).iter().filter(|l| *l == "POST /schematics 201").count();
    assert_eq!(posts, 2, "{:?}", log(&f));
    server.abort();
}

/// `images pull talos` POSTs first, records each file's SHA-256 on the first pull,
/// refuses a tampered download on the second, moves a tampered cached file aside and
/// checks `images import` against the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pull_creates_schematic_records_and_refuses_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("factory");
    let kernel: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let initrd = b"initramfs with amd-ucode, amdgpu, iscsi-tools, util-linux-tools".to_vec();
    publish(&root, "kernel-amd64", &kernel);
    publish(&root, "initramfs-amd64.xz", &initrd);
    let f = factory(&root, None);
    let (base, server) = f.clone().serve().await;
    let cfg = repo_config(tmp.path(), &common::cli::repo().join("infra"), "");
    let cfg = cfg.display().to_string();
    let pull = {
        let (cfg, base) = (cfg.clone(), base.clone());
        move || {
            let (cfg, base) = (cfg.clone(), base.clone());
            tokio::task::spawn_blocking(move || {
                run(&[
                    "images",
                    "pull",
                    "talos",
                    "--config",
                    &cfg,
                    "--schematic",
                    GENMACHINE,
                    "--version",
                    "v1.11.6",
                    "--factory",
                    &base,
                ])
            })
        }
    };

    // First pull: the schematic is created before any image request, then both files.
    let (ok, out, err) = pull().await.unwrap();
    assert!(ok, "{out}{err}");
    let l = log(&f);
    assert_eq!(l[0], "POST /schematics 201", "{l:?}");
    assert!(
        l[1..]
            .iter()
            .all(|x| x.starts_with("GET /image/") && x.ends_with(" 200")),
        "{l:?}"
    );
    assert!(
        out.contains(&format!("schematic {GENMACHINE}: present on {base}")),
        "{out}"
    );
    let dir = tmp.path().join("state/images").join(IMAGE);
    let sums = images::parse_sums_file(&dir);
    let sha = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    assert_eq!(sums["kernel-amd64"], sha(&kernel));
    assert_eq!(sums["initramfs-amd64.xz"], sha(&initrd));

    // The factory now serves other bytes for the initramfs: the second pull is
    // refused, nothing is installed, and the record stands.
    let mut evil = initrd.clone();
    evil.extend_from_slice(b" + implant");
    publish(&root, "initramfs-amd64.xz", &evil);
    std::fs::remove_file(dir.join("initramfs-amd64.xz")).unwrap();
    let (ok, out, err) = pull().await.unwrap();
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("does not match the expected") && err.contains(&sha(&initrd)),
        "{err}"
    );
    assert!(!dir.join("initramfs-amd64.xz").exists());
    assert!(!dir.join("initramfs-amd64.xz.part").exists());
    assert_eq!(images::parse_sums_file(&dir)["initramfs-amd64.xz"], sha(&initrd));

    // A cached file changed on disk is moved aside (never served) and fetched again.
    publish(&root, "initramfs-amd64.xz", &initrd);
    std::fs::write(dir.join("kernel-amd64"), b"tampered in the cache").unwrap();
    let (ok, out, err) = pull().await.unwrap();
    assert!(ok, "{out}{err}");
    assert_eq!(std::fs::read(dir.join("kernel-amd64")).unwrap(), kernel);
    assert_eq!(
        std::fs::read(dir.join("kernel-amd64.mismatch")).unwrap(),
        b"tampered in the cache"
    );

    // `images import` is judged by the same record.
    let bad = tmp.path().join("import");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("initramfs-amd64.xz"), &evil).unwrap();
    let path = bad.join("initramfs-amd64.xz").display().to_string();
    let (ok, _, err) = run(&["images", "import", "--config", &cfg, "--image", IMAGE, &path]);
    assert!(!ok && err.contains("does not match the expected"), "{err}");
    std::fs::write(bad.join("initramfs-amd64.xz"), &initrd).unwrap();
    let (ok, out, err) = run(&["images", "import", "--config", &cfg, "--image", IMAGE, &path]);
    assert!(ok, "{out}{err}");
    assert!(
        std::fs::read_to_string(dir.join(SUMS))
            .unwrap()
            .contains("  kernel-amd64\n")
    );
    server.abort();
}

/// A schematic the factory rejects, an Enterprise factory that hashes another
/// body, and an ID defined nowhere: each a clear error, and no image is requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pull_rejected_or_foreign_schematic_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("factory");
    publish(&root, "kernel-amd64", b"k");
    let cfg = repo_config(tmp.path(), &common::cli::repo().join("infra"), "")
        .display()
        .to_string();
    let file = tmp.path().join("lilo.yaml");
    std::fs::write(&file, "customization:\n  bootloader: lilo\n").unwrap();
    let file = file.display().to_string();

    let plain = factory(&root, None);
    let (base, server) = plain.clone().serve().await;
    let args = |schematic: &str, base: &str| {
        let v: Vec<String> = [
            "images",
            "pull",
            "talos",
            "--config",
            &cfg,
            "--schematic",
            schematic,
            "--version",
            "v1.11.6",
            "--factory",
            base,
            "--image",
            IMAGE,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tokio::task::spawn_blocking(move || run(&v.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (ok, _, err) = args(&file, &base).await.unwrap();
    assert!(!ok);
    assert!(
        err.contains("rejected the schematic (HTTP 400)") && err.contains("lilo does not belong"),
        "{err}"
    );
    let (ok, _, err) = args(&"ab".repeat(32), &base).await.unwrap();
    assert!(!ok);
    assert!(
        err.contains("no schematic in infra/ has this ID") && err.contains(GENMACHINE),
        "{err}"
    );
    assert_eq!(log(&plain), ["POST /schematics 400"]);
    server.abort();

    let enterprise = factory(&root, Some("alice"));
    let (base, server) = enterprise.clone().serve().await;
    let (ok, _, err) = args(GENMACHINE, &base).await.unwrap();
    assert!(!ok);
    assert!(
        err.contains("refusing to pull") && err.contains(GENMACHINE),
        "{err}"
    );
    assert_eq!(log(&enterprise), ["POST /schematics 201"]);
    let s = Schematic::default();
    match ensure_schematic(&reqwest::Client::new(), &base, &s).await {
        Err(FactoryError::IdMismatch { canonical, .. }) => {
            assert_eq!(canonical, "owner: alice\ncustomization: {}\n")
        }
        other => panic!("{other:?}"),
    }
    server.abort();
    let (ok, _, err) = args(GENMACHINE, &base).await.unwrap();
    assert!(!ok && err.contains("no answer"), "{err}");
}
