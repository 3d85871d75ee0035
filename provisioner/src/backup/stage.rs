//! Restoring without a half-restored window: the new state is built in a sibling of
//! the state directory (`<parent>/.<name>.restoring`: a copy of the current state, the
//! backup written over it, the inventory imported), then the two directories are
//! exchanged with one `renameat2(RENAME_EXCHANGE)` (Linux ≥ 3.15; ext4, xfs, btrfs,
//! tmpfs, ZFS ≥ 2.2), and the old state, now at the sibling's name, is removed. A
//! crash before the exchange leaves the old state as it was (the sibling is removed
//! by the next restore); after it, the restored state is in place.
//!
//! Files under the image cache (when it is inside the state directory) and under
//! `backups/` are hard-linked into the sibling, not copied: restore only ever replaces
//! files (write to a temporary name, rename), so the old inodes are never written.
//! Everything else is copied, the inventory in particular (the import writes it).

use std::path::{Path, PathBuf};

use super::{BackupError, io_err};

/// Environment variable that makes a restore kill itself (SIGKILL) at a named point:
/// `restore:writing` (after the first file is written into the sibling),
/// `restore:staged` (everything staged, not swapped), `restore:swapped` (swapped,
/// the old state not yet removed). Used only by the tests that prove a restore
/// killed half-way leaves a working state.
pub const CRASH_AT_ENV: &str = "PROVISIONER_TEST_CRASH_AT";

/// Dies like `kill -9` if [`CRASH_AT_ENV`] names `point`.
pub(super) fn failpoint(point: &str) {
    if std::env::var(CRASH_AT_ENV).is_ok_and(|v| v == point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// A sibling directory being filled; removed on drop unless swapped in.
#[derive(Debug)]
pub(super) struct Staging {
    /// The sibling.
    pub dir: PathBuf,
    /// The state directory it replaces (symlinks resolved).
    pub target: PathBuf,
    done: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    io_err(path)
}

impl Staging {
    /// Creates the sibling of `state_dir` holding a copy of it (removing what an
    /// interrupted restore left). `linked` are subdirectories (relative) whose files
    /// are hard-linked instead of copied.
    pub(super) fn begin(state_dir: &Path, linked: &[PathBuf]) -> Result<Self, BackupError> {
        crate::sys::state::ensure_dir(state_dir).map_err(io(state_dir))?;
        let target = std::fs::canonicalize(state_dir).map_err(io(state_dir))?;
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(BackupError::Format(format!(
                "{} has no parent directory to stage a restore in",
                target.display()
            )));
        };
        let parent = parent.to_path_buf();
        let dir = parent.join(format!(".{}.restoring", name.to_string_lossy()));
        if dir.exists() {
            tracing::warn!(dir = %dir.display(), "removing what an interrupted restore left");
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        let staging = Self {
            dir,
            target,
            done: false,
        };
        crate::sys::state::ensure_dir(&staging.dir).map_err(|e| BackupError::Io {
            path: staging.dir.clone(),
            source: std::io::Error::new(
                e.kind(),
                format!(
                    "{e} (a restore stages next to the state directory: it needs write access to {})",
                    parent.display()
                ),
            ),
        })?;
        copy_tree(&staging.target, &staging.dir, Path::new(""), linked)?;
        Ok(staging)
    }

    /// Where `path` (inside the target) is in the sibling.
    pub(super) fn map(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.target).ok().map(|rel| self.dir.join(rel))
    }

    /// Gives the sibling the target's owner and modes, exchanges the two, and
    /// removes the old state.
    pub(super) fn commit(mut self) -> Result<(), BackupError> {
        let owner = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&self.target).map_err(io(&self.target))?;
            (m.uid(), m.gid())
        };
        crate::sys::state::adopt_as(&self.dir, owner).map_err(io(&self.dir))?;
        sync_dir(&self.dir)?;
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        renameat2(
            AT_FDCWD,
            &self.dir,
            AT_FDCWD,
            &self.target,
            RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| BackupError::Io {
            path: self.target.clone(),
            source: std::io::Error::other(format!(
                "cannot exchange it with {} ({e}); nothing was changed. Is the state directory a \
                 mount point, or on a file system without RENAME_EXCHANGE? Restore into an empty \
                 directory next to it (PROVISIONER_STATE_DIR=…) and point state_dir there",
                self.dir.display()
            )),
        })?;
        self.done = true;
        if let Some(parent) = self.target.parent() {
            sync_dir(parent)?;
        }
        failpoint("restore:swapped");
        // The old state: the restore is complete without removing it (the next
        // restore would), but it holds old secrets and should not linger.
        std::fs::remove_dir_all(&self.dir).map_err(io(&self.dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Copies `from` into `to` (which exists); files under `linked` (relative to the
/// top) are hard-linked, falling back to a copy across file systems.
fn copy_tree(from: &Path, to: &Path, rel: &Path, linked: &[PathBuf]) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (src, dst, r) = (
            entry.path(),
            to.join(entry.file_name()),
            rel.join(entry.file_name()),
        );
        let meta = std::fs::symlink_metadata(&src).map_err(io(&src))?;
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(&src).map_err(io(&src))?;
            std::os::unix::fs::symlink(link, &dst).map_err(io(&dst))?;
        } else if meta.is_dir() {
            crate::sys::state::ensure_dir(&dst).map_err(io(&dst))?;
            copy_tree(&src, &dst, &r, linked)?;
        } else if meta.is_file() {
            let link = linked.iter().any(|l| r.starts_with(l)) && std::fs::hard_link(&src, &dst).is_ok();
            if !link {
                std::fs::copy(&src, &dst).map_err(io(&src))?;
            }
        }
    }
    Ok(())
}
