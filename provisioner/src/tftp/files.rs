//! The files the appliance serves over TFTP: iPXE binaries from `tftp_root` (Debian's
//! `ipxe` package) and a generated `autoexec.ipxe`, which iPXE probes before its own
//! DHCP (boot-protocols.md §6.3) and which must never be a 404.
//!
//! Files are kept in a cache bounded by bytes (least recently used goes first), read
//! once straight into the buffer they are served from (`Vec` → `Bytes` moves, it does
//! not copy), and reloaded when the file on disk changes: device, inode, size, mtime or
//! ctime differ (a replaced binary gets a new inode; an in-place rewrite a new mtime and
//! ctime, which `touch -d` cannot set back). Files larger than the whole cache are not
//! cached; their transfers read each block with `pread`.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

use super::{Refusal, Source, TftpFiles};

/// Called with (client, path, bytes) when a transfer completes.
pub type CompletionHook = Arc<dyn Fn(SocketAddr, &str, u64) + Send + Sync>;

/// Files larger than this are not served (TFTP is for boot loaders; kernels go over HTTP).
const MAX_FILE: u64 = 256 * 1024 * 1024;

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

struct Entry {
    version: Version,
    bytes: Bytes,
    last_used: u64,
}

/// A byte-bounded LRU of file contents. Eviction scans for the oldest entry: the
/// cache holds a handful of boot binaries, so a scan is cheaper than a linked list.
struct Lru {
    max_bytes: u64,
    used: u64,
    clock: u64,
    entries: HashMap<PathBuf, Entry>,
}

impl Lru {
    fn get(&mut self, path: &Path, version: Version) -> Option<Bytes> {
        self.clock += 1;
        let e = self.entries.get_mut(path)?;
        if e.version != version {
            return None;
        }
        e.last_used = self.clock;
        Some(e.bytes.clone())
    }

    fn insert(&mut self, path: PathBuf, version: Version, bytes: Bytes) {
        let len = bytes.len() as u64;
        if let Some(old) = self.entries.remove(&path) {
            self.used -= old.bytes.len() as u64;
        }
        while self.used + len > self.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.used -= e.bytes.len() as u64;
                metrics::counter!("provisioner_tftp_cache_evictions_total").increment(1);
            }
        }
        self.clock += 1;
        self.used += len;
        self.entries.insert(
            path,
            Entry {
                version,
                bytes,
                last_used: self.clock,
            },
        );
        metrics::gauge!("provisioner_tftp_cache_bytes").set(self.used as f64);
    }
}

/// Files from a directory plus `autoexec.ipxe`, through the byte-bounded cache.
pub struct BootFiles {
    root: PathBuf,
    canonical_root: OnceLock<PathBuf>,
    autoexec: Bytes,
    cache: Mutex<Lru>,
    on_complete: Option<CompletionHook>,
}

impl std::fmt::Debug for BootFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootFiles")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl BootFiles {
    /// Serves `root` and the given first-stage script as `autoexec.ipxe`, caching at
    /// most `cache_max_bytes` of file contents.
    pub fn new(
        root: &Path,
        autoexec_script: String,
        cache_max_bytes: u64,
        on_complete: Option<CompletionHook>,
    ) -> Self {
        Self {
            root: root.to_path_buf(),
            canonical_root: OnceLock::new(),
            autoexec: Bytes::from(autoexec_script.into_bytes()),
            cache: Mutex::new(Lru {
                max_bytes: cache_max_bytes,
                used: 0,
                clock: 0,
                entries: HashMap::new(),
            }),
            on_complete,
        }
    }

    /// Bytes of file contents the cache holds now.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.lock().map(|c| c.used).unwrap_or(0)
    }

    fn root(&self) -> Result<&Path, Refusal> {
        if let Some(r) = self.canonical_root.get() {
            return Ok(r);
        }
        let r = self.root.canonicalize().map_err(|_| Refusal::NotFound)?;
        Ok(self.canonical_root.get_or_init(|| r))
    }

    fn read(&self, rel: &str) -> Result<Source, Refusal> {
        // Symlinks inside the root must not lead outside it.
        let real = self
            .root
            .join(rel)
            .canonicalize()
            .map_err(|_| Refusal::NotFound)?;
        if !real.starts_with(self.root()?) {
            return Err(Refusal::Denied("path leaves the TFTP root"));
        }
        let meta = std::fs::metadata(&real).map_err(|_| Refusal::NotFound)?;
        if !meta.is_file() {
            return Err(Refusal::NotFound);
        }
        if meta.len() > MAX_FILE {
            return Err(Refusal::Denied("file too large for TFTP"));
        }
        let version = Version::of(&meta);
        if let Ok(mut cache) = self.cache.lock()
            && let Some(bytes) = cache.get(&real, version)
        {
            return Ok(Source::Memory(bytes));
        }
        let mut file = std::fs::File::open(&real).map_err(|_| Refusal::NotFound)?;
        // What was opened may be newer than what was stat'ed: key the entry by the
        // open file's own metadata.
        let meta = file.metadata().map_err(|_| Refusal::NotFound)?;
        let version = Version::of(&meta);
        let max = self.cache.lock().map(|c| c.max_bytes).unwrap_or(0);
        if meta.len() > max {
            return Ok(Source::File {
                file,
                len: meta.len(),
            });
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(meta.len())
            .read_to_end(&mut buf)
            .map_err(|_| Refusal::NotFound)?;
        let bytes = Bytes::from(buf);
        if bytes.len() as u64 == meta.len()
            && let Ok(mut cache) = self.cache.lock()
        {
            cache.insert(real, version, bytes.clone());
        }
        Ok(Source::Memory(bytes))
    }
}

impl TftpFiles for BootFiles {
    fn open(&self, _client: SocketAddr, path: &str) -> Result<Source, Refusal> {
        if path == "autoexec.ipxe" {
            return Ok(Source::Memory(self.autoexec.clone()));
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

    const C: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1000);

    fn memory(s: Source) -> Bytes {
        match s {
            Source::Memory(b) => b,
            Source::File { .. } => panic!("expected a cached file"),
        }
    }

    #[test]
    fn serves_files_autoexec_and_refuses_symlink_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ipxe.efi"), b"EFI").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let f = BootFiles::new(&root, "#!ipxe\n".into(), 1 << 20, None);
        assert_eq!(&memory(f.open(C, "ipxe.efi").unwrap())[..], b"EFI");
        assert_eq!(&memory(f.open(C, "autoexec.ipxe").unwrap())[..], b"#!ipxe\n");
        assert_eq!(f.open(C, "missing").unwrap_err(), Refusal::NotFound);
        assert!(matches!(f.open(C, "link").unwrap_err(), Refusal::Denied(_)));
    }

    #[test]
    fn repeated_opens_share_one_buffer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 4096]).unwrap();
        let f = BootFiles::new(dir.path(), String::new(), 1 << 20, None);
        let one = memory(f.open(C, "a").unwrap());
        let two = memory(f.open(C, "a").unwrap());
        assert_eq!(
            one.as_ptr(),
            two.as_ptr(),
            "served from the cached bytes, not a copy"
        );
        assert_eq!(f.cached_bytes(), 4096);
    }

    #[test]
    fn cache_evicts_least_recently_used_under_its_byte_cap() {
        let dir = tempfile::tempdir().unwrap();
        for (name, n) in [("a", 400), ("b", 400), ("c", 400)] {
            std::fs::write(dir.path().join(name), vec![n as u8; n]).unwrap();
        }
        let f = BootFiles::new(dir.path(), String::new(), 1000, None);
        let a = memory(f.open(C, "a").unwrap());
        let _ = f.open(C, "b").unwrap();
        assert_eq!(
            memory(f.open(C, "a").unwrap()).as_ptr(),
            a.as_ptr(),
            "a is used again"
        );
        let _ = f.open(C, "c").unwrap();
        assert_eq!(f.cached_bytes(), 800, "b, the least recently used, went");
        assert_eq!(memory(f.open(C, "a").unwrap()).as_ptr(), a.as_ptr(), "a stayed");
        // A file larger than the whole cache is read per block, never cached.
        std::fs::write(dir.path().join("big"), vec![0u8; 1001]).unwrap();
        match f.open(C, "big").unwrap() {
            Source::File { len, .. } => assert_eq!(len, 1001),
            Source::Memory(_) => panic!("a file over the cap must not be held in memory"),
        }
        assert!(f.cached_bytes() <= 1000);
    }

    #[test]
    fn cache_reloads_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("snp.efi");
        std::fs::write(&p, b"version-1").unwrap();
        let f = BootFiles::new(dir.path(), String::new(), 1 << 20, None);
        assert_eq!(&memory(f.open(C, "snp.efi").unwrap())[..], b"version-1");
        // Same size, rewritten in place: mtime/ctime change.
        std::fs::write(&p, b"version-2").unwrap();
        assert_eq!(&memory(f.open(C, "snp.efi").unwrap())[..], b"version-2");
        // Replaced by rename (new inode), as package upgrades do.
        let tmp = dir.path().join("snp.tmp");
        std::fs::write(&tmp, b"version-3").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(&memory(f.open(C, "snp.efi").unwrap())[..], b"version-3");
        assert_eq!(f.cached_bytes(), 9, "the old versions left the cache");
    }
}
