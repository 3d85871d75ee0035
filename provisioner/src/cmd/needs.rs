//! What the image cache must hold for this site: every profile's image, the Talos
//! image of every schematic and version `infra/` names (from the Image Factory),
//! each k0s cluster's Flatcar release (PXE image and the mirrored disk image) and k0s
//! binary, and the ArgoCD manifest `gitops/settings.yaml` pins. One list, read by
//! `doctor` (is it complete?), `images pull --all` (fetch it) and `images bundle`
//! (carry it), so the three never disagree about what a site needs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use provisioner_core::catalog::{Catalog, ConfigKind, Image};
use provisioner_core::infra::Infra;
use provisioner_core::k0s::mirror::{self, Kind};
use provisioner_core::talos::schematic::Schematic;

use crate::gitops::settings::Settings;
use crate::images::{ImageCache, parse_sums_file, sha256_file};

/// Where an image's files come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The Image Factory: the schematic (POSTed first) and the Talos version.
    Factory {
        /// The schematic as `infra/` defines it.
        schematic: Box<Schematic>,
        /// Its ID.
        id: String,
        /// Talos version.
        version: String,
    },
    /// A Flatcar release: PXE files into the image's folder, the disk image and its
    /// signature into the mirror.
    Flatcar {
        /// Flatcar release.
        version: String,
    },
    /// The URLs in the descriptor.
    Descriptor,
}

/// One image the site needs.
#[derive(Debug, Clone)]
pub struct ImageNeed {
    /// The descriptor.
    pub image: Image,
    /// Who needs it (`profile genmachine-controlplane`, `cluster genmachine`).
    pub needed_by: Vec<String>,
    /// Where its files come from.
    pub source: Source,
}

/// Everything the cache must hold.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Images by id.
    pub images: BTreeMap<String, ImageNeed>,
    /// Mirrored releases (`flatcar`/`k0s` and the version: Flatcar disk images, k0s
    /// binaries) and who needs them.
    pub mirrors: BTreeMap<(&'static str, String), Vec<String>>,
    /// The pinned ArgoCD manifest (version, SHA-256), when gitops/ has settings.
    pub argocd: Option<(String, String)>,
    /// What cannot be satisfied from the inputs (no descriptor for a schematic).
    pub problems: Vec<String>,
}

/// One file the cache must hold, and how it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the cache root (`talos-x/kernel-amd64`).
    pub rel: String,
    /// The SHA-256 it must have, when known (descriptor, pin, record).
    pub sha256: Option<String>,
    /// `ok`, `missing`, `unverified` (no checksum known) or `MISMATCH`.
    pub status: &'static str,
    /// Who needs it.
    pub needed_by: String,
}

impl Needs {
    /// The needs of the loaded inputs.
    pub fn of(catalog: &Catalog, infra: &Infra, gitops: Option<&Settings>) -> Self {
        let mut n = Self::default();
        for (name, c) in &infra.talos {
            for node in &c.nodes {
                let schematic = c.schematic_for(node);
                let Ok(id) = schematic.id() else { continue };
                let version = &c.talos_version;
                match crate::os::talos::factory::descriptor_for(&catalog.images, &id, version) {
                    Some(img) => n.add(
                        img,
                        format!("cluster {name}"),
                        Source::Factory {
                            schematic: Box::new(schematic.clone()),
                            id: id.clone(),
                            version: version.clone(),
                        },
                    ),
                    None => {
                        let p = format!(
                            "cluster {name}, node {}: no images/ descriptor for schematic {id} and Talos {version}",
                            node.hostname
                        );
                        if !n.problems.contains(&p) {
                            n.problems.push(p);
                        }
                    }
                }
            }
        }
        for (name, c) in &infra.k0s {
            let who = format!("cluster {name}");
            for key in [
                (Kind::Flatcar.name(), c.flatcar_version.clone()),
                (Kind::K0s.name(), c.k0s_version.clone()),
            ] {
                let v = n.mirrors.entry(key).or_default();
                if !v.contains(&who) {
                    v.push(who.clone());
                }
            }
            for p in catalog.profiles.values() {
                if p.cluster.as_deref() == Some(name.as_str())
                    && p.config == ConfigKind::Flatcar
                    && let Some(img) = catalog.images.get(&p.image)
                {
                    n.add(
                        img,
                        who.clone(),
                        Source::Flatcar {
                            version: c.flatcar_version.clone(),
                        },
                    );
                }
            }
        }
        for p in catalog.profiles.values() {
            if let Some(img) = catalog.images.get(&p.image) {
                n.add(img, format!("profile {}", p.id), Source::Descriptor);
            }
        }
        n.argocd = gitops.map(|s| (s.argocd.version.clone(), s.argocd.sha256.clone()));
        n
    }

    /// Records that `who` needs `img`; the first source named wins (the Factory or a
    /// Flatcar release over the descriptor's URLs).
    fn add(&mut self, img: &Image, who: String, source: Source) {
        let need = self.images.entry(img.id.clone()).or_insert_with(|| ImageNeed {
            image: img.clone(),
            needed_by: Vec::new(),
            source,
        });
        if !need.needed_by.contains(&who) {
            need.needed_by.push(who);
        }
    }

    /// Every file the cache must hold, each checked against its descriptor, pin or
    /// record.
    pub fn entries(&self, cache: &ImageCache) -> Vec<Entry> {
        let mut out = Vec::new();
        for need in self.images.values() {
            let img = &need.image;
            let sums = parse_sums_file(&cache.image_dir(&img.id));
            for f in std::iter::once(&img.kernel).chain(&img.initrds) {
                let want = f.sha256.clone().or_else(|| sums.get(&f.file).cloned());
                out.push(entry(
                    cache,
                    format!("{}/{}", img.id, f.file),
                    want,
                    need.needed_by.join(", "),
                ));
            }
        }
        for ((kind, version), who) in &self.mirrors {
            let Some(kind) = Kind::parse(kind) else { continue };
            let dir = cache.mirror_dir(kind, version);
            let sums = parse_sums_file(&dir);
            let list = if kind == Kind::K0s {
                std::fs::read_to_string(dir.join(mirror::K0S_SUMS))
                    .map(|t| mirror::parse_sums(&t))
                    .unwrap_or_default()
            } else {
                BTreeMap::new()
            };
            for f in kind.files(version) {
                let want = list.get(&f).or_else(|| sums.get(&f)).cloned();
                // The release's own list is what the binary is judged by; it has no
                // checksum of its own, so present is as good as it gets.
                let want = if f == mirror::K0S_SUMS && kind == Kind::K0s {
                    None
                } else {
                    want
                };
                let rel = format!("mirror/{}/{version}/{f}", kind.name());
                let mut e = entry(cache, rel, want, who.join(", "));
                if f == mirror::K0S_SUMS && e.status == "unverified" {
                    e.status = "ok";
                }
                out.push(e);
            }
        }
        if let Some((version, sha)) = &self.argocd {
            let rel = cache
                .argocd_manifest(version)
                .strip_prefix(cache.dir())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.push(entry(
                cache,
                rel,
                Some(sha.clone()),
                "gitops/settings.yaml".into(),
            ));
        }
        out
    }
}

fn entry(cache: &ImageCache, rel: String, want: Option<String>, needed_by: String) -> Entry {
    let path: PathBuf = cache.dir().join(&rel);
    let status = match (path.is_file(), &want) {
        (false, _) => "missing",
        (true, None) => "unverified",
        (true, Some(w)) => match sha256_file(&path) {
            Ok(h) if h.eq_ignore_ascii_case(w) => "ok",
            _ => "MISMATCH",
        },
    };
    Entry {
        rel,
        sha256: want,
        status,
        needed_by,
    }
}
