//! Ownership and permissions of the state directory (inventory, secrets, image cache).
//!
//! The packaged daemon runs as the `provisioner` system user, but operators run the
//! one-shot commands (`import`, `restore`) as root. Files root creates there would be
//! unreadable to the daemon, so after a write the tree is handed to the owner of the
//! state directory. Everything below it is owner-only: directories 0700, files 0600.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` if needed and makes it owner-only (0700).
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Makes everything under `state_dir` owner-only and, when running as root, owned
/// by the owner of `state_dir` (the daemon's user once the package created it).
/// Symlinks are left alone. Returns how many entries were changed.
pub fn adopt(state_dir: &Path) -> std::io::Result<usize> {
    let top = std::fs::metadata(state_dir)?;
    adopt_as(state_dir, (top.uid(), top.gid()))
}

/// As [`adopt`], handing the tree to `owner` (uid, gid) when running as root (a
/// restore's staging directory takes the owner of the state it replaces).
pub fn adopt_as(state_dir: &Path, owner: (u32, u32)) -> std::io::Result<usize> {
    let as_root = nix::unistd::geteuid().is_root();
    let mut changed = 0;
    let mut stack = vec![state_dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        let mut touched = false;
        if meta.mode() & 0o7777 != want {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want))?;
            touched = true;
        }
        if as_root && (meta.uid(), meta.gid()) != owner {
            std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1))?;
            touched = true;
        }
        changed += usize::from(touched);
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopt_makes_the_tree_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        ensure_dir(&state).unwrap();
        std::fs::create_dir_all(state.join("secrets/talos")).unwrap();
        std::fs::write(state.join("secrets/talos/a.age"), b"x").unwrap();
        std::fs::set_permissions(
            state.join("secrets/talos/a.age"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(adopt(&state).unwrap() >= 2);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("secrets/talos")), 0o700);
        assert_eq!(mode(&state.join("secrets/talos/a.age")), 0o600);
        assert_eq!(adopt(&state).unwrap(), 0, "second pass changes nothing");
    }
}
