//! The command line: clap types ([`cli`]), the one-shot subcommands and the API client.

pub mod bundle;
mod check;
pub mod cli;
pub mod client;
pub mod commands;
pub mod completions;
pub mod doctor;
pub mod images;
pub mod k0s;
pub mod needs;
pub mod talos;
