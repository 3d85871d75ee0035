//! `provisioner backup` and `restore` through the real binary and the redb store:
//! a backup of one state directory restored into an empty one reproduces the same
//! machines (with timelines), the same secret blobs byte for byte, and the same
//! image manifest; refusals are clear. Backups are encrypted to an age recipient
//! (no key material readable in the file), plaintext only when asked for, and a
//! restore killed half-way (SIGKILL at a failpoint) leaves the previous state working.

use crate::common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::daemon::{Daemon, run, write_config};
use provisioner_core::inventory::SCHEMA_VERSION;
use provisioner_core::inventory::{Inventory, MemInventory};
use provisioner_core::model::{Event, Machine};

/// An age identity file in `dir` and its recipient (`age1…`).
fn age_identity(dir: &Path) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let file = dir.join("operator.agekey");
    std::fs::write(&file, format!("{}\n", id.to_string().expose_secret())).unwrap();
    (file, id.to_public().to_string())
}

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
            &[Event::TftpServed {
                file: format!("boot {i}"),
                bytes: 1024,
            }
            .at(at)],
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

/// The tar inside an encrypted backup.
fn decrypt(file: &Path, identity: &Path) -> Vec<u8> {
    let ids = age::IdentityFile::from_file(identity.display().to_string())
        .unwrap()
        .into_identities()
        .unwrap();
    let d = age::Decryptor::new(std::fs::File::open(file).unwrap()).unwrap();
    let mut out = Vec::new();
    d.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `backup.json` of a backup file, without the fields that differ per run.
fn manifest(file: &Path, identity: &Path) -> serde_json::Value {
    let tar_bytes = decrypt(file, identity);
    let mut a = tar::Archive::new(tar_bytes.as_slice());
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
    let (identity, recipient) = age_identity(a.path());
    let full = a.path().join("full.age");
    let out = ok(&[
        "backup",
        "--include-images",
        "--recipient",
        &recipient,
        "-o",
        full.to_str().unwrap(),
        "--config",
        &cfg_a,
    ]);
    assert!(
        out.contains(&format!(
            "2 machine(s), 2 secret file(s), 2 image file(s) included, schema {SCHEMA_VERSION}, encrypted to 1 \
             age recipient(s)"
        )),
        "{out}"
    );
    let m = manifest(&full, &identity);
    assert_eq!(m["format"], "provisioner-backup");
    assert_eq!(m["store_schema_version"], SCHEMA_VERSION);
    assert_eq!(m["images"].as_array().unwrap().len(), 2);

    let (b, cfg_b) = empty();
    let (ok_, _, err) = run(&["restore", full.to_str().unwrap(), "--config", &cfg_b]);
    assert!(!ok_ && err.contains("is encrypted: pass --identity"), "{err}");
    let id = identity.to_str().unwrap();
    let out = ok(&["restore", "-i", id, full.to_str().unwrap(), "--config", &cfg_b]);
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
    let again = b.path().join("again.age");
    ok(&[
        "backup",
        "--include-images",
        "-r",
        &recipient,
        "-o",
        again.to_str().unwrap(),
        "--config",
        &cfg_b,
    ]);
    assert_eq!(manifest(&again, &identity), m);

    // Restoring over data is refused unless forced.
    let (ok_, _, err) = run(&["restore", "-i", id, full.to_str().unwrap(), "--config", &cfg_b]);
    assert!(!ok_ && err.contains("not empty"), "{err}");
    ok(&[
        "restore",
        "--force",
        "-i",
        id,
        full.to_str().unwrap(),
        "--config",
        &cfg_b,
    ]);
    // Another identity cannot read it.
    let (other, _) = age_identity(b.path());
    let (ok_, _, err) = run(&[
        "restore",
        "--force",
        "-i",
        other.to_str().unwrap(),
        full.to_str().unwrap(),
        "--config",
        &cfg_b,
    ]);
    assert!(!ok_ && err.contains("does not decrypt"), "{err}");
}

#[test]
fn manifest_only_backup_names_the_images_to_fetch_again() {
    let (a, cfg_a) = source();
    let small = a.path().join("small.tar");
    let out = ok(&[
        "backup",
        "--insecure-plaintext",
        "-o",
        small.to_str().unwrap(),
        "--config",
        &cfg_a,
    ]);
    assert!(out.contains("PLAINTEXT"), "{out}");
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
    let (ok_, _, err) = run(&[
        "backup",
        "--insecure-plaintext",
        "-o",
        out.to_str().unwrap(),
        "--config",
        &cfg_a,
    ]);
    assert!(!ok_ && err.contains("stop the service first"), "{err}");
    assert!(!out.exists() && !out.with_extension("partial").exists());
}

fn has(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Real key material in a state directory: the secrets key, the API's TLS key (made
/// by a dry run) and an API token. Returns the token.
fn with_key_material(dir: &Path, cfg: &str) -> String {
    use age::secrecy::ExposeSecret;
    let key = age::x25519::Identity::generate();
    std::fs::write(
        dir.join("state/secrets/secrets.key"),
        format!("{}\n", key.to_string().expose_secret()),
    )
    .unwrap();
    ok(&["serve", "--dry-run", "--config", cfg]);
    assert!(dir.join("state/tls/api.key").is_file());
    ok(&["token", "create", "--role", "admin", "--config", cfg])
        .trim()
        .to_string()
}

#[test]
fn a_backup_needs_a_recipient_and_its_file_shows_no_key_material() {
    let (a, cfg_a) = source();
    let token = with_key_material(a.path(), &cfg_a);
    let hash = provisioner::service::token_key(&token);
    let (identity, recipient) = age_identity(a.path());

    // No recipient: refused, nothing written.
    let out = a.path().join("x.age");
    let (ok_, _, err) = run(&["backup", "-o", out.to_str().unwrap(), "--config", &cfg_a]);
    assert!(
        !ok_ && err.contains("refusing to write a plaintext backup"),
        "{err}"
    );
    assert!(!out.exists() && !out.with_extension("partial").exists());
    let (ok_, _, err) = run(&[
        "backup",
        "-r",
        "age1nope",
        "-o",
        out.to_str().unwrap(),
        "--config",
        &cfg_a,
    ]);
    assert!(!ok_ && err.contains("not an age X25519 recipient"), "{err}");

    // `backup.recipients` in the configuration.
    let cfg_enc = a.path().join("encrypting.yaml");
    std::fs::write(
        &cfg_enc,
        std::fs::read_to_string(&cfg_a).unwrap() + &format!("backup:\n  recipients: [\"{recipient}\"]\n"),
    )
    .unwrap();
    let said = ok(&[
        "backup",
        "-o",
        out.to_str().unwrap(),
        "--config",
        cfg_enc.to_str().unwrap(),
    ]);
    assert!(said.contains("encrypted to 1 age recipient(s)"), "{said}");
    assert!(!said.contains("secrets key is not in this backup"), "{said}");
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    let raw_hash = hex::decode(&hash).unwrap();
    for needle in [
        &b"-----BEGIN"[..],
        b"PRIVATE KEY",
        b"AGE-SECRET-KEY",
        hash.as_bytes(),
        hash.to_uppercase().as_bytes(),
        &raw_hash,
        token.as_bytes(),
    ] {
        assert!(
            !has(&bytes, needle),
            "{:?} in the encrypted backup",
            String::from_utf8_lossy(needle)
        );
    }
    // The same state, plaintext as asked: all of it is there (so the check above
    // looks for what a plaintext backup would show).
    let plain = a.path().join("plain.tar");
    let said = ok(&[
        "backup",
        "--insecure-plaintext",
        "-o",
        plain.to_str().unwrap(),
        "--config",
        &cfg_a,
    ]);
    assert!(said.contains("PLAINTEXT"), "{said}");
    let pbytes = std::fs::read(&plain).unwrap();
    for needle in [&b"PRIVATE KEY"[..], b"AGE-SECRET-KEY", hash.as_bytes()] {
        assert!(
            has(&pbytes, needle),
            "{:?} not in the plaintext backup",
            String::from_utf8_lossy(needle)
        );
    }
    // `--insecure-plaintext` only allows plaintext: with a recipient it encrypts.
    let still = a.path().join("still.age");
    let said = ok(&[
        "backup",
        "--insecure-plaintext",
        "-o",
        still.to_str().unwrap(),
        "--config",
        cfg_enc.to_str().unwrap(),
    ]);
    assert!(said.contains("encrypted to 1 age recipient(s)"), "{said}");

    // It round-trips: the same key, TLS files, and the token still works.
    let (b, cfg_b) = empty();
    ok(&[
        "restore",
        "-i",
        identity.to_str().unwrap(),
        out.to_str().unwrap(),
        "--config",
        &cfg_b,
    ]);
    for f in [
        "secrets/secrets.key",
        "tls/api.key",
        "tls/ca.crt",
        "api-tokens.redb",
    ] {
        assert_eq!(
            std::fs::read(a.path().join("state").join(f)).unwrap(),
            std::fs::read(b.path().join("state").join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        ok(&["token", "ls", "--config", &cfg_a]),
        ok(&["token", "ls", "--config", &cfg_b])
    );
    assert_eq!(
        ok(&["export", "--config", &cfg_a]),
        ok(&["export", "--config", &cfg_b])
    );
}

/// `provisioner <args>` with extra environment: (ok, stdout, stderr).
fn run_env(args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let mut c = std::process::Command::new(common::daemon::BIN);
    c.args(args).env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn a_key_kept_outside_the_state_is_not_in_the_backup_and_restore_says_so() {
    let (a, cfg_a) = source();
    // Real ciphertexts only: the source's stand-in blobs would (rightly) stop a new
    // key from being created next to them.
    std::fs::remove_dir_all(a.path().join("state/secrets")).unwrap();
    std::fs::create_dir_all(a.path().join("infra")).unwrap();
    std::fs::write(a.path().join("infra/lab.yaml"), "clusterName: lab\n").unwrap();
    let (identity, recipient) = age_identity(a.path());
    // As the unit's credential store would hold it.
    let credstore = a.path().join("credstore");
    let key = credstore.join("provisioner.secrets.key");
    std::fs::create_dir_all(&credstore).unwrap();
    let with_key = |cfg: &str| {
        let p = Path::new(cfg).with_file_name("outside.yaml");
        std::fs::write(
            &p,
            std::fs::read_to_string(cfg).unwrap() + &format!("secrets_key_file: {}\n", key.display()),
        )
        .unwrap();
        p.display().to_string()
    };
    let cfg = with_key(&cfg_a);
    // The key is created where the configuration says, not in the state.
    ok(&["talos", "secrets", "gen", "--cluster", "lab", "--config", &cfg]);
    assert!(key.is_file());
    assert!(!a.path().join("state/secrets/secrets.key").exists());
    // Without the key the stored bundle is unreadable; the credential directory
    // (what systemd's LoadCredential= gives the service) is found too.
    let (ok_, _, err) = run(&[
        "talos",
        "secrets",
        "export",
        "--cluster",
        "lab",
        "--config",
        &cfg_a,
    ]);
    assert!(
        !ok_ && err.contains("is missing") && err.contains("put the key back"),
        "{err}"
    );
    let (ok_, out, err) = run_env(
        &[
            "talos",
            "secrets",
            "export",
            "--cluster",
            "lab",
            "--config",
            &cfg_a,
        ],
        &[("CREDENTIALS_DIRECTORY", &credstore)],
    );
    assert!(ok_ && out.contains("secrets:"), "{err}");

    let out = a.path().join("k.age");
    let said = ok(&[
        "backup",
        "-r",
        &recipient,
        "-o",
        out.to_str().unwrap(),
        "--config",
        &cfg,
    ]);
    assert!(
        said.contains(&format!(
            "the secrets key is not in this backup: it lives at {}",
            key.display()
        )),
        "{said}"
    );
    let (b, cfg_b) = empty();
    std::fs::create_dir_all(b.path().join("infra")).unwrap();
    std::fs::write(b.path().join("infra/lab.yaml"), "clusterName: lab\n").unwrap();
    let cfg_b = with_key(&cfg_b);
    // Restored on a host where the key is not (yet) in place: it says where it goes.
    std::fs::rename(&key, a.path().join("offline.key")).unwrap();
    let id = identity.to_str().unwrap();
    let said = ok(&["restore", "-i", id, out.to_str().unwrap(), "--config", &cfg_b]);
    assert!(said.contains(&format!("put it at {}", key.display())), "{said}");
    // With the key back, the restored bundle decrypts.
    std::fs::rename(a.path().join("offline.key"), &key).unwrap();
    let exported = ok(&[
        "talos",
        "secrets",
        "export",
        "--cluster",
        "lab",
        "--config",
        &cfg_b,
    ]);
    assert!(exported.contains("secrets:"), "{exported}");
}

#[test]
fn a_restore_killed_half_way_leaves_the_previous_state_working() {
    use std::os::unix::process::ExitStatusExt;
    let (a, cfg_a) = source();
    let (identity, recipient) = age_identity(a.path());
    let file = a.path().join("a.age");
    ok(&[
        "backup",
        "-r",
        &recipient,
        "-o",
        file.to_str().unwrap(),
        "--config",
        &cfg_a,
    ]);
    let id = identity.to_str().unwrap();

    // The target: another working appliance state, with its own machine, secret and token.
    let b = tempfile::tempdir().unwrap();
    common::write_catalog(b.path());
    let cfg_b = write_config(b.path(), b.path()).display().to_string();
    let inv = MemInventory::new();
    let mac = "52:54:00:0b:00:99".parse().unwrap();
    inv.put(&Machine::discovered(mac, time::OffsetDateTime::UNIX_EPOCH))
        .unwrap();
    let seed = b.path().join("seed.json");
    std::fs::write(&seed, serde_json::to_vec(&inv.export().unwrap()).unwrap()).unwrap();
    ok(&["import", seed.to_str().unwrap(), "--config", &cfg_b]);
    std::fs::create_dir_all(b.path().join("state/secrets")).unwrap();
    std::fs::write(b.path().join("state/secrets/mine.age"), b"b's own secret").unwrap();
    let token = ok(&["token", "create", "--role", "read-only", "--config", &cfg_b])
        .trim()
        .to_string();
    let before = ok(&["export", "--config", &cfg_b]);
    let secrets_before = tree(&b.path().join("state/secrets"));
    let sibling = b.path().join(".state.restoring");

    for point in ["restore:writing", "restore:staged"] {
        let st = std::process::Command::new(common::daemon::BIN)
            .args([
                "restore",
                "--force",
                "-i",
                id,
                file.to_str().unwrap(),
                "--config",
                &cfg_b,
            ])
            .env(provisioner::backup::CRASH_AT_ENV, point)
            .status()
            .unwrap();
        assert_eq!(st.signal(), Some(9), "{point}: not killed at the failpoint");
        assert!(sibling.exists(), "{point}: the kill left no staging directory?");
        assert_eq!(ok(&["export", "--config", &cfg_b]), before, "{point}");
        assert_eq!(tree(&b.path().join("state/secrets")), secrets_before, "{point}");
    }
    // And it serves: the daemon starts on it and its token still reads its machine.
    {
        let d = Daemon::start(Path::new(&cfg_b));
        let (st, body) = d.api_get("/api/v1/machines", Some(&token));
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("52:54:00:0b:00:99"), "{body}");
    }

    // Killed after the swap: the restored state is the one in place, and works.
    let st = std::process::Command::new(common::daemon::BIN)
        .args([
            "restore",
            "--force",
            "-i",
            id,
            file.to_str().unwrap(),
            "--config",
            &cfg_b,
        ])
        .env(provisioner::backup::CRASH_AT_ENV, "restore:swapped")
        .status()
        .unwrap();
    assert_eq!(st.signal(), Some(9));
    let after = ok(&["export", "--config", &cfg_b]);
    assert!(
        after.contains("52:54:00:0b:00:01") && after.contains("52:54:00:0b:00:99"),
        "{after}"
    );
    assert_eq!(
        std::fs::read(b.path().join("state/secrets/talos/genmachine.age")).unwrap(),
        (0..=255u8).collect::<Vec<_>>()
    );
    // A later restore clears what the kills left next to the state.
    ok(&[
        "restore",
        "--force",
        "-i",
        id,
        file.to_str().unwrap(),
        "--config",
        &cfg_b,
    ]);
    assert!(!sibling.exists());
}
