//! `images pull` against a stand-in Image Factory on loopback: files land in
//! `<cache>/<image id>/`, their SHA-256 is recorded on the first download, an
//! interrupted download resumes with `Range`, and a later download whose bytes
//! differ from the record is rejected and never installed.

use std::path::Path;
use std::sync::Arc;

use provisioner::images::{self, ImageCache, SUMS};
use provisioner::os::talos::factory::ensure_schematic;
use provisioner::testing::fake_factory::FakeFactory;
use provisioner_core::catalog::{Image, ImageFile};
use provisioner_core::talos::schematic::Schematic;

const SCHEMATIC: &str = "65cf8364cd0de4cf7b851dc7067a2db83d0ba04f11d8635c6cd3334be6ffb825";

/// The fake Image Factory (it serves `/image/…` only for schematics POSTed first, as
/// the real one does) with the files under `<root>/<version>/`.
async fn factory(root: &Path) -> (String, tokio::task::JoinHandle<()>) {
    let f = Arc::new(FakeFactory {
        root: root.to_path_buf(),
        ..FakeFactory::default()
    });
    let (base, h) = f.serve().await;
    let s = Schematic::with_extensions([
        "siderolabs/amd-ucode",
        "siderolabs/amdgpu",
        "siderolabs/iscsi-tools",
        "siderolabs/util-linux-tools",
    ]);
    let id = ensure_schematic(&reqwest::Client::new(), &base, &s)
        .await
        .unwrap();
    assert_eq!(id, SCHEMATIC);
    (base, h)
}

fn image() -> Image {
    Image {
        id: "talos-test".into(),
        description: String::new(),
        kernel: ImageFile {
            file: "kernel-amd64".into(),
            url: None,
            sha256: None,
        },
        initrds: vec![ImageFile {
            file: "initramfs-amd64.xz".into(),
            url: None,
            sha256: None,
        }],
        args: vec![],
    }
}

fn publish(root: &Path, kernel: &[u8], initrd: &[u8]) {
    let d = root.join("v1.11.6");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("kernel-amd64"), kernel).unwrap();
    std::fs::write(d.join("initramfs-amd64.xz"), initrd).unwrap();
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn pull_records_verifies_resumes_and_rejects_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, cache) = (
        tmp.path().join("factory"),
        ImageCache::new(tmp.path().join("cache")),
    );
    let kernel: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let initrd = b"initramfs with extensions".to_vec();
    publish(&root, &kernel, &initrd);
    let (base, server) = factory(&root).await;
    let img = image();
    let files = ImageCache::sources(&img, Some((&base, SCHEMATIC, "v1.11.6"))).unwrap();
    let client = reqwest::Client::new();

    // First pull: downloaded, recorded, in the boot path's cache layout.
    let got = cache.pull_image(&client, &img, &files).await.unwrap();
    assert!(got.iter().all(|p| p.fetched));
    let dir = cache.image_dir("talos-test");
    assert_eq!(std::fs::read(dir.join("kernel-amd64")).unwrap(), kernel);
    let sums = images::parse_sums_file(&dir);
    assert_eq!(sums["kernel-amd64"], sha(&kernel));
    assert_eq!(sums["initramfs-amd64.xz"], sha(&initrd));
    assert!(
        std::fs::read_to_string(dir.join(SUMS))
            .unwrap()
            .contains("  kernel-amd64\n")
    );
    // Second pull: verified from the cache, nothing downloaded.
    let again = cache.pull_image(&client, &img, &files).await.unwrap();
    assert!(again.iter().all(|p| !p.fetched));

    // Resume: a partial download continues with Range and ends identical.
    std::fs::remove_file(dir.join("kernel-amd64")).unwrap();
    std::fs::write(dir.join("kernel-amd64.part"), &kernel[..1_000_000]).unwrap();
    let sum = images::download(
        &client,
        &files[0].url,
        &dir.join("kernel-amd64"),
        Some(&sha(&kernel)),
    )
    .await
    .unwrap();
    assert_eq!(sum, sha(&kernel));
    assert_eq!(std::fs::read(dir.join("kernel-amd64")).unwrap(), kernel);
    assert!(!dir.join("kernel-amd64.part").exists());

    // The factory now serves different bytes: the re-download is rejected, deleted,
    // and the record is unchanged.
    let mut corrupt = kernel.clone();
    corrupt[123_456] ^= 0xff;
    publish(&root, &corrupt, &initrd);
    std::fs::remove_file(dir.join("kernel-amd64")).unwrap();
    let err = cache
        .pull_image(&client, &img, &files)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match"), "{err}");
    assert!(!dir.join("kernel-amd64").exists() && !dir.join("kernel-amd64.part").exists());
    assert_eq!(images::parse_sums_file(&dir)["kernel-amd64"], sha(&kernel));
    let rows = cache.list(&[(img.id.clone(), img.clone())].into());
    assert_eq!(rows[0].status, "missing");
    assert_eq!(rows[1].status, "ok");

    // Air-gapped import of the right file restores it; the wrong one is refused.
    let good = tmp.path().join("kernel-amd64");
    std::fs::write(&good, &kernel).unwrap();
    cache.import_image(&img, std::slice::from_ref(&good)).unwrap();
    let bad_dir = tmp.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    std::fs::write(bad_dir.join("kernel-amd64"), &corrupt).unwrap();
    assert!(cache.import_image(&img, &[bad_dir.join("kernel-amd64")]).is_err());
    assert!(cache.import_image(&img, &[tmp.path().join("factory")]).is_err());
    let rows = cache.list(&[(img.id.clone(), img)].into());
    assert!(rows.iter().all(|r| r.status == "ok"), "{rows:?}");
    server.abort();
}
