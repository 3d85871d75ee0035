//! Helpers for the packaging test: the Debian 12 root and booting it with systemd.
#![allow(dead_code, unreachable_pub)]

pub mod boot;
pub mod chroot;
