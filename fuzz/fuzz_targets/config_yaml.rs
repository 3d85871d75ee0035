//! The YAML loaders of `images/`, `profiles/` and `infra/` (`catalog::load`,
//! `infra::load`) on one fuzzed file next to valid ones: the first byte picks which
//! file the rest replaces. Loading must end in a catalog or a field error, never a
//! panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use provisioner_core::{catalog, infra};

const IMAGE: &str = "id: img\nkernel: { file: vmlinuz }\ninitrds: [ { file: initrd.gz } ]\nargs: [\"console=ttyS0\"]\n";
const PROFILE: &str = "id: prof\nimage: img\nconfig: plain\n";
const GROUP: &str = "id: grp\nprofile: prof\nselector: { mac: \"52:54:00:00:00:01\" }\n";

/// A private directory tree (in /dev/shm when it exists: one write per input).
fn root() -> &'static PathBuf {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let r = PathBuf::from(base).join(format!("provisioner-fuzz-{}", std::process::id()));
        for d in ["images", "profiles/profiles", "profiles/groups", "infra"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        r
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((pick, yaml)) = data.split_first() else { return };
    let r = root();
    std::fs::write(r.join("images/img.yaml"), IMAGE).unwrap();
    std::fs::write(r.join("profiles/profiles/prof.yaml"), PROFILE).unwrap();
    std::fs::write(r.join("profiles/groups/grp.yaml"), GROUP).unwrap();
    let _ = std::fs::remove_file(r.join("infra/site.yaml"));
    let target = match pick % 4 {
        0 => "images/img.yaml",
        1 => "profiles/profiles/prof.yaml",
        2 => "profiles/groups/grp.yaml",
        _ => "infra/site.yaml",
    };
    std::fs::write(r.join(target), yaml).unwrap();
    let _ = catalog::load(&r.join("images"), &r.join("profiles"));
    let _ = infra::load(&r.join("infra"));
});
