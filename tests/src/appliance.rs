//! Runs the `provisioner` binary (the appliance) inside a lab.
//!
//! Written against the CLI contract: `serve --config FILE` logs
//! `listening for HTTP on <addr>` / `listening for TFTP on <addr>` /
//! `listening for API on <addr>`; `export --config FILE --format json`;
//! `dhcp-snippet --for dnsmasq --config FILE`.
//!
//! The binary is `$PROVISIONER_BIN`, else the `provisioner` next to the test
//! executable's target dir (`<target>/debug/provisioner`), else
//! `$CARGO_TARGET_DIR/debug/provisioner`, else `<workspace>/target/debug/provisioner`.
//! The tests do not build it: run `cargo build -p provisioner` first.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::lab::{Lab, LabProcess};
use crate::payload::Payload;
use crate::run;

/// Image id the lab site uses for the payload.
pub const IMAGE_ID: &str = "lab-payload";
/// Profile id the lab site uses.
pub const PROFILE_ID: &str = "lab";
/// HTTP port of the boot path in lab sites.
pub const HTTP_PORT: u16 = 8080;
/// API address (inside the lab namespace) in lab sites.
pub const API_LISTEN: &str = "127.0.0.1:9090";

/// Locates the appliance binary (see the module docs).
pub fn provisioner_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PROVISIONER_BIN") {
        return Ok(p.into());
    }
    let mut candidates = Vec::new();
    // <target>/debug/deps/<test>-<hash> -> <target>/debug/provisioner
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        candidates.push(profile_dir.join("provisioner"));
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("debug/provisioner"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/provisioner"));
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!(
            "the provisioner binary was not found (tried {candidates:?}); \
             build it with `cargo build -p provisioner` or set PROVISIONER_BIN"
        )
    })
}

/// A complete appliance configuration for a lab: state, images (with the
/// payload in the cache), one profile and one group per MAC.
#[derive(Debug, Clone)]
pub struct LabSite {
    /// Directory holding everything below.
    pub root: PathBuf,
    /// The `--config` file.
    pub config: PathBuf,
    /// Address the appliance advertises (the lab bridge).
    pub server_ip: String,
}

impl LabSite {
    /// Writes the site under `<lab dir>/site`. Machine `i` (from 1) of `macs`
    /// gets group `lab-vm<i>` selecting its MAC, profile `lab`
    /// (image `lab-payload`, config kind `plain`).
    pub fn write(lab: &Lab, payload: &Payload, macs: &[&str]) -> Result<LabSite> {
        Self::write_with_args(lab, payload, macs, &[])
    }

    /// [`LabSite::write`] with extra kernel arguments in the image descriptor
    /// (e.g. `lab.callback_delay=20`, which the payload honours).
    pub fn write_with_args(
        lab: &Lab,
        payload: &Payload,
        macs: &[&str],
        extra_kernel_args: &[&str],
    ) -> Result<LabSite> {
        let root = lab.dir().join("site");
        let q = |p: &Path| format!("\"{}\"", p.display());
        for d in [
            "state",
            "profiles/groups",
            "profiles/profiles",
            "images",
            "cache",
            "infra",
        ] {
            fs::create_dir_all(root.join(d))?;
        }
        payload.install_into(&root.join("cache").join(IMAGE_ID))?;
        let args: Vec<String> = ["console=ttyS0", "panic=-1"]
            .iter()
            .chain(extra_kernel_args)
            .map(|a| format!("\"{a}\""))
            .collect();
        fs::write(
            root.join("images").join(format!("{IMAGE_ID}.yaml")),
            format!(
                "id: {IMAGE_ID}\nkernel: {{ file: vmlinuz }}\ninitrds: [ {{ file: initrd.gz }} ]\n\
                 args: [{}]\n",
                args.join(", ")
            ),
        )?;
        fs::write(
            root.join("profiles/profiles").join(format!("{PROFILE_ID}.yaml")),
            format!("id: {PROFILE_ID}\nimage: {IMAGE_ID}\nconfig: plain\n"),
        )?;
        for (i, mac) in macs.iter().enumerate() {
            let id = format!("lab-vm{}", i + 1);
            fs::write(
                root.join("profiles/groups").join(format!("{id}.yaml")),
                format!("id: {id}\nprofile: {PROFILE_ID}\nselector: {{ mac: \"{mac}\" }}\n"),
            )?;
        }
        let server_ip = lab.ip();
        let config = root.join("provisioner.yaml");
        fs::write(
            &config,
            format!(
                "state_dir: {state}\n\
                 server_ip: {server_ip}\n\
                 http_listen: 0.0.0.0:{HTTP_PORT}\n\
                 api_listen: {API_LISTEN}\n\
                 tftp_listen: 0.0.0.0:69\n\
                 tftp_root: /usr/lib/ipxe\n\
                 profiles_dir: {profiles}\n\
                 images_dir: {images}\n\
                 cache_dir: {cache}\n\
                 unknown_policy: record\n",
                state = q(&root.join("state")),
                profiles = q(&root.join("profiles")),
                images = q(&root.join("images")),
                cache = q(&root.join("cache")),
            ),
        )?;
        Ok(LabSite {
            root,
            config,
            server_ip,
        })
    }
}

/// A running (or stopped) `provisioner serve` in a lab.
#[derive(Debug)]
pub struct Appliance {
    bin: PathBuf,
    config: PathBuf,
    netns: String,
    process: LabProcess,
    /// Where the API auth header file is, once created.
    token: std::sync::Mutex<Option<String>>,
    /// An admin API token for [`Appliance::admin_cli`], once created.
    admin: std::sync::Mutex<Option<String>>,
}

impl Appliance {
    /// Starts `provisioner serve --config <config>` in the lab namespace and
    /// waits (30 s) for its HTTP and TFTP listeners; the error carries the log.
    pub fn start(lab: &Lab, config: &Path) -> Result<Appliance> {
        let bin = provisioner_bin()?;
        // A fresh log per start: a restarted appliance must not be taken as
        // up because of its predecessor's "listening" lines.
        let log = (1..)
            .map(|i| lab.dir().join(format!("appliance-{i}.log")))
            .find(|p| !p.exists())
            .expect("unbounded range");
        let (bin_s, config_s) = (bin.to_string_lossy(), config.to_string_lossy());
        let mut cmd = lab.command(&[&bin_s, "serve", "--config", &config_s]);
        // Relative defaults (e.g. an `infra/` dir) resolve inside the site,
        // not in whatever directory cargo runs the tests from.
        if let Some(dir) = config.parent() {
            cmd.current_dir(dir);
        }
        scrub_env(&mut cmd);
        let mut process = lab.spawn_command(cmd, "provisioner serve", &log)?;
        for needle in ["listening for HTTP on", "listening for TFTP on"] {
            process
                .wait_for_log(needle, Duration::from_secs(30))
                .context("the appliance did not come up")?;
        }
        Ok(Appliance {
            bin,
            config: config.to_owned(),
            netns: lab.netns().to_owned(),
            process,
            token: std::sync::Mutex::new(None),
            admin: std::sync::Mutex::new(None),
        })
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Waits for `needle` in the daemon's log.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.process.wait_for_log(needle, timeout)
    }

    /// SIGTERM and wait (15 s); an error if it had to be SIGKILLed.
    pub fn stop(&mut self) -> Result<()> {
        let st = self.process.stop()?;
        if !st.success() {
            bail!(
                "the appliance exited with {st} on SIGTERM\n{}",
                crate::tail(&self.log(), 20)
            );
        }
        Ok(())
    }

    /// SIGKILL, as a crash would.
    pub fn kill_9(&mut self) {
        self.process.kill_9();
    }

    /// `provisioner export --config <file> --format json`, parsed. Meant for
    /// after [`Appliance::stop`] / [`Appliance::kill_9`].
    pub fn export_json(&self) -> Result<Value> {
        let mut cmd = Command::new(&self.bin);
        scrub_env(&mut cmd);
        let out = run(cmd
            .args(["export", "--config"])
            .arg(&self.config)
            .args(["--format", "json"]))?;
        serde_json::from_str(&out).with_context(|| format!("export is not JSON:\n{out}"))
    }

    /// `provisioner dhcp-snippet --for <kind> --config <file>`.
    pub fn dhcp_snippet(&self, kind: &str) -> Result<String> {
        dhcp_snippet(&self.config, kind)
    }

    /// The `state_dir` of the appliance's configuration.
    fn state_dir(&self) -> Result<PathBuf> {
        let text = fs::read_to_string(&self.config)?;
        text.lines()
            .find_map(|l| l.strip_prefix("state_dir:"))
            .map(|v| PathBuf::from(v.trim().trim_matches('"')))
            .context("no state_dir in the lab configuration")
    }

    /// A file holding the `Authorization` header with a read-only API token
    /// (`provisioner token create`, made once), so the token never appears on a
    /// command line or in an error message.
    fn api_auth_header(&self) -> Result<PathBuf> {
        let mut slot = self
            .token
            .lock()
            .map_err(|_| anyhow::anyhow!("token lock poisoned"))?;
        if let Some(t) = slot.as_ref() {
            return Ok(PathBuf::from(t));
        }
        let mut cmd = Command::new(&self.bin);
        scrub_env(&mut cmd);
        let out = run(cmd
            .args(["token", "create", "--role", "read-only", "--config"])
            .arg(&self.config))?;
        let file = self.state_dir()?.join("lab-api-auth-header");
        fs::write(&file, format!("Authorization: Bearer {}\n", out.trim()))?;
        *slot = Some(file.to_string_lossy().into_owned());
        Ok(file)
    }

    /// `provisioner <args> --config <file>` inside the lab namespace, as an operator
    /// with an admin API token (created once, kept in a 0600 client file the CLI
    /// reads, so it is on no command line, in no environment and in no error).
    /// Returns stdout; an error carries stderr.
    pub fn admin_cli(&self, args: &[&str]) -> Result<String> {
        let client = {
            let mut slot = self
                .admin
                .lock()
                .map_err(|_| anyhow::anyhow!("token lock poisoned"))?;
            if slot.is_none() {
                let mut cmd = Command::new(&self.bin);
                scrub_env(&mut cmd);
                let out = run(cmd
                    .args(["token", "create", "--role", "admin", "--config"])
                    .arg(&self.config))?;
                let file = self.state_dir()?.join("lab-admin-client.yaml");
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&file)?;
                writeln!(f, "token: \"{}\"", out.trim())?;
                *slot = Some(file.to_string_lossy().into_owned());
            }
            slot.clone().unwrap_or_default()
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(&self.bin).args(args);
        cmd.arg("--config").arg(&self.config);
        scrub_env(&mut cmd);
        cmd.env("PROVISIONER_CLIENT_CONFIG", client);
        run(&mut cmd)
    }

    /// GET `path` from the operator API inside the namespace: HTTPS with the
    /// appliance's generated CA and a read-only token (curl; bounded by `-m`).
    pub fn api_get(&self, path: &str) -> Result<String> {
        let url = format!("https://{}{path}", self.api_listen());
        let ca = self.state_dir()?.join("tls/ca.crt");
        let auth = format!("@{}", self.api_auth_header()?.display());
        run(Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-sS",
                "--fail-with-body",
                "-m",
                "10",
                "--cacert",
            ])
            .arg(&ca)
            .args(["-H", &auth, &url]))
    }

    /// `GET /api/v1/machines/<mac>`, parsed.
    pub fn api_machine(&self, mac: &str) -> Result<Value> {
        let body = self.api_get(&format!("/api/v1/machines/{mac}"))?;
        serde_json::from_str(&body).with_context(|| format!("API answer is not JSON:\n{body}"))
    }

    /// The API address from the `listening for API on` log line, else the
    /// lab default.
    fn api_listen(&self) -> String {
        self.log()
            .lines()
            .find_map(|l| l.split("listening for API on ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|a| a.trim_matches(|c| c == '"' || c == ',').to_owned())
            .unwrap_or_else(|| API_LISTEN.to_owned())
    }
}

/// `provisioner dhcp-snippet --for <kind> --config <file>` without a daemon.
pub fn dhcp_snippet(config: &Path, kind: &str) -> Result<String> {
    let mut cmd = Command::new(provisioner_bin()?);
    scrub_env(&mut cmd);
    run(cmd.args(["dhcp-snippet", "--for", kind, "--config"]).arg(config))
}

/// The appliance reads `PROVISIONER_*` overrides from the environment; a
/// developer's shell must not change what the lab configured. Also no ANSI
/// colours in logs that tests grep.
pub(crate) fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PROVISIONER_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NO_COLOR", "1");
}
