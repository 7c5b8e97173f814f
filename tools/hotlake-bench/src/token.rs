//! The token the load generators send: `--token` (or `HOTLAKE_TOKEN`) for the commands that
//! load a running cluster; `compare` uses the token of the nodes it starts.

use std::sync::OnceLock;
use std::time::Duration;

static TOKEN: OnceLock<Option<String>> = OnceLock::new();

/// Sets the token of this run (once, from the command line).
pub fn set(token: Option<String>) {
    let _ = TOKEN.set(token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()));
}

/// The token of this run, if any.
pub fn get() -> Option<&'static str> {
    TOKEN.get().and_then(|t| t.as_deref())
}

/// An HTTP client sending this run's token.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
    http_client_with(timeout, get())
}

/// An HTTP client sending `token` as `Authorization: Token <token>`.
pub fn http_client_with(timeout: Duration, token: Option<&str>) -> anyhow::Result<reqwest::blocking::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Token {t}"))
            .map_err(|_| anyhow::anyhow!("the token must be printable ASCII"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::blocking::Client::builder().timeout(timeout).default_headers(headers).build()?)
}

/// A `hotlake-client` builder for `seeds` sending `token`.
pub fn grpc_with(seeds: Vec<String>, token: Option<&str>) -> hotlake_client::ClientBuilder {
    let builder = hotlake_client::Client::builder().seeds(seeds);
    match token {
        Some(t) => builder.token(t),
        None => builder,
    }
}
