//! `provisioner backup` and `restore` through the real binary and the redb store:
//! a backup of one state directory restored into an empty one reproduces the same
//! machines (with timelines), the same secret blobs byte for byte, and the same
//! image manifest; refusals are clear.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::daemon::{Daemon, run, write_config};
use provisioner_core::inventory::{Inventory, MemInventory};
use provisioner_core::model::{EventKind, Machine, TimelineEvent};

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = run(args);
    assert!(ok, "provisioner {args:?}: {out}{err}");
    out
}

/// A state directory with two machines, two secret blobs and the catalog's cache.
fn source() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let cfg = write_config(dir.path(), dir.path()).display().to_string();
    let inv = MemInventory::new();
    for (i, mac) in ["52:54:00:0b:00:01", "52:54:00:0b:00:02"].iter().enumerate() {
        let mac = mac.parse().unwrap();
        let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::hours(i as i64);
        inv.put(&Machine::discovered(mac, at)).unwrap();
        inv.append(
            mac,
            &[TimelineEvent {
                at,
                kind: EventKind::DhcpSeen,
                detail: format!("boot {i}"),
            }],
        )
        .unwrap();
    }
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, serde_json::to_vec(&inv.export().unwrap()).unwrap()).unwrap();
    ok(&["import", seed.to_str().unwrap(), "--config", &cfg]);
    let secrets = dir.path().join("state/secrets");
    std::fs::create_dir_all(secrets.join("talos")).unwrap();
    std::fs::write(
        secrets.join("talos/genmachine.age"),
        (0..=255u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(
        secrets.join("identity.age"),
        b"age-encryption.org/v1\n-> X25519 ...",
    )
    .unwrap();
    (dir, cfg)
}

fn empty() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), dir.path()).display().to_string();
    (dir, cfg)
}

/// `backup.json` of a backup file, without the fields that differ per run.
fn manifest(file: &Path) -> serde_json::Value {
    let mut a = tar::Archive::new(std::fs::File::open(file).unwrap());
    let mut first = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.path().unwrap().to_str(), Some("backup.json"));
    let mut s = String::new();
    first.read_to_string(&mut s).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v.as_object_mut().unwrap().remove("created_at");
    v
}

fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn backup_restored_into_an_empty_state_dir_reproduces_everything() {
    let (a, cfg_a) = source();
    let full = a.path().join("full.tar");
    let out = ok(&[
        "backup",
        "--include-images",
        "-o",
        full.to_str().unwrap(),
        "--config",
        &cfg_a,
    ]);
    assert!(
        out.contains("2 machine(s), 2 secret file(s), 2 image file(s) included, schema 1"),
        "{out}"
    );
    let m = manifest(&full);
    assert_eq!(m["format"], "provisioner-backup");
    assert_eq!(m["store_schema_version"], 1);
    assert_eq!(m["images"].as_array().unwrap().len(), 2);

    let (b, cfg_b) = empty();
    let out = ok(&["restore", full.to_str().unwrap(), "--config", &cfg_b]);
    assert!(
        out.contains("2 machine(s), 2 secret file(s), 2 image file(s)"),
        "{out}"
    );
    assert!(out.contains("cache: 2 of 2 image file(s) match"), "{out}");
    // Same machines and timelines, same secret bytes, same cache bytes.
    assert_eq!(
        ok(&["export", "--config", &cfg_a]),
        ok(&["export", "--config", &cfg_b])
    );
    assert_eq!(
        tree(&a.path().join("state/secrets")),
        tree(&b.path().join("state/secrets"))
    );
    assert_eq!(tree(&a.path().join("cache")), tree(&b.path().join("cache")));
    // And a backup of the restored directory has the same manifest.
    let again = b.path().join("again.tar");
    ok(&[
        "backup",
        "--include-images",
        "-o",
        again.to_str().unwrap(),
        "--config",
        &cfg_b,
    ]);
    assert_eq!(manifest(&again), m);

    // Restoring over data is refused unless forced.
    let (ok_, _, err) = run(&["restore", full.to_str().unwrap(), "--config", &cfg_b]);
    assert!(!ok_ && err.contains("not empty"), "{err}");
    ok(&["restore", "--force", full.to_str().unwrap(), "--config", &cfg_b]);
}

#[test]
fn manifest_only_backup_names_the_images_to_fetch_again() {
    let (a, cfg_a) = source();
    let small = a.path().join("small.tar");
    let out = ok(&["backup", "-o", small.to_str().unwrap(), "--config", &cfg_a]);
    assert!(out.contains("2 image file(s) (manifest only)"), "{out}");
    let size = std::fs::metadata(&small).unwrap().len();
    assert!(size < 64 * 1024, "manifest-only backup is {size} bytes");
    let (_c, cfg_c) = empty();
    let out = ok(&["restore", small.to_str().unwrap(), "--config", &cfg_c]);
    assert!(
        out.contains("image missing from the cache (fetch it again): test-img/vmlinuz"),
        "{out}"
    );
    assert_eq!(
        ok(&["export", "--config", &cfg_a]),
        ok(&["export", "--config", &cfg_c])
    );
}

#[test]
fn backup_needs_the_store_and_says_so() {
    let (a, cfg_a) = source();
    let _d = Daemon::start(Path::new(&cfg_a));
    let out = a.path().join("x.tar");
    let (ok_, _, err) = run(&["backup", "-o", out.to_str().unwrap(), "--config", &cfg_a]);
    assert!(!ok_ && err.contains("stop the service first"), "{err}");
    assert!(!out.exists() && !out.with_extension("partial").exists());
}
