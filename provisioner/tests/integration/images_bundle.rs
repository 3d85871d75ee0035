//! Air-gapped bundles end to end with the real binary: `images pull --all` on site A
//! fetches everything the repository's infra/, profiles/ and a gitops pin need from
//! stand-ins on loopback (the fake Image Factory for the GenMachine schematic, Flatcar
//! and k0s release sites, the ArgoCD manifest origin); `doctor` finds A's cache
//! complete; `images bundle` writes it to one tar; with every upstream stopped,
//! `images import` fills site B's cache, `doctor` finds B complete for every
//! profile, and B's appliance serves the boot assets and mirror files from it. A
//! bundle with one tampered file is refused, naming the file, and leaves the cache
//! untouched.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::get;
use common::daemon::{Daemon, http, run};
use provisioner::testing::fake_factory::FakeFactory;
use provisioner_core::k0s::mirror;

const TALOS: &str = "talos-genmachine-v1.11.6-amd64";
const FLATCAR: &str = "4459.2.0";
const K0S: &str = "v1.36.3+k0s.2";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sha(b: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
}

/// Serves `<root>/<a>/<b>` at `/<a>/<b>` with Range support.
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
    (
        format!("http://{addr}"),
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() }),
    )
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A site: the repository's profiles/ images/ infra/, a gitops/ pin of `argocd`,
/// HTTP and API on loopback port 0.
fn site(dir: &Path, argocd: &[u8]) -> String {
    write(
        &dir.join("gitops/settings.yaml"),
        format!(
            "repository: {{ url: https://git.example.invalid/site.git, revision: main }}\n\
             argocd: {{ version: v9.9.9, url: https://origin.example.invalid/argocd-pin/install.yaml, \
             sha256: {}, host: genmachine }}\nclusters: [genmachine, beelink]\n",
            sha(argocd)
        )
        .as_bytes(),
    );
    let cfg = dir.join("provisioner.yaml");
    let r = repo();
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {d}/state\nserver_ip: 127.0.0.1\nhttp_listen: 127.0.0.1:0\napi_listen: 127.0.0.1:0\n\
             tftp_listen: 127.0.0.1:0\ntftp_root: {d}\nprofiles_dir: {r}/profiles\nimages_dir: {r}/images\n\
             infra_dir: {r}/infra\ngitops_dir: {d}/gitops\nbootstrap: {{ enabled: false }}\n\
             peer_binding: {{ enabled: false }}\n",
            d = dir.display(),
            r = r.display()
        ),
    )
    .unwrap();
    cfg.display().to_string()
}

fn images_findings(cfg: &str) -> Vec<serde_json::Value> {
    let (_, out, err) = run(&["doctor", "--json", "--dhcp-wait", "0", "--config", cfg]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "images")
        .cloned()
        .collect()
}

/// Every file the sites need, with its bytes.
fn published(factory: &Path, up: &Path, argocd: &[u8]) -> Vec<(String, Vec<u8>)> {
    let kernel: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let files = vec![
        (format!("{TALOS}/kernel-amd64"), kernel),
        (
            format!("{TALOS}/initramfs-amd64.xz"),
            b"initramfs with amd-ucode, amdgpu".to_vec(),
        ),
        (
            "flatcar-stable-amd64/flatcar_production_pxe.vmlinuz".into(),
            b"pxe kernel".to_vec(),
        ),
        (
            "flatcar-stable-amd64/flatcar_production_pxe_image.cpio.gz".into(),
            b"pxe initrd".to_vec(),
        ),
        (
            format!("mirror/flatcar/{FLATCAR}/{}", mirror::FLATCAR_IMAGE),
            b"BZh9 disk".to_vec(),
        ),
        (
            format!("mirror/flatcar/{FLATCAR}/{}", mirror::FLATCAR_SIG),
            b"sig".to_vec(),
        ),
        (
            format!("mirror/k0s/{K0S}/{}", mirror::k0s_binary(K0S)),
            b"\x7fELF k0s".to_vec(),
        ),
        ("argocd/install-v9.9.9.yaml".into(), argocd.to_vec()),
    ];
    for (rel, b) in &files {
        let name = rel.rsplit('/').next().unwrap();
        match rel.split('/').next().unwrap() {
            TALOS => write(&factory.join("v1.11.6").join(name), b),
            "argocd" => write(&up.join("argocd-pin/install.yaml"), b),
            "mirror" if rel.contains("/k0s/") => write(&up.join(K0S).join(name), b),
            _ => write(&up.join(FLATCAR).join(name), b),
        }
    }
    let k0s = &files[6].1;
    write(
        &up.join(K0S).join(mirror::K0S_SUMS),
        format!("{}  {}\n", sha(k0s), mirror::k0s_binary(K0S)).as_bytes(),
    );
    files
}

#[test]
fn pull_all_bundle_import_offline_then_boot_from_the_second_site() {
    let tmp = tempfile::tempdir().unwrap();
    let argocd = b"apiVersion: v1\nkind: Namespace\nmetadata: {name: argocd}\n".to_vec();
    let files = published(&tmp.path().join("factory"), &tmp.path().join("up"), &argocd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = Arc::new(FakeFactory {
        root: tmp.path().join("factory"),
        ..FakeFactory::default()
    });
    let (factory, fs) = rt.block_on(f.clone().serve());
    let (up, us) = rt.block_on(upstream(tmp.path().join("up")));

    // Site A: one command fetches everything; not a terminal, so one line per file.
    // An earlier interrupted download of the kernel is resumed with `Range`.
    let a = site(&tmp.path().join("a"), &argocd);
    let kernel = &files[0].1;
    write(
        &tmp.path()
            .join(format!("a/state/images/{TALOS}/kernel-amd64.part")),
        &kernel[..150_000],
    );
    let (ok, out, err) = run(&[
        "images",
        "pull",
        "--all",
        "--config",
        &a,
        "--factory",
        &factory,
        "--flatcar-base",
        &up,
        "--k0s-base",
        &up,
        "--base",
        &up,
    ]);
    assert!(ok, "{out}{err}");
    for (rel, _) in &files {
        if !rel.starts_with("argocd/") {
            assert!(out.contains(&format!("{rel}: downloaded")), "{rel}:\n{out}");
        }
    }
    assert!(out.contains("argocd v9.9.9: downloaded"), "{out}");
    assert!(out.contains("ok: 9 file(s) cached and verified"), "{out}");
    assert!(!err.contains('\r'), "no progress bar off a terminal: {err}");
    let log = f.log.lock().unwrap().clone();
    assert_eq!(
        log[0], "POST /schematics 201",
        "schematic created before the pull"
    );
    assert!(
        log.iter().any(|l| l.ends_with("/v1.11.6/kernel-amd64 206")),
        "resumed: {log:?}"
    );
    assert_eq!(
        &std::fs::read(tmp.path().join(format!("a/state/images/{TALOS}/kernel-amd64"))).unwrap(),
        kernel
    );
    let found = images_findings(&a);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["severity"], "ok", "{found:#?}");

    // A second pull fetches nothing but k0s's release list (read afresh each time to
    // judge the binary by).
    let (ok, out, _) = run(&[
        "images",
        "pull",
        "--all",
        "--config",
        &a,
        "--factory",
        &factory,
        "--flatcar-base",
        &up,
        "--k0s-base",
        &up,
        "--base",
        &up,
    ]);
    let fetched: Vec<&str> = out.lines().filter(|l| l.contains(": downloaded")).collect();
    assert!(ok, "{out}");
    assert_eq!(fetched.len(), 1, "{out}");
    assert!(
        fetched[0].starts_with(&format!("mirror/k0s/{K0S}/{}", mirror::K0S_SUMS)),
        "{out}"
    );

    let tar = tmp.path().join("site.tar");
    let (ok, out, err) = run(&["images", "bundle", "-o", tar.to_str().unwrap(), "--config", &a]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("9 file(s)"), "{out}");

    // Offline from here on.
    fs.abort();
    us.abort();
    drop(rt);

    let b = site(&tmp.path().join("b"), &argocd);
    assert_eq!(images_findings(&b)[0]["severity"], "error", "B starts empty");
    let (ok, out, err) = run(&["images", "import", tar.to_str().unwrap(), "--config", &b]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: 9 file(s) imported"), "{out}");
    let cache_b = tmp.path().join("b/state/images");
    for (rel, bytes) in &files {
        assert_eq!(&std::fs::read(cache_b.join(rel)).unwrap(), bytes, "{rel}");
    }
    let found = images_findings(&b);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["severity"], "ok", "{found:#?}");
    assert!(
        found[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("9 file(s) cached and verified for 2 image(s), 2 mirrored release(s)"),
        "{found:#?}"
    );
    assert!(
        std::fs::read_dir(&cache_b).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".import"))
    );

    // B's appliance serves every profile's boot files and the mirror from the import.
    let d = Daemon::start(Path::new(&b));
    for (rel, bytes) in &files {
        let path = match rel.split('/').next().unwrap() {
            "mirror" => format!("/{rel}"),
            "argocd" => continue,
            _ => format!("/assets/{rel}"),
        };
        let (status, body) = http(d.http, "GET", &path).unwrap();
        assert_eq!((status, &body), (200, bytes), "{path}");
    }
    drop(d);

    // A tampered bundle: same manifest, one file's bytes changed. Refused by name;
    // the cache of site C stays empty.
    let bad = tmp.path().join("bad.tar");
    tamper(&tar, &bad, &format!("{TALOS}/initramfs-amd64.xz"));
    let c = site(&tmp.path().join("c"), &argocd);
    let (ok, out, err) = run(&["images", "import", bad.to_str().unwrap(), "--config", &c]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains(&format!("{TALOS}/initramfs-amd64.xz: SHA-256"))
            && err.contains("does not match the manifest's")
            && err.contains("nothing imported"),
        "{err}"
    );
    let cache_c = tmp.path().join("c/state/images");
    let left: Vec<_> = walk(&cache_c);
    assert!(left.is_empty(), "a refused bundle left {left:?}");
}

/// Copies the tar, flipping one byte of `victim`.
fn tamper(from: &Path, to: &Path, victim: &str) {
    let mut src = tar::Archive::new(std::fs::File::open(from).unwrap());
    let mut dst = tar::Builder::new(std::fs::File::create(to).unwrap());
    for e in src.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_path_buf();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        if path == Path::new(victim) {
            bytes[0] ^= 0x20;
        }
        let mut h = e.header().clone();
        h.set_cksum();
        dst.append_data(&mut h, &path, bytes.as_slice()).unwrap();
    }
    dst.finish().unwrap();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flat_map(|e| {
        let p = e.unwrap().path();
        if p.is_dir() { walk(&p) } else { vec![p] }
    })
    .collect()
}
