//! Read-only TFTP as pure functions: [`path`] checks a requested file name (shared by
//! the TFTP server and the plain-HTTP boot path's `/bin/`).

pub mod path;
