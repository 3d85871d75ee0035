//! `provisioner token create|ls|revoke`: local commands on the appliance host that
//! write the token store directly (it is not held open by the daemon, so this works
//! while it runs). The token is printed once and never stored.

use anyhow::Context;
use clap::Subcommand;
use provisioner_core::apitoken::{ApiTokenRecord, ApiTokenStore, Role};
use rand::RngCore;
use time::OffsetDateTime;

use crate::cmd::cli::ConfigArgs;
use crate::service::token_key;
use crate::store::RedbApiTokens;

/// `provisioner token …`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it once.
    Create {
        /// `admin` (everything) or `read-only` (reads and /metrics).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A note: who or what uses it.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (ids, roles, notes; never the tokens).
    Ls,
    /// Revoke a token by id.
    Revoke {
        /// The id shown by `token ls`.
        id: String,
    },
}

fn parse_role(s: &str) -> anyhow::Result<Role> {
    s.parse().map_err(anyhow::Error::msg)
}

/// A new token: `pvt_` and 256 random bits in hex (the prefix lets secret scanners
/// recognise leaked tokens), and a public id.
pub fn new_token() -> (String, String) {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    let mut id = [0u8; 6];
    rand::rng().fill_bytes(&mut id);
    (format!("pvt_{}", hex::encode(b)), hex::encode(id))
}

/// Creates a token in `store`; returns (token, record).
pub fn create(store: &dyn ApiTokenStore, role: Role, name: &str) -> anyhow::Result<(String, ApiTokenRecord)> {
    let (token, id) = new_token();
    let rec = ApiTokenRecord {
        id,
        role,
        name: name.to_string(),
        created_at: OffsetDateTime::now_utc(),
    };
    store.insert(&token_key(&token), &rec)?;
    Ok((token, rec))
}

/// Runs a token subcommand.
pub fn run(cmd: &TokenCmd, cfg: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = crate::cmd::commands::load_config(cfg)?;
    std::fs::create_dir_all(&cfg.state_dir).with_context(|| cfg.state_dir.display().to_string())?;
    let store = RedbApiTokens::new(&cfg.api_tokens_path());
    let result = run_on(cmd, &store);
    hand_over(&cfg.state_dir, &cfg.api_tokens_path());
    result
}

/// Operators run `token` as root; the packaged daemon runs as the owner of the state
/// directory and must still open the store, so the files go to that owner, 0600
/// (as `crate::sys::state::adopt` does for `import` and `restore`).
fn hand_over(state_dir: &std::path::Path, store: &std::path::Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(top) = std::fs::metadata(state_dir) else {
        return;
    };
    let mut sidecar = store.as_os_str().to_owned();
    sidecar.push(".gen");
    for f in [store.to_path_buf(), std::path::PathBuf::from(sidecar)] {
        let Ok(meta) = std::fs::metadata(&f) else {
            continue;
        };
        let _ = std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600));
        if nix::unistd::geteuid().is_root()
            && (meta.uid(), meta.gid()) != (top.uid(), top.gid())
            && let Err(e) = std::os::unix::fs::chown(&f, Some(top.uid()), Some(top.gid()))
        {
            eprintln!(
                "warning: cannot give {} to the state directory's owner: {e}",
                f.display()
            );
        }
    }
}

fn run_on(cmd: &TokenCmd, store: &RedbApiTokens) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { role, name } => {
            let (token, rec) = create(store, *role, name)?;
            eprintln!("created {} token {} (shown once; store it now)", rec.role, rec.id);
            println!("{token}");
        }
        TokenCmd::Ls => {
            for r in store.list()? {
                let at = r
                    .created_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                println!("{}  {:<9}  {at}  {}", r.id, r.role.to_string(), r.name);
            }
        }
        TokenCmd::Revoke { id } => {
            if store.revoke(id)? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no token {id}");
            }
        }
    }
    Ok(())
}
