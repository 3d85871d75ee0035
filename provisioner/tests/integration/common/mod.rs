//! Shared fixtures for the daemon's integration tests: a small catalog on disk, and
//! routers/services over an in-memory inventory.

pub mod api;
pub mod cli;
pub mod daemon;
pub mod fake_k0s;
pub mod fake_token;
pub mod live;
pub mod pki;
pub mod release;
pub mod serve_rig;
pub mod talos_lab;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use provisioner::http::boot::{BootState, router};
use provisioner::service::{BootService, ReleasePolicy};
use provisioner::testing::peer_facts::StaticFacts;
use provisioner_core::boot::{CatalogBooter, UnknownPolicy};
use provisioner_core::catalog;
use provisioner_core::inventory::{Inventory, MemInventory};

pub const BASE: &str = "http://10.0.0.1:8080";
pub const BIOS_MAC: &str = "52:54:00:00:00:01";
pub const EFI_MAC: &str = "52:54:00:00:00:02";

/// Writes images/, profiles/ and a cache with a 1 MiB kernel and a small initrd.
pub fn write_catalog(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    let profiles = dir.join("profiles");
    let cache = dir.join("cache/test-img");
    for d in [
        &images,
        &profiles.join("profiles"),
        &profiles.join("groups"),
        &cache,
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(
        images.join("test-img.yaml"),
        "id: test-img\nkernel: { file: vmlinuz }\ninitrds:\n  - file: initrd.gz\nargs: [console=ttyS0, panic=-1]\n",
    )
    .unwrap();
    std::fs::write(
        profiles.join("profiles/lab.yaml"),
        "id: lab\nimage: test-img\nconfig: plain\n",
    )
    .unwrap();
    std::fs::write(
        profiles.join("groups/bios.yaml"),
        format!("id: bios\nprofile: lab\nselector: {{ mac: \"{BIOS_MAC}\" }}\nmetadata: {{ hostname: node-bios }}\n"),
    )
    .unwrap();
    std::fs::write(
        profiles.join("groups/efi.yaml"),
        format!(
            "id: efi\nprofile: lab\nselector: {{ mac: \"{EFI_MAC}\" }}\nmetadata: {{ hostname: node-efi }}\n"
        ),
    )
    .unwrap();
    let kernel: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(cache.join("vmlinuz"), kernel).unwrap();
    std::fs::write(cache.join("initrd.gz"), b"initrd-bytes").unwrap();
    dir.to_path_buf()
}

/// The address a test machine talks from: `10.0.<5th octet>.<6th octet>` of its MAC.
pub fn peer_of(mac: &str) -> std::net::IpAddr {
    let m: provisioner_core::model::MacAddr = mac.parse().unwrap();
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, m.0[4], m.0[5]))
}

pub struct Rig {
    pub service: Arc<BootService>,
    /// The neighbour table the service's peer binding reads: a test says which
    /// machine talks from which address (`facts.neighbour_is(ip, mac)`).
    pub facts: Arc<StaticFacts>,
    pub inventory: Arc<dyn Inventory>,
    pub state: BootState,
    pub _dir: tempfile::TempDir,
}

pub fn rig(policy: UnknownPolicy) -> Rig {
    rig_on(policy, Arc::new(MemInventory::new()))
}

/// [`rig`] over the given inventory store.
pub fn rig_on(policy: UnknownPolicy, inventory: Arc<dyn Inventory>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    write_catalog(dir.path());
    let cat = catalog::load(&dir.path().join("images"), &dir.path().join("profiles")).unwrap();
    let images = Arc::new(cat.images.clone());
    let booter = Arc::new(CatalogBooter {
        catalog: cat,
        unknown: policy,
    });
    let facts = Arc::new(StaticFacts::default());
    let service = Arc::new(
        BootService::new(booter, inventory.clone(), BASE.into()).with_release(ReleasePolicy {
            facts: facts.clone(),
            ..Default::default()
        }),
    );
    let state = BootState {
        service: service.clone(),
        images,
        cache: provisioner::images::ImageCache::new(dir.path().join("cache")),
        ipxe_dir: dir.path().join("cache/test-img"),
        first_stage: provisioner_core::render::ipxe::first_stage(BASE).into(),
    };
    Rig {
        service,
        facts,
        inventory,
        state,
        _dir: dir,
    }
}

pub fn app(r: &Rig) -> axum::Router {
    router(r.state.clone())
}

/// Installs the one rustls crypto provider (aws-lc-rs) as the process default, once
/// per test binary (crates.md §4).
pub fn crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// `$PROVISIONER_FIXTURES` (default `<repo>/../shared/fixtures`), if present.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("PROVISIONER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    dir.is_dir().then_some(dir)
}

/// A fixture file, or `None` after printing a loud SKIPPED line naming it.
pub fn fixture(rel: &str) -> Option<PathBuf> {
    match fixtures().map(|d| d.join(rel)).filter(|p| p.is_file()) {
        Some(p) => Some(p),
        None => {
            println!("SKIPPED: fixture {rel} not found (set PROVISIONER_FIXTURES)");
            None
        }
    }
}
