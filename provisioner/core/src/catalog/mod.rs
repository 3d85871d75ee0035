//! What machines can boot: images (`images/`), profiles and groups (`profiles/`).
//!
//! The data layout follows matchbox: a *group* selects machines (by MAC, UUID, arch,
//! hostname or any label) and points at a *profile*; a profile names an *image*
//! (kernel, initrds, fixed kernel arguments) and the kind of machine config to serve.

mod load;
mod select;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{CatalogError, CatalogFiles, FieldError, YamlFile, load, load_files, read_yaml_dir};
pub(crate) use select::select_group;

/// One file of an image in the cache (`<cache>/<image id>/<file>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFile {
    /// File name inside the image's cache folder; a plain name, never a path.
    pub file: String,
    /// Where `images pull` downloads it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Expected SHA-256 (hex); recorded on first download when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// An image descriptor (`images/<id>.yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Unique id; also the cache folder name.
    pub id: String,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The kernel.
    pub kernel: ImageFile,
    /// Initrds, loaded in order.
    #[serde(default)]
    pub initrds: Vec<ImageFile>,
    /// Kernel arguments every machine booting this image gets.
    #[serde(default)]
    pub args: Vec<String>,
}

/// Which machine config a profile serves through its one-time config URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConfigKind {
    /// Talos v1alpha1 machine config, passed as `talos.config=`.
    Talos,
    /// Flatcar Ignition (k0s nodes), passed as `ignition.config.url=`.
    Flatcar,
    /// A plain document describing the machine, passed as `provisioner.config=`.
    Plain,
    /// No config URL at all.
    #[default]
    None,
}

impl ConfigKind {
    /// The kernel argument that carries the config URL, if any.
    pub fn kernel_arg(&self) -> Option<&'static str> {
        match self {
            Self::Talos => Some("talos.config"),
            Self::Flatcar => Some("ignition.config.url"),
            Self::Plain => Some("provisioner.config"),
            Self::None => None,
        }
    }
}

/// A profile (`profiles/profiles/<id>.yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Unique id.
    pub id: String,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Image id from `images/`.
    pub image: String,
    /// Extra kernel arguments, after the image's own.
    #[serde(default)]
    pub args: Vec<String>,
    /// Which config the machine fetches.
    #[serde(default)]
    pub config: ConfigKind,
    /// Cluster definition in `infra/` this profile's machines belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `auto | approve`, overriding the cluster's and the global setting
    /// ([`crate::release::admission`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<crate::release::admission::Admission>,
    /// Talos' `talos.config.oauth.*` device flow (`config: talos` only): the config
    /// download then needs the bearer token an operator released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_flow: Option<DeviceFlow>,
    /// Which nodes of `cluster` this profile boots when `infra/` derives their groups
    /// (`crate::adopt`): needed only when a cluster has more than one profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<NodeRole>,
}

/// A node's role in its cluster, as `infra/` says (`controlPlane: true` or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// `controlPlane: true`.
    Controlplane,
    /// Every other node.
    Worker,
}

/// A profile's RFC 8628 device flow ([`crate::release::device`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFlow {
    /// `talos.config.oauth.client_id` (default `talos`); the token endpoints accept
    /// only this client.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// `talos.config.oauth.scope` values, one kernel argument each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

fn default_client_id() -> String {
    "talos".into()
}

/// A group (`profiles/groups/<id>.yaml`): a selector and the profile it assigns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Unique id; also the deterministic tie-breaker.
    pub id: String,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Profile id.
    pub profile: String,
    /// Every key must match the machine (`mac`, `uuid`, `arch`, `hostname`, `serial`
    /// or a label). An empty selector matches every machine.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Values handed to renderers (hostname, addresses …).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Everything loaded from `images/` and `profiles/`, validated and cross-checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Images by id.
    pub images: BTreeMap<String, Image>,
    /// Profiles by id.
    pub profiles: BTreeMap<String, Profile>,
    /// Groups by id, selectors normalised.
    pub groups: BTreeMap<String, Group>,
    /// Which file each group/profile/image came from, for error messages.
    pub sources: BTreeMap<String, PathBuf>,
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// The in-memory loader (the fuzz target's) is `load` without the reads: same
    /// catalog from the shipped tree, same errors naming the same files.
    #[test]
    fn load_files_agrees_with_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let (images, profiles) = (root.join("images"), root.join("profiles"));
        let mut errs = Vec::new();
        let files = CatalogFiles {
            images: read_yaml_dir(&images, &mut errs),
            profiles: read_yaml_dir(&profiles.join("profiles"), &mut errs),
            groups: read_yaml_dir(&profiles.join("groups"), &mut errs),
        };
        assert!(errs.is_empty() && !files.images.is_empty(), "{errs:?}");
        assert_eq!(
            format!("{:?}", load_files(&images, &profiles, &files)),
            format!("{:?}", load(&images, &profiles))
        );
        let dup = CatalogFiles {
            images: vec![
                (PathBuf::from("a.yaml"), "id: x\nkernel: { file: k }\n".into()),
                (PathBuf::from("b.yaml"), "id: x\nkernel: { file: k }\n".into()),
            ],
            ..CatalogFiles::default()
        };
        let e = load_files(Path::new("i"), Path::new("p"), &dup).unwrap_err().0;
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            (e[0].file.as_path(), e[0].field.as_str()),
            (Path::new("b.yaml"), "id")
        );
    }
}
