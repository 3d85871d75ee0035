//! Golden tests: rendered iPXE scripts compared as exact text. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p provisioner --test integration golden::` and review the diff.

use crate::common;

use std::path::PathBuf;

use provisioner_core::boot::{BootRequest, Booter, CatalogBooter, UnknownPolicy};
use provisioner_core::catalog;
use provisioner_core::model::{Arch, MacAddr, Machine, MachineState};
use provisioner_core::render::{self, BootUrls};

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(got, want, "{name} differs from its golden file");
}

fn urls() -> BootUrls {
    BootUrls {
        base: common::BASE.into(),
        config: format!("{}/config/TOKEN-C", common::BASE),
        callback: format!("{}/callback/TOKEN-I/installed", common::BASE),
    }
}

fn decide(mac: &str, arch: Arch, machine: Option<&Machine>) -> (MacAddr, String) {
    let dir = tempfile::tempdir().unwrap();
    common::write_catalog(dir.path());
    let cat = catalog::load(&dir.path().join("images"), &dir.path().join("profiles")).unwrap();
    let booter = CatalogBooter {
        catalog: cat,
        unknown: UnknownPolicy::Record,
    };
    let mac: MacAddr = mac.parse().unwrap();
    let req = BootRequest {
        mac: Some(mac),
        arch,
        ..Default::default()
    };
    let d = booter.decide(&req, machine);
    (mac, render::ipxe::machine_script(mac, &d, &urls()))
}

#[test]
fn first_stage() {
    check("first-stage.ipxe", &render::ipxe::first_stage(common::BASE));
}

#[test]
fn bios_install() {
    check(
        "install-bios.ipxe",
        &decide(common::BIOS_MAC, Arch::X86Bios, None).1,
    );
}

#[test]
fn uefi_install() {
    check(
        "install-uefi.ipxe",
        &decide(common::EFI_MAC, Arch::X86_64Efi, None).1,
    );
}

#[test]
fn unknown_machine() {
    check(
        "unknown.ipxe",
        &decide("52:54:00:99:99:99", Arch::X86_64Efi, None).1,
    );
}

#[test]
fn installed_machine() {
    let mac: MacAddr = common::EFI_MAC.parse().unwrap();
    let mut m = Machine::discovered(mac, time::OffsetDateTime::UNIX_EPOCH);
    m.state = MachineState::Installed;
    check(
        "installed.ipxe",
        &decide(common::EFI_MAC, Arch::X86_64Efi, Some(&m)).1,
    );
}
