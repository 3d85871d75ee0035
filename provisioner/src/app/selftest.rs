//! The report `provisioner serve --dry-run` prints: what the appliance would serve,
//! gathered while `app` does its real start-up (config, catalog, store, sockets).
//! Packaging tests and operators run it before enabling the service.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use provisioner_core::catalog::Catalog;
use provisioner_core::inventory::{Inventory, InventoryError};

use crate::config::Config;

/// iPXE binaries the TFTP server hands to firmware (Debian's `ipxe` package names).
const IPXE_FILES: [&str; 3] = ["undionly.kpxe", "snponly.efi", "ipxe.efi"];

/// Collected facts; printed by [`Report::finish`].
#[derive(Debug)]
pub struct Report {
    state_dir: PathBuf,
    cache_dir: PathBuf,
    tftp_root: PathBuf,
    catalog: (usize, usize, usize),
    listeners: Vec<(&'static str, SocketAddr)>,
}

impl Report {
    /// Starts a report for this configuration and catalog.
    pub fn new(cfg: &Config, catalog: &Catalog) -> Self {
        Self {
            state_dir: cfg.state_dir.clone(),
            cache_dir: cfg.cache_dir(),
            tftp_root: cfg.tftp_root.clone(),
            catalog: (catalog.images.len(), catalog.profiles.len(), catalog.groups.len()),
            listeners: Vec::new(),
        }
    }

    /// Records a bound listener.
    pub fn listener(&mut self, what: &'static str, addr: SocketAddr) {
        self.listeners.push((what, addr));
    }

    /// The text printed on stdout: one `key: value` fact per line, so scripts can grep.
    pub fn finish(
        &self,
        server_ip: &IpAddr,
        base: &str,
        inventory: &dyn Inventory,
    ) -> Result<String, InventoryError> {
        let machines = inventory.list()?.len();
        let mut out = String::new();
        let (images, profiles, groups) = self.catalog;
        // Writing to a String cannot fail.
        let _ = writeln!(out, "dry-run: ok (every listener bound, store open)");
        let _ = writeln!(out, "server_ip: {server_ip}");
        let _ = writeln!(out, "boot_base_url: {base}");
        for (what, addr) in &self.listeners {
            let _ = writeln!(out, "listener: {what} {addr}");
        }
        let _ = writeln!(
            out,
            "catalog: {images} image(s), {profiles} profile(s), {groups} group(s)"
        );
        let _ = writeln!(
            out,
            "inventory: {machines} machine(s) in {}",
            self.state_dir.display()
        );
        let _ = writeln!(out, "image_cache: {}", self.cache_dir.display());
        for f in IPXE_FILES {
            let p = self.tftp_root.join(f);
            let state = if p.is_file() { "present" } else { "MISSING" };
            let _ = writeln!(out, "ipxe: {} {state}", p.display());
        }
        Ok(out)
    }
}
