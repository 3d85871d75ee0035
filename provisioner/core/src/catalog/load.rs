//! Loading `images/` and `profiles/` from disk, with every error naming file and field.
//!
//! This is the only place in the core crate that touches the filesystem, and it only
//! reads ([`read_yaml_dir`]); [`load_files`] is the same check over texts in memory. All errors are collected, not just the first, so `provisioner check` can
//! report a whole bad tree in one run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::{Catalog, ConfigKind, Group, Image, ImageFile, Profile};
use crate::model::MacAddr;

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Dotted path of the offending field (`selector.mac`, `kernel.file`), or
    /// `(document)` when the file does not parse at all.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: field `{}`: {}",
            self.file.display(),
            self.field,
            self.message
        )
    }
}

/// Every problem found while loading a catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CatalogError(pub Vec<FieldError>);

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Keys a selector may use besides free-form labels; their values are normalised.
const SELECTOR_ARCHES: [&str; 2] = ["amd64", "arm64"];
const SELECTOR_FIRMWARES: [&str; 2] = ["bios", "uefi"];

/// One YAML file: its path (named in errors) and its text.
pub type YamlFile = (PathBuf, String);

/// The YAML files of a catalog tree, read: `images/*.yaml`, `profiles/*.yaml`,
/// `groups/*.yaml`, each sorted by path.
#[derive(Debug, Clone, Default)]
pub struct CatalogFiles {
    /// `images_dir/*.yaml`.
    pub images: Vec<YamlFile>,
    /// `profiles_dir/profiles/*.yaml`.
    pub profiles: Vec<YamlFile>,
    /// `profiles_dir/groups/*.yaml`.
    pub groups: Vec<YamlFile>,
}

/// Loads and cross-checks `images_dir/*.yaml`, `profiles_dir/profiles/*.yaml` and
/// `profiles_dir/groups/*.yaml`.
pub fn load(images_dir: &Path, profiles_dir: &Path) -> Result<Catalog, CatalogError> {
    let mut errs = Vec::new();
    let files = CatalogFiles {
        images: read_yaml_dir(images_dir, &mut errs),
        profiles: read_yaml_dir(&profiles_dir.join("profiles"), &mut errs),
        groups: read_yaml_dir(&profiles_dir.join("groups"), &mut errs),
    };
    build(images_dir, profiles_dir, &files, errs)
}

/// [`load`] over files already read (the I/O-free part, which the fuzz target
/// drives in memory); the two directories only name where things are in messages.
pub fn load_files(
    images_dir: &Path,
    profiles_dir: &Path,
    files: &CatalogFiles,
) -> Result<Catalog, CatalogError> {
    build(images_dir, profiles_dir, files, Vec::new())
}

fn build(
    images_dir: &Path,
    profiles_dir: &Path,
    files: &CatalogFiles,
    mut errs: Vec<FieldError>,
) -> Result<Catalog, CatalogError> {
    let mut cat = Catalog::default();

    for (path, image) in parse::<Image>(&files.images, &mut errs) {
        validate_image(&path, &image, &mut errs);
        insert(
            &mut cat.images,
            &mut cat.sources,
            "image",
            path,
            image.id.clone(),
            image,
            &mut errs,
        );
    }
    for (path, profile) in parse::<Profile>(&files.profiles, &mut errs) {
        check_id(&path, "id", &profile.id, &mut errs);
        check_args(&path, "args", &profile.args, &mut errs);
        if let Some(flow) = &profile.device_flow {
            if profile.config != ConfigKind::Talos {
                errs.push(err(
                    &path,
                    "device_flow",
                    "only a `config: talos` profile can use Talos' OAuth device flow".into(),
                ));
            }
            let kernel_safe = |v: &str| {
                !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
            };
            if !kernel_safe(&flow.client_id) {
                errs.push(err(
                    &path,
                    "device_flow.client_id",
                    format!("{:?}: use letters, digits and - _ . : / only", flow.client_id),
                ));
            }
            for (i, scope) in flow.scopes.iter().enumerate() {
                if !kernel_safe(scope) {
                    errs.push(err(
                        &path,
                        &format!("device_flow.scopes[{i}]"),
                        format!("{scope:?}: use letters, digits and - _ . : / only"),
                    ));
                }
            }
        }
        if !cat.images.contains_key(&profile.image) {
            errs.push(err(
                &path,
                "image",
                format!("no image {:?} in {}", profile.image, images_dir.display()),
            ));
        }
        insert(
            &mut cat.profiles,
            &mut cat.sources,
            "profile",
            path,
            profile.id.clone(),
            profile,
            &mut errs,
        );
    }
    let mut seen_selectors: BTreeMap<BTreeMap<String, String>, (String, PathBuf)> = BTreeMap::new();
    for (path, mut group) in parse::<Group>(&files.groups, &mut errs) {
        check_id(&path, "id", &group.id, &mut errs);
        if !cat.profiles.contains_key(&group.profile) {
            errs.push(err(
                &path,
                "profile",
                format!(
                    "no profile {:?} in {}/profiles",
                    group.profile,
                    profiles_dir.display()
                ),
            ));
        }
        group.selector = normalise_selector(&path, &group.selector, &mut errs);
        if let Some((other, other_path)) = seen_selectors.get(&group.selector) {
            errs.push(err(
                &path,
                "selector",
                format!(
                    "same selector as group {other:?} in {}: the choice would be arbitrary",
                    other_path.display()
                ),
            ));
        } else {
            seen_selectors.insert(group.selector.clone(), (group.id.clone(), path.clone()));
        }
        insert(
            &mut cat.groups,
            &mut cat.sources,
            "group",
            path,
            group.id.clone(),
            group,
            &mut errs,
        );
    }

    if errs.is_empty() {
        Ok(cat)
    } else {
        Err(CatalogError(errs))
    }
}

/// Normalises selector values so they compare equal to request labels:
/// MACs in canonical form, UUIDs lower-case; unknown arch/firmware values rejected.
fn normalise_selector(
    path: &Path,
    sel: &BTreeMap<String, String>,
    errs: &mut Vec<FieldError>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in sel {
        let field = format!("selector.{k}");
        let value = match k.as_str() {
            "mac" => match v.parse::<MacAddr>() {
                Ok(m) => m.to_string(),
                Err(e) => {
                    errs.push(err(path, &field, e.to_string()));
                    continue;
                }
            },
            // The same canonical form the pin and requests use, so a selector and a
            // pinned UUID compare equal (crate::release::smbios).
            "uuid" => match crate::release::smbios::parse_uuid(v) {
                crate::release::smbios::UuidField::Valid(u) => u,
                _ => {
                    errs.push(err(path, &field, format!("{v:?} is not an SMBIOS UUID")));
                    continue;
                }
            },
            "arch" if !SELECTOR_ARCHES.contains(&v.as_str()) => {
                errs.push(err(
                    path,
                    &field,
                    format!("{v:?} is not one of {SELECTOR_ARCHES:?}"),
                ));
                continue;
            }
            "firmware" if !SELECTOR_FIRMWARES.contains(&v.as_str()) => {
                errs.push(err(
                    path,
                    &field,
                    format!("{v:?} is not one of {SELECTOR_FIRMWARES:?}"),
                ));
                continue;
            }
            _ => v.clone(),
        };
        out.insert(k.clone(), value);
    }
    out
}

fn validate_image(path: &Path, image: &Image, errs: &mut Vec<FieldError>) {
    check_id(path, "id", &image.id, errs);
    check_file(path, "kernel", &image.kernel, errs);
    for (i, f) in image.initrds.iter().enumerate() {
        check_file(path, &format!("initrds[{i}]"), f, errs);
    }
    check_args(path, "args", &image.args, errs);
}

fn check_file(path: &Path, field: &str, f: &ImageFile, errs: &mut Vec<FieldError>) {
    if !is_plain_name(&f.file) {
        errs.push(err(
            path,
            &format!("{field}.file"),
            format!("{:?} must be a plain file name", f.file),
        ));
    }
    if let Some(sum) = &f.sha256
        && (sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit()))
    {
        errs.push(err(
            path,
            &format!("{field}.sha256"),
            "must be 64 hex digits".into(),
        ));
    }
}

/// A name usable as one path component and in a URL: no separators, no `..`.
pub(crate) fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

fn check_id(path: &Path, field: &str, id: &str, errs: &mut Vec<FieldError>) {
    if !is_plain_name(id) {
        errs.push(err(
            path,
            field,
            format!("{id:?} must use only letters, digits, '.', '_', '-', '+'"),
        ));
    }
}

/// Kernel arguments end up on an iPXE `kernel` line: one token each, no whitespace,
/// and no `${` (iPXE would expand it, see boot-protocols.md §6.5).
fn check_args(path: &Path, field: &str, args: &[String], errs: &mut Vec<FieldError>) {
    for (i, a) in args.iter().enumerate() {
        if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) || a.contains("${") {
            errs.push(err(
                path,
                &format!("{field}[{i}]"),
                format!("{a:?} must be one argument without spaces or ${{"),
            ));
        }
    }
}

fn insert<T>(
    map: &mut BTreeMap<String, T>,
    sources: &mut BTreeMap<String, PathBuf>,
    what: &str,
    path: PathBuf,
    id: String,
    value: T,
    errs: &mut Vec<FieldError>,
) {
    let key = format!("{what}/{id}");
    if let Some(prev) = sources.get(&key) {
        errs.push(err(
            &path,
            "id",
            format!("duplicate {what} id {id:?}, also in {}", prev.display()),
        ));
        return;
    }
    sources.insert(key, path);
    map.insert(id, value);
}

/// Reads every `*.yaml`/`*.yml` file in `dir`, sorted (so errors are stable); an
/// unreadable file is a `cannot read` error. A missing directory is no files (an
/// empty section, not an error).
pub fn read_yaml_dir(dir: &Path, errs: &mut Vec<FieldError>) -> Vec<YamlFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(t) => out.push((path, t)),
            Err(e) => errs.push(err(&path, "(document)", format!("cannot read: {e}"))),
        }
    }
    out
}

/// Parses each file as a `T`; a file that does not is an error naming its field.
fn parse<T: DeserializeOwned>(files: &[YamlFile], errs: &mut Vec<FieldError>) -> Vec<(PathBuf, T)> {
    let mut out = Vec::new();
    for (path, text) in files {
        match crate::fieldpath::from_str::<T>(text, serde_saphyr::Options::default()) {
            Ok(v) => out.push((path.clone(), v)),
            Err(e) => errs.push(err(path, &e.field_or_document(), e.to_string())),
        }
    }
    out
}

fn err(path: &Path, field: &str, message: String) -> FieldError {
    FieldError {
        file: path.to_path_buf(),
        field: field.to_string(),
        message,
    }
}
