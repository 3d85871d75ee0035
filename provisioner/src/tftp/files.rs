//! The files the appliance serves over TFTP: iPXE binaries from `tftp_root` (Debian's
//! `ipxe` package) and a generated `autoexec.ipxe`, which iPXE probes before its own
//! DHCP (boot-protocols.md §6.3) and which must never be a 404.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{Refusal, TftpFiles};

/// Called with (client, path, bytes) when a transfer completes.
pub type CompletionHook = Arc<dyn Fn(SocketAddr, &str, u64) + Send + Sync>;

/// A cached file: modification time, length, bytes.
type Cached = (SystemTime, u64, Arc<[u8]>);

/// Files from a directory plus `autoexec.ipxe`, cached in memory by modification
/// time (a boot storm reads each binary once).
pub struct BootFiles {
    root: PathBuf,
    autoexec: Arc<[u8]>,
    cache: Mutex<HashMap<PathBuf, Cached>>,
    on_complete: Option<CompletionHook>,
}

impl std::fmt::Debug for BootFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootFiles")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Files larger than this are not served (TFTP is for boot loaders; kernels go over HTTP).
const MAX_FILE: u64 = 256 * 1024 * 1024;

impl BootFiles {
    /// Serves `root` and the given first-stage script as `autoexec.ipxe`.
    pub fn new(root: &Path, autoexec_script: String, on_complete: Option<CompletionHook>) -> Self {
        Self {
            root: root.to_path_buf(),
            autoexec: Arc::from(autoexec_script.into_bytes()),
            cache: Mutex::new(HashMap::new()),
            on_complete,
        }
    }

    fn read(&self, rel: &str) -> Result<Arc<[u8]>, Refusal> {
        let path = self.root.join(rel);
        // Symlinks inside the root must not lead outside it.
        let real = path.canonicalize().map_err(|_| Refusal::NotFound)?;
        let root = self.root.canonicalize().map_err(|_| Refusal::NotFound)?;
        if !real.starts_with(&root) {
            return Err(Refusal::Denied("path leaves the TFTP root"));
        }
        let meta = std::fs::metadata(&real).map_err(|_| Refusal::NotFound)?;
        if !meta.is_file() {
            return Err(Refusal::NotFound);
        }
        if meta.len() > MAX_FILE {
            return Err(Refusal::Denied("file too large for TFTP"));
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if let Ok(cache) = self.cache.lock()
            && let Some((t, len, bytes)) = cache.get(&real)
            && *t == mtime
            && *len == meta.len()
        {
            return Ok(bytes.clone());
        }
        let bytes: Arc<[u8]> = Arc::from(std::fs::read(&real).map_err(|_| Refusal::NotFound)?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(real, (mtime, meta.len(), bytes.clone()));
        }
        Ok(bytes)
    }
}

impl TftpFiles for BootFiles {
    fn open(&self, _client: SocketAddr, path: &str) -> Result<Arc<[u8]>, Refusal> {
        if path == "autoexec.ipxe" {
            return Ok(self.autoexec.clone());
        }
        self.read(path)
    }

    fn completed(&self, client: SocketAddr, path: &str, bytes: u64) {
        if let Some(hook) = &self.on_complete {
            hook(client, path, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_files_autoexec_and_refuses_symlink_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ipxe.efi"), b"EFI").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let f = BootFiles::new(&root, "#!ipxe\n".into(), None);
        let c: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        assert_eq!(&*f.open(c, "ipxe.efi").unwrap(), b"EFI");
        assert_eq!(&*f.open(c, "autoexec.ipxe").unwrap(), b"#!ipxe\n");
        assert_eq!(f.open(c, "missing").unwrap_err(), Refusal::NotFound);
        assert!(matches!(f.open(c, "link").unwrap_err(), Refusal::Denied(_)));
    }
}
