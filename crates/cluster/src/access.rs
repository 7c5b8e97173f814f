//! Tenants and tokens: who may read, write and administer what.
//!
//! Both live in the cluster map, so every node enforces the same rules from the same applied
//! state. A token is a random secret shown once when it is created; the map keeps only its
//! SHA-256, and a presented token is found by the first bytes of its hash and then compared in
//! full in constant time. Nothing here logs or prints a secret, and `Debug` of a record shows
//! no hash.
//!
//! Pure: no I/O, no clock, no randomness (the node draws secrets and ids).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Most tenants a cluster holds: each costs every node map memory.
pub const TENANTS_MAX: usize = 10_000;
/// Most tokens a cluster holds.
pub const TOKENS_MAX: usize = 10_000;
/// Most scopes one token carries.
pub const SCOPES_PER_TOKEN_MAX: usize = 64;
/// Longest token name (a label for people), in bytes.
pub const TOKEN_NAME_BYTES_MAX: usize = 255;
/// Shortest and longest secret accepted, in bytes. Generated secrets are 68 bytes; a secret
/// provisioned from a file must still be long enough not to be guessed.
pub const SECRET_BYTES_MIN: usize = 32;
/// See [`SECRET_BYTES_MIN`].
pub const SECRET_BYTES_MAX: usize = 256;
/// Longest retention: what nanoseconds in an `i64` can express (about 292 years).
pub const RETENTION_S_MAX: u64 = (i64::MAX / 1_000_000_000) as u64;
/// Prefix of generated secrets, so a leaked one is recognisable (and found by secret scanners).
pub const SECRET_PREFIX: &str = "hlk_";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Queries and latest values.
    Read,
    /// Writes.
    Write,
    /// On one tenant: its settings and its tokens. On every tenant: also the cluster, nodes,
    /// shards, metrics and creating tenants.
    Admin,
}

impl Action {
    /// Lower-case name, as in `read:fleet`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
        }
    }
}

/// One permission: an action on one tenant, or on every tenant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// What may be done.
    pub action: Action,
    /// On which tenant; `None` for every tenant (written `*`).
    pub tenant: Option<String>,
}

impl Scope {
    /// Parses `read:fleet`, `write:*`, `admin:*`.
    pub fn parse(text: &str) -> Result<Scope, String> {
        let (action, tenant) = text
            .split_once(':')
            .ok_or_else(|| format!("scope {text:?} must be ACTION:TENANT, e.g. read:fleet or admin:*"))?;
        let action = match action {
            "read" => Action::Read,
            "write" => Action::Write,
            "admin" => Action::Admin,
            other => return Err(format!("scope {text:?}: action {other:?} is not one of read, write, admin")),
        };
        let tenant = match tenant {
            "*" => None,
            name => {
                hotlake_types::model::check_tenant(name).map_err(|e| format!("scope {text:?}: {e}"))?;
                Some(name.to_string())
            }
        };
        Ok(Scope { action, tenant })
    }

    /// Whether this scope allows `action` on `tenant`.
    pub fn allows(&self, action: Action, tenant: &str) -> bool {
        self.action == action && self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// Whether this scope allows everything `other` does.
    pub fn covers(&self, other: &Scope) -> bool {
        self.action == other.action && (self.tenant.is_none() || self.tenant == other.tenant)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.action.name(), self.tenant.as_deref().unwrap_or("*"))
    }
}

/// A tenant's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettings {
    /// Keep points this long (seconds); 0 keeps them forever.
    pub retention_s: u64,
}

impl TenantSettings {
    /// Refuses values no replica can apply.
    pub fn check(&self) -> Result<(), String> {
        if self.retention_s > RETENTION_S_MAX {
            return Err(format!(
                "retention_s must be at most {RETENTION_S_MAX} (about 292 years), got {}",
                self.retention_s
            ));
        }
        Ok(())
    }
}

/// A token as the map keeps it: its hash, never its secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Random id, unique in the cluster; names the token in `token list` and `token revoke`.
    pub id: u64,
    /// A label for people ("grafana", "fleet ingest").
    pub name: String,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When it was created, milliseconds since the Unix epoch (as the creating node saw it).
    pub created_ms: u64,
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

impl TokenRecord {
    /// A record for `secret`.
    pub fn new(id: u64, name: String, secret: &str, scopes: Vec<Scope>, created_ms: u64) -> TokenRecord {
        TokenRecord { id, name, hash: hash_secret(secret), scopes, created_ms }
    }

    /// Refuses a record no cluster should keep: id 0, a long or control-character name, no
    /// scope or too many.
    pub fn check(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("token id must not be 0".into());
        }
        if self.name.len() > TOKEN_NAME_BYTES_MAX || self.name.chars().any(char::is_control) {
            return Err(format!("token name must be at most {TOKEN_NAME_BYTES_MAX} bytes without control characters"));
        }
        if self.scopes.is_empty() || self.scopes.len() > SCOPES_PER_TOKEN_MAX {
            return Err(format!("a token needs 1 to {SCOPES_PER_TOKEN_MAX} scopes, got {}", self.scopes.len()));
        }
        Ok(())
    }
}

/// SHA-256 of a secret. Secrets are random and long, so a fast hash is enough: there is no
/// dictionary to try, and a slow one would cost every request.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Refuses a secret that is too short to be safe or too long to be one (a provisioned secret
/// is checked before its hash is kept).
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() < SECRET_BYTES_MIN || secret.len() > SECRET_BYTES_MAX {
        return Err(format!("a token must be {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes, got {}", secret.len()));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// A secret from 32 random bytes: `hlk_` and 64 hex digits.
pub fn secret_from_bytes(random: &[u8; 32]) -> String {
    let mut s = String::with_capacity(SECRET_PREFIX.len() + 64);
    s.push_str(SECRET_PREFIX);
    for b in random {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Who a request comes from, once its token was verified: what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (0 when authentication is off).
    pub token_id: u64,
    /// Its scopes.
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Everything on every tenant: a cluster created without authentication.
    pub fn unrestricted() -> Principal {
        let all = |action| Scope { action, tenant: None };
        Principal { token_id: 0, scopes: vec![all(Action::Read), all(Action::Write), all(Action::Admin)] }
    }

    /// Whether it may do `action` on `tenant`.
    pub fn allows(&self, action: Action, tenant: &str) -> bool {
        self.scopes.iter().any(|s| s.allows(action, tenant))
    }

    /// Whether it may do `action` on every tenant (the cluster's own operations need admin
    /// on every tenant).
    pub fn allows_all(&self, action: Action) -> bool {
        self.scopes.iter().any(|s| s.action == action && s.tenant.is_none())
    }

    /// Whether it holds every one of `scopes` (a token can only hand out what it holds).
    pub fn holds(&self, scopes: &[Scope]) -> bool {
        scopes.iter().all(|wanted| self.scopes.iter().any(|s| s.covers(wanted)))
    }

    /// Whether it administers every tenant a token's scopes name, so it may see and revoke it.
    pub fn administers(&self, token: &TokenRecord) -> bool {
        self.allows_all(Action::Admin)
            || token.scopes.iter().all(|s| s.tenant.as_deref().is_some_and(|t| self.allows(Action::Admin, t)))
    }
}

/// Finds the token behind a presented secret. Built from one map version and kept until the
/// next; lookups never depend on the secret's bytes beyond its hash.
#[derive(Debug, Default)]
pub struct TokenIndex {
    by_prefix: HashMap<[u8; 8], Vec<TokenRecord>>,
}

impl TokenIndex {
    /// An index of `tokens`.
    pub fn new(tokens: &BTreeMap<u64, TokenRecord>) -> TokenIndex {
        let mut by_prefix: HashMap<[u8; 8], Vec<TokenRecord>> = HashMap::new();
        for t in tokens.values() {
            by_prefix.entry(prefix(&t.hash)).or_default().push(t.clone());
        }
        TokenIndex { by_prefix }
    }

    /// The principal a secret stands for, or `None` for an unknown or revoked one.
    pub fn verify(&self, secret: &str) -> Option<Principal> {
        let hash = hash_secret(secret);
        let candidates = self.by_prefix.get(&prefix(&hash))?;
        // The full hash is compared in constant time, so the time an answer takes says nothing
        // about how much of a guess was right.
        candidates
            .iter()
            .find(|t| bool::from(t.hash.ct_eq(&hash)))
            .map(|t| Principal { token_id: t.id, scopes: t.scopes.clone() })
    }
}

fn prefix(hash: &[u8; 32]) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&hash[..8]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<Scope> {
        list.iter().map(|s| Scope::parse(s).unwrap()).collect()
    }

    #[test]
    fn scopes_parse_and_print() {
        for text in ["read:fleet", "write:*", "admin:*", "admin:meters-eu"] {
            assert_eq!(Scope::parse(text).unwrap().to_string(), text);
        }
        assert!(Scope::parse("read").unwrap_err().contains("ACTION:TENANT"));
        assert!(Scope::parse("delete:fleet").unwrap_err().contains("not one of read, write, admin"));
        assert!(Scope::parse("read:").is_err());
        assert!(Scope::parse("read:a\0b").is_err());
    }

    #[test]
    fn a_principal_may_do_only_what_its_scopes_say() {
        let p = Principal { token_id: 1, scopes: scopes(&["read:fleet", "write:fleet"]) };
        assert!(p.allows(Action::Read, "fleet"));
        assert!(p.allows(Action::Write, "fleet"));
        assert!(!p.allows(Action::Read, "meters"));
        assert!(!p.allows(Action::Admin, "fleet"));
        assert!(!p.allows_all(Action::Read));
        let admin = Principal { token_id: 2, scopes: scopes(&["admin:*", "read:*"]) };
        assert!(admin.allows(Action::Read, "anything"));
        assert!(admin.allows_all(Action::Admin));
        assert!(!admin.allows(Action::Write, "fleet"));
        assert!(Principal::unrestricted().holds(&scopes(&["read:*", "write:x", "admin:y"])));
    }

    #[test]
    fn a_token_can_only_hand_out_what_it_holds() {
        let fleet_admin = Principal { token_id: 1, scopes: scopes(&["admin:fleet", "read:fleet"]) };
        assert!(fleet_admin.holds(&scopes(&["read:fleet"])));
        assert!(!fleet_admin.holds(&scopes(&["read:*"])));
        assert!(!fleet_admin.holds(&scopes(&["write:fleet"])));
        let record = |list: &[&str]| TokenRecord::new(9, "t".into(), &"s".repeat(40), scopes(list), 0);
        assert!(fleet_admin.administers(&record(&["read:fleet", "write:fleet"])));
        assert!(!fleet_admin.administers(&record(&["read:fleet", "read:meters"])));
        assert!(!fleet_admin.administers(&record(&["read:*"])));
    }

    #[test]
    fn only_the_right_secret_finds_its_token() {
        let secret = secret_from_bytes(&[7u8; 32]);
        assert!(secret.starts_with(SECRET_PREFIX) && secret.len() == 68);
        check_secret(&secret).unwrap();
        let mut tokens = BTreeMap::new();
        tokens.insert(5, TokenRecord::new(5, "grafana".into(), &secret, scopes(&["read:fleet"]), 1));
        let index = TokenIndex::new(&tokens);
        assert_eq!(index.verify(&secret).map(|p| p.token_id), Some(5));
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(index.verify(&wrong), None);
        assert_eq!(index.verify(""), None);
        assert!(TokenIndex::new(&BTreeMap::new()).verify(&secret).is_none());
    }

    #[test]
    fn records_and_secrets_are_checked() {
        assert!(check_secret("short").is_err());
        assert!(check_secret(&format!("{} x", "a".repeat(40))).is_err());
        assert!(check_secret(&"a".repeat(SECRET_BYTES_MAX + 1)).is_err());
        let ok = TokenRecord::new(1, "ingest".into(), &"a".repeat(40), scopes(&["write:fleet"]), 0);
        ok.check().unwrap();
        assert!(TokenRecord { id: 0, ..ok.clone() }.check().is_err());
        assert!(TokenRecord { scopes: vec![], ..ok.clone() }.check().is_err());
        assert!(TokenRecord { name: "a\nb".into(), ..ok.clone() }.check().is_err());
        // Debug output never carries the hash.
        assert!(!format!("{ok:?}").contains("hash"));
    }
}
