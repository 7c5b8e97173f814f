//! HTTP calls to the cluster, moving to the next address when one does not answer.

use std::time::Duration;

use serde_json::Value;

use crate::Failure;

/// The cluster's HTTP addresses and the request timeout.
pub struct Api {
    addrs: Vec<String>,
    http: reqwest::blocking::Client,
}

impl Api {
    pub fn new(addrs: Vec<String>, timeout: Duration) -> Api {
        let http = reqwest::blocking::Client::builder().timeout(timeout).build().expect("HTTP client builds");
        Api { addrs, http }
    }

    /// Addresses in the order they are tried.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    /// `GET path` on the first address that answers.
    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        self.each(|addr| self.http.get(format!("http://{addr}{path}")).send())
    }

    /// `POST path` with a JSON body on the first address that answers.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.each(|addr| self.http.post(format!("http://{addr}{path}")).json(body).send())
    }

    /// `GET path` on one node.
    pub fn get_at(&self, addr: &str, path: &str) -> Result<Value, Failure> {
        let resp = self
            .http
            .get(format!("http://{addr}{path}"))
            .send()
            .map_err(|e| Failure::Unreachable(format!("{addr}: {e}")))?;
        answer(addr, resp)
    }

    fn each(&self, send: impl Fn(&str) -> reqwest::Result<reqwest::blocking::Response>) -> Result<Value, Failure> {
        let mut last = Failure::Unreachable("no address to try; set --cluster".into());
        for addr in &self.addrs {
            match send(addr) {
                Ok(resp) => match answer(addr, resp) {
                    Err(Failure::Unreachable(m)) => last = Failure::Unreachable(m),
                    other => return other,
                },
                Err(e) => {
                    last = Failure::Unreachable(format!(
                        "{addr}: {e}. Is the node running? Check --cluster / HOTLAKE_CLUSTER."
                    ))
                }
            }
        }
        Err(last)
    }
}

/// A response as JSON: 2xx is the value, 4xx a rejection, 5xx unavailable.
fn answer(addr: &str, resp: reqwest::blocking::Response) -> Result<Value, Failure> {
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
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
