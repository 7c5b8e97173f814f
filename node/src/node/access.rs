//! Access: verifying tokens, and the tenant and token operations, over the tenants and tokens
//! the cluster map keeps (`hotlake_cluster::access`).
//!
//! The servers turn a request's credentials into a [`Principal`] here and check its scopes
//! themselves; below the server layer only tenant names travel. A secret exists only in the
//! reply that creates it (and, for the bootstrap token, once on stdout or in the configured
//! file); the map, the log and the logs hold its hash at most.

use std::sync::{Arc, Mutex};

use rand::RngCore;

use super::Node;
use hotlake_cluster::access::{self, Action, Principal, Scope, TenantSettings, TokenIndex, TokenRecord};
use hotlake_cluster::map::MetaCommand;
use hotlake_types::error::{Error, Result};

/// The token index of one map version, rebuilt when the map changes.
#[derive(Default)]
pub(crate) struct TokenCache(Mutex<(u64, Arc<TokenIndex>)>);

/// A token as `token create` answers it: the record and its secret, shown this once.
pub struct NewToken {
    /// What the map keeps.
    pub record: TokenRecord,
    /// The secret.
    pub secret: String,
}

fn random_u64() -> u64 {
    // An id of 0 means "no token" in a principal; draw again in the unlikely case.
    loop {
        let id = rand::rngs::OsRng.next_u64();
        if id != 0 {
            return id;
        }
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    access::secret_from_bytes(&bytes)
}

fn now_ms() -> u64 {
    (crate::clock::now_ns() / 1_000_000).max(0) as u64
}

impl Node {
    /// The principal behind a request's credentials: every scope when the cluster runs without
    /// authentication, else the token's.
    pub fn authenticate(&self, secret: Option<&str>) -> Result<Principal> {
        let map = self.map();
        let auth = if map.is_bootstrapped() { map.settings.auth } else { self.config.auth.enabled };
        if !auth {
            return Ok(Principal::unrestricted());
        }
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return Err(Error::Unauthenticated(
                "this cluster requires a token: send `Authorization: Token <token>` over HTTP or \
                 `authorization: Bearer <token>` metadata over gRPC"
                    .into(),
            ));
        };
        let index = {
            let mut cache = self.tokens.0.lock().unwrap_or_else(|p| p.into_inner());
            if cache.0 != map.version || map.version == 0 {
                *cache = (map.version, Arc::new(TokenIndex::new(&map.tokens)));
            }
            cache.1.clone()
        };
        index.verify(secret).ok_or_else(|| {
            Error::Unauthenticated(
                "the token is not known to this cluster (revoked, mistyped or another cluster's)".into(),
            )
        })
    }

    /// Makes sure every tenant a write names exists, creating the missing ones (bounded by the
    /// map's tenant limit). A write only reaches here once its principal may write them.
    pub(crate) async fn ensure_tenants<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let map = self.map();
        for name in tenants {
            if map.tenants.contains_key(name) {
                continue;
            }
            let cmd = MetaCommand::CreateTenant {
                name: name.to_string(),
                settings: TenantSettings::default(),
                if_absent: true,
            };
            self.propose_meta(cmd, false).await.map_err(|e| match e {
                Error::InvalidArgument { message, .. } => Error::LimitExceeded { limit: "tenants", message },
                other => other,
            })?;
        }
        Ok(())
    }

    /// Creates a tenant; returns the new map version.
    pub async fn create_tenant(&self, name: &str, settings: TenantSettings) -> Result<u64> {
        hotlake_types::model::check_tenant(name).map_err(Error::invalid)?;
        settings.check().map_err(Error::invalid)?;
        self.propose_meta(MetaCommand::CreateTenant { name: name.into(), settings, if_absent: false }, false).await
    }

    /// Changes a tenant's settings; returns the new map version.
    pub async fn set_tenant(&self, name: &str, settings: TenantSettings) -> Result<u64> {
        if !self.map().tenants.contains_key(name) {
            return Err(Error::NotFound(format!("tenant {name:?} does not exist")));
        }
        settings.check().map_err(Error::invalid)?;
        self.propose_meta(MetaCommand::SetTenant { name: name.into(), settings }, false).await
    }

    /// Creates a token with `scopes` on behalf of `by`, who must hold every one of them and
    /// administer the tenants they name.
    pub async fn create_token(&self, by: &Principal, name: &str, scopes: Vec<Scope>) -> Result<NewToken> {
        if scopes.is_empty() {
            return Err(Error::invalid("a token needs at least one scope, e.g. read:fleet"));
        }
        if let Some(s) = scopes.iter().find(|s| match &s.tenant {
            Some(t) => !by.allows(Action::Admin, t),
            None => !by.allows_all(Action::Admin),
        }) {
            return Err(Error::PermissionDenied(format!("granting {s} needs admin on {}", tenant_shown(s))));
        }
        if !by.holds(&scopes) {
            return Err(Error::PermissionDenied("a token can only grant scopes its creator holds".into()));
        }
        let map = self.map();
        if let Some(missing) = scopes.iter().filter_map(|s| s.tenant.as_ref()).find(|t| !map.tenants.contains_key(*t)) {
            return Err(Error::NotFound(format!("tenant {missing:?} does not exist; create it first")));
        }
        let secret = random_secret();
        let record = TokenRecord::new(random_u64(), name.to_string(), &secret, scopes, now_ms());
        record.check().map_err(Error::invalid)?;
        self.propose_meta(MetaCommand::CreateToken(record.clone()), false).await?;
        tracing::info!(token = record.id, name, "token created");
        Ok(NewToken { record, secret })
    }

    /// The tokens `by` administers.
    pub fn tokens_of(&self, by: &Principal) -> Vec<TokenRecord> {
        self.map().tokens.values().filter(|t| by.administers(t)).cloned().collect()
    }

    /// Revokes a token `by` administers; returns the new map version.
    pub async fn revoke_token(&self, by: &Principal, id: u64) -> Result<u64> {
        let map = self.map();
        // A token the caller may not see is reported as absent, not as forbidden: whether an
        // id exists is the business of those who administer it.
        match map.tokens.get(&id) {
            Some(t) if by.administers(t) => {}
            _ => return Err(Error::NotFound(format!("no token with id {id}"))),
        }
        let version = self.propose_meta(MetaCommand::RevokeToken { id }, false).await?;
        tracing::info!(token = id, "token revoked");
        Ok(version)
    }

    /// The first admin token of a cluster about to be created, with the secret to show when
    /// this node made it up (`None` when it came from `auth.bootstrap_token_file`, or was
    /// written there). `Ok(None)` without authentication.
    pub(crate) fn bootstrap_token(&self) -> anyhow::Result<Option<(TokenRecord, Option<String>)>> {
        use anyhow::Context;
        if !self.config.auth.enabled {
            return Ok(None);
        }
        let file = &self.config.auth.bootstrap_token_file;
        let (secret, show) = if file.as_os_str().is_empty() {
            let s = random_secret();
            (s.clone(), Some(s))
        } else if file.exists() {
            let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
            let secret = text.trim().to_string();
            access::check_secret(&secret).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            (secret, None)
        } else {
            let secret = random_secret();
            write_private(file, &secret).with_context(|| format!("write the admin token to {}", file.display()))?;
            (secret, None)
        };
        let all = |action| Scope { action, tenant: None };
        let scopes = vec![all(Action::Read), all(Action::Write), all(Action::Admin)];
        Ok(Some((TokenRecord::new(random_u64(), "bootstrap admin".into(), &secret, scopes, now_ms()), show)))
    }
}

fn tenant_shown(s: &Scope) -> String {
    s.tenant.as_ref().map(|t| format!("tenant {t:?}")).unwrap_or_else(|| "every tenant".into())
}

/// Writes a secret to a new file only its owner can read.
fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
