//! Issue 17 item 2: values a talhelper user keeps in a SOPS-encrypted `talenv.sops.yaml`
//! stay encrypted in what `provisioner import talhelper` writes (`${NAME}` in
//! `infra/<cluster>.yaml`, the encrypted talenv copied next to it unchanged), the way
//! talhelper keeps `talconfig.yaml` + `talenv.sops.yaml` in git and substitutes only
//! when it renders (talhelper v3.1.16-20 `cmd/genconfig.go`,
//! `pkg/substitute/envsubst.go`). `check` resolves them with the age key file that
//! `talenv_age_key_file` names, fails naming file and field without one (never
//! printing a value), and the running daemon serves the node a schema-valid config
//! carrying the decrypted values. Uses the real `sops` and an age key made here.

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;

use crate::common;
use crate::talos_sops::{find_sops, sops_cmd};
use common::cli::{repo, run};
use common::daemon::{Daemon, http};

/// Every value the encrypted talenv holds: none may be in a file under infra/.
const SECRETS: [&str; 4] = ["10.9.0.10", "cp-secret-9", "10.9.0.11", "hunter2-wifi-psk"];
const MAC: &str = "52:54:00:17:50:01";

const TALCONFIG: &str = r#"clusterName: genmachine
talosVersion: v1.11.6
kubernetesVersion: v1.34.1
endpoint: https://${VIP}:6443
domain: ${DOMAIN}
nodes:
  - hostname: ${HOSTNAME1}
    ipAddress: ${IP1}
    controlPlane: true
    installDisk: /dev/sda
    networkInterfaces:
      - interface: eth0
        addresses: ["${IP1}/24"]
        vip:
          ip: ${VIP}
    patches:
      - "@./patches/env.yaml"
"#;

struct Site {
    tmp: tempfile::TempDir,
    key: PathBuf,
    recipient: String,
}

impl Site {
    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// `plain` encrypted by the real `sops` for this site's age key.
    fn sops_encrypt(&self, plain: &str) -> String {
        let src = self.path("plain-input.yaml");
        std::fs::write(&src, plain).unwrap();
        let o = sops_cmd(self.tmp.path(), &self.key)
            .args(["--encrypt", "--age", &self.recipient])
            .args(["--input-type", "yaml", "--output-type", "yaml"])
            .arg(&src)
            .output()
            .unwrap();
        std::fs::remove_file(&src).unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    /// A daemon config over this site's infra/ (repository images/ and profiles/,
    /// loopback listeners, no bootstrap: nothing is ever dialled) with `extra` lines.
    fn config(&self, name: &str, extra: &str) -> String {
        let d = self.tmp.path();
        std::fs::create_dir_all(d.join("tftp")).unwrap();
        let cfg = d.join(name);
        std::fs::write(
            &cfg,
            format!(
                "state_dir: {d}/state\nserver_ip: 127.0.0.1\nhttp_listen: 127.0.0.1:0\n\
                 api_listen: 127.0.0.1:0\ntftp_listen: 127.0.0.1:0\ntftp_root: {d}/tftp\n\
                 profiles_dir: {r}/profiles\nimages_dir: {r}/images\ninfra_dir: {d}/infra\n\
                 gitops_dir: {d}/gitops\ncache_dir: {d}/cache\nunknown_policy: record\n\
                 peer_binding: {{ enabled: false }}\nbootstrap: {{ enabled: false }}\n{extra}",
                d = d.display(),
                r = repo().display()
            ),
        )
        .unwrap();
        cfg.to_str().unwrap().to_string()
    }
}

/// The site: talconfig + plain `@` patch + `talenv.sops.yaml` from the real sops,
/// infra/ with the repository's k0s cluster. `None` (after a loud line) without sops.
fn site() -> Option<Site> {
    if find_sops().is_none() {
        println!(
            "SKIPPED: the real `sops` was not found (tests/setup installs it from tests/requirements.txt)"
        );
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let id = age::x25519::Identity::generate();
    let key = tmp.path().join("keys/age.key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let s = Site {
        tmp,
        key,
        recipient: id.to_public().to_string(),
    };
    s.write("th/talconfig.yaml", TALCONFIG);
    s.write(
        "th/patches/env.yaml",
        "machine:\n  env:\n    WIFI_PSK: ${WIFI_PSK}\n    COST: \"$$5\"\n",
    );
    let env = s
        .sops_encrypt("VIP: 10.9.0.10\nHOSTNAME1: cp-secret-9\nIP1: 10.9.0.11\nWIFI_PSK: hunter2-wifi-psk\n");
    assert!(SECRETS.iter().all(|v| !env.contains(v)), "{env}");
    s.write("th/talenv.sops.yaml", &env);
    // A plain talenv value and one from the environment are written inline.
    s.write("th/talenv.yaml", "DOMAIN: cluster.example\n");
    std::fs::create_dir_all(s.path("infra")).unwrap();
    std::fs::copy(repo().join("infra/beelink.yaml"), s.path("infra/beelink.yaml")).unwrap();
    Some(s)
}

fn import(s: &Site, cfg: &str, extra: &[&str]) -> (bool, String, String) {
    let file = s.path("th/talconfig.yaml");
    let key = s.key.to_str().unwrap().to_string();
    let mut args = vec!["import", "talhelper", file.to_str().unwrap(), "--age-key", &key];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--config", cfg]);
    run(&args)
}

fn assert_no_secret_under(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        for v in SECRETS {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "{v} in {}",
                p.display()
            );
        }
    }
}

fn assert_no_secret_in(what: &str, text: &str) {
    for v in SECRETS {
        assert!(!text.contains(v), "{v} in {what}: {text}");
    }
}

#[test]
fn encrypted_talenv_values_stay_encrypted_in_infra() {
    let Some(s) = site() else { return };
    let cfg = s.config("provisioner.yaml", "");
    let (ok, out, err) = import(&s, &cfg, &[]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("kept ${HOSTNAME1}, ${IP1}, ${VIP}, ${WIFI_PSK} as placeholders"),
        "{err}"
    );
    assert_no_secret_in("import's output", &format!("{out}{err}"));
    assert_no_secret_under(&s.path("infra"));
    let text = std::fs::read_to_string(s.path("infra/genmachine.yaml")).unwrap();
    for want in [
        "endpoint: https://${VIP}:6443",
        "hostname: ${HOSTNAME1}",
        "WIFI_PSK: ${WIFI_PSK}",
        // Plain values inline; a literal `$` is written `$$` in a sealed file.
        "domain: cluster.example",
        "COST: \"$$5\"",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // The talenv is copied as it was, still encrypted: the real sops decrypts it.
    let companion = s.path("infra/genmachine.talenv.sops.yaml");
    assert_eq!(
        std::fs::read(&companion).unwrap(),
        std::fs::read(s.path("th/talenv.sops.yaml")).unwrap()
    );
    let o = sops_cmd(s.tmp.path(), &s.key)
        .args(["--decrypt", "--input-type", "yaml", "--output-type", "yaml"])
        .arg(&companion)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("HOSTNAME1: cp-secret-9"));

    // Without a key, and with a key that is not a recipient: file, field and variable
    // named, no value printed.
    let (ok, out, err) = run(&["check", "--config", &cfg]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("genmachine.yaml")
            && err.contains("endpoint")
            && err.contains("${VIP}")
            && err.contains("talenv_age_key_file"),
        "{err}"
    );
    assert_no_secret_in("check", &format!("{out}{err}"));
    let other = age::x25519::Identity::generate();
    s.write(
        "keys/other.key",
        &format!("{}\n", other.to_string().expose_secret()),
    );
    let wrong = s.config(
        "wrong.yaml",
        &format!("talenv_age_key_file: {}\n", s.path("keys/other.key").display()),
    );
    let (ok, out, err) = run(&["check", "--config", &wrong]);
    assert!(
        !ok && err.contains("genmachine.yaml") && err.contains("does not decrypt"),
        "{out}{err}"
    );
    assert_no_secret_in("check", &format!("{out}{err}"));

    // With the key: check passes and the node renders with the decrypted values.
    let keyed = s.config(
        "keyed.yaml",
        &format!("talenv_age_key_file: {}\n", s.key.display()),
    );
    let (ok, out, err) = run(&["check", "--config", &keyed]);
    assert!(ok, "{out}{err}");
    assert_no_secret_in("check", &format!("{out}{err}"));
    // A file broken by hand: the parse error quotes its lines, with the
    // placeholders put back instead of the decrypted values.
    let infra = s.path("infra/genmachine.yaml");
    std::fs::write(&infra, text.replace("      ipAddress:", "     ipAddress:")).unwrap();
    let (ok, out, err) = run(&["check", "--config", &keyed]);
    assert!(
        !ok && err.contains("genmachine.yaml") && err.contains("${HOSTNAME1}"),
        "{out}{err}"
    );
    assert_no_secret_in("check", &format!("{out}{err}"));
    std::fs::write(&infra, &text).unwrap();
    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "gen",
        "--cluster",
        "genmachine",
        "--config",
        &keyed,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["talos", "config", "--node", "cp-secret-9", "--config", &keyed]);
    assert!(ok, "{err}");
    assert_decrypted_and_valid(&out, "cp-secret-9");
}

/// A config carries the talenv's values (and `$$` came back as `$`), and its
/// machine document validates against Talos v1.11's schema (fixtures).
fn assert_decrypted_and_valid(config: &str, host: &str) {
    let docs = provisioner_core::talos::yaml::from_str_multi(config).unwrap();
    let m = &docs[0]["machine"];
    assert_eq!(m["network"]["hostname"], host, "{config}");
    assert_eq!(m["network"]["interfaces"][0]["addresses"][0], "10.9.0.11/24");
    assert_eq!(m["network"]["interfaces"][0]["vip"]["ip"], "10.9.0.10");
    assert_eq!(m["env"]["WIFI_PSK"], "hunter2-wifi-psk");
    assert_eq!(m["env"]["COST"], "$5");
    assert_eq!(
        docs[0]["cluster"]["controlPlane"]["endpoint"],
        "https://10.9.0.10:6443"
    );
    let Some(schema) = common::fixture("talos/v1.11/config.schema.json") else {
        return;
    };
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(schema).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let inst = provisioner_core::talos::machine::schema_instance(&docs[0]);
    let errors: Vec<String> = v.iter_errors(&inst).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// `/ipxe` for `mac`, then the config its `talos.config=` URL serves: (status, body).
fn fetch_config(d: &Daemon, mac: &str) -> (u16, String) {
    let (st, script) = http(
        d.http,
        "GET",
        &format!("/ipxe?mac={}&arch=x86_64&platform=efi", mac.replace(':', "-")),
    )
    .unwrap();
    let script = String::from_utf8(script).unwrap();
    assert_eq!(st, 200, "{script}");
    let Some(path) = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("talos.config="))
        .and_then(|u| u.trim_start_matches("http://").split_once('/'))
        .map(|(_, p)| format!("/{p}"))
    else {
        return (0, script);
    };
    let (st, config) = http(d.http, "GET", &path).unwrap();
    (st, String::from_utf8(config).unwrap())
}

#[test]
fn the_daemon_serves_the_decrypted_config_to_the_node() {
    let Some(s) = site() else { return };
    let keyed = s.config(
        "provisioner.yaml",
        &format!("talenv_age_key_file: {}\n", s.key.display()),
    );
    let (ok, out, err) = import(&s, &keyed, &[]);
    assert!(ok, "{out}{err}");
    // The operator adds the node's MAC (a line edit of the sealed file).
    let infra = s.path("infra/genmachine.yaml");
    let text = std::fs::read_to_string(&infra).unwrap();
    let text = text.replacen(
        "    - hostname: ${HOSTNAME1}\n",
        &format!("    - hostname: ${{HOSTNAME1}}\n      mac: \"{MAC}\"\n"),
        1,
    );
    assert!(text.contains(MAC), "{text}");
    std::fs::write(&infra, text).unwrap();
    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "gen",
        "--cluster",
        "genmachine",
        "--config",
        &keyed,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["check", "--config", &keyed]);
    assert!(ok, "{out}{err}");

    let d = Daemon::start(Path::new(&keyed));
    let (st, config) = fetch_config(&d, MAC);
    assert_eq!(st, 200, "{config}");
    assert_decrypted_and_valid(&config, "cp-secret-9");
    // Served, never logged.
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert_no_secret_in("the daemon's log", &log);
}

#[test]
fn adopting_into_a_sealed_file_keeps_it_sealed_and_the_reload_serves_it() {
    // Here the hostname is plain; the rest is sealed.
    adopt_into_sealed(Some("cp-9"));
}

#[test]
fn a_node_whose_hostname_is_sealed_is_adopted_by_that_hostname() {
    // `hostname: ${HOSTNAME1}` stays a placeholder in infra/; the operator names the
    // node by its value (cp-secret-9), which the loader resolved.
    adopt_into_sealed(None);
}

/// Imports the sealed talconfig (hostname `plain`, or `${HOSTNAME1}` = cp-secret-9
/// from the encrypted talenv), adopts the node through the API, checks the file and
/// the served config.
fn adopt_into_sealed(plain: Option<&str>) {
    let Some(s) = site() else { return };
    let talconfig = match plain {
        Some(h) => TALCONFIG.replace("${HOSTNAME1}", h),
        None => TALCONFIG.to_string(),
    };
    let host = plain.unwrap_or("cp-secret-9");
    s.write("th/talconfig.yaml", &talconfig);
    let keyed = s.config(
        "provisioner.yaml",
        &format!("talenv_age_key_file: {}\n", s.key.display()),
    );
    let (ok, out, err) = import(&s, &keyed, &[]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(&[
        "talos",
        "secrets",
        "gen",
        "--cluster",
        "genmachine",
        "--config",
        &keyed,
    ]);
    assert!(ok, "{err}");
    let infra = s.path("infra/genmachine.yaml");
    let before = std::fs::read_to_string(&infra).unwrap();
    let d = Daemon::start(Path::new(&keyed));
    // Unknown: no install, a Discovered record.
    let (st, script) = fetch_config(&d, MAC);
    assert_eq!(st, 0, "{script}");
    let admin = d.token("admin");
    let r = d
        .api_client()
        .post(format!("{}/api/v1/machines/{MAC}/adopt", d.api_url()))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(format!(r#"{{"node":"{host}"}}"#))
        .send()
        .unwrap();
    let st = r.status().as_u16();
    let body = r.text().unwrap();
    assert_eq!(st, 200, "{body}");
    if plain.is_some() {
        assert_no_secret_in("the adoption's answer", &body);
    }
    // Exactly one line more (its MAC); the placeholders stay, no value was written.
    let after = std::fs::read_to_string(&infra).unwrap();
    let added: Vec<&str> = after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .collect();
    assert_eq!(added, vec![format!("      mac: \"{MAC}\"").as_str()], "{after}");
    assert_eq!(after.lines().count(), before.lines().count() + 1, "{after}");
    assert_no_secret_under(&s.path("infra"));
    // The reloaded inputs serve it its decrypted config.
    let (st, config) = fetch_config(&d, MAC);
    assert_eq!(st, 200, "{config}");
    assert_decrypted_and_valid(&config, host);
    if plain.is_some() {
        assert_no_secret_in("the daemon's log", &std::fs::read_to_string(&d.log).unwrap());
    }
}

#[test]
fn an_encrypted_patch_file_is_refused_rather_than_written_in_plain_text() {
    let Some(s) = site() else { return };
    let cfg = s.config("provisioner.yaml", "");
    let enc = s.sops_encrypt("machine:\n  env:\n    WIFI_PSK: hunter2-wifi-psk\n");
    s.write("th/patches/env.yaml", &enc);
    let (ok, out, err) = import(&s, &cfg, &[]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("patches/env.yaml is SOPS-encrypted") && err.contains("talenv.sops.yaml"),
        "{err}"
    );
    assert_no_secret_in("import's output", &format!("{out}{err}"));
    assert!(!s.path("infra/genmachine.yaml").exists());
    assert!(!s.path("infra/genmachine.talenv.sops.yaml").exists());
}

#[test]
fn reimport_without_encrypted_values_removes_the_old_talenv() {
    let Some(s) = site() else { return };
    let cfg = s.config("provisioner.yaml", "");
    let (ok, out, err) = import(&s, &cfg, &[]);
    assert!(ok, "{out}{err}");
    let companion = s.path("infra/genmachine.talenv.sops.yaml");
    assert!(companion.is_file());
    // Now every value comes from a plain talenv (the operator chose so).
    std::fs::remove_file(s.path("th/talenv.sops.yaml")).unwrap();
    s.write(
        "th/talenv.yaml",
        "DOMAIN: cluster.example\nVIP: 10.8.0.10\nHOSTNAME1: cp-8\nIP1: 10.8.0.11\nWIFI_PSK: open\n",
    );
    let (ok, out, err) = import(&s, &cfg, &[]);
    assert!(!ok && err.contains("--force"), "{out}{err}");
    let (ok, out, err) = import(&s, &cfg, &["--force"]);
    assert!(ok, "{out}{err}");
    assert!(!companion.exists());
    let text = std::fs::read_to_string(s.path("infra/genmachine.yaml")).unwrap();
    assert!(
        text.contains("hostname: cp-8") && text.contains("COST: \"$5\""),
        "{text}"
    );
    let (ok, out, err) = run(&["check", "--config", &cfg]);
    assert!(ok, "{out}{err}");
}
