//! Running the real `provisioner` binary on loopback with port 0 and reading the
//! bound ports from its "listening for …" log lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_provisioner");

pub struct Daemon {
    pub child: Child,
    pub http: SocketAddr,
    pub api: SocketAddr,
    pub tftp: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// Writes a config for `dir` (state in dir/state, catalog from `write_catalog`).
pub fn write_config(dir: &Path, tftp_root: &Path) -> PathBuf {
    let cfg = dir.join("provisioner.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {d}/state\nserver_ip: 127.0.0.1\nhttp_listen: 127.0.0.1:0\napi_listen: 127.0.0.1:0\n\
             tftp_listen: 127.0.0.1:0\ntftp_root: {t}\nprofiles_dir: {d}/profiles\nimages_dir: {d}/images\n\
             infra_dir: {d}/infra\ncache_dir: {d}/cache\nunknown_policy: record\n",
            d = dir.display(),
            t = tftp_root.display()
        ),
    )
    .unwrap();
    cfg
}

/// Lets machines boot over loopback: tests of other features fetch `/ipxe` and
/// `/config` from 127.0.0.1 with made-up MACs, which peer binding refuses (loopback
/// is never a machine; a default appliance does refuse it, see config_release.rs).
/// Binding itself is proven by config_release.rs and the QEMU lab.
pub fn loopback_boot(cfg: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(cfg).unwrap();
    text.push_str("peer_binding: { enabled: false }\n");
    std::fs::write(cfg, text).unwrap();
    cfg.to_path_buf()
}

impl Daemon {
    pub fn start(config: &Path) -> Self {
        Self::start_in(config, &[])
    }

    /// Starts the daemon under `prefix` (e.g. `nsenter -t <pid> -m --`: inside a
    /// mount namespace a test made), which must exec the binary in its own pid.
    pub fn start_in(config: &Path, prefix: &[String]) -> Self {
        let log = config.with_extension("log");
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(config)
            .env("NO_COLOR", "1")
            .env("PROVISIONER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn provisioner");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                let _ = tx.send(line);
            }
        });
        let (mut http, mut api, mut tftp) = (None, None, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while http.is_none() || api.is_none() || tftp.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "daemon did not report its listeners; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            // Works for human and JSON log lines: the address follows " on ".
            let addr = |l: &str| {
                let rest = l.split(" on ").nth(1)?;
                let end = rest
                    .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
                    .unwrap_or(rest.len());
                rest[..end].parse::<SocketAddr>().ok()
            };
            if line.contains("listening for HTTP on") {
                http = addr(&line);
            } else if line.contains("listening for API on") {
                api = addr(&line);
            } else if line.contains("listening for TFTP on") {
                tftp = addr(&line);
            }
        }
        Self {
            child,
            http: http.unwrap(),
            api: api.unwrap(),
            tftp: tftp.unwrap(),
            config: config.into(),
            log,
        }
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request over a fresh connection: (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(std::io::ErrorKind::UnexpectedEof)?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..pos]).unwrap_or("0").trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + n]);
        b = &b[pos + 2 + n + 2..];
    }
    out
}

/// `provisioner <args…>`: (exit ok, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

impl Daemon {
    /// The generated CA of the API listener (`<state_dir>/tls/ca.crt`).
    pub fn ca(&self) -> PathBuf {
        self.config.parent().unwrap().join("state/tls/ca.crt")
    }

    /// `provisioner token create --role <role>` against this daemon's state.
    pub fn token(&self, role: &str) -> String {
        let (ok, out, err) = run(&[
            "token",
            "create",
            "--role",
            role,
            "--config",
            self.config.to_str().unwrap(),
        ]);
        assert!(ok, "token create failed: {err}");
        assert!(!err.contains("pvt_"), "the token is printed on stdout only");
        out.trim().to_string()
    }

    /// An HTTPS client trusting only the daemon's CA.
    pub fn api_client(&self) -> reqwest::blocking::Client {
        let pem = std::fs::read(self.ca()).unwrap();
        reqwest::blocking::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// `https://127.0.0.1:<api port>`.
    pub fn api_url(&self) -> String {
        format!("https://{}", self.api)
    }

    /// GET on the API with an optional bearer token: (status, body).
    pub fn api_get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.api_client().get(format!("{}{path}", self.api_url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    }
}
