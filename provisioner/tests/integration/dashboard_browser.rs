//! The dashboard in headless Chromium (Debian's `chromium` + `chromium-driver`, driven
//! over the W3C WebDriver protocol): log in with an admin token, open a seeded
//! machine, watch its timeline update live (no reload) while a simulated boot
//! progresses (a firmware PXE DISCOVER over loopback UDP to the proxyDHCP socket,
//! then `/ipxe`, the kernel asset, `/config`, `/callback` over HTTP), click
//! re-image, and save screenshots under the target directory (paths printed). A
//! second test watches the cluster supervisor mark Talos nodes installed live; the
//! third ([`views`]) checks the fleet view, the boot waterfall and the cluster
//! progress line against the API's timeline.

use crate::common;

#[path = "dashboard_views.rs"]
mod views;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::daemon::{Daemon, http, loopback_boot, write_config};
use common::live::{client_socket, proxy_dhcp, pxe_request, send};
use common::serve_rig::Rig;
use provisioner_core::dhcp::v4::MessageType;
use serde_json::{Value, json};

/// The W3C WebDriver web element identifier key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const MAC: &str = "52:54:00:00:00:02";

struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver not found ({e}): run tests/setup (chromium-driver)"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The appliance's certificate comes from its own CA.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Self {
            child,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().unwrap().json().unwrap();
        if v["value"].get("error").is_some() {
            panic!("WebDriver {path}: {v}");
        }
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> Option<String> {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let v: Value = self
            .http
            .post(url)
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["value"][ELEMENT].as_str().map(str::to_string)
    }

    /// The element's text, or "" while it does not exist (or went stale because
    /// the page is navigating).
    fn text(&self, css: &str) -> String {
        let Some(id) = self.find(css) else {
            return String::new();
        };
        let url = format!("{}/session/{}/element/{id}/text", self.base, self.session);
        let v: Value = self.http.get(url).send().unwrap().json().unwrap();
        v["value"].as_str().unwrap_or("").to_string()
    }

    /// Polls for `css`: after a click that navigates (log out, log in) the
    /// next page may not be loaded yet when the click returns.
    fn wait_find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(id) = self.find(css) {
                return id;
            }
            assert!(Instant::now() < deadline, "no {css} on the page after 15 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, css: &str) {
        let id = self.wait_find(css);
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        );
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.wait_find(css);
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn source(&self) -> String {
        self.cmd(reqwest::Method::GET, "/source", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Polls until `css`'s text satisfies `ok`.
    fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        self.wait_text_poking(css, what, ok, || ())
    }

    /// Polls until `css` exists (after a click that navigates, the old page may
    /// still be the current one for a while).
    fn wait_for(&self, css: &str) {
        self.wait_text_poking(css, css, |_| self.find(css).is_some(), || ());
    }

    /// Polls until `css`'s text satisfies `ok`, calling `poke` about once a second
    /// (to resend a datagram UDP may lose).
    fn wait_text_poking(
        &self,
        css: &str,
        what: &str,
        ok: impl Fn(&str) -> bool,
        mut poke: impl FnMut(),
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut next_poke = Instant::now() + Duration::from_secs(1);
        loop {
            let t = self.text(css);
            if ok(&t) {
                return t;
            }
            if Instant::now() >= next_poke {
                poke();
                next_poke = Instant::now() + Duration::from_secs(1);
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {css} is {t:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        let (w, h) = png_size(&png);
        assert!(w > 0 && h > 0, "{name}: {w}x{h}");
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, &png).unwrap();
        println!("screenshot: {}", path.display());
        // CI keeps them: `$PROVISIONER_ARTIFACTS` is the run's artifact directory.
        if let Some(dir) = std::env::var_os("PROVISIONER_ARTIFACTS") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), &png).unwrap();
        }
        path
    }

    /// Every element matching `css` (WebDriver "Find Elements").
    fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.cmd(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_string())
            .collect()
    }

    /// An attribute of element `id` ("" when absent).
    fn attr(&self, id: &str, name: &str) -> String {
        let v = self.cmd(
            reqwest::Method::GET,
            &format!("/element/{id}/attribute/{name}"),
            None,
        );
        v.as_str().unwrap_or("").to_string()
    }

    /// The text of the first `css` inside element `id` (its DOM `textContent`: SVG
    /// text included).
    fn text_in(&self, id: &str, css: &str) -> String {
        let inner = self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        let inner = inner[ELEMENT].as_str().unwrap();
        let v = self.cmd(
            reqwest::Method::GET,
            &format!("/element/{inner}/property/textContent"),
            None,
        );
        v.as_str().unwrap_or("").trim().to_string()
    }
}

/// Walks a PNG's chunks (PNG spec §5: signature, then length + type + data + CRC,
/// `IHDR` first, `IDAT` data, `IEND` last) and returns the `IHDR` width and height.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG signature");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (mut at, mut size, mut idat) = (8, None, 0);
    loop {
        assert!(at + 12 <= png.len(), "PNG truncated at byte {at}");
        let len = be(&png[at..]) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => size = Some((be(data), be(&data[4..]))),
            b"IDAT" => idat += len,
            b"IEND" => break,
            _ => {}
        }
        assert!(at > 8 || kind == b"IHDR", "IHDR must come first");
        at += 12 + len;
    }
    assert!(idat > 0, "no image data");
    size.expect("an IHDR chunk")
}

fn token_after(script: &str, marker: &str) -> String {
    script
        .split(marker)
        .nth(1)
        .unwrap()
        .split(['/', ' ', '\n'])
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn dashboard_follows_a_boot_live_and_reimages() {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let cfg = loopback_boot(&write_config(dir.path(), dir.path()));
    let dhcp = proxy_dhcp(&cfg);
    let d = Daemon::start(&cfg);
    // Seeded machines: one installing, one unknown.
    let efi = "/ipxe?mac=52-54-00-00-00-02&arch=x86_64&platform=efi";
    assert_eq!(http(d.http, "GET", efi).unwrap().0, 200);
    assert_eq!(
        http(
            d.http,
            "GET",
            "/ipxe?mac=52-54-00-00-00-09&arch=i386&platform=pcbios"
        )
        .unwrap()
        .0,
        200
    );
    let admin = d.token("admin");
    let base = d.api_url();

    let b = Driver::start();
    b.goto(&format!("{base}/ui/machines"));
    assert!(b.find("#token").is_some(), "pages need a login: {}", b.source());
    b.type_into("#token", "pvt_wrong");
    b.click("#login");
    b.wait_text("#login-error", "the bad token refused", |t| t.contains("Unknown"));
    b.type_into("#token", &admin);
    b.click("#login");
    b.wait_text("#machines", "the machine table", |t| {
        t.contains(MAC) && t.contains("52:54:00:00:00:09")
    });
    let table = b.text("#machines");
    assert!(
        table.contains("Booting") && table.contains("uefi") && table.contains("lab"),
        "{table}"
    );

    b.goto(&format!("{base}/ui/machines/{MAC}"));
    assert_eq!(b.text("#state"), "Booting");
    b.wait_text("#live", "the event stream", |t| t == "live");
    // The firmware's PXE DISCOVER reaches the proxyDHCP socket; what it saw and
    // what it answered appear live.
    let udp = client_socket();
    let discover = pxe_request(MAC, MessageType::Discover);
    send(&udp, dhcp.dhcp, &discover);
    b.wait_text_poking(
        "#timeline",
        "dhcp_seen and dhcp_sent",
        |t| {
            t.contains("dhcp_seen DISCOVER on :67 (proxy): pxe, arch 7")
                && t.contains("dhcp_sent OFFER boot snponly.efi")
        },
        || send(&udp, dhcp.dhcp, &discover),
    );
    // A boot progresses: a fresh script, the one-time config, the installed callback.
    let (_, script) = http(d.http, "GET", efi).unwrap();
    let script = String::from_utf8(script).unwrap();
    let config = token_after(&script, "/config/");
    let callback = token_after(&script, "/callback/");
    b.wait_text("#timeline", "the new script event", |t| {
        t.matches("ipxe_script_served").count() >= 2
    });
    // The kernel the script names (the asset event is attributed by peer address).
    let kernel = script
        .split_whitespace()
        .find(|w| w.contains("/assets/"))
        .map(|w| &w[w.find("/assets/").unwrap()..])
        .unwrap_or_else(|| panic!("no asset URL in {script}"));
    assert_eq!(http(d.http, "GET", kernel).unwrap().0, 200);
    b.wait_text("#timeline", "asset_served", |t| t.contains("asset_served"));
    assert_eq!(http(d.http, "GET", &format!("/config/{config}")).unwrap().0, 200);
    b.wait_text("#timeline", "config_served", |t| t.contains("config_served"));
    b.wait_text("#state", "ConfigServed", |t| t == "ConfigServed");
    assert_eq!(
        http(d.http, "POST", &format!("/callback/{callback}/installed"))
            .unwrap()
            .0,
        200
    );
    b.wait_text("#state", "Installed", |t| t == "Installed");
    let tl = b.text("#timeline");
    assert!(tl.contains("installed install reported by the machine"), "{tl}");
    let shot = b.screenshot("dashboard-timeline.png");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    b.click("#reimage");
    b.wait_text("#state", "ReimageRequested", |t| t == "ReimageRequested");
    assert!(b.text("#notice").contains("Re-image requested"));
    assert!(b.text("#timeline").contains("reimage_requested"));
    b.screenshot("dashboard-reimaged.png");
    // The API agrees, and the next network boot installs again.
    let reader = d.token("read-only");
    let (_, m) = d.api_get(&format!("/api/v1/machines/{MAC}"), Some(&reader));
    assert!(m.contains("\"state\":\"ReimageRequested\""), "{m}");
    let (_, again) = http(d.http, "GET", efi).unwrap();
    assert!(String::from_utf8_lossy(&again).contains("kernel"));

    // Clusters page renders; a read-only session gets no re-image button.
    b.goto(&format!("{base}/ui/clusters"));
    assert!(b.source().contains("<h1>Clusters</h1>"));
    b.click("header form button"); // log out
    b.wait_for("#token");
    b.type_into("#token", &reader);
    b.click("#login");
    b.wait_text("#machines", "the machine table", |t| t.contains(MAC));
    b.goto(&format!("{base}/ui/machines/{MAC}"));
    assert!(
        b.find("#state").is_some() && b.find("#reimage").is_none(),
        "read-only sees no re-image"
    );
}

/// The cluster supervisor's marks appear live: the machine page is open while the
/// Talos nodes (fake apids) come up and answer `Version` over mTLS.
#[test]
fn dashboard_shows_talos_nodes_marked_installed_live() {
    let Some(rig) = Rig::booting("{ wait_nodes_secs: 120, hand_off_secs: 120 }") else {
        return;
    };
    let node = common::BIOS_MAC;
    {
        use provisioner_core::inventory::Inventory;
        let inv =
            provisioner::store::RedbInventory::open(&rig.tmp.path().join("state/inventory.redb")).unwrap();
        let m = provisioner_core::model::Machine::discovered(
            node.parse().unwrap(),
            time::OffsetDateTime::now_utc(),
        );
        inv.put(&m).unwrap();
    }
    let d = Daemon::start(&rig.cfg);
    let admin = d.token("admin");
    let base = d.api_url();
    let b = Driver::start();
    b.goto(&format!("{base}/ui/machines"));
    b.type_into("#token", &admin);
    b.click("#login");
    b.wait_text("#machines", "the machine table", |t| t.contains(node));
    b.goto(&format!("{base}/ui/machines/{node}"));
    assert_eq!(b.text("#state"), "Discovered");
    b.wait_text("#live", "the event stream", |t| t == "live");
    rig.lab.open();
    b.wait_text("#timeline", "the installed mark", |t| {
        t.contains("installed 127.0.0.11 answered Talos Version over mTLS")
    });
    b.wait_text("#state", "Installed", |t| t == "Installed");
    b.screenshot("dashboard-talos-installed.png");
}
