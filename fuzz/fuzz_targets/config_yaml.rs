//! The YAML loaders of `images/`, `profiles/` and `infra/` on one fuzzed file next to
//! valid ones, in memory (`catalog::load_files`, `infra::load_files`: the same parsing
//! and cross-checks `catalog::load` / `infra::load` run after reading the
//! directories): the first byte picks which file the rest replaces. Loading must end
//! in a catalog or a field error, never a panic. Bytes that are not UTF-8 stop at the
//! read in the daemon (`cannot read`), so they are converted lossily to reach the parser.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use provisioner_core::catalog::{self, CatalogFiles};
use provisioner_core::infra;

const IMAGE: &str = "id: img\nkernel: { file: vmlinuz }\ninitrds: [ { file: initrd.gz } ]\nargs: [\"console=ttyS0\"]\n";
const PROFILE: &str = "id: prof\nimage: img\nconfig: plain\n";
const GROUP: &str = "id: grp\nprofile: prof\nselector: { mac: \"52:54:00:00:00:01\" }\n";

fn file(path: &str, text: &str) -> Vec<(PathBuf, String)> {
    vec![(PathBuf::from(path), text.to_owned())]
}

fuzz_target!(|data: &[u8]| {
    let Some((pick, yaml)) = data.split_first() else { return };
    let yaml = String::from_utf8_lossy(yaml);
    let mut files = CatalogFiles {
        images: file("images/img.yaml", IMAGE),
        profiles: file("profiles/profiles/prof.yaml", PROFILE),
        groups: file("profiles/groups/grp.yaml", GROUP),
    };
    let mut infra_files = Vec::new();
    match pick % 4 {
        0 => files.images[0].1 = yaml.into_owned(),
        1 => files.profiles[0].1 = yaml.into_owned(),
        2 => files.groups[0].1 = yaml.into_owned(),
        _ => infra_files = file("infra/site.yaml", &yaml),
    }
    let _ = catalog::load_files(Path::new("images"), Path::new("profiles"), &files);
    let _ = infra::load_files(&infra_files);
});
