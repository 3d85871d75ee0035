//! The command line: clap types ([`cli`]), the one-shot subcommands and the API client.

mod check;
pub mod cli;
pub mod client;
pub mod commands;
pub mod images;
pub mod k0s;
pub mod talos;
