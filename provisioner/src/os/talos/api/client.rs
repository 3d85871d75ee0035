//! [`TonicTalos`]: the Talos API over tonic with mutual TLS. The server certificate is
//! verified against the cluster's OS CA with the node's IP as the expected name (apid
//! certificates carry the node IPs as SANs, talos.md §9.2); the client presents the
//! `os:admin` certificate. One lazily connected channel per apid, reused across calls.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use provisioner_core::talos::bootstrap::BootstrapOutcome;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::pb::machine::machine_service_client::MachineServiceClient;
use super::pb::machine::{
    ApplyConfigurationRequest, ApplyConfigurationResponse, BootstrapRequest, EtcdMemberListRequest, Event,
    EventsRequest, ResetRequest,
};
use super::{
    ClusterIdentity, EtcdMemberInfo, ServiceStatus, TalosApi, TalosError, Target, kubeconfig,
    normalize_key_pem,
};

/// The Talos API client for one cluster identity.
#[derive(Debug)]
pub struct TonicTalos {
    ca: Certificate,
    identity: Identity,
    port: u16,
    /// Where to dial a node when it is not `node:port` (tests bind port 0).
    dial: BTreeMap<IpAddr, SocketAddr>,
    attempt_timeout: Duration,
    channels: Mutex<HashMap<IpAddr, Channel>>,
}

impl TonicTalos {
    /// A client presenting `identity`, dialling apid on `port` (normally
    /// [`super::APID_PORT`]). Each call is one attempt bounded by `attempt_timeout`
    /// (talos.md §10.3 uses 2 s per attempt).
    pub fn new(identity: &ClusterIdentity, port: u16, attempt_timeout: Duration) -> Result<Self, TalosError> {
        for (what, pem, label) in [
            ("OS CA", &identity.os_ca_pem, "CERTIFICATE"),
            ("client certificate", &identity.client_cert_pem, "CERTIFICATE"),
        ] {
            if !pem.contains(&format!("-----BEGIN {label}-----")) {
                return Err(TalosError::Identity(format!("{what} is not a PEM {label}")));
            }
        }
        let key = normalize_key_pem(&identity.client_key_pem);
        if !key.contains("PRIVATE KEY-----") {
            return Err(TalosError::Identity("client key is not a PEM private key".into()));
        }
        Ok(Self {
            ca: Certificate::from_pem(&identity.os_ca_pem),
            identity: Identity::from_pem(&identity.client_cert_pem, key),
            port,
            dial: BTreeMap::new(),
            attempt_timeout,
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// Dial `addr` for `node` (the name checked stays `node`'s IP).
    pub fn dial_override(mut self, node: IpAddr, addr: SocketAddr) -> Self {
        self.dial.insert(node, addr);
        self
    }

    fn client(&self, target: Target) -> Result<MachineServiceClient<Channel>, TalosError> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| TalosError::Identity("channel cache poisoned".into()))?;
        if let Some(ch) = channels.get(&target.endpoint) {
            return Ok(MachineServiceClient::new(ch.clone()));
        }
        let addr = self
            .dial
            .get(&target.endpoint)
            .copied()
            .unwrap_or(SocketAddr::new(target.endpoint, self.port));
        let tls = ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            // An IP here makes rustls check the certificate's IP SANs.
            .domain_name(target.endpoint.to_string());
        let status = |e: tonic::transport::Error| TalosError::Status {
            node: target.endpoint,
            code: tonic::Code::Unavailable,
            message: e.to_string(),
        };
        let ch = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(status)?
            .tls_config(tls)
            .map_err(status)?
            .connect_timeout(self.attempt_timeout)
            .connect_lazy();
        channels.insert(target.endpoint, ch.clone());
        Ok(MachineServiceClient::new(ch))
    }

    /// A request carrying the `nodes` header when proxying, and the attempt deadline
    /// (`grpc-timeout`, which the server honours) unless `streaming`.
    fn request<T>(&self, target: Target, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.attempt_timeout);
        if let Some(node) = target.node {
            // apid proxies to the nodes listed here (talos.md §9.4).
            if let Ok(v) = node.to_string().parse() {
                req.metadata_mut().insert("nodes", v);
            }
        }
        req
    }
}

impl TonicTalos {
    /// Bounds one attempt on our side too, so a peer that never answers cannot stall
    /// the caller (the channel has no global timeout: `Events` streams are long).
    async fn bounded<T>(
        &self,
        target: Target,
        fut: impl std::future::Future<Output = Result<T, TalosError>>,
    ) -> Result<T, TalosError> {
        tokio::time::timeout(self.attempt_timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(TalosError::Status {
                    node: target.node.unwrap_or(target.endpoint),
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("no answer within {:?}", self.attempt_timeout),
                })
            })
    }
}

fn status(target: Target) -> impl Fn(tonic::Status) -> TalosError {
    move |s| TalosError::Status {
        node: target.node.unwrap_or(target.endpoint),
        code: s.code(),
        message: s.message().to_string(),
    }
}

/// Per-node errors inside a successful response (`metadata.error`, set when apid
/// proxies to several nodes).
fn meta_error(target: Target, meta: Option<&super::pb::common::Metadata>) -> Result<(), TalosError> {
    match meta {
        Some(m) if !m.error.is_empty() => Err(TalosError::Protocol {
            node: target.node.unwrap_or(target.endpoint),
            message: m.error.clone(),
        }),
        _ => Ok(()),
    }
}

/// Classifies a `Bootstrap` failure per talos.md §10.2/§10.3: AlreadyExists means an
/// earlier call succeeded; FailedPrecondition (CRI or time sync not ready),
/// DeadlineExceeded and transport errors are retried; FailedPrecondition on a worker,
/// and everything else, is fatal.
pub fn classify_bootstrap(result: &Result<(), TalosError>) -> BootstrapOutcome {
    use tonic::Code;
    match result {
        Ok(()) => BootstrapOutcome::Accepted,
        Err(e) => match e.code() {
            Some(Code::AlreadyExists) => BootstrapOutcome::AlreadyDone,
            Some(Code::FailedPrecondition) if e.to_string().contains("control plane node") => {
                BootstrapOutcome::Fatal(e.to_string())
            }
            Some(Code::FailedPrecondition | Code::DeadlineExceeded | Code::Unavailable | Code::Cancelled) => {
                BootstrapOutcome::Retry(e.to_string())
            }
            // "error reading from server: EOF" and broken connections (a node rebooting
            // mid-call) surface as Unknown/Internal transport errors.
            Some(Code::Unknown | Code::Internal)
                if ["EOF", "connection", "transport error"]
                    .iter()
                    .any(|m| e.to_string().contains(m)) =>
            {
                BootstrapOutcome::Retry(e.to_string())
            }
            _ => BootstrapOutcome::Fatal(e.to_string()),
        },
    }
}

impl TalosApi for TonicTalos {
    fn version(&self, target: Target) -> BoxFuture<'_, Result<String, TalosError>> {
        self.bounded(target, async move {
            let mut c = self.client(target)?;
            let resp = c
                .version(self.request(target, ()))
                .await
                .map_err(status(target))?
                .into_inner();
            let m = resp
                .messages
                .into_iter()
                .next()
                .ok_or_else(|| TalosError::Protocol {
                    node: target.endpoint,
                    message: "empty Version response".into(),
                })?;
            meta_error(target, m.metadata.as_ref())?;
            Ok(m.version.map(|v| v.tag).unwrap_or_default())
        })
        .boxed()
    }

    fn bootstrap(&self, target: Target) -> BoxFuture<'_, Result<(), TalosError>> {
        self.bounded(target, async move {
            let mut c = self.client(target)?;
            let resp = c
                .bootstrap(self.request(target, BootstrapRequest::default()))
                .await
                .map_err(status(target))?
                .into_inner();
            for m in &resp.messages {
                meta_error(target, m.metadata.as_ref())?;
            }
            Ok(())
        })
        .boxed()
    }

    fn kubeconfig(&self, target: Target) -> BoxFuture<'_, Result<Vec<u8>, TalosError>> {
        self.bounded(target, async move {
            let mut c = self.client(target)?;
            let mut stream = c
                .kubeconfig(self.request(target, ()))
                .await
                .map_err(status(target))?
                .into_inner();
            let mut archive = Vec::new();
            while let Some(chunk) = stream.message().await.map_err(status(target))? {
                meta_error(target, chunk.metadata.as_ref())?;
                if archive.len() + chunk.bytes.len() > kubeconfig::MAX_ARCHIVE {
                    return Err(TalosError::Protocol {
                        node: target.endpoint,
                        message: "kubeconfig stream exceeds 4 MiB".into(),
                    });
                }
                archive.extend_from_slice(&chunk.bytes);
            }
            kubeconfig::unpack(&archive).map_err(|e| TalosError::Protocol {
                node: target.endpoint,
                message: e.to_string(),
            })
        })
        .boxed()
    }

    fn service_list(&self, target: Target) -> BoxFuture<'_, Result<Vec<ServiceStatus>, TalosError>> {
        self.bounded(target, async move {
            let mut c = self.client(target)?;
            let resp = c
                .service_list(self.request(target, ()))
                .await
                .map_err(status(target))?
                .into_inner();
            let mut out = Vec::new();
            for list in resp.messages {
                meta_error(target, list.metadata.as_ref())?;
                for s in list.services {
                    out.push(ServiceStatus {
                        last_event_state: s
                            .events
                            .and_then(|e| e.events.last().map(|e| e.state.clone()))
                            .unwrap_or(s.state),
                        healthy: s.health.is_some_and(|h| h.healthy),
                        id: s.id,
                    });
                }
            }
            Ok(out)
        })
        .boxed()
    }

    fn etcd_members(&self, target: Target) -> BoxFuture<'_, Result<Vec<EtcdMemberInfo>, TalosError>> {
        self.bounded(target, async move {
            let mut c = self.client(target)?;
            let resp = c
                .etcd_member_list(self.request(target, EtcdMemberListRequest::default()))
                .await
                .map_err(status(target))?
                .into_inner();
            let mut out = Vec::new();
            for list in resp.messages {
                meta_error(target, list.metadata.as_ref())?;
                out.extend(list.members.into_iter().map(|m| EtcdMemberInfo {
                    id: m.id,
                    hostname: m.hostname,
                    is_learner: m.is_learner,
                }));
            }
            Ok(out)
        })
        .boxed()
    }

    fn reset(&self, target: Target, req: ResetRequest) -> BoxFuture<'_, Result<(), TalosError>> {
        self.bounded(target, async move {
            let mut c = self.client(target)?;
            let resp = c
                .reset(self.request(target, req))
                .await
                .map_err(status(target))?
                .into_inner();
            for m in &resp.messages {
                meta_error(target, m.metadata.as_ref())?;
            }
            Ok(())
        })
        .boxed()
    }

    fn apply_configuration(
        &self,
        target: Target,
        req: ApplyConfigurationRequest,
    ) -> BoxFuture<'_, Result<ApplyConfigurationResponse, TalosError>> {
        self.bounded(target, async move {
            let mut c = self.client(target)?;
            let resp = c
                .apply_configuration(self.request(target, req))
                .await
                .map_err(status(target))?
                .into_inner();
            for m in &resp.messages {
                meta_error(target, m.metadata.as_ref())?;
            }
            Ok(resp)
        })
        .boxed()
    }

    fn events(
        &self,
        target: Target,
        req: EventsRequest,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<Event, TalosError>>, TalosError>> {
        async move {
            let mut c = self.client(target)?;
            // A stream outlives one attempt's timeout: no deadline on this request.
            let mut request = self.request(target, req);
            request.metadata_mut().remove("grpc-timeout");
            let stream = c.events(request).await.map_err(status(target))?.into_inner();
            let map = status(target);
            Ok(stream.map(move |r| r.map_err(&map)).boxed())
        }
        .boxed()
    }
}
