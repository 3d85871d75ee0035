//! The test payload: Debian's kernel plus a busybox initramfs whose `/init`
//! (`lab/init.sh`) fetches the config URL from the kernel command line, calls
//! back, prints markers on the serial console and powers off.
//!
//! Built once and cached in `$PROVISIONER_LAB_CACHE` (default
//! `/var/tmp/provisioner-lab-cache`) under a directory named after a hash of
//! every input (kernel .deb, busybox binary, init scripts, builder version),
//! so a change to any input builds a new payload and nothing else does.
//! Concurrent test processes serialise on an exclusive file lock, and the
//! result appears under its final name only by an atomic rename.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::cpio::Archive;
use crate::run;

/// Bump when the layout of the initramfs changes in a way the inputs don't show.
const BUILDER_VERSION: &str = "payload-v1";
const INIT_SH: &str = include_str!("../lab/init.sh");
const UDHCPC_SCRIPT: &str = include_str!("../lab/udhcpc.script");
/// NIC modules copied into the initramfs. `/init` loads them in its own
/// (dependency) order; these are only the names to look for.
const MODULES: &[&str] = &[
    "e1000",
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Paths of a built payload.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The gzip'd newc initramfs (`initrd.gz`).
    pub initrd: PathBuf,
}

impl Payload {
    /// Copies `vmlinuz` and `initrd.gz` into `dir` (e.g. an image cache or a
    /// peer HTTP root), keeping their names: the `initrd=initrd.gz` kernel
    /// argument that EFI iPXE needs refers to that name.
    pub fn install_into(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)?;
        fs::copy(&self.kernel, dir.join("vmlinuz"))?;
        fs::copy(&self.initrd, dir.join("initrd.gz"))?;
        Ok(())
    }
}

/// Cache directory: `$PROVISIONER_LAB_CACHE` or `/var/tmp/provisioner-lab-cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("PROVISIONER_LAB_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| "/var/tmp/provisioner-lab-cache".into())
}

/// Returns the payload, building it on first use (per process and per cache).
pub fn payload() -> Result<Payload> {
    static CELL: OnceLock<std::result::Result<Payload, String>> = OnceLock::new();
    CELL.get_or_init(|| build_cached(&cache_dir()).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("building the lab payload failed: {e}"))
}

fn build_cached(cache: &Path) -> Result<Payload> {
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    // One lock for the whole cache: downloads and builds are rare, and a
    // waiting process then finds the finished result on its re-check.
    let lock = File::create(cache.join(".lock"))?;
    lock.lock().context("locking the payload cache")?;

    let deb = kernel_deb(cache)?;
    let busybox = busybox_path();
    let busybox_bytes = fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
    if has_elf_interpreter(&busybox_bytes) {
        bail!(
            "{} is dynamically linked; install busybox-static (the initramfs has no libc)",
            busybox.display()
        );
    }

    let mut h = Sha256::new();
    h.update(BUILDER_VERSION);
    h.update(deb.file_name().unwrap_or_default().as_encoded_bytes());
    h.update(fs::metadata(&deb)?.len().to_le_bytes());
    h.update(&busybox_bytes);
    h.update(INIT_SH);
    h.update(UDHCPC_SCRIPT);
    let key: String = h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();

    let out = cache.join(format!("payload-{key}"));
    let result = Payload {
        kernel: out.join("vmlinuz"),
        initrd: out.join("initrd.gz"),
    };
    if result.kernel.is_file() && result.initrd.is_file() {
        return Ok(result);
    }
    let work = tempfile::Builder::new().prefix(".build-").tempdir_in(cache)?;
    build(&deb, &busybox_bytes, work.path()).context("building the payload")?;
    let staged = work.path().join("out");
    // Atomic publish: readers that don't take the lock never see a half
    // written payload directory.
    fs::rename(&staged, &out).with_context(|| format!("publishing {}", out.display()))?;
    prune(cache, &out);
    drop(lock);
    Ok(result)
}

/// Removes payloads other than `keep` and build leftovers of killed runs,
/// once they are a day old: another checkout (other inputs) may still use a
/// recent one. Called with the cache lock held.
fn prune(cache: &Path, keep: &Path) {
    let day = std::time::Duration::from_secs(86_400);
    let Ok(entries) = fs::read_dir(cache) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if path != keep && old && (name.starts_with("payload-") || name.starts_with(".build-")) {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

fn busybox_path() -> PathBuf {
    std::env::var_os("PROVISIONER_LAB_BUSYBOX")
        .map(Into::into)
        .unwrap_or_else(|| "/bin/busybox".into())
}

/// Finds (downloading if needed) the versioned kernel package that
/// `linux-image-amd64` depends on. `$PROVISIONER_LAB_KERNEL_DEB` overrides.
fn kernel_deb(cache: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PROVISIONER_LAB_KERNEL_DEB") {
        return Ok(p.into());
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    let cached = |prefix: &str| -> Result<Option<PathBuf>> {
        let mut found: Vec<PathBuf> = fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                n.starts_with(prefix) && n.ends_with(".deb")
            })
            .collect();
        found.sort();
        Ok(found.pop())
    };
    let resolve = || {
        run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))
            .ok()
            .and_then(|out| {
                out.lines()
                    .filter_map(|l| l.trim().strip_prefix("Depends:"))
                    .map(str::trim)
                    .find(|d| d.starts_with("linux-image-") && d.ends_with("-amd64"))
                    .map(str::to_owned)
            })
    };
    let mut pkg = resolve();
    if pkg.is_none() && cached("linux-image-")?.is_none() {
        // A fresh machine often has no apt lists at all; we run as root.
        let _ = run(Command::new("apt-get").args(["update", "-qq"]));
        pkg = resolve();
    }
    let Some(pkg) = pkg else {
        // No apt lists (e.g. before `apt-get update`): any kernel we already have.
        return cached("linux-image-")?
            .context("cannot resolve linux-image-amd64 (run `apt-get update`) and no kernel .deb is cached");
    };
    if let Some(p) = cached(&format!("{pkg}_"))? {
        return Ok(p);
    }
    run(Command::new("apt-get")
        .args(["download", "-q", &pkg])
        .current_dir(&debs))
    .with_context(|| format!("apt-get download {pkg}"))?;
    cached(&format!("{pkg}_"))?.with_context(|| format!("apt-get download {pkg} left no .deb"))
}

fn build(deb: &Path, busybox: &[u8], work: &Path) -> Result<()> {
    let tree = work.join("tree");
    fs::create_dir_all(&tree)?;
    // Unpack only the kernel and the NIC modules (the full package is 400 MB).
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting dpkg-deb")?;
    let mut tar = Command::new("tar");
    tar.args(["-x", "--wildcards", "-C"])
        .arg(&tree)
        .arg("./boot/vmlinuz-*");
    for m in MODULES {
        tar.arg(format!("*/{m}.ko"));
    }
    let tar_out = tar
        .stdin(Stdio::from(dpkg.stdout.take().context("dpkg-deb stdout")?))
        .output()
        .context("starting tar")?;
    let dpkg_status = dpkg.wait()?;
    if !tar_out.status.success() || !dpkg_status.success() {
        bail!(
            "unpacking {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&tar_out.stderr)
        );
    }

    let out = work.join("out");
    fs::create_dir_all(&out)?;
    let kernel = find_files(&tree.join("boot"), |n| n.starts_with("vmlinuz-"))?
        .into_iter()
        .next()
        .context("no boot/vmlinuz-* in the kernel package")?;
    fs::copy(&kernel, out.join("vmlinuz"))?;

    let mut a = Archive::default();
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "lib",
        "lib/modules",
        "root",
    ] {
        a.dir(d);
    }
    a.char_dev("dev/console", 0o600, 5, 1);
    a.char_dev("dev/null", 0o666, 1, 3);
    a.file("bin/busybox", 0o755, busybox);
    a.symlink("bin/sh", "busybox");
    a.file("init", 0o755, INIT_SH.as_bytes());
    a.file("etc/udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    let modules = find_files(&tree.join("lib"), |n| n.ends_with(".ko"))?;
    for m in MODULES {
        let name = format!("{m}.ko");
        if let Some(p) = modules.iter().find(|p| p.ends_with(&name)) {
            a.file(&format!("lib/modules/{name}"), 0o644, &fs::read(p)?);
        }
    }
    let cpio_path = work.join("initrd.cpio");
    a.finish(&mut File::create(&cpio_path)?)?;
    let gz = File::create(out.join("initrd.gz"))?;
    let status = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(&cpio_path)
        .stdout(gz)
        .status()
        .context("starting gzip")?;
    if !status.success() {
        bail!("gzip failed: {status}");
    }
    Ok(())
}

/// Whether an ELF64 image has a PT_INTERP program header, i.e. needs a
/// dynamic loader that the initramfs does not have.
fn has_elf_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    if !elf.starts_with(b"\x7fELF") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        elf.get(o..o + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_INTERP)
    })
}

/// Recursively lists regular files under `dir` whose name satisfies `pred`.
fn find_files(dir: &Path, pred: impl Fn(&str) -> bool + Copy) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if e.file_type()?.is_dir() {
            out.extend(find_files(&path, pred)?);
        } else if pred(&e.file_name().to_string_lossy()) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}
