//! apid's client-certificate rules, as the fake apid enforces them.

use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The role a client certificate grants.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Role {
    /// `os:reader` / `os:operator`: read-only methods.
    Reader,
    /// `os:admin`: everything.
    Admin,
}

/// apid's client checks: a verified certificate (rustls already checked the chain and
/// that clientAuth is allowed), EKU exactly `[clientAuth]`, role from subject O
/// (`os:admin`, `os:operator`, `os:reader`; talos `pkg/machinery/role`).
pub(super) fn role_of<T>(req: &Request<T>) -> Result<Role, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(format!("bad client certificate: {e}")))?;
    let eku = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .ok_or_else(|| Status::permission_denied("client certificate has no extended key usage"))?
        .value;
    let only_client = eku.client_auth
        && !eku.any
        && !eku.server_auth
        && !eku.code_signing
        && !eku.email_protection
        && !eku.time_stamping
        && !eku.ocsp_signing
        && eku.other.is_empty();
    if !only_client {
        return Err(Status::permission_denied(
            "client certificate EKU must be exactly clientAuth",
        ));
    }
    let orgs: Vec<String> = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    if orgs.iter().any(|o| o == "os:admin") {
        Ok(Role::Admin)
    } else if orgs.iter().any(|o| o == "os:operator" || o == "os:reader") {
        Ok(Role::Reader)
    } else {
        Err(Status::permission_denied(format!("no Talos role in O={orgs:?}")))
    }
}
