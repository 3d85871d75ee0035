//! The Talos API client against the fake apid over real mutual TLS on loopback:
//! bootstrap retry semantics, the kubeconfig stream, proxying, and apid's client
//! certificate rules (EKU exactly clientAuth, role from O, no certificate = refused).

use crate::common;

use common::talos_lab::TalosLab;
use provisioner::os::talos::api::pb::machine::{ResetRequest, reset_request};
use provisioner::os::talos::api::{TalosApi, Target, classify_bootstrap};
use provisioner_core::talos::bootstrap::BootstrapOutcome;
use rcgen::ExtendedKeyUsagePurpose as Eku;
use tonic::Code;

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\n";

fn big_kubeconfig() -> Vec<u8> {
    // Larger than one 256-byte chunk of the fake's stream, so chunks must be joined.
    let mut kc = KUBECONFIG.to_string();
    for i in 0..200 {
        kc.push_str(&format!(
            "# padding line {i} so the archive spans several chunks\n"
        ));
    }
    kc.into_bytes()
}

#[tokio::test]
async fn bootstrap_retries_failed_precondition_then_accepts_then_already_exists() {
    let lab = TalosLab::start(3, 3, KUBECONFIG.as_bytes()).await;
    let talos = lab.client(&lab.ca.admin());
    let node = Target::direct(lab.ips()[0]);
    assert_eq!(talos.version(node).await.unwrap(), "v1.11.6");
    let mut outcomes = Vec::new();
    loop {
        let o = classify_bootstrap(&talos.bootstrap(node).await);
        outcomes.push(o.clone());
        if !matches!(o, BootstrapOutcome::Retry(_)) {
            break;
        }
        assert!(outcomes.len() < 10, "{outcomes:?}");
    }
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(
        outcomes[..3]
            .iter()
            .all(|o| matches!(o, BootstrapOutcome::Retry(m) if m.contains("bootstrap is not available yet")))
    );
    assert_eq!(outcomes[3], BootstrapOutcome::Accepted);
    // A retry after success (e.g. the answer was lost) is AlreadyExists = done.
    assert_eq!(
        classify_bootstrap(&talos.bootstrap(node).await),
        BootstrapOutcome::AlreadyDone
    );
    assert_eq!(lab.cluster.count("Bootstrap", Code::FailedPrecondition), 3);
    assert_eq!(lab.cluster.count("Bootstrap", Code::Ok), 1);
    assert_eq!(lab.cluster.count("Bootstrap", Code::AlreadyExists), 1);
    assert_eq!(lab.cluster.bootstrapped_on(), Some(lab.ips()[0]));
}

#[tokio::test]
async fn kubeconfig_is_unpacked_from_the_streamed_tar_gz() {
    let kc = big_kubeconfig();
    let lab = TalosLab::start(1, 0, &kc).await;
    let talos = lab.client(&lab.ca.admin());
    let got = talos.kubeconfig(Target::direct(lab.ips()[0])).await.unwrap();
    assert_eq!(got, kc);
}

#[tokio::test]
async fn etcd_views_reset_apply_and_events() {
    let lab = TalosLab::start(3, 0, KUBECONFIG.as_bytes()).await;
    let talos = lab.client(&lab.ca.admin());
    let [a, b, _] = lab.ips()[..] else { unreachable!() };
    let etcd = |list: Vec<provisioner::os::talos::api::ServiceStatus>| {
        list.into_iter().find(|s| s.id == "etcd").unwrap()
    };
    let before = etcd(talos.service_list(Target::direct(a)).await.unwrap());
    assert_eq!(
        (before.last_event_state.as_str(), before.healthy),
        ("Preparing", false)
    );
    talos.bootstrap(Target::direct(a)).await.unwrap();
    let after = etcd(talos.service_list(Target::direct(b)).await.unwrap());
    assert_eq!(
        (after.last_event_state.as_str(), after.healthy),
        ("Running", true)
    );
    let first = talos.etcd_members(Target::direct(a)).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(
        first.iter().any(|m| m.is_learner),
        "the fake reports a learner once"
    );
    let second = talos.etcd_members(Target::direct(a)).await.unwrap();
    assert!(second.iter().all(|m| !m.is_learner));
    // Proxied through a's apid to b: the `nodes` header carries b.
    let req = ResetRequest {
        graceful: true,
        reboot: true,
        mode: reset_request::WipeMode::All as i32,
        ..Default::default()
    };
    talos.reset(Target::proxied(a, b), req).await.unwrap();
    let reset = lab
        .cluster
        .calls()
        .into_iter()
        .find(|c| c.method == "Reset")
        .unwrap();
    assert_eq!(
        (reset.node, reset.nodes.as_deref()),
        (a, Some(b.to_string().as_str()))
    );
    let applied = talos
        .apply_configuration(
            Target::direct(b),
            provisioner::os::talos::api::pb::machine::ApplyConfigurationRequest {
                data: b"version: v1alpha1\n".to_vec(),
                mode: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(applied.messages[0].mode, 1);
    use futures::StreamExt;
    let events: Vec<_> = talos
        .events(Target::direct(a), Default::default())
        .await
        .unwrap()
        .collect()
        .await;
    let ev = events[0].as_ref().unwrap();
    assert!(
        ev.data
            .as_ref()
            .unwrap()
            .type_url
            .ends_with("machine.MachineStatusEvent")
    );
}

#[tokio::test]
async fn client_certificate_with_wrong_eku_is_refused() {
    let lab = TalosLab::start(1, 0, KUBECONFIG.as_bytes()).await;
    let node = Target::direct(lab.ips()[0]);
    // serverAuth only: not valid for client authentication at all.
    let server_only = lab.client(&lab.ca.client("os:admin", vec![Eku::ServerAuth]));
    let e = server_only.bootstrap(node).await.unwrap_err();
    // Refused in the TLS handshake (TLS 1.3: the client learns it as a transport error).
    assert!(matches!(e.code(), Some(Code::Unavailable | Code::Unknown)), "{e}");
    assert!(
        lab.cluster.calls().is_empty(),
        "the call never reached the service"
    );
    // clientAuth plus serverAuth: passes TLS, refused by apid's "exactly clientAuth".
    let both = lab.client(&lab.ca.client("os:admin", vec![Eku::ClientAuth, Eku::ServerAuth]));
    let e = both.bootstrap(node).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("exactly clientAuth"), "{e}");
    assert_eq!(lab.cluster.bootstrapped_on(), None);
    assert_eq!(lab.cluster.count("Bootstrap", Code::Ok), 0);
}

#[tokio::test]
async fn role_comes_from_the_subject_organization() {
    let lab = TalosLab::start(1, 0, KUBECONFIG.as_bytes()).await;
    let node = Target::direct(lab.ips()[0]);
    let reader = lab.client(&lab.ca.client("os:reader", vec![Eku::ClientAuth]));
    assert_eq!(reader.version(node).await.unwrap(), "v1.11.6");
    assert_eq!(
        reader.bootstrap(node).await.unwrap_err().code(),
        Some(Code::PermissionDenied)
    );
    let nobody = lab.client(&lab.ca.client("acme", vec![Eku::ClientAuth]));
    assert_eq!(
        nobody.version(node).await.unwrap_err().code(),
        Some(Code::PermissionDenied)
    );
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    let lab = TalosLab::start(1, 0, KUBECONFIG.as_bytes()).await;
    let (ip, addr) = lab.nodes[0];
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&lab.ca.pem))
        .domain_name(ip.to_string());
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_lazy();
    let mut c =
        provisioner::os::talos::api::pb::machine::machine_service_client::MachineServiceClient::new(channel);
    let e = c.version(()).await.unwrap_err();
    assert!(matches!(e.code(), Code::Unavailable | Code::Unknown), "{e:?}");
    assert!(
        lab.cluster.calls().is_empty(),
        "refused in the handshake, before the service"
    );
}

#[tokio::test]
async fn server_certificate_must_chain_to_the_os_ca_and_name_the_node_ip() {
    let lab = TalosLab::start(2, 0, KUBECONFIG.as_bytes()).await;
    let [a, b] = lab.ips()[..] else { unreachable!() };
    // Another cluster's CA: the node's certificate does not verify.
    let other = common::pki::OsCa::new();
    let mut id = lab.ca.admin();
    id.os_ca_pem = other.pem.clone();
    let e = lab.client(&id).version(Target::direct(a)).await.unwrap_err();
    assert!(matches!(e.code(), Some(Code::Unavailable | Code::Unknown)), "{e}");
    // Right CA, but b's listener answers for a's IP: the IP SAN does not match.
    let addr_b = lab.nodes[1].1;
    let swapped = provisioner::os::talos::api::TonicTalos::new(
        &lab.ca.admin(),
        50000,
        std::time::Duration::from_secs(2),
    )
    .unwrap()
    .dial_override(a, addr_b);
    let e = swapped.version(Target::direct(a)).await.unwrap_err();
    assert!(matches!(e.code(), Some(Code::Unavailable | Code::Unknown)), "{e}");
    assert!(
        lab.cluster.calls().is_empty(),
        "no call got through: {:?}",
        lab.cluster.calls()
    );
    let _ = b;
}
