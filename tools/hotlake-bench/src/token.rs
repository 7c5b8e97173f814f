//! The token the load generators send: `--token` (or `HOTLAKE_TOKEN`) for the commands that
//! load a running cluster; `compare` uses the token of the nodes it starts. With TLS (`compare
//! --tls`), the CA the clients trust and the certificates the nodes it starts use.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

static TOKEN: OnceLock<Option<String>> = OnceLock::new();
static TLS: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();

/// Connects to Hotlake with TLS from now on: `dir` holds the CA (`ca.pem`) and the nodes'
/// certificates that `hotlake cert` made.
pub fn set_tls(dir: &Path) -> anyhow::Result<()> {
    let ca = std::fs::read(dir.join("ca.pem"))?;
    let _ = TLS.set((dir.to_path_buf(), ca));
    Ok(())
}

/// The directory of the CA and node certificates, when this run uses TLS.
pub fn tls_dir() -> Option<&'static Path> {
    TLS.get().map(|(dir, _)| dir.as_path())
}

/// `https` when this run uses TLS, else `http`.
pub fn scheme() -> &'static str {
    if TLS.get().is_some() {
        "https"
    } else {
        "http"
    }
}

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
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout).default_headers(headers);
    if let Some((_, ca)) = TLS.get() {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(ca)?);
    }
    Ok(builder.build()?)
}

/// A `hotlake-client` builder for `seeds` sending `token`.
pub fn grpc_with(seeds: Vec<String>, token: Option<&str>) -> hotlake_client::ClientBuilder {
    let mut builder = hotlake_client::Client::builder().seeds(seeds);
    if let Some(t) = token {
        builder = builder.token(t);
    }
    if let Some((_, ca)) = TLS.get() {
        builder = builder.tls_ca_pem(ca);
    }
    builder
}
