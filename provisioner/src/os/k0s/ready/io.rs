//! The production implementations of the k0s workflow's seams: the controller's phase
//! from the inventory, the admin kubeconfig minted from the cluster CA (kept in the
//! encrypted kubeconfig store, where the ArgoCD host's hand-off finds it to register
//! the cluster), and the Node list through kube-rs.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use provisioner_core::catalog::{Catalog, ConfigKind};
use provisioner_core::inventory::Inventory;
use provisioner_core::k0s::progress::{self, Phase};
use provisioner_core::k0s::token::Kubeconfig;
use provisioner_core::k0s::workflow::NodeStatus;
use provisioner_core::model::MacAddr;
use time::{Duration, OffsetDateTime};

use super::{AdminKubeconfig, ControllerPhase, NodeLister};
use crate::cluster::argocd::client_for;
use crate::cluster::seams::CallError;
use crate::pki::k0s as pki;
use provisioner_core::cluster::KubeconfigStore;
use provisioner_core::k0s::store::K0sSecretStore;

/// The controller's phase from the inventory: the machine with the controller's MAC
/// from infra/, else every machine the catalog assigns to the cluster through a group
/// whose `metadata.hostname` is the controller's (the renderer's own rule).
#[derive(Debug, Clone)]
pub struct InventoryController {
    /// The inventory (timelines).
    pub inventory: Arc<dyn Inventory>,
    /// Groups and profiles.
    pub catalog: Arc<Catalog>,
    /// Cluster name.
    pub cluster: String,
    /// The controller's hostname.
    pub hostname: String,
    /// The controller's MAC, when infra/ pins it.
    pub mac: Option<MacAddr>,
}

fn rank(p: Phase) -> u8 {
    match p {
        Phase::Pending => 0,
        Phase::Stage1Served { .. } => 1,
        Phase::DiskInstalled => 2,
        Phase::K0sInstalled => 3,
    }
}

impl InventoryController {
    fn is_controller(&self, m: &provisioner_core::model::Machine) -> bool {
        if self.mac.is_some() {
            return self.mac == Some(m.mac);
        }
        let Some(a) = provisioner_core::boot::assign::assignment(&self.catalog, m) else {
            return false;
        };
        a.config == ConfigKind::Flatcar
            && a.cluster.as_deref() == Some(self.cluster.as_str())
            && a.group
                .and_then(|g| self.catalog.groups.get(&g).cloned())
                .and_then(|g| g.metadata.get("hostname").cloned())
                .as_deref()
                == Some(self.hostname.as_str())
    }
}

impl ControllerPhase for InventoryController {
    fn phase(&self) -> Result<Phase, CallError> {
        let machines = match self.mac {
            Some(mac) => self
                .inventory
                .get(mac)
                .map_err(|e| CallError::Api(e.to_string()))?
                .into_iter()
                .collect(),
            None => self.inventory.list().map_err(|e| CallError::Api(e.to_string()))?,
        };
        let mut best = Phase::Pending;
        for m in machines.iter().filter(|m| self.is_controller(m)) {
            let events = self
                .inventory
                .timeline(m.mac)
                .map_err(|e| CallError::Api(e.to_string()))?;
            let (p, _) = progress::from_timeline(&events);
            if rank(p) > rank(best) {
                best = p;
            }
        }
        Ok(best)
    }
}

/// How long before its expiry a stored admin certificate is replaced.
pub const RENEW_BEFORE: Duration = Duration::days(7);

/// The admin kubeconfig of one k0s cluster: read from the encrypted kubeconfig store,
/// minted again from the cluster CA (`pki::admin_kubeconfig`) when missing, for
/// another server, or within [`RENEW_BEFORE`] of its certificate's expiry.
#[derive(Debug, Clone)]
pub struct MintedKubeconfig {
    /// Cluster name.
    pub cluster: String,
    /// `https://<controller>:6443`.
    pub api_url: String,
    /// The k0s secrets (CA).
    pub secrets: Arc<dyn K0sSecretStore>,
    /// Where kubeconfigs are kept (encrypted at rest in production).
    pub custody: Arc<dyn KubeconfigStore>,
}

impl MintedKubeconfig {
    /// Whether `kc` still serves: same server, certificate valid beyond the margin.
    fn usable(&self, kc: &[u8], now: OffsetDateTime) -> bool {
        use base64::Engine;
        let Ok(k) = serde_saphyr::from_slice::<Kubeconfig>(kc) else {
            return false;
        };
        if k.clusters.first().map(|c| c.cluster.server.as_str()) != Some(self.api_url.as_str()) {
            return false;
        }
        let Some(b64) = k
            .users
            .first()
            .and_then(|u| u.user.client_certificate_data.clone())
        else {
            return false;
        };
        let Ok(pem_text) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        let Ok(p) = pem::parse(pem_text) else {
            return false;
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(p.contents()) else {
            return false;
        };
        cert.validity().not_after.to_datetime() - now > RENEW_BEFORE
    }
}

impl AdminKubeconfig for MintedKubeconfig {
    fn get(&self) -> Result<Vec<u8>, CallError> {
        let now = OffsetDateTime::now_utc();
        if let Some(kc) = self.custody.get(&self.cluster)?
            && self.usable(&kc, now)
        {
            return Ok(kc);
        }
        let s = self
            .secrets
            .get(&self.cluster)
            .map_err(|e| CallError::Waiting(e.to_string()))?
            .ok_or_else(|| CallError::Waiting(format!("no k0s secrets for cluster {}", self.cluster)))?;
        let kc = pki::admin_kubeconfig(&self.cluster, &self.api_url, &s, now)
            .map_err(|e| CallError::Client(e.to_string()))?
            .to_yaml()
            .into_bytes();
        self.custody.put(&self.cluster, &kc)?;
        tracing::info!(cluster = %self.cluster, "minted the appliance's admin client certificate (system:masters)");
        Ok(kc)
    }
}

/// `GET /api/v1/nodes` through kube-rs with the kubeconfig's credentials.
#[derive(Debug, Default)]
pub struct KubeNodes;

impl NodeLister for KubeNodes {
    fn nodes<'a>(&'a self, kubeconfig: &'a [u8]) -> BoxFuture<'a, Result<Vec<NodeStatus>, CallError>> {
        async move {
            let client = client_for(kubeconfig).await?;
            let list = Api::<Node>::all(client)
                .list(&ListParams::default())
                .await
                .map_err(|e| CallError::Api(format!("GET /api/v1/nodes: {e}")))?;
            Ok(list.items.into_iter().map(node_status).collect())
        }
        .boxed()
    }
}

/// The parts of a Node the workflow looks at.
pub fn node_status(n: Node) -> NodeStatus {
    let status = n.status.unwrap_or_default();
    NodeStatus {
        name: n.metadata.name.unwrap_or_default(),
        addresses: status
            .addresses
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a.address.parse().ok())
            .collect(),
        ready: status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status),
    }
}
