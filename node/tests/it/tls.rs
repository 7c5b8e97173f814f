//! TLS: with certificates configured every listener takes TLS only, nodes authenticate each
//! other with certificates of the cluster CA on the peer listener, certificates reload without
//! a restart, and the public gRPC port never serves the node-to-node service.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hotlake_client::{Client, SeriesBuilder};
use hotlake_cluster::transport::{PeerCall, PeerReply, Peers, TransportOptions};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::support::{tls_client, NodeProcess, TEST_TOKEN};

const T0: i64 = 1_700_000_000_000_000_000;

/// Runs `hotlake cert ARGS`, as an operator would.
fn hotlake_cert(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_hotlake")).arg("cert").args(args).output().unwrap();
    assert!(out.status.success(), "hotlake cert {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA in `dir` and certificates for `nodes` (named node1, node2, ...) on 127.0.0.1.
fn pki(dir: &Path, nodes: usize) -> PathBuf {
    let d = dir.to_str().unwrap();
    hotlake_cert(&["ca", "--dir", d, "--days", "2"]);
    for n in 1..=nodes {
        hotlake_cert(&["node", "--ca-dir", d, "--name", &format!("node{n}"), "--host", "127.0.0.1", "--out", d]);
    }
    dir.join("ca.pem")
}

fn tls_flags(dir: &Path, node: usize) -> Vec<String> {
    let f = |name: String| dir.join(name).display().to_string();
    vec![
        "--tls-ca-file".into(),
        f("ca.pem".into()),
        "--tls-cert-file".into(),
        f(format!("node{node}.pem")),
        "--tls-key-file".into(),
        f(format!("node{node}.key")),
    ]
}

fn peers() -> Peers {
    Peers::new(TransportOptions {
        call_timeout: Duration::from_secs(5),
        snapshot_chunk_bytes_max: 1 << 20,
        snapshot_bytes_per_s_max: 0,
        message_bytes_max: 64 << 20,
    })
}

/// Node-to-node TLS as a node of the CA in `dir` presents it, with the identity `name`.
fn peer_tls(dir: &Path, name: Option<&str>) -> ClientTlsConfig {
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    match name {
        Some(n) => {
            let cert = std::fs::read(dir.join(format!("{n}.pem"))).unwrap();
            let key = std::fs::read(dir.join(format!("{n}.key"))).unwrap();
            tls.identity(Identity::from_pem(cert, key))
        }
        None => tls,
    }
}

/// Whether a peer call of the cluster map to `addr` with `tls` is answered.
async fn map_answered(addr: &str, tls: Option<ClientTlsConfig>) -> bool {
    let p = peers();
    if let Some(t) = tls {
        p.set_tls(t);
    }
    matches!(p.call(addr, &PeerCall::Map, Duration::from_secs(5)).await, Ok(PeerReply::Map(_)))
}

#[test]
// tidy: long (one TLS cluster for every check, since starting it dominates the test time).
fn a_tls_cluster_takes_only_tls_and_only_its_own_nodes_and_reloads_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster_pki, stranger_pki) = (dir.path().join("pki"), dir.path().join("stranger"));
    let ca = pki(&cluster_pki, 2);
    pki(&stranger_pki, 1);
    let ca_pem = std::fs::read(&ca).unwrap();

    // Two nodes: node 2 joins through node 1's peer listener, with mutual TLS both ways.
    let mut f1 = vec!["--shard-count".to_string(), "4".into(), "--replication-factor".into(), "2".into()];
    f1.extend(tls_flags(&cluster_pki, 1));
    let node1 = NodeProcess::start(&dir.path().join("n1"), &f1.iter().map(String::as_str).collect::<Vec<_>>());
    let mut f2 = vec!["--shard-count".to_string(), "4".into(), "--node-id".into(), "2".into()];
    f2.extend(["--join".to_string(), node1.peer.clone()]);
    f2.extend(tls_flags(&cluster_pki, 2));
    let node2 = NodeProcess::start(&dir.path().join("n2"), &f2.iter().map(String::as_str).collect::<Vec<_>>());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin = Client::builder().seeds([node1.grpc.clone()]).token(TEST_TOKEN).tls_ca_pem(&ca_pem).admin().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // Both members answer node 1's status calls over the peer listener (node 1 → node 2),
        // and every shard is replicated on both (node 2 → node 1 took part in Raft too).
        let s = rt.block_on(admin.cluster_status()).unwrap();
        let answered = s.members.len() == 2 && s.members.iter().all(|m| m.error.is_empty());
        let settled = s.shards.len() == 4 && (0..4).all(|shard| s.placement(shard).len() == 2 && s.is_settled(shard));
        if answered && settled {
            break;
        }
        assert!(Instant::now() < deadline, "the TLS cluster did not form: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Writes over HTTPS through node 2 (forwarded over mutual TLS where node 1 leads), read
    // back over gRPC with TLS through node 1.
    let lines: String = (0..50).map(|i| format!("m,device_id=d{i} v={i}i {}\n", T0 + i)).collect();
    assert_eq!(node2.write("secure", &lines).status().as_u16(), 204);
    rt.block_on(async {
        let c = Client::builder().seeds([node1.grpc.clone()]).token(TEST_TOKEN).tls_ca_pem(&ca_pem).connect().await;
        let c = c.expect("a TLS client connects");
        let mut s = SeriesBuilder::new("m").tag("device_id", "grpc");
        s.push_i64(T0 + 60, "v", 1);
        c.write("secure", vec![s.build()]).await.expect("a write over gRPC with TLS");
    });
    let (status, v) = node1.query(serde_json::json!({
        "tenant": "secure", "measurement": "m", "start": T0, "end": T0 + 100, "aggregates": ["count"]
    }));
    assert_eq!(status, 200, "{v}");
    let count: i64 = v["groups"].as_array().into_iter().flatten().map(|g| g["rows"][0][1].as_i64().unwrap_or(0)).sum();
    assert_eq!(count, 51, "{v}");

    // Plaintext is refused on the HTTP and gRPC listeners.
    let plain = crate::support::client();
    assert!(plain.get(format!("http://{}/health", node1.http)).send().is_err(), "plaintext HTTP was answered");
    let plaintext_grpc = rt.block_on(Client::builder().seeds([node1.grpc.clone()]).token(TEST_TOKEN).connect());
    assert!(plaintext_grpc.is_err(), "a plaintext gRPC client connected");
    // A client that does not trust the cluster CA does not get past the handshake.
    let stranger_ca = std::fs::read(stranger_pki.join("ca.pem")).unwrap();
    assert!(tls_client(&stranger_ca).get(node1.url("/health")).send().is_err());

    // The peer listener takes only nodes of the cluster CA; the public port serves no peer.
    rt.block_on(async {
        assert!(map_answered(&node1.peer, Some(peer_tls(&cluster_pki, Some("node2")))).await, "a member is refused");
        assert!(!map_answered(&node1.peer, None).await, "plaintext peer call answered");
        assert!(!map_answered(&node1.peer, Some(peer_tls(&cluster_pki, None))).await, "no client certificate");
        let stranger = peer_tls(&stranger_pki, Some("node1")).ca_certificate(Certificate::from_pem(&ca_pem));
        assert!(!map_answered(&node1.peer, Some(stranger)).await, "a certificate of another CA was taken");
        assert!(
            !map_answered(&node1.grpc, Some(peer_tls(&cluster_pki, Some("node2")))).await,
            "public port served Peer"
        );
    });

    // New certificates (of a new CA) are taken without a restart.
    let renewed = dir.path().join("renewed");
    pki(&renewed, 1);
    for (from, to) in [("ca.pem", "ca.pem"), ("node1.pem", "node1.pem"), ("node1.key", "node1.key")] {
        let staged = cluster_pki.join(format!("{to}.new"));
        std::fs::copy(renewed.join(from), &staged).unwrap();
        std::fs::rename(&staged, cluster_pki.join(to)).unwrap();
    }
    let renewed_ca = std::fs::read(renewed.join("ca.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while tls_client(&renewed_ca).get(node1.url("/health")).send().is_err() {
        assert!(Instant::now() < deadline, "the renewed certificate is not served");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(tls_client(&ca_pem).get(node1.url("/health")).send().is_err(), "the old certificate is still served");
}

/// Without TLS the peer listener answers peers, and the public gRPC port still never serves
/// them: a client of the public API cannot reach Raft or forwarded calls.
#[test]
fn the_public_grpc_port_never_serves_peers() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "2"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        assert!(map_answered(&node.peer, None).await);
        assert!(!map_answered(&node.grpc, None).await, "the public port answered a peer call");
    });
}
