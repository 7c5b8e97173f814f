//! TLS for the node's three listeners and its connections to other nodes (rustls with the ring
//! provider). Not part of simulation builds.
//!
//! ```text
//!   tls.cert_file + key_file ──► HTTP listener  (ALPN http/1.1)   clients: any, token inside
//!                            ──► gRPC listener  (ALPN h2)         clients: any, token inside
//!                            ──► peer listener  (ALPN h2)         clients: certificate of tls.ca_file
//!   tls.ca_file + cert/key   ──► Peers (node-to-node connections, presenting this node's certificate)
//! ```
//!
//! Invariants: with TLS configured, no listener completes a plaintext exchange (the handshake
//! is the first thing read), and the peer listener serves nobody without a certificate signed by
//! the cluster CA. Certificates reload without a restart: [`NodeTls::reload_if_changed`] reads
//! the three files again when one changes; a set of files that does not load is logged and the
//! certificates in use stay.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::TlsConfig;

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// How long a client may take to finish the TLS handshake before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One listener's server configuration, replaced whole on a reload; connections accepted
/// before keep the one they started with.
pub struct ServerTls {
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    fn new(config: ServerConfig) -> Self {
        ServerTls { current: RwLock::new(Arc::new(config)) }
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn replace(&self, config: ServerConfig) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }
}

/// The node's TLS state: the three listeners' configurations and the files they came from.
pub struct NodeTls {
    files: TlsConfig,
    /// The HTTP listener's.
    pub http: Arc<ServerTls>,
    /// The public gRPC listener's.
    pub grpc: Arc<ServerTls>,
    /// The peer listener's (client certificates required).
    pub peer: Arc<ServerTls>,
    /// Modification times and sizes of the three files when last loaded.
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

/// Everything loaded from one version of the files.
struct Loaded {
    http: ServerConfig,
    grpc: ServerConfig,
    peer: ServerConfig,
    client: ClientTlsConfig,
}

impl NodeTls {
    /// Loads the files named by `files`, with a clear error naming the file that does not load.
    pub fn load(files: &TlsConfig) -> anyhow::Result<(NodeTls, ClientTlsConfig)> {
        let stamp = stamps(files);
        let loaded = load(files)?;
        let tls = NodeTls {
            files: files.clone(),
            http: Arc::new(ServerTls::new(loaded.http)),
            grpc: Arc::new(ServerTls::new(loaded.grpc)),
            peer: Arc::new(ServerTls::new(loaded.peer)),
            stamp: Mutex::new(stamp),
        };
        Ok((tls, loaded.client))
    }

    /// Loads the files again if one of them changed since the last load, and returns the new
    /// configuration for connections to other nodes. A set that does not load (a certificate
    /// copied before its key, say) leaves everything as it was and is tried again at the next
    /// check.
    pub fn reload_if_changed(&self) -> Option<ClientTlsConfig> {
        let now = stamps(&self.files);
        let mut stamp = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if *stamp == now {
            return None;
        }
        match load(&self.files) {
            Ok(loaded) => {
                self.http.replace(loaded.http);
                self.grpc.replace(loaded.grpc);
                self.peer.replace(loaded.peer);
                *stamp = now;
                tracing::info!(cert = %self.files.cert_file.display(), "TLS certificates reloaded");
                Some(loaded.client)
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "TLS certificates changed but do not load; keeping those in use"
                );
                None
            }
        }
    }
}

fn stamps(files: &TlsConfig) -> Vec<Option<(SystemTime, u64)>> {
    [&files.ca_file, &files.cert_file, &files.key_file]
        .iter()
        .map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {what} {}", path.display()))
}

fn certificates(pem: &[u8], path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate file", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: holds no certificate", path.display());
    Ok(certs)
}

fn load(files: &TlsConfig) -> anyhow::Result<Loaded> {
    let ca_pem = read(&files.ca_file, "tls.ca_file")?;
    let cert_pem = read(&files.cert_file, "tls.cert_file")?;
    let key_pem = read(&files.key_file, "tls.key_file")?;
    let ca = certificates(&ca_pem, &files.ca_file)?;
    let chain = certificates(&cert_pem, &files.cert_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("{}: not a PEM private key", files.key_file.display()))?;
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c).with_context(|| format!("{}: not a usable CA certificate", files.ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = |client_auth: bool, alpn: &[u8]| -> anyhow::Result<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = if client_auth {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
                .build()
                .context("the cluster CA cannot verify client certificates")?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain.clone(), key.clone_key()).with_context(|| {
            format!(
                "{} and {} do not make a certificate and its key",
                files.cert_file.display(),
                files.key_file.display()
            )
        })?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    };
    Ok(Loaded {
        http: server(false, b"http/1.1")?,
        grpc: server(false, b"h2")?,
        peer: server(true, b"h2")?,
        client: ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .identity(Identity::from_pem(&cert_pem, &key_pem)),
    })
}
