//! A fake Talos apid: a tonic server built from the same protos as the client, serving
//! mutual TLS like apid (talos.md §9.2-§9.3, §17.1): the server certificate is issued
//! by the cluster's OS CA for the node's IP, a client certificate signed by that CA is
//! required, its EKU must be exactly clientAuth, and the role comes from its subject O.
//! Several node servers share one [`FakeCluster`] (etcd bootstrapped once, members,
//! kubeconfig). Integration tests and the simulated lab's node agent use it; each lab
//! agent is its own process holding a one-node cluster, and learns its peers and
//! their bootstrap through [`FakeCluster::add_member`] / [`FakeCluster::mark_bootstrapped`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

use super::apid_auth::{Role, role_of};
use crate::os::talos::api::kubeconfig;
use crate::os::talos::api::pb::common::{Data, Metadata};
use crate::os::talos::api::pb::machine::machine_service_server::{MachineService, MachineServiceServer};
use crate::os::talos::api::pb::machine::*;

/// One call the fake answered (or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The node whose apid was called.
    pub node: IpAddr,
    /// gRPC method name (`Bootstrap`, ...).
    pub method: &'static str,
    /// How it was answered.
    pub code: Code,
    /// The `nodes` metadata (proxy request), if any.
    pub nodes: Option<String>,
}

/// Behaviour and state shared by every node of a fake cluster.
#[derive(Debug)]
struct Model {
    hostnames: BTreeMap<IpAddr, String>,
    /// `Bootstrap` answers FailedPrecondition this many more times (CRI not up yet).
    bootstrap_not_ready: u32,
    bootstrapped_on: Option<IpAddr>,
    /// `EtcdMemberList` reports the last member as a learner this many more times.
    learner_polls: u32,
    kubeconfig: Vec<u8>,
    calls: Vec<Call>,
    /// Accepted `Reset` requests: (node called, request).
    resets: Vec<(IpAddr, ResetRequest)>,
}

/// The shared state of a fake Talos cluster; clone it into every node server.
#[derive(Debug, Clone)]
pub struct FakeCluster {
    model: Arc<Mutex<Model>>,
}

impl FakeCluster {
    /// A cluster of `nodes` (IP, hostname) whose `Bootstrap` answers
    /// FailedPrecondition `not_ready` times before accepting, and whose `Kubeconfig`
    /// serves `kubeconfig`.
    pub fn new(nodes: &[(IpAddr, &str)], not_ready: u32, kubeconfig: &[u8]) -> Self {
        Self {
            model: Arc::new(Mutex::new(Model {
                hostnames: nodes.iter().map(|(ip, h)| (*ip, h.to_string())).collect(),
                bootstrap_not_ready: not_ready,
                bootstrapped_on: None,
                learner_polls: 1,
                kubeconfig: kubeconfig.to_vec(),
                calls: Vec::new(),
                resets: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// etcd members stay learners for the next `polls` member lists (a cluster whose
    /// etcd does not settle within the step's timeout).
    pub fn hold_learner(&self, polls: u32) {
        self.lock().learner_polls = polls;
    }

    /// Every call answered so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls of `method` answered with `code`.
    pub fn count(&self, method: &str, code: Code) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method && c.code == code)
            .count()
    }

    /// The node etcd was bootstrapped on.
    pub fn bootstrapped_on(&self) -> Option<IpAddr> {
        self.lock().bootstrapped_on
    }

    /// Marks etcd as bootstrapped on `node` (a cluster already running: `ServiceList`
    /// then reports etcd `Running` and healthy on every node).
    pub fn mark_bootstrapped(&self, node: IpAddr) {
        self.lock().bootstrapped_on = Some(node);
    }

    /// Every accepted `Reset` request, in order: (node whose apid was called, request).
    pub fn resets(&self) -> Vec<(IpAddr, ResetRequest)> {
        self.lock().resets.clone()
    }

    /// The hostname the cluster knows for `node`.
    pub fn hostname(&self, node: IpAddr) -> Option<String> {
        self.lock().hostnames.get(&node).cloned()
    }

    /// Adds (or renames) an etcd member: a peer node this process learned about.
    pub fn add_member(&self, node: IpAddr, hostname: &str) {
        self.lock().hostnames.insert(node, hostname.to_string());
    }

    fn record(&self, node: IpAddr, method: &'static str, code: Code, nodes: Option<String>) {
        self.lock().calls.push(Call {
            node,
            method,
            code,
            nodes,
        });
    }
}

/// TLS material of one fake node: its apid certificate (issued by the OS CA for the
/// node's IP) and the OS CA that client certificates must chain to.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// Server certificate PEM.
    pub cert_pem: String,
    /// Server key PEM.
    pub key_pem: String,
    /// OS CA PEM.
    pub client_ca_pem: String,
}

/// Serves one fake node on an already-bound listener until `shutdown`.
pub async fn serve(
    node: IpAddr,
    listener: tokio::net::TcpListener,
    tls: &NodeTls,
    cluster: FakeCluster,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .client_ca_root(Certificate::from_pem(&tls.client_ca_pem));
    Server::builder()
        .tls_config(tls)?
        .add_service(MachineServiceServer::new(FakeNode { node, cluster }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
}

#[derive(Debug)]
struct FakeNode {
    node: IpAddr,
    cluster: FakeCluster,
}

impl FakeNode {
    /// Authorizes the call; returns its `nodes` metadata (recorded with the answer).
    fn check<T>(&self, req: &Request<T>, method: &'static str, need: Role) -> Result<Option<String>, Status> {
        let nodes = req
            .metadata()
            .get("nodes")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let refused = match role_of(req) {
            Ok(role) if role >= need => return Ok(nodes),
            Ok(_) => Status::permission_denied(format!("{method} needs os:admin")),
            Err(s) => s,
        };
        self.cluster.record(self.node, method, refused.code(), nodes);
        Err(refused)
    }

    fn answer<T>(
        &self,
        method: &'static str,
        nodes: Option<String>,
        r: Result<T, Status>,
    ) -> Result<T, Status> {
        let code = r.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.cluster.record(self.node, method, code, nodes);
        r
    }

    fn meta(&self) -> Option<Metadata> {
        let hostname = self
            .cluster
            .lock()
            .hostnames
            .get(&self.node)
            .cloned()
            .unwrap_or_default();
        Some(Metadata {
            hostname,
            error: String::new(),
        })
    }
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl MachineService for FakeNode {
    async fn apply_configuration(
        &self,
        req: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        let nodes = self.check(&req, "ApplyConfiguration", Role::Admin)?;
        let mode = req.get_ref().mode;
        let r = Ok(Response::new(ApplyConfigurationResponse {
            messages: vec![ApplyConfiguration {
                metadata: self.meta(),
                warnings: vec![],
                mode,
                mode_details: "applied".into(),
            }],
        }));
        self.answer("ApplyConfiguration", nodes, r)
    }

    async fn bootstrap(&self, req: Request<BootstrapRequest>) -> Result<Response<BootstrapResponse>, Status> {
        let nodes = self.check(&req, "Bootstrap", Role::Admin)?;
        // Messages and codes as machined answers (talos.md §10.2).
        let r = {
            let mut m = self.cluster.lock();
            if m.bootstrapped_on.is_some() {
                Err(Status::already_exists("etcd data directory is not empty"))
            } else if m.bootstrap_not_ready > 0 {
                m.bootstrap_not_ready -= 1;
                Err(Status::failed_precondition("bootstrap is not available yet"))
            } else {
                m.bootstrapped_on = Some(self.node);
                Ok(Response::new(BootstrapResponse {
                    messages: vec![Bootstrap { metadata: None }],
                }))
            }
        };
        self.answer("Bootstrap", nodes, r)
    }

    type EventsStream = Streamed<Event>;

    async fn events(&self, req: Request<EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        let nodes = self.check(&req, "Events", Role::Reader)?;
        let status = MachineStatusEvent {
            stage: machine_status_event::MachineStage::Running as i32,
            status: Some(machine_status_event::MachineStatus {
                ready: true,
                unmet_conditions: vec![],
            }),
        };
        let event = Event {
            metadata: self.meta(),
            data: Some(prost_types::Any {
                type_url: "talos/runtime/machine.MachineStatusEvent".into(),
                value: prost::Message::encode_to_vec(&status),
            }),
            id: "1".into(),
            actor_id: String::new(),
        };
        self.answer("Events", nodes, Ok(()))?;
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(event)]))))
    }

    async fn etcd_member_list(
        &self,
        req: Request<EtcdMemberListRequest>,
    ) -> Result<Response<EtcdMemberListResponse>, Status> {
        let nodes = self.check(&req, "EtcdMemberList", Role::Reader)?;
        let r = {
            let mut m = self.cluster.lock();
            if m.bootstrapped_on.is_none() {
                Err(Status::unavailable("etcd is not running"))
            } else {
                let learner = m.learner_polls > 0;
                m.learner_polls = m.learner_polls.saturating_sub(1);
                let n = m.hostnames.len();
                let members = m
                    .hostnames
                    .values()
                    .enumerate()
                    .map(|(i, h)| EtcdMember {
                        id: 1000 + i as u64,
                        hostname: h.clone(),
                        peer_urls: vec![],
                        client_urls: vec![],
                        is_learner: learner && i + 1 == n,
                    })
                    .collect();
                Ok(Response::new(EtcdMemberListResponse {
                    messages: vec![EtcdMembers {
                        metadata: None,
                        legacy_members: vec![],
                        members,
                    }],
                }))
            }
        };
        self.answer("EtcdMemberList", nodes, r)
    }

    type KubeconfigStream = Streamed<Data>;

    async fn kubeconfig(&self, req: Request<()>) -> Result<Response<Self::KubeconfigStream>, Status> {
        let nodes = self.check(&req, "Kubeconfig", Role::Admin)?;
        let archive = kubeconfig::pack(&self.cluster.lock().kubeconfig);
        // Small chunks, so the client must concatenate.
        let meta = self.meta();
        let chunks: Vec<Result<Data, Status>> = archive
            .chunks(256)
            .map(|c| {
                Ok(Data {
                    metadata: meta.clone(),
                    bytes: c.to_vec(),
                })
            })
            .collect();
        self.answer("Kubeconfig", nodes, Ok(()))?;
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn reset(&self, req: Request<ResetRequest>) -> Result<Response<ResetResponse>, Status> {
        let nodes = self.check(&req, "Reset", Role::Admin)?;
        self.cluster
            .lock()
            .resets
            .push((self.node, req.get_ref().clone()));
        let r = Ok(Response::new(ResetResponse {
            messages: vec![Reset {
                metadata: self.meta(),
                actor_id: "fake".into(),
            }],
        }));
        self.answer("Reset", nodes, r)
    }

    async fn service_list(&self, req: Request<()>) -> Result<Response<ServiceListResponse>, Status> {
        let nodes = self.check(&req, "ServiceList", Role::Reader)?;
        let bootstrapped = self.cluster.lock().bootstrapped_on.is_some();
        // Before bootstrap, etcd loops in its pre-state (talos.md §10.4 step 3).
        let (state, healthy) = if bootstrapped {
            ("Running", true)
        } else {
            ("Preparing", false)
        };
        let service = |id: &str, state: &str, healthy: bool| ServiceInfo {
            id: id.into(),
            state: state.into(),
            events: Some(ServiceEvents {
                events: vec![ServiceEvent {
                    msg: format!("{id} is {state}"),
                    state: state.into(),
                    ts: None,
                }],
            }),
            health: Some(ServiceHealth {
                unknown: false,
                healthy,
                last_message: String::new(),
                last_change: None,
            }),
        };
        let r = Ok(Response::new(ServiceListResponse {
            messages: vec![ServiceList {
                metadata: self.meta(),
                services: vec![
                    service("etcd", state, healthy),
                    service("kubelet", "Running", true),
                ],
            }],
        }));
        self.answer("ServiceList", nodes, r)
    }

    async fn version(&self, req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        let nodes = self.check(&req, "Version", Role::Reader)?;
        let r = Ok(Response::new(VersionResponse {
            messages: vec![Version {
                metadata: self.meta(),
                version: Some(VersionInfo {
                    tag: "v1.11.6".into(),
                    sha: "fake".into(),
                    built: String::new(),
                    go_version: String::new(),
                    os: "linux".into(),
                    arch: "amd64".into(),
                }),
                platform: Some(PlatformInfo {
                    name: "metal".into(),
                    mode: "metal".into(),
                }),
                features: Some(FeaturesInfo { rbac: true }),
            }],
        }));
        self.answer("Version", nodes, r)
    }
}
