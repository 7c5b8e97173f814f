//! Starting and stopping real `hotlake` processes on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running node process.
pub struct NodeProcess {
    child: Option<Child>,
    pub http: String,
    pub grpc: String,
    /// The node-to-node address (what `--join` names).
    pub peer: String,
    pub data_dir: PathBuf,
    extra: Vec<String>,
    /// Command the binary runs under, e.g. `ip netns exec NS`.
    prefix: Vec<String>,
}

/// A node's three listen addresses.
#[derive(Clone, Debug)]
pub struct Addrs {
    pub http: String,
    pub grpc: String,
    pub peer: String,
}

/// A loopback port free now and never handed out before in this process: the kernel may give
/// a just-released port again, and two addresses of one node (or of two nodes started by
/// tests running at the same time) must differ, or a node refuses to start.
fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Option<std::collections::HashSet<u16>>> = std::sync::Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if handed_out.get_or_insert_with(Default::default).insert(port) {
            return port;
        }
    }
}

/// The admin token (read:*, write:*, admin:*) of every cluster these tests create: each
/// bootstrapping node reads it from its `auth.bootstrap_token_file`.
pub const TEST_TOKEN: &str = "hlk_test_0123456789abcdef0123456789abcdef0123456789abcdef";

/// An HTTP client that sends [`TEST_TOKEN`].
pub fn client() -> reqwest::blocking::Client {
    client_with_timeout(Duration::from_secs(30))
}

/// An HTTP client that sends [`TEST_TOKEN`], giving up on a request after `timeout`.
pub fn client_with_timeout(timeout: Duration) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Token {TEST_TOKEN}").parse().unwrap());
    reqwest::blocking::Client::builder().timeout(timeout).default_headers(headers).build().unwrap()
}

/// An HTTP client that sends [`TEST_TOKEN`] over TLS, trusting only the CA in `ca_pem`.
pub fn tls_client(ca_pem: &[u8]) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Token {TEST_TOKEN}").parse().unwrap());
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("a PEM CA"))
        .build()
        .unwrap()
}

/// An HTTP client that sends no token.
pub fn anonymous_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// A gRPC client of `seeds` with [`TEST_TOKEN`].
pub async fn connect<S: AsRef<str>>(seeds: impl IntoIterator<Item = S>) -> hotlake_client::Client {
    hotlake_client::Client::builder()
        .seeds(seeds.into_iter().map(|s| s.as_ref().to_string()))
        .token(TEST_TOKEN)
        .connect()
        .await
        .expect("connect")
}

/// A gRPC request carrying [`TEST_TOKEN`], for calls through the generated stubs.
pub fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {TEST_TOKEN}").parse().unwrap());
    r
}

/// Writes [`TEST_TOKEN`] to a file beside `data_dir`, for `--auth-bootstrap-token-file`.
pub fn token_file(data_dir: &Path) -> PathBuf {
    let file = data_dir.with_extension("token");
    std::fs::write(&file, TEST_TOKEN).expect("write the test token file");
    file
}

impl NodeProcess {
    /// Starts a node on fresh loopback ports with `data_dir`, waiting until it is healthy.
    pub fn start(data_dir: &Path, extra: &[&str]) -> NodeProcess {
        let Addrs { http, grpc, peer } = Self::free_addrs();
        let mut n = NodeProcess {
            child: None,
            http,
            grpc,
            peer,
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            prefix: Vec::new(),
        };
        n.spawn();
        n
    }

    /// Free loopback addresses for a node started later with [`NodeProcess::start_at`].
    pub fn free_addrs() -> Addrs {
        let free = || format!("127.0.0.1:{}", free_port());
        Addrs { http: free(), grpc: free(), peer: free() }
    }

    /// Starts a node on fresh loopback ports without waiting for it to be healthy (a node
    /// waiting for `cluster init` never is).
    pub fn start_unready(data_dir: &Path, extra: &[&str]) -> NodeProcess {
        let Addrs { http, grpc, peer } = Self::free_addrs();
        let mut n = NodeProcess {
            child: None,
            http,
            grpc,
            peer,
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            prefix: Vec::new(),
        };
        n.spawn_process();
        n
    }

    /// Starts a node on the given addresses under `prefix` (for example `ip netns exec NS`),
    /// waiting until it is healthy.
    pub fn start_at(data_dir: &Path, addrs: &Addrs, prefix: &[String], extra: &[&str]) -> NodeProcess {
        let mut n = NodeProcess {
            child: None,
            http: addrs.http.clone(),
            grpc: addrs.grpc.clone(),
            peer: addrs.peer.clone(),
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            prefix: prefix.to_vec(),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        self.spawn_process();
        self.wait_healthy(Duration::from_secs(60));
    }

    fn spawn_process(&mut self) {
        let mut command = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_hotlake"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_hotlake")),
        };
        let child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-addr")
            .arg(&self.http)
            .arg("--grpc-addr")
            .arg(&self.grpc)
            .arg("--peer-addr")
            .arg(&self.peer)
            .arg("--auth-bootstrap-token-file")
            .arg(token_file(&self.data_dir))
            .args(&self.extra)
            .env("HOTLAKE_LOG", std::env::var("HOTLAKE_TEST_LOG").unwrap_or_else(|_| "error,openraft=off".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hotlake");
        self.child = Some(child);
    }

    /// Starts the process again on the same data directory and ports, without waiting.
    pub fn restart_no_wait(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        self.spawn_process();
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits until `/health` answers 200.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let c = self.http_client();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("hotlake exited early with {status}");
            }
            if let Ok(r) = c.get(self.url("/health")).send() {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "node at {} not healthy in time", self.http);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the node's HTTP listener answers `/health`, healthy or not.
    pub fn wait_listening(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.http_client().get(self.url("/health")).send().is_err() {
            assert!(Instant::now() < deadline, "node at {} does not listen", self.http);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, no chance to flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id().to_string();
            Command::new("kill").arg("-TERM").arg(&pid).status().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(status.success(), "hotlake exited with {status} on SIGTERM");
                    return;
                }
                assert!(Instant::now() < deadline, "hotlake did not stop on SIGTERM");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts the process again on the same data directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        self.spawn();
    }

    /// The node's CA certificate file when it runs with TLS (`--tls-ca-file` among its flags).
    pub fn tls_ca(&self) -> Option<PathBuf> {
        self.extra.windows(2).find(|w| w[0] == "--tls-ca-file").map(|w| PathBuf::from(&w[1]))
    }

    /// An HTTP client sending [`TEST_TOKEN`], trusting the node's CA when it runs with TLS.
    pub fn http_client(&self) -> reqwest::blocking::Client {
        match self.tls_ca() {
            None => client(),
            Some(ca) => tls_client(&std::fs::read(ca).expect("read the CA file")),
        }
    }

    /// The URL of `path` on the node's HTTP listener.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls_ca().is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.http)
    }

    pub fn write(&self, db: &str, body: &str) -> reqwest::blocking::Response {
        self.http_client().post(self.url(&format!("/write?db={db}"))).body(body.to_string()).send().unwrap()
    }

    pub fn query(&self, body: Value) -> (u16, Value) {
        let r = self.http_client().post(self.url("/api/v1/query")).json(&body).send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
