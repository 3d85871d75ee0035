//! `images pull argocd` against a stand-in for raw.githubusercontent.com on loopback,
//! and `images import argocd`, with the real pinned v3.5.1 manifest: the download
//! resumes with `Range`, lands where the hand-off reads it only with the pinned
//! SHA-256, a second pull fetches nothing, and bytes that differ from the pin (served
//! or imported) are refused and leave nothing in the cache.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use common::daemon::run;
use provisioner::cluster::argocd::Settings;
use provisioner::images::ImageCache;

fn gitops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gitops")
}

/// The `Range` header of every request, in order.
type Ranges = Arc<Mutex<Vec<Option<String>>>>;

/// Serves `file` at the pinned URL's path with Range support (the appliance's asset
/// code); records each request's `Range` header.
struct Upstream {
    base: String,
    ranges: Ranges,
}

async fn upstream(file: PathBuf, path: &str) -> Upstream {
    let ranges: Ranges = Arc::default();
    let state = (Arc::new(file), ranges.clone());
    let app = axum::Router::new()
        .route(
            path,
            get(
                |State((file, ranges)): State<(Arc<PathBuf>, Ranges)>, h: HeaderMap| async move {
                    let range = h.get("range").and_then(|v| v.to_str().ok()).map(str::to_string);
                    ranges.lock().unwrap().push(range);
                    provisioner::http::assets::serve_file(&file, &h, None).await
                },
            ),
        )
        .with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Upstream {
        base: format!("http://{addr}"),
        ranges,
    }
}

fn config(dir: &Path, cache: &str) -> String {
    let cfg = dir.join(format!("{cache}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {d}/state\ncache_dir: {d}/{cache}\ngitops_dir: {g}\n",
            d = dir.display(),
            g = gitops().display()
        ),
    )
    .unwrap();
    cfg.to_str().unwrap().to_string()
}

#[test]
fn pull_resumes_verifies_and_refuses_other_bytes() {
    let Some(fixture) = common::fixture("argocd/install-v3.5.1.yaml") else {
        return;
    };
    let settings = Settings::load(&gitops()).unwrap();
    let path = reqwest::Url::parse(&settings.argocd.url)
        .unwrap()
        .path()
        .to_string();
    let real = std::fs::read(&fixture).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let good = rt.block_on(upstream(fixture.clone(), &path));

    // An interrupted earlier download: the first 100 000 bytes.
    let cfg = config(dir, "cache");
    let dest = ImageCache::new(dir.join("cache")).argocd_manifest(&settings.argocd.version);
    let part = dest.with_extension("yaml.part");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&part, &real[..100_000]).unwrap();
    let (ok, out, err) = run(&["images", "pull", "argocd", "--base", &good.base, "--config", &cfg]);
    assert!(ok && out.contains("downloaded"), "{out}{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), real);
    assert!(!part.exists());
    assert_eq!(
        good.ranges.lock().unwrap().clone(),
        [Some("bytes=100000-".to_string())]
    );
    // What the hand-off loads: verified and parsed.
    let manifest = settings
        .load_manifest(&ImageCache::new(dir.join("cache")))
        .unwrap();
    assert!(manifest.objects.len() > 50, "{}", manifest.objects.len());

    let (ok, out, err) = run(&["images", "pull", "argocd", "--base", &good.base, "--config", &cfg]);
    assert!(ok && out.contains("already cached"), "{out}{err}");
    assert_eq!(good.ranges.lock().unwrap().len(), 1, "nothing fetched again");
    let (ok, _, err) = run(&[
        "images",
        "pull",
        "argocd",
        "--version",
        "v9.9.9",
        "--base",
        &good.base,
        "--config",
        &cfg,
    ]);
    assert!(!ok && err.contains("pinned"), "{err}");

    // An upstream serving other bytes (one changed): refused, nothing installed.
    let mut tampered = real.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x20;
    let bad_file = dir.join("tampered.yaml");
    std::fs::write(&bad_file, &tampered).unwrap();
    let bad = rt.block_on(upstream(bad_file.clone(), &path));
    let cfg2 = config(dir, "cache2");
    let (ok, out, err) = run(&["images", "pull", "argocd", "--base", &bad.base, "--config", &cfg2]);
    assert!(!ok && err.contains("does not match"), "{out}{err}");
    let dest2 = ImageCache::new(dir.join("cache2")).argocd_manifest(&settings.argocd.version);
    assert!(!dest2.exists() && !dest2.with_extension("yaml.part").exists());

    // Air-gapped: import verifies the same pin.
    let (ok, out, err) = run(&[
        "images",
        "import",
        "argocd",
        bad_file.to_str().unwrap(),
        "--config",
        &cfg2,
    ]);
    assert!(!ok && err.contains("not imported"), "{out}{err}");
    assert!(!dest2.exists());
    let (ok, out, err) = run(&[
        "images",
        "import",
        "argocd",
        fixture.to_str().unwrap(),
        "--config",
        &cfg2,
    ]);
    assert!(ok && out.contains("imported"), "{out}{err}");
    assert_eq!(std::fs::read(&dest2).unwrap(), real);
}
