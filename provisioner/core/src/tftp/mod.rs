//! Read-only TFTP as pure functions: [`packet`] parses and builds datagrams (RFC 1350,
//! RFC 2347 options), [`session`] negotiates blksize/timeout/tsize/windowsize (RFC
//! 2348, 2349, 7440) and tracks which blocks a transfer sends next. The daemon's
//! `tftp` module owns sockets, timers, caps and the file cache.

pub mod packet;
pub mod session;

#[cfg(test)]
mod tests;
