//! Read-only TFTP as pure functions: [`packet`] parses and builds datagrams (RFC 1350,
//! RFC 2347 options), [`session`] negotiates blksize/timeout/tsize/windowsize (RFC
//! 2348, 2349, 7440) and tracks which blocks a transfer sends next, [`path`] checks a
//! requested file name (shared by the TFTP server and the plain-HTTP boot path's
//! `/bin/`). The daemon's `tftp` module owns sockets, timers, caps and the file cache.

pub mod packet;
pub mod path;
pub mod session;

#[cfg(test)]
mod tests;
