use std::io::Read;
use std::sync::Arc;

use provisioner_core::inventory::{Inventory, MemInventory};
use provisioner_core::model::{Event, Machine};

use super::*;
use crate::store::RedbInventory;

fn seeded() -> (tempfile::TempDir, MemInventory) {
    let dir = tempfile::tempdir().unwrap();
    let inv = MemInventory::new();
    let mac = "52:54:00:aa:00:01".parse().unwrap();
    inv.put(&Machine::discovered(mac, OffsetDateTime::UNIX_EPOCH))
        .unwrap();
    inv.append(
        mac,
        &[Event::TftpServed {
            file: "snponly.efi".into(),
            bytes: 1024,
        }
        .at(OffsetDateTime::UNIX_EPOCH)],
    )
    .unwrap();
    let s = dir.path().join("state");
    std::fs::create_dir_all(s.join("secrets/talos/genmachine")).unwrap();
    std::fs::write(s.join("secrets/talos/genmachine/bundle.age"), [0u8, 1, 2, 255]).unwrap();
    std::fs::write(s.join("secrets/appliance.key.age"), b"age-encryption.org/v1 ...").unwrap();
    std::fs::create_dir_all(s.join("images/talos")).unwrap();
    std::fs::write(s.join("images/talos/kernel-amd64"), vec![7u8; 300_000]).unwrap();
    (dir, inv)
}

fn src(state: &Path, include_images: bool) -> (PathBuf, PathBuf, bool) {
    (state.to_path_buf(), state.join("images"), include_images)
}

fn backup(dir: &Path, inv: &MemInventory, include_images: bool) -> (PathBuf, Manifest) {
    let (s, c, i) = src(&dir.join("state"), include_images);
    let out = dir.join("b.tar");
    let key = s.join("secrets/secrets.key");
    let m = create(
        &inv.export().unwrap(),
        SCHEMA_VERSION,
        &Sources {
            state_dir: &s,
            cache_dir: &c,
            include_images: i,
            secrets_key: &key,
        },
        &Protection::Plaintext,
        &out,
    )
    .unwrap();
    (out, m)
}

fn open_redb(dir: &Path) -> Result<Arc<dyn Inventory>, InventoryError> {
    Ok(Arc::new(RedbInventory::open(&dir.join("inventory.redb"))?))
}

fn restore_into(file: &Path, dir: &Path, force: bool) -> Result<RestoreReport, BackupError> {
    let s = dir.join("state");
    let c = s.join("images");
    let key = s.join("secrets/secrets.key");
    let (archive, _) = crypt::open(file, None)?;
    restore(
        archive,
        &Sources {
            state_dir: &s,
            cache_dir: &c,
            include_images: false,
            secrets_key: &key,
        },
        RestoreOptions { force },
        &open_redb,
    )
}

/// The inventory restored under `dir` (empty if there is none).
fn restored(dir: &Path) -> provisioner_core::inventory::Snapshot {
    std::fs::create_dir_all(dir.join("state")).unwrap();
    open_redb(&dir.join("state")).unwrap().export().unwrap()
}

#[test]
fn round_trip_with_images_reproduces_everything() {
    let (dir, inv) = seeded();
    let (file, m) = backup(dir.path(), &inv, true);
    assert_eq!(m.secrets.len(), 2);
    assert_eq!(m.images.len(), 1);
    assert_eq!(m.images[0].path, "talos/kernel-amd64");
    assert_eq!(m.images[0].size, 300_000);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions()) & 0o777,
        0o600
    );

    let fresh = tempfile::tempdir().unwrap();
    let r = restore_into(&file, fresh.path(), false).unwrap();
    assert_eq!(
        (r.secrets_restored, r.images_restored, r.images_present),
        (2, 1, 1)
    );
    assert!(r.images_missing.is_empty() && r.images_mismatched.is_empty());
    assert_eq!(restored(fresh.path()), inv.export().unwrap());
    // Nothing is left next to the state directory.
    let left: Vec<_> = std::fs::read_dir(fresh.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["state"]);
    let new_state = fresh.path().join("state");
    assert_eq!(manifest_of(&new_state.join("secrets")).unwrap(), m.secrets);
    assert_eq!(manifest_of(&new_state.join("images")).unwrap(), m.images);
    assert_eq!(
        std::fs::read(new_state.join("secrets/talos/genmachine/bundle.age")).unwrap(),
        [0u8, 1, 2, 255]
    );
}

#[test]
fn manifest_only_backup_reports_missing_and_mismatched_images() {
    let (dir, inv) = seeded();
    let (file, _) = backup(dir.path(), &inv, false);
    let fresh = tempfile::tempdir().unwrap();
    let r = restore_into(&file, fresh.path(), false).unwrap();
    assert_eq!(r.images_missing, vec!["talos/kernel-amd64".to_string()]);
    // A cache with other bytes is reported, not silently accepted.
    let cache = fresh.path().join("state/images/talos");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("kernel-amd64"), b"other").unwrap();
    let r = restore_into(&file, fresh.path(), true).unwrap();
    assert_eq!(r.images_mismatched, vec!["talos/kernel-amd64".to_string()]);
}

#[test]
fn restore_refuses_existing_state_without_force() {
    let (dir, inv) = seeded();
    let (file, _) = backup(dir.path(), &inv, false);
    // A state dir with a populated inventory.
    let full = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(full.path().join("state")).unwrap();
    open_redb(&full.path().join("state"))
        .unwrap()
        .import(&inv.export().unwrap())
        .unwrap();
    let err = restore_into(&file, full.path(), false).unwrap_err();
    assert!(matches!(err, BackupError::NotEmpty(_)), "{err}");
    let fresh = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fresh.path().join("state/secrets")).unwrap();
    std::fs::write(fresh.path().join("state/secrets/x"), b"x").unwrap();
    let err = restore_into(&file, fresh.path(), false).unwrap_err();
    assert!(err.to_string().contains("secrets"), "{err}");
    assert!(restore_into(&file, full.path(), true).is_ok());
    // Forced, files the backup does not have are kept.
    assert!(restore_into(&file, fresh.path(), true).is_ok());
    assert_eq!(std::fs::read(fresh.path().join("state/secrets/x")).unwrap(), b"x");
}

/// Rewrites a backup's entries through `edit(name, bytes) -> Option<(name, bytes)>`.
fn rewrite(file: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let out = file.with_extension(format!("edited{n}.tar"));
    let mut a = tar::Archive::new(std::fs::File::open(file).unwrap());
    let mut b = tar::Builder::new(std::fs::File::create(&out).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        if let Some((n, bytes)) = edit(&name, bytes) {
            let mut h = header(bytes.len() as u64, &OffsetDateTime::UNIX_EPOCH);
            // The builder refuses `..`; a crafted archive is written raw.
            h.as_gnu_mut().unwrap().name[..n.len()].copy_from_slice(n.as_bytes());
            h.set_cksum();
            b.append(&h, bytes.as_slice()).unwrap();
        }
    }
    b.finish().unwrap();
    out
}

fn json_edit(bytes: &[u8], f: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn bad_backups_are_refused_and_leave_the_inventory_untouched() {
    let (dir, inv) = seeded();
    let (file, _) = backup(dir.path(), &inv, false);
    let cases: Vec<(&str, PathBuf)> = vec![
        (
            "does not match",
            rewrite(&file, |n, b| {
                let b = if n.ends_with("bundle.age") {
                    vec![9, 9, 9, 9]
                } else {
                    b
                };
                Some((n.into(), b))
            }),
        ),
        (
            "newer than this appliance",
            rewrite(&file, |n, b| {
                let b = if n == "inventory.json" {
                    json_edit(&b, |v| v["schema_version"] = 99.into())
                } else {
                    b
                };
                Some((n.into(), b))
            }),
        ),
        (
            "schema version 42 is newer",
            rewrite(&file, |n, b| {
                let b = if n == "backup.json" {
                    json_edit(&b, |v| v["store_schema_version"] = 42.into())
                } else {
                    b
                };
                Some((n.into(), b))
            }),
        ),
        (
            "backup format 7",
            rewrite(&file, |n, b| {
                let b = if n == "backup.json" {
                    json_edit(&b, |v| v["format_version"] = 7.into())
                } else {
                    b
                };
                Some((n.into(), b))
            }),
        ),
        (
            "incomplete",
            rewrite(&file, |n, b| (!n.ends_with("bundle.age")).then(|| (n.into(), b))),
        ),
        (
            "unsafe path",
            rewrite(&file, |n, b| {
                let b = if n == "backup.json" {
                    json_edit(&b, |v| v["secrets"][0]["path"] = "../../etc/passwd".into())
                } else {
                    b
                };
                let n = if n == "secrets/appliance.key.age" {
                    "secrets/../../etc/passwd"
                } else {
                    n
                };
                Some((n.into(), b))
            }),
        ),
    ];
    for (want, bad) in cases {
        let fresh = tempfile::tempdir().unwrap();
        let err = restore_into(&bad, fresh.path(), false).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
        assert!(
            restored(fresh.path()).machines.is_empty(),
            "{want}: inventory untouched"
        );
        assert!(
            !fresh.path().join(".state.restoring").exists(),
            "{want}: staging removed"
        );
    }
    let not_tar = dir.path().join("nope.tar");
    std::fs::write(&not_tar, b"hello").unwrap();
    let err = restore_into(&not_tar, dir.path(), true).unwrap_err();
    assert!(err.to_string().contains("backup"), "{err}");
}

#[test]
fn api_tokens_tls_files_and_kubeconfigs_survive_a_round_trip() {
    use provisioner_core::apitoken::{ApiTokenStore, Role};
    use provisioner_core::cluster::KubeconfigStore;
    let (dir, inv) = seeded();
    let s = dir.path().join("state");
    let tokens = crate::store::RedbApiTokens::new(&s.join("api-tokens.redb"));
    let (token, rec) = crate::cmd::client::token::create(&tokens, Role::Admin, "ops").unwrap();
    drop(tokens);
    let tls =
        crate::http::api::tls::prepare(&Default::default(), &s, &["127.0.0.1".parse().unwrap()]).unwrap();
    let kubeconfig = b"apiVersion: v1\nkind: Config\n".to_vec();
    // The key exists before anything is encrypted with it (seeded() left ciphertexts).
    crate::store::load_or_create_identity(&s.join("secrets/secrets.key")).unwrap();
    crate::store::AgeKubeconfigs::open(&s)
        .unwrap()
        .put("lab", &kubeconfig)
        .unwrap();

    let (file, m) = backup(dir.path(), &inv, false);
    let state: Vec<&str> = m.state.iter().map(|e| e.path.as_str()).collect();
    assert!(state.contains(&"api-tokens.redb"), "{state:?}");
    assert!(
        state.contains(&"tls/api.key") && state.contains(&"tls/ca.crt"),
        "{state:?}"
    );
    assert!(
        m.secrets.iter().any(|e| e.path == "kubeconfigs/lab.age"),
        "{:?}",
        m.secrets
    );

    let fresh = tempfile::tempdir().unwrap();
    let r = restore_into(&file, fresh.path(), false).unwrap();
    assert_eq!(r.state_restored, m.state.len());
    let new_state = fresh.path().join("state");
    // The token given out before still authenticates; clients keep trusting the CA.
    let tokens = crate::store::RedbApiTokens::new(&new_state.join("api-tokens.redb"));
    assert_eq!(
        tokens.lookup(&crate::service::token_key(&token)).unwrap(),
        Some(rec)
    );
    for f in [tls.cert, tls.key, tls.ca.unwrap()] {
        let rel = f.strip_prefix(&s).unwrap();
        assert_eq!(
            std::fs::read(new_state.join(rel)).unwrap(),
            std::fs::read(&f).unwrap()
        );
    }
    assert_eq!(
        crate::store::AgeKubeconfigs::open(&new_state)
            .unwrap()
            .get("lab")
            .unwrap(),
        Some(kubeconfig)
    );

    // A state directory that already has TLS files is not overwritten unforced.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("state/tls")).unwrap();
    std::fs::write(other.path().join("state/tls/ca.crt"), b"other").unwrap();
    let err = restore_into(&file, other.path(), false).unwrap_err();
    assert!(err.to_string().contains("tls/ca.crt"), "{err}");
}
