//! RFC 8628 (OAuth 2.0 Device Authorization Grant), server side, as Talos'
//! `talos.config.oauth.*` client uses it.
//!
//! What the client sends was read from its source (siderolabs/talos
//! `internal/app/machined/pkg/runtime/v1alpha1/platform/metal/oauth2/oauth2.go`,
//! `DeviceAuthFlow`; golang.org/x/oauth2 `deviceauth.go` and `internal/token.go`)
//! and its docs (talos.dev `v1.11/advanced/machine-config-oauth`):
//!
//! - device authorization: `POST` form `client_id`, `scope` (space-separated),
//!   `audience` if set, and one field per `talos.config.oauth.extra_variable`
//!   (`uuid`, `mac`: the *first* NIC's address, `network.FirstHardwareAddr`);
//!   a 2xx JSON answer `device_code`, `user_code`, `verification_uri`,
//!   `expires_in`, `interval`;
//! - token polling: `POST` form `client_id`, `grant_type=` [`DEVICE_CODE_GRANT`],
//!   `device_code`, the same extra fields (+ `client_secret` if configured); the
//!   first poll comes right after the authorization, then one per `interval`.
//!   x/oauth2 does not know how the server wants the client authenticated, so
//!   every poll is *two* requests back to back: one with `Authorization: Basic
//!   <client_id>:` and one without (`RetrieveToken`'s auth-style probe, remembered
//!   only after a success). The rate check therefore counts each style apart.
//! - errors: HTTP 400 JSON `{"error": …}` (RFC 6749 §5.2); the client keeps polling
//!   on `authorization_pending`, adds 5 s on `slow_down`, stops on anything else;
//! - success: `access_token`, `token_type` (`Bearer`), `expires_in`; the config
//!   download then carries `Authorization: Bearer <access_token>`.

use std::net::IpAddr;

use crate::model::MacAddr;

use super::smbios::{UuidField, parse_uuid};

/// RFC 8628 §3.4 `grant_type`.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 §3.2: "If no value is provided, clients MUST use 5 as the default."
pub const DEFAULT_INTERVAL_SECS: u32 = 5;
/// RFC 8628 §3.5 `slow_down`: "the interval MUST be increased by 5 seconds".
pub const SLOW_DOWN_STEP_SECS: u32 = 5;
/// A poll up to a fifth of `interval` early, at most this much, is still on time
/// (network jitter between the client's ticks and our clock).
pub const POLL_TOLERANCE_MS: i64 = 1000;

/// The RFC 6749 §5.2 / RFC 8628 §3.5 error codes the token endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not approved yet; keep polling.
    AuthorizationPending,
    /// Polled faster than `interval`; the interval grew by 5 s.
    SlowDown,
    /// An operator denied it.
    AccessDenied,
    /// The device code's lifetime is over.
    ExpiredToken,
    /// Unknown (guessed) device code, or one whose token was already issued.
    InvalidGrant,
    /// Wrong or missing `client_id`.
    InvalidClient,
    /// A required field is missing or malformed.
    InvalidRequest,
    /// `grant_type` is not [`DEVICE_CODE_GRANT`].
    UnsupportedGrantType,
}

impl TokenError {
    /// The `error` value.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::AccessDenied => "access_denied",
            Self::ExpiredToken => "expired_token",
            Self::InvalidGrant => "invalid_grant",
            Self::InvalidClient => "invalid_client",
            Self::InvalidRequest => "invalid_request",
            Self::UnsupportedGrantType => "unsupported_grant_type",
        }
    }

    /// The HTTP status: 400 for everything (RFC 6749 §5.2), 401 for a client that
    /// failed to authenticate.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidClient => 401,
            _ => 400,
        }
    }
}

/// How a token request identified the client (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` (x/oauth2's first try).
    BasicHeader,
    /// Form fields only.
    FormParams,
}

/// Where a device authorization stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantState {
    /// Waiting for an operator.
    Pending,
    /// Approved by the API token with this id.
    Approved(String),
    /// Denied by the API token with this id.
    Denied(String),
    /// Its access token was handed out; the device code is spent.
    Issued,
}

/// One device authorization: what the machine presented and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The machine (its boot MAC).
    pub mac: MacAddr,
    /// The SMBIOS UUID it sent.
    pub uuid: Option<String>,
    /// The address it asked from.
    pub peer: IpAddr,
    /// The code its console shows.
    pub user_code: String,
    /// The OAuth client id it used.
    pub client_id: String,
    /// Unix milliseconds when it was created.
    pub created_ms: i64,
    /// Unix milliseconds when the device code expires.
    pub expires_ms: i64,
    /// Current polling interval in seconds.
    pub interval_secs: u32,
    /// Where it stands.
    pub state: GrantState,
    /// Last poll per [`ClientAuth`] style, Unix milliseconds.
    last_poll_ms: [Option<i64>; 2],
}

impl Grant {
    /// A pending grant created at `now_ms`, valid for `lifetime_secs`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mac: MacAddr,
        uuid: Option<String>,
        peer: IpAddr,
        user_code: String,
        client_id: String,
        now_ms: i64,
        lifetime_secs: u32,
        interval_secs: u32,
    ) -> Self {
        Self {
            mac,
            uuid,
            peer,
            user_code,
            client_id,
            created_ms: now_ms,
            expires_ms: now_ms + i64::from(lifetime_secs) * 1000,
            interval_secs,
            state: GrantState::Pending,
            last_poll_ms: [None; 2],
        }
    }

    /// Whether the device code is past its lifetime at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_ms
    }

    /// Answers one token request for this grant at `now_ms`. `Ok` means: issue the
    /// access token now (the grant becomes [`GrantState::Issued`]).
    pub fn poll(&mut self, now_ms: i64, auth: ClientAuth) -> Result<(), TokenError> {
        match self.state {
            GrantState::Issued => return Err(TokenError::InvalidGrant),
            GrantState::Denied(_) => return Err(TokenError::AccessDenied),
            _ => {}
        }
        if self.expired(now_ms) {
            return Err(TokenError::ExpiredToken);
        }
        let slot = &mut self.last_poll_ms[auth as usize];
        let interval_ms = i64::from(self.interval_secs) * 1000;
        let tolerance = (interval_ms / 5).min(POLL_TOLERANCE_MS);
        let too_fast = slot.is_some_and(|last| now_ms - last + tolerance < interval_ms);
        *slot = Some(now_ms);
        if too_fast {
            self.interval_secs = self.interval_secs.saturating_add(SLOW_DOWN_STEP_SECS);
            return Err(TokenError::SlowDown);
        }
        match self.state {
            GrantState::Approved(_) => {
                self.state = GrantState::Issued;
                Ok(())
            }
            _ => Err(TokenError::AuthorizationPending),
        }
    }
}

/// A device authorization request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthRequest {
    /// `client_id`.
    pub client_id: String,
    /// `scope`, split on spaces.
    pub scopes: Vec<String>,
    /// The `mac` extra variable: `None` absent, `Some(Err)` malformed.
    // arch: string-result-ok (data): `Err` holds the malformed value, printable, not an error text
    pub mac: Option<Result<MacAddr, String>>,
    /// The `uuid` extra variable.
    pub uuid: UuidField,
}

/// Parses an `application/x-www-form-urlencoded` device authorization body.
pub fn parse_device_auth(body: &[u8]) -> Result<DeviceAuthRequest, TokenError> {
    let mut client_id = None;
    let mut scopes = Vec::new();
    let mut mac = None;
    let mut uuid = UuidField::Absent;
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "client_id" => client_id = Some(v.into_owned()),
            "scope" => {
                scopes = v
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "mac" => mac = Some(v.parse::<MacAddr>().map_err(|_| super::smbios::printable(&v))),
            "uuid" => uuid = parse_uuid(&v),
            _ => {}
        }
    }
    let client_id = client_id
        .filter(|c| !c.is_empty())
        .ok_or(TokenError::InvalidRequest)?;
    Ok(DeviceAuthRequest {
        client_id,
        scopes,
        mac,
        uuid,
    })
}

/// A token request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The device code presented.
    pub device_code: String,
    /// The client id, from the form or the Basic header.
    pub client_id: String,
    /// Which style identified the client.
    pub auth: ClientAuth,
}

/// Parses a token request body and its `Authorization` header (if any).
pub fn parse_token_request(body: &[u8], authorization: Option<&str>) -> Result<TokenRequest, TokenError> {
    let mut grant_type = None;
    let mut device_code = None;
    let mut form_client = None;
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "grant_type" => grant_type = Some(v.into_owned()),
            "device_code" => device_code = Some(v.into_owned()),
            "client_id" => form_client = Some(v.into_owned()),
            _ => {}
        }
    }
    match grant_type.as_deref() {
        Some(DEVICE_CODE_GRANT) => {}
        Some(_) => return Err(TokenError::UnsupportedGrantType),
        None => return Err(TokenError::InvalidRequest),
    }
    let device_code = device_code
        .filter(|d| !d.is_empty())
        .ok_or(TokenError::InvalidRequest)?;
    let (client_id, auth) = match authorization {
        Some(h) => (
            basic_client_id(h).ok_or(TokenError::InvalidClient)?,
            ClientAuth::BasicHeader,
        ),
        None => (
            form_client
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or(TokenError::InvalidClient)?,
            ClientAuth::FormParams,
        ),
    };
    if form_client.as_deref().is_some_and(|f| f != client_id) {
        return Err(TokenError::InvalidClient);
    }
    Ok(TokenRequest {
        device_code,
        client_id,
        auth,
    })
}

/// The client id of an `Authorization: Basic base64(id:secret)` header. x/oauth2
/// `url.QueryEscape`s both parts before encoding (`newTokenRequest`), so they are
/// percent-decoded here (RFC 6749 §2.3.1).
pub fn basic_client_id(header: &str) -> Option<String> {
    use base64::Engine;
    let b64 = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, _secret) = text.split_once(':')?;
    let id: String = form_urlencoded::parse(format!("id={id}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    (!id.is_empty()).then_some(id)
}
