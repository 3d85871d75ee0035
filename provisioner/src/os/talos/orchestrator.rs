//! Drives the pure bootstrap workflow (`provisioner_core::cluster::bootstrap`) with
//! real I/O. Each turn: persist the transition (state + events, one durable commit),
//! *then* mark machines installed and perform the work, then feed what was seen back
//! in. A crash or restart therefore resumes at the last recorded step, and a step
//! recorded as done is never performed again (Bootstrap goes to one node, once).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use provisioner_core::cluster::bootstrap::{BootstrapState, Step};
use provisioner_core::cluster::{ClusterStore, KubeconfigError, KubeconfigStore};
use provisioner_core::inventory::{Inventory, Update};
use provisioner_core::lifecycle::{self, Trigger};
use provisioner_core::model::MacAddr;
use provisioner_core::talos::bootstrap::{self, EtcdMember, EtcdService, Observation, Plan, Work};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::api::{TalosApi, Target, classify_bootstrap};
use crate::cluster::seams::{ApiProbe, ClusterError, HandOff};

/// Everything one cluster's workflow needs.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    /// The plan (nodes, timeouts, poll interval).
    pub plan: Plan,
    /// Talos API client with the cluster's identity.
    pub talos: Arc<dyn TalosApi>,
    /// Where progress is persisted.
    pub store: Arc<dyn ClusterStore>,
    /// Machines to mark `Installed`, and their MACs by node IP. The inventory is
    /// the boot service's journal, so the marks are published like every other
    /// timeline event.
    pub inventory: Option<(Arc<dyn Inventory>, BTreeMap<IpAddr, MacAddr>)>,
    /// Kubeconfig custody.
    pub kubeconfigs: Arc<dyn KubeconfigStore>,
    /// `/readyz`.
    pub api: Arc<dyn ApiProbe>,
    /// ArgoCD hand-off.
    pub hand_off: Arc<dyn HandOff>,
}

impl Orchestrator {
    /// Runs the workflow until it is `HandedOff` or `Failed`, or `shutdown` fires
    /// (then it returns the step it stopped in; the store has everything to resume).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<Step, ClusterError> {
        let cluster = self.plan.cluster.clone();
        let mut state = match self.store.load(&cluster)? {
            Some(s) => s,
            None => BootstrapState::new(&cluster, OffsetDateTime::now_utc()),
        };
        let kubeconfig_available = matches!(self.kubeconfigs.get(&cluster), Ok(Some(_)));
        let mut obs = Observation::Resumed { kubeconfig_available };
        loop {
            let t = bootstrap::step(&self.plan, &state, obs, OffsetDateTime::now_utc());
            // Persist first: what is recorded as done is never done again.
            self.store.save(&t.next, &t.events)?;
            for e in &t.events {
                tracing::info!(cluster = %cluster, step = %t.next.step, kind = ?e.kind, "{}", e.detail);
            }
            state = t.next;
            self.mark_installed(&t.mark_installed);
            let Some(work) = t.work else {
                return Ok(state.step);
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(state.step),
                () = tokio::time::sleep(t.delay) => {}
            }
            obs = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(state.step),
                o = self.perform(&work) => o,
            };
        }
    }

    /// The one place that talks to nodes and the API server.
    async fn perform(&self, work: &Work) -> Observation {
        let cluster = &self.plan.cluster;
        match work {
            Work::ProbeVersions(nodes) => {
                let probes = nodes
                    .iter()
                    .map(|ip| async move { (*ip, self.talos.version(Target::direct(*ip)).await) });
                let mut ok = BTreeSet::new();
                let mut failed = BTreeMap::new();
                for (ip, r) in futures::future::join_all(probes).await {
                    match r {
                        Ok(_) => {
                            ok.insert(ip);
                        }
                        Err(e) => {
                            failed.insert(ip, e.to_string());
                        }
                    }
                }
                Observation::Versions { ok, failed }
            }
            Work::Bootstrap(node) => {
                let r = self.talos.bootstrap(Target::direct(*node)).await;
                Observation::Bootstrap(classify_bootstrap(&r))
            }
            Work::CheckEtcd => {
                let nodes = &self.plan.control_plane;
                let lists = nodes
                    .iter()
                    .map(|ip| async move { (*ip, self.talos.service_list(Target::direct(*ip)).await) });
                let services = futures::future::join_all(lists)
                    .await
                    .into_iter()
                    .map(|(ip, r)| {
                        let etcd = r.ok().and_then(|list| {
                            list.into_iter().find(|s| s.id == "etcd").map(|s| EtcdService {
                                state: s.last_event_state,
                                healthy: s.healthy,
                            })
                        });
                        (ip, etcd)
                    })
                    .collect();
                // Any one healthy node's view of the membership will do.
                let mut members = Vec::new();
                for ip in nodes {
                    if let Ok(m) = self.talos.etcd_members(Target::direct(*ip)).await {
                        members = m
                            .into_iter()
                            .map(|m| EtcdMember {
                                hostname: m.hostname,
                                is_learner: m.is_learner,
                            })
                            .collect();
                        break;
                    }
                }
                Observation::Etcd { services, members }
            }
            Work::FetchKubeconfig(node) => {
                let r = match self.talos.kubeconfig(Target::direct(*node)).await {
                    Ok(kc) => self.kubeconfigs.put(cluster, &kc).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                Observation::Kubeconfig(r)
            }
            Work::CheckReadyz => Observation::Readyz(match self.kubeconfig() {
                Ok(kc) => self.api.readyz(&kc).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }),
            Work::HandOff => Observation::HandOff(match self.kubeconfig() {
                Ok(kc) => self
                    .hand_off
                    .hand_off(cluster, &kc)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }),
            Work::CheckArgo => Observation::Argo(match self.kubeconfig() {
                Ok(kc) => self
                    .hand_off
                    .argo_status(cluster, &kc)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }),
        }
    }

    fn kubeconfig(&self) -> Result<Vec<u8>, KubeconfigError> {
        self.kubeconfigs
            .get(&self.plan.cluster)?
            .ok_or_else(|| KubeconfigError::Backend("kubeconfig missing from the secret store".into()))
    }

    /// A node that answered `Version` over mTLS is installed: its machine moves to
    /// `Installed`, so its next netboot boots from disk (the lifecycle rule).
    fn mark_installed(&self, nodes: &[IpAddr]) {
        let Some((inventory, macs)) = &self.inventory else {
            return;
        };
        for ip in nodes {
            let Some(mac) = macs.get(ip) else { continue };
            let now = OffsetDateTime::now_utc();
            let r = inventory.apply(*mac, &mut |current| {
                let Some(mut m) = current else {
                    return Update::default();
                };
                match m.apply(Trigger::InstallReported(lifecycle::Report::TalosApi(*ip)), now) {
                    Ok(events) => Update {
                        machine: Some(m),
                        events,
                        ..Update::default()
                    },
                    Err(_) => Update::default(),
                }
            });
            if let Err(e) = r {
                tracing::warn!(%ip, %mac, error = %e, "marking machine installed failed");
            }
        }
    }
}
