//! Plain peer servers run inside a lab: dnsmasq (the external DHCP server
//! the appliance's snippet is written for, and the self-test's TFTP) and
//! busybox httpd (the self-test's HTTP server).

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::lab::{Lab, LabProcess};
use crate::wait_for;

impl Lab {
    /// Runs dnsmasq as the lab's DHCP server: DNS off (`port=0`), no TFTP,
    /// bound to `br0`, a range in the lab subnet, `no-ping` (otherwise every
    /// offer waits for a ping timeout), `log-dhcp`, a leasefile in the lab
    /// dir, then `extra_conf_lines` (e.g. `provisioner dhcp-snippet` output,
    /// or `enable-tftp` for a peer setup). Returns once dnsmasq has started.
    pub fn dnsmasq(&self, extra_conf_lines: &str) -> Result<LabProcess> {
        let p = self.subnet_prefix();
        let dir = self.dir();
        let conf = format!(
            "# written by provisioner-e2e for lab {name}\n\
             port=0\n\
             interface=br0\n\
             bind-interfaces\n\
             dhcp-range={p}.100,{p}.199,255.255.255.0,1h\n\
             dhcp-leasefile={leases}\n\
             dhcp-authoritative\n\
             no-ping\n\
             log-dhcp\n\
             log-facility=-\n\
             no-resolv\n\
             no-hosts\n\
             user=root\n\
             pid-file={pid}\n\
             # caller's lines\n{extra_conf_lines}\n",
            name = self.name(),
            leases = dir.join("dnsmasq.leases").display(),
            pid = dir.join("dnsmasq.pid").display(),
        );
        let conf_path = dir.join("dnsmasq.conf");
        fs::write(&conf_path, conf)?;
        let conf_arg = format!("--conf-file={}", conf_path.display());
        let mut proc = self.spawn(
            &["dnsmasq", "--keep-in-foreground", &conf_arg],
            &dir.join("dnsmasq.log"),
        )?;
        proc.wait_for_log("DHCP, IP range", Duration::from_secs(15))
            .context("dnsmasq did not start")?;
        Ok(proc)
    }

    /// Serves `root` over HTTP at `http://<lab ip>:<port>/` with busybox
    /// httpd (a plain peer for self-tests).
    pub fn httpd(&self, root: &Path, port: u16) -> Result<LabProcess> {
        let listen = format!("{}:{port}", self.ip());
        let root_s = root.to_string_lossy().into_owned();
        let proc = self.spawn(
            &["busybox", "httpd", "-f", "-vv", "-p", &listen, "-h", &root_s],
            &self.dir().join(format!("httpd-{port}.log")),
        )?;
        // busybox httpd logs nothing on start: wait for its socket.
        self.wait_tcp_listening(port, Duration::from_secs(10))?;
        Ok(proc)
    }

    /// Waits until something in the namespace listens on TCP `port` (`ss`).
    pub fn wait_tcp_listening(&self, port: u16, timeout: Duration) -> Result<()> {
        let filter = format!("sport = :{port}");
        wait_for(timeout, &format!("a TCP listener on port {port}"), || {
            let out = self.exec(&["ss", "-Hltn", &filter])?;
            Ok((!out.trim().is_empty()).then_some(()))
        })
    }
}
