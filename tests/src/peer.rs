//! A peer on the lab bridge: a namespace of its own whose `eth0` is one end of a
//! veth pair, the other end enslaved to the lab's `br0`. DHCP clients (busybox
//! `udhcpc`, ISC `dhclient`), a test relay agent or a second DHCP server run
//! there, so they see the appliance exactly as a machine on the segment would.

use crate::lab::remove_netns;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::lab::{Lab, LabProcess};
use crate::run;

/// A peer namespace; deleted (with everything in it) on drop.
#[derive(Debug)]
pub struct Peer {
    ns: String,
    mac: String,
}

impl Lab {
    /// Adds peer `idx` (1..=99) with `eth0` at `mac`, and `ip` (`a.b.c.d/len`)
    /// on it if given.
    pub fn peer(&self, idx: u32, mac: &str, ip: Option<&str>) -> Result<Peer> {
        let ns = format!("{}-p{idx}", self.netns());
        remove_netns(&ns);
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        let peer = Peer {
            ns,
            mac: mac.to_owned(),
        };
        let lab_ip = |args: &[&str]| run(Command::new("ip").args(["-n", self.netns()]).args(args));
        let host_end = format!("vp{idx}");
        lab_ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &peer.ns,
        ])?;
        lab_ip(&["link", "set", &host_end, "master", "br0"])?;
        lab_ip(&["link", "set", &host_end, "up"])?;
        let p = |args: &[&str]| run(Command::new("ip").args(["-n", &peer.ns]).args(args));
        p(&["link", "set", "lo", "up"])?;
        p(&["link", "set", "eth0", "address", mac])?;
        if let Some(ip) = ip {
            p(&["addr", "add", ip, "dev", "eth0"])?;
        }
        p(&["link", "set", "eth0", "up"])?;
        if ip.is_some() {
            // Without a route, sending to 255.255.255.255 fails with ENETUNREACH.
            p(&["route", "add", "default", "dev", "eth0"])?;
        }
        Ok(peer)
    }
}

impl Peer {
    /// The namespace name.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// The MAC of `eth0`.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// A command that runs `args` inside the peer namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c
    }

    /// Runs `args` in the peer to completion; stdout, or an error with stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        run(&mut self.command(args))
    }

    /// Starts `args` in the peer, output appended to `log`; SIGKILLed on drop.
    pub fn spawn(&self, lab: &Lab, args: &[&str], log: &Path) -> Result<LabProcess> {
        let name = args.first().copied().unwrap_or("?");
        lab.spawn_command(self.command(args), name, log)
            .with_context(|| format!("in peer {}", self.ns))
    }

    /// The IPv4 addresses on `eth0` (`a.b.c.d/len`).
    pub fn addresses(&self) -> Result<Vec<String>> {
        let out = self.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
            .map(str::to_owned)
            .collect())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        remove_netns(&self.ns);
    }
}
