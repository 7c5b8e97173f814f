//! Credentials as clients send them, and the scope checks every route and RPC makes.
//!
//! A token arrives as InfluxDB's clients send one: `Authorization: Token <token>`, `Bearer
//! <token>`, Basic with the token as the password (InfluxDB 1.x clients that only know a user
//! and a password), or the `p` URL parameter; over gRPC as `authorization` metadata. The node
//! turns it into a [`Principal`] (`Admin::authenticate`); the checks here decide what that
//! principal may do. Which check a route makes is decided by the route, next to its handler.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::mpsc;

use hotlake_cluster::access::{Action, Principal};
use hotlake_proto::errors::AUTHORIZATION_KEY;
use hotlake_types::error::{Error, Result};

use crate::node::Delivery;
use crate::service::Admin;

/// How often a running subscription's token is checked again.
const REAUTHORIZE_EVERY: Duration = Duration::from_secs(10);

/// The principal of a gRPC call, from its `authorization` metadata.
pub(crate) fn principal_of_call<S: Admin>(node: &S, metadata: &tonic::metadata::MetadataMap) -> Result<Principal> {
    node.authenticate(token_of_call(metadata)?.as_deref())
}

/// The token of a gRPC call, if it carries one.
pub(crate) fn token_of_call(metadata: &tonic::metadata::MetadataMap) -> Result<Option<String>> {
    match metadata.get(AUTHORIZATION_KEY) {
        Some(value) => Ok(Some(token_of_authorization(
            value
                .to_str()
                .map_err(|_| Error::Unauthenticated("the authorization metadata is not printable ASCII".into()))?,
        )?)),
        None => Ok(None),
    }
}

/// A subscription's deliveries, as long as the token that opened it may still read its tenant:
/// a token revoked (or a scope taken away) ends the stream with the refusal within
/// [`REAUTHORIZE_EVERY`] (a subscription delivers at least every few seconds, progress included).
pub(crate) struct Reauthorized<S> {
    node: Arc<S>,
    token: Option<String>,
    tenant: String,
    rx: mpsc::Receiver<Result<Delivery>>,
    checked: tokio::time::Instant,
    ended: bool,
}

impl<S: Admin> Reauthorized<S> {
    pub(crate) fn new(
        node: Arc<S>,
        token: Option<String>,
        tenant: String,
        rx: mpsc::Receiver<Result<Delivery>>,
    ) -> Self {
        Reauthorized { node, token, tenant, rx, checked: tokio::time::Instant::now(), ended: false }
    }

    /// The next delivery; after an error (the last item) or the end, `None`.
    pub(crate) async fn recv(&mut self) -> Option<Result<Delivery>> {
        if self.ended {
            return None;
        }
        if self.checked.elapsed() >= REAUTHORIZE_EVERY {
            self.checked = tokio::time::Instant::now();
            let allowed =
                self.node.authenticate(self.token.as_deref()).and_then(|p| require(&p, Action::Read, &self.tenant));
            if let Err(e) = allowed {
                self.ended = true;
                return Some(Err(e));
            }
        }
        let item = self.rx.recv().await;
        self.ended = !matches!(item, Some(Ok(_)));
        item
    }
}

/// The token in an `Authorization` value.
pub(crate) fn token_of_authorization(value: &str) -> Result<String> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let rest = rest.trim();
    let token = if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
        rest.to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or_else(|| Error::Unauthenticated("the Basic credentials are not base64 of user:password".into()))?;
        // The user name is free (InfluxDB clients insist on one); the password is the token.
        decoded.split_once(':').map(|(_, password)| password.to_string()).unwrap_or_default()
    } else {
        return Err(Error::Unauthenticated(
            "the Authorization header must be `Token <token>`, `Bearer <token>` or Basic with the token as \
             the password"
                .into(),
        ));
    };
    if token.is_empty() {
        return Err(Error::Unauthenticated("the Authorization header carries no token".into()));
    }
    Ok(token)
}

/// Refuses unless `p` may do `action` on `tenant`.
pub(crate) fn require(p: &Principal, action: Action, tenant: &str) -> Result<()> {
    if p.allows(action, tenant) {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "the token may not {} tenant {tenant:?}: it needs the scope {}:{tenant} or {}:*",
        verb(action),
        action.name(),
        action.name()
    )))
}

/// Refuses unless `p` may do `action` on every tenant (the cluster's own operations).
pub(crate) fn require_all(p: &Principal, action: Action) -> Result<()> {
    if p.allows_all(action) {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!("this operation needs the scope {}:*", action.name())))
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Write => "write to",
        Action::Admin => "administer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_as_influxdb_clients_send_them() {
        let secret = "hlk_0123456789abcdef0123456789abcdef";
        assert_eq!(token_of_authorization(&format!("Token {secret}")).unwrap(), secret);
        assert_eq!(token_of_authorization(&format!("Bearer {secret}")).unwrap(), secret);
        assert_eq!(token_of_authorization(&format!("bearer  {secret} ")).unwrap(), secret);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("grafana:{secret}"));
        assert_eq!(token_of_authorization(&format!("Basic {basic}")).unwrap(), secret);
        for bad in ["Token", "Digest abc", "Basic %%%", "", "Bearer "] {
            assert!(matches!(token_of_authorization(bad), Err(Error::Unauthenticated(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_scope_that_was_missing() {
        let p = Principal { token_id: 1, scopes: vec![hotlake_cluster::access::Scope::parse("read:fleet").unwrap()] };
        require(&p, Action::Read, "fleet").unwrap();
        let why = require(&p, Action::Write, "fleet").unwrap_err().to_string();
        assert!(why.contains("write:fleet or write:*"), "{why}");
        assert!(require(&p, Action::Read, "meters").is_err());
        assert!(require_all(&p, Action::Admin).unwrap_err().to_string().contains("admin:*"));
        require_all(&Principal::unrestricted(), Action::Admin).unwrap();
    }
}
