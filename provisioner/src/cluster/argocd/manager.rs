//! The credential ArgoCD uses for a managed cluster, set up the way `argocd cluster
//! add` does it (argo `util/clusterauth/clusterauth.go`): in the managed cluster, the
//! ServiceAccount `argocd-manager` in `kube-system`, the ClusterRole
//! `argocd-manager-role` (every verb on every resource and non-resource URL), its
//! ClusterRoleBinding, and a long-lived `kubernetes.io/service-account-token` Secret
//! `argocd-manager-long-lived-token` that the token controller fills with `data.token`.
//!
//! Why not the appliance's admin client certificate: it expires (the k0s admin
//! certificate after 30 days, Talos' after a year) and nothing re-registers a
//! cluster once it is handed off, so ArgoCD would silently lose it. A
//! service-account token Secret does not expire while the Secret exists.
//!
//! The objects are pure builders; [`register`] is the only I/O: server-side apply
//! with the appliance's field manager (no API discovery), a bounded poll for the
//! token, then the ArgoCD cluster Secret built by [`super::objects::cluster_secret`].
//! The token is never logged: it only leaves this module inside that Secret.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject};
use serde_json::json;

use super::install::{InstallError, Installer};
use super::manifest::Resources;
use super::objects::{self, Endpoint};

/// Namespace of the ServiceAccount (as `argocd cluster add`).
pub const MANAGER_NAMESPACE: &str = "kube-system";
/// The ServiceAccount ArgoCD acts as in a managed cluster.
pub const MANAGER_SERVICE_ACCOUNT: &str = "argocd-manager";
/// Its ClusterRole.
pub const MANAGER_CLUSTER_ROLE: &str = "argocd-manager-role";
/// Its ClusterRoleBinding.
pub const MANAGER_CLUSTER_ROLE_BINDING: &str = "argocd-manager-role-binding";
/// The long-lived token Secret (`<service account>-long-lived-token`).
pub const MANAGER_TOKEN_SECRET: &str = "argocd-manager-long-lived-token";
/// Annotation that ties a token Secret to its ServiceAccount (k8s `ServiceAccountNameKey`).
pub const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// Secret type the token controller fills (k8s `SecretTypeServiceAccountToken`).
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Why a cluster could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The admin kubeconfig is unusable.
    #[error("kubeconfig of {cluster}: {why}")]
    Kubeconfig {
        /// Cluster name.
        cluster: String,
        /// What is wrong with it.
        why: String,
    },
    /// Applying the ServiceAccount, RBAC or token Secret failed.
    #[error("setting up {MANAGER_SERVICE_ACCOUNT} in {cluster}: {source}")]
    Apply {
        /// Cluster name.
        cluster: String,
        /// The apply error.
        source: InstallError,
    },
    /// Reading the token Secret failed.
    #[error("reading {MANAGER_NAMESPACE}/{MANAGER_TOKEN_SECRET} in {cluster}: {source}")]
    Read {
        /// Cluster name.
        cluster: String,
        /// kube's error.
        source: kube::Error,
    },
    /// The token controller did not fill the Secret in time.
    #[error(
        "timed out after {secs}s waiting for the token controller of {cluster} to fill {MANAGER_NAMESPACE}/{MANAGER_TOKEN_SECRET}"
    )]
    Timeout {
        /// Cluster name.
        cluster: String,
        /// How long.
        secs: u64,
    },
    /// The Secret's token is not text (a bearer token must be).
    #[error("{MANAGER_NAMESPACE}/{MANAGER_TOKEN_SECRET} in {cluster} holds a token that is not UTF-8")]
    BadToken {
        /// Cluster name.
        cluster: String,
    },
}

fn object(v: serde_json::Value) -> DynamicObject {
    serde_json::from_value(v).expect("objects built here always deserialize")
}

/// The objects applied in the managed cluster, in apply order: ServiceAccount,
/// ClusterRole, ClusterRoleBinding, token Secret (without `data`: the token
/// controller owns it, so re-applying never clears the token).
pub fn manager_objects() -> Vec<DynamicObject> {
    vec![
        object(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": MANAGER_SERVICE_ACCOUNT, "namespace": MANAGER_NAMESPACE},
        })),
        object(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": MANAGER_CLUSTER_ROLE},
            "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        })),
        object(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": MANAGER_CLUSTER_ROLE_BINDING},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": MANAGER_CLUSTER_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": MANAGER_SERVICE_ACCOUNT,
                          "namespace": MANAGER_NAMESPACE}],
        })),
        object(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": MANAGER_TOKEN_SECRET, "namespace": MANAGER_NAMESPACE,
                         "annotations": {SERVICE_ACCOUNT_NAME_ANNOTATION: MANAGER_SERVICE_ACCOUNT}},
            "type": SERVICE_ACCOUNT_TOKEN_TYPE,
        })),
    ]
}

/// What the token controller wrote into the Secret, once it has.
struct Filled {
    token: String,
    /// `data["ca.crt"]` (PEM), the fallback when the kubeconfig carries no CA.
    ca_pem: Option<Vec<u8>>,
}

fn filled(cluster: &str, s: &Secret) -> Result<Option<Filled>, RegisterError> {
    let Some(data) = s.data.as_ref() else {
        return Ok(None);
    };
    let Some(token) = data.get("token").filter(|t| !t.0.is_empty()) else {
        return Ok(None);
    };
    let token = String::from_utf8(token.0.clone()).map_err(|_| RegisterError::BadToken {
        cluster: cluster.to_string(),
    })?;
    Ok(Some(Filled {
        token,
        ca_pem: data.get("ca.crt").map(|c| c.0.clone()),
    }))
}

/// Sets up `argocd-manager` in the cluster behind `kubeconfig` (the appliance's admin
/// kubeconfig), waits up to `timeout` (polling every `poll`) for its token, and
/// returns the ArgoCD cluster Secret registering the cluster as `name` with that
/// token, the kubeconfig's server and CA (else the Secret's `ca.crt`). Idempotent:
/// every object is server-side applied, and an existing token is reused.
pub async fn register(
    name: &str,
    kubeconfig: &[u8],
    timeout: Duration,
    poll: Duration,
) -> Result<DynamicObject, RegisterError> {
    let bad = |why: String| RegisterError::Kubeconfig {
        cluster: name.to_string(),
        why,
    };
    let endpoint = objects::endpoint(kubeconfig).map_err(|e| bad(e.0))?;
    let client = super::client_for(kubeconfig)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let installer = Installer::new(client.clone(), Resources::builtin());
    for obj in manager_objects() {
        installer
            .apply(&obj)
            .await
            .map_err(|source| RegisterError::Apply {
                cluster: name.to_string(),
                source,
            })?;
    }
    let secrets: Api<Secret> = Api::namespaced(client, MANAGER_NAMESPACE);
    let wait = async {
        loop {
            match secrets.get_opt(MANAGER_TOKEN_SECRET).await {
                Ok(Some(s)) => {
                    if let Some(f) = filled(name, &s)? {
                        return Ok(f);
                    }
                }
                Ok(None) => {}
                // The API server settling (as `Installer::wait_for`): keep polling.
                Err(kube::Error::Api(e)) if e.code >= 500 => {}
                Err(source) => {
                    return Err(RegisterError::Read {
                        cluster: name.to_string(),
                        source,
                    });
                }
            }
            tokio::time::sleep(poll).await;
        }
    };
    let f = tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| RegisterError::Timeout {
            cluster: name.to_string(),
            secs: timeout.as_secs(),
        })??;
    let ca_data = endpoint.ca_data.clone().or_else(|| {
        f.ca_pem
            .as_ref()
            .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem))
    });
    tracing::info!(cluster = %name, server = %endpoint.server, "registering with the {MANAGER_SERVICE_ACCOUNT} service-account token");
    Ok(objects::cluster_secret(
        name,
        &Endpoint {
            server: endpoint.server,
            ca_data,
        },
        &f.token,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn manager_objects_match_argocd_cluster_add() {
        let objs: Vec<Value> = manager_objects()
            .iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect();
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret"]
        );
        assert_eq!(objs[0]["metadata"]["namespace"], "kube-system");
        assert_eq!(objs[0]["metadata"]["name"], "argocd-manager");
        assert_eq!(
            objs[1]["rules"],
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}])
        );
        assert_eq!(objs[2]["roleRef"]["name"], "argocd-manager-role");
        assert_eq!(
            objs[2]["subjects"],
            json!([{"kind": "ServiceAccount", "name": "argocd-manager", "namespace": "kube-system"}])
        );
        let secret = &objs[3];
        assert_eq!(secret["type"], "kubernetes.io/service-account-token");
        assert_eq!(
            secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
            "argocd-manager"
        );
        assert_eq!(secret["metadata"]["name"], "argocd-manager-long-lived-token");
        // The token controller owns data; an apply carrying it would fight it.
        assert!(secret.get("data").is_none() && secret.get("stringData").is_none());
        // Every kind resolves without discovery.
        let r = Resources::builtin();
        assert!(manager_objects().iter().all(|o| r.resolve(o).is_ok()));
    }

    #[test]
    fn an_empty_or_missing_token_is_not_filled_and_a_binary_one_is_refused() {
        let secret = |data: Value| -> Secret { serde_json::from_value(json!({"data": data})).unwrap() };
        assert!(filled("c", &Secret::default()).unwrap().is_none());
        assert!(filled("c", &secret(json!({"token": ""}))).unwrap().is_none());
        let f = filled("c", &secret(json!({"token": "dG9r", "ca.crt": "Q0E="})))
            .unwrap()
            .unwrap();
        assert_eq!(f.token, "tok");
        assert_eq!(f.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert!(matches!(
            filled("c", &secret(json!({"token": "/w=="}))),
            Err(RegisterError::BadToken { .. })
        ));
    }
}
