//! The QEMU lab tests in one binary: one module per area (each a former
//! `tests/tests/<name>.rs` binary), the DHCP helpers in `common` compiled once.
//! Needs root; build the appliance and the agent first (see tests/README.md).
//!
//! Run one area or one test (names are `<module>::<test>`):
//!   cargo test -p provisioner-e2e --test lab boot_firmware::
//!   cargo test -p provisioner-e2e --test lab -- --exact lab_selftest::seabios_ipxe_boots_payload_from_peers
//!
//! Under tests/run two tests run at a time in this one process, from any module: VMs
//! queue for the machine-wide VM slots (`Lab::boot`; a test holds one slot at a time,
//! so two tests cannot deadlock waiting for each other's), every lab claims its own
//! `10.77.<n>.0/24` by lock, and the built payload is shared (`payload()`).

mod common;

mod adopt_lab;
mod boot_firmware;
mod bundle_lab;
mod config_release_lab;
mod dhcp_clients;
mod dhcp_durability;
mod dhcp_firmware;
mod dhcp_pool;
mod http_flood_boot;
mod k0s_flatcar_boot;
mod lab_selftest;
mod talos_boot;
mod talos_sim_lab;
