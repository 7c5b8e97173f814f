//! HTTP calls to the members' HTTP API (line protocol and JSON queries), moving to the next
//! address when one does not answer.

use std::time::Duration;

use serde_json::Value;

use crate::Failure;

/// The members' HTTP addresses and the request timeout.
pub struct Api {
    addrs: Vec<String>,
    http: reqwest::Client,
    scheme: &'static str,
}

impl Api {
    /// Sends `token` (when given) as `Authorization: Token <token>` with every request; speaks
    /// HTTPS trusting `ca_pem` when given.
    pub fn new(
        addrs: Vec<String>,
        timeout: Duration,
        token: Option<&str>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Api, Failure> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Token {t}"))
                .map_err(|_| Failure::Usage("the token must be printable ASCII".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder().timeout(timeout).default_headers(headers);
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Failure::Usage(format!("the CA file is not a PEM certificate: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| Failure::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Api { addrs, http, scheme: if ca_pem.is_some() { "https" } else { "http" } })
    }

    /// The URL of `path_and_query` on the member at `addr`.
    pub fn url(&self, addr: &str, path_and_query: &str) -> String {
        format!("{}://{addr}{path_and_query}", self.scheme)
    }

    /// Addresses in the order they are tried.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `POST path` with a JSON body on the first address that answers.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let mut last = Failure::Unreachable("the cluster map lists no member".into());
        for addr in &self.addrs {
            match self.http.post(self.url(addr, path)).json(body).send().await {
                Ok(resp) => match answer(addr, resp).await {
                    Err(Failure::Unreachable(m)) => last = Failure::Unreachable(m),
                    other => return other,
                },
                Err(e) => last = Failure::Unreachable(format!("{addr}: {e}")),
            }
        }
        Err(last)
    }
}

/// A response as JSON: 2xx is the value, 4xx a rejection, 5xx unavailable.
async fn answer(addr: &str, resp: reqwest::Response) -> Result<Value, Failure> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(value);
    }
    let message = value["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
    let kind = value["error"]["kind"].as_str().unwrap_or("error");
    if status.is_server_error() {
        Err(Failure::Unreachable(format!("{addr}: {kind}: {message}")))
    } else {
        Err(Failure::Rejected(format!("{kind}: {message}")))
    }
}
