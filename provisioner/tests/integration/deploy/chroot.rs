//! A Debian 12 root for package tests: unpacked from the cached debootstrap tarball,
//! with /proc and the shared apt cache mounted, commands run through chroot(8).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Builds a package of the test binary with deploy/build-deb.sh.
pub fn build_deb(version: &str, out: &Path) -> PathBuf {
    let o = Command::new(repo().join("deploy/build-deb.sh"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_provisioner"),
            "--version",
            version,
        ])
        .arg("--out")
        .arg(out)
        .args(["--compress", "gzip"])
        .output()
        .unwrap();
    assert!(o.status.success(), "build-deb.sh: {}", text(&o));
    PathBuf::from(stdout(&o).lines().last().unwrap().trim())
}

/// A bookworm root under /var/tmp with /proc and the shared apt cache mounted.
/// Unmounts on drop, and deletes the tree only once nothing is mounted in it.
pub struct Chroot {
    pub root: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Chroot {
    pub fn new() -> Self {
        let parent = tempfile::Builder::new()
            .prefix("provisioner-deploy-test.")
            .tempdir_in("/var/tmp")
            .unwrap()
            .keep();
        let root = parent.join("root");
        let o = Command::new(repo().join("deploy/test/bookworm-root.sh"))
            .arg(&root)
            .output()
            .unwrap();
        assert!(o.status.success(), "bookworm-root.sh: {}", text(&o));
        let mut c = Self {
            root,
            mounts: Vec::new(),
        };
        c.mount(&["-t", "proc", "proc"], "proc");
        let cache = std::env::var("PROVISIONER_DEPLOY_CACHE")
            .unwrap_or_else(|_| "/var/tmp/provisioner-deploy-cache".into());
        c.mount(
            &["--bind", &format!("{cache}/apt-archives")],
            "var/cache/apt/archives",
        );
        c
    }

    /// Unmounts /proc while `f` runs (systemd-nspawn mounts the container's own; a
    /// host procfs left there would show the host's processes inside).
    pub fn without_proc<T>(&mut self, f: impl FnOnce(&Self) -> T) -> T {
        let proc_ = self.root.join("proc");
        let o = Command::new("umount").arg(&proc_).output().unwrap();
        assert!(o.status.success(), "umount proc: {}", text(&o));
        self.mounts.retain(|m| m != &proc_);
        let out = f(self);
        self.mount(&["-t", "proc", "proc"], "proc");
        out
    }

    fn mount(&mut self, args: &[&str], at: &str) {
        let target = self.root.join(at);
        let o = Command::new("mount").args(args).arg(&target).output().unwrap();
        assert!(o.status.success(), "mount {args:?} {at}: {}", text(&o));
        self.mounts.push(target);
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// Runs a command inside the root with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.root).args(args).env_clear().envs([
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            ("HOME", "/root"),
            ("LANG", "C"),
            ("DEBIAN_FRONTEND", "noninteractive"),
        ]);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        stdout(&o)
    }

    pub fn copy_in(&self, from: &Path, to: &str) {
        std::fs::copy(from, self.path(to)).unwrap();
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let root = self.root.display().to_string();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(&root)))
        {
            eprintln!("WARNING: {root} still has mounts; leaving it in place");
            return;
        }
        if let Some(parent) = self.root.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}
