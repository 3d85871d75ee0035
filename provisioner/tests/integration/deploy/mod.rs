//! Helpers for the packaging test: the Debian 12 root, booting it with systemd, and
//! the fakes the installed service hands a cluster off to.

pub mod boot;
pub mod chroot;
pub mod handoff;
