//! Tenants and tokens against a real node: requests without a known token are refused (401,
//! UNAUTHENTICATED), a tenant's token can neither read nor write another tenant on any path
//! (HTTP and gRPC writes, raw and aggregate queries, `last`), admin routes need `admin:*`, a
//! revoked token stops working, and every refusal leaves the stored data as it was.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use hotlake_client::proto as pb;
use hotlake_client::{Client, ClientError, LastBuilder, QueryBuilder, SeriesBuilder, TenantSettings};

use crate::support::{anonymous_client, client, NodeProcess, TEST_TOKEN};

const T0: i64 = 1_451_606_400_000_000_000; // 2016-01-01T00:00:00Z

fn http(token: &str) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Token {token}").parse().unwrap());
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).default_headers(headers).build().unwrap()
}

/// Status and body of a JSON query of measurement `m` in `tenant`, raw or counted.
fn query(c: &reqwest::blocking::Client, node: &NodeProcess, tenant: &str, count: bool) -> (u16, Value) {
    let mut body = json!({ "tenant": tenant, "measurement": "m", "start": T0, "end": T0 + 1_000_000_000_000i64 });
    if count {
        body["aggregates"] = json!(["count"]);
    }
    let r = c.post(format!("http://{}/api/v1/query", node.http)).json(&body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Points of `m` in `tenant`, counted with the admin token.
fn count(node: &NodeProcess, tenant: &str) -> i64 {
    let (status, v) = query(&client(), node, tenant, true);
    assert_eq!(status, 200, "{v}");
    v["groups"].as_array().into_iter().flatten().map(|g| g["rows"][0][1].as_i64().unwrap_or(0)).sum()
}

#[track_caller]
fn status_of(r: reqwest::blocking::Response, want: u16, reason: &str) {
    let status = r.status().as_u16();
    let unauthenticated = r.headers().get("www-authenticate").is_some();
    let body = r.text().unwrap();
    assert_eq!(status, want, "{body}");
    assert!(body.contains(reason), "{body} lacks {reason:?}");
    assert_eq!(unauthenticated, want == 401, "a 401 names its scheme, nothing else does");
}

#[track_caller]
fn refused_with<T: std::fmt::Debug>(r: Result<T, ClientError>, kind: &str) {
    match r {
        Err(ClientError::Rejected { kind: k, message }) => assert_eq!(k, kind, "{message}"),
        other => panic!("expected {kind}, got {other:?}"),
    }
}

fn write_one(c: &reqwest::blocking::Client, node: &NodeProcess, tenant: &str, v: i64) -> reqwest::blocking::Response {
    c.post(format!("http://{}/write?db={tenant}", node.http))
        .body(format!("m,device_id=d{v} v={v} {}\n", T0 + v))
        .send()
        .unwrap()
}

#[test]
// tidy: long (one node for every path, since starting it dominates the test time).
fn a_tenants_token_reaches_only_its_tenant_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    let url = |path: &str| format!("http://{}{path}", node.http);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin = Client::builder().seeds([node.grpc.clone()]).token(TEST_TOKEN).admin().unwrap();

    // Tenants and their tokens, made by the admin.
    rt.block_on(async {
        admin.create_tenant("fleet", TenantSettings { retention_s: 0 }).await.unwrap();
        admin.create_tenant("meters", TenantSettings { retention_s: 0 }).await.unwrap();
        refused_with(admin.create_tenant("fleet", TenantSettings::default()).await, "invalid_argument");
        refused_with(admin.create_tenant("a\0b", TenantSettings::default()).await, "invalid_argument");
        refused_with(admin.set_tenant("nobody", TenantSettings::default()).await, "not_found");
        refused_with(admin.create_token("x", &["read:nobody".into()]).await, "not_found");
        refused_with(admin.create_token("x", &["delete:fleet".into()]).await, "invalid_argument");
    });
    let fleet = rt.block_on(admin.create_token("fleet rw", &["read:fleet".into(), "write:fleet".into()])).unwrap();
    let meters = rt.block_on(admin.create_token("meters ro", &["read:meters".into()])).unwrap();
    assert!(fleet.secret.starts_with("hlk_") && fleet.secret.len() == 68, "{}", fleet.secret);
    let fleet_id = fleet.token.as_ref().unwrap().id;
    assert_eq!(write_one(&client(), &node, "meters", 1).status().as_u16(), 204);
    assert_eq!(count(&node, "meters"), 1);

    // No token, a malformed header or an unknown token: 401 everywhere but /health.
    let anon = anonymous_client();
    status_of(write_one(&anon, &node, "fleet", 2), 401, "requires a token");
    status_of(write_one(&http("hlk_not_a_token_of_this_cluster_at_all_0000"), &node, "fleet", 2), 401, "not known");
    status_of(
        anon.post(url("/write?db=fleet")).header("authorization", "Digest abc").body("m v=1 1\n").send().unwrap(),
        401,
        "Authorization header must be",
    );
    let (status, _) = query(&anon, &node, "meters", false);
    assert_eq!(status, 401);
    status_of(anon.get(url("/metrics")).send().unwrap(), 401, "requires a token");
    status_of(anon.get(url("/api/v1/cluster")).send().unwrap(), 401, "requires a token");
    status_of(
        anon.post(url("/api/v1/cluster/nodes"))
            .body(r#"{"id":9,"grpc_addr":"h:1","http_addr":"h:2","peer_addr":"h:3"}"#)
            .send()
            .unwrap(),
        401,
        "requires a token",
    );
    assert_eq!(anon.get(url("/health")).send().unwrap().status().as_u16(), 200, "health needs no token");

    // The fleet token writes its tenant in every form InfluxDB clients send it.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("grafana:{}", fleet.secret));
    let as_token = http(&fleet.secret);
    assert_eq!(write_one(&as_token, &node, "fleet", 3).status().as_u16(), 204);
    let r = anon
        .post(url("/write?db=fleet"))
        .header("authorization", format!("Basic {basic}"))
        .body(format!("m,device_id=d4 v=4 {}\n", T0 + 4))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = anon
        .post(url(&format!("/write?db=fleet&u=any&p={}", fleet.secret)))
        .body(format!("m,device_id=d5 v=5 {}\n", T0 + 5))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = anon
        .post(url("/api/v2/write?bucket=fleet"))
        .header("authorization", format!("Bearer {}", fleet.secret))
        .body(format!("m,device_id=d6 v=6 {}\n", T0 + 6))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(count(&node, "fleet"), 4);

    // ...and nothing else: another tenant's data, the default tenant, admin routes.
    status_of(write_one(&as_token, &node, "meters", 7), 403, "write:meters");
    status_of(as_token.post(url("/write")).body("m v=1 1\n").send().unwrap(), 403, "write:default");
    for count_it in [false, true] {
        let (status, v) = query(&as_token, &node, "meters", count_it);
        assert_eq!(status, 403, "{v}");
        assert!(v.to_string().contains("read:meters"), "{v}");
    }
    let r = as_token.post(url("/api/v1/last")).json(&json!({"tenant": "meters", "measurement": "m"})).send().unwrap();
    status_of(r, 403, "read:meters");
    let (status, v) = query(&as_token, &node, "fleet", true);
    assert_eq!(status, 200, "{v}");
    let cluster: Value = client().get(url("/api/v1/cluster")).send().unwrap().json().unwrap();
    assert!(cluster["map"]["tenants"]["fleet"].is_object(), "{cluster}");
    assert!(cluster["map"].get("tokens").is_none(), "token hashes shown: {cluster}");
    status_of(as_token.get(url("/metrics")).send().unwrap(), 403, "admin:*");
    status_of(as_token.get(url("/api/v1/cluster")).send().unwrap(), 403, "admin:*");
    status_of(as_token.post(url("/api/v1/shards/0/transfer-leader")).body("{}").send().unwrap(), 403, "admin:*");

    // A read-only token cannot write its own tenant.
    status_of(write_one(&http(&meters.secret), &node, "meters", 8), 403, "write:meters");

    // The same over gRPC.
    rt.block_on(async {
        let c = Client::builder().seeds([node.grpc.clone()]).token(fleet.secret.clone()).connect().await.unwrap();
        let mut s = SeriesBuilder::new("m").tag("device_id", "g1");
        s.push_i64(T0 + 10, "v", 10);
        c.write("fleet", vec![s.clone().build()]).await.unwrap();
        refused_with(c.write("meters", vec![s.clone().build()]).await, "permission_denied");
        let q = || QueryBuilder::new("m").range(T0, T0 + 1_000_000_000_000);
        refused_with(c.query(q().tenant("meters")).await, "permission_denied");
        refused_with(
            c.query(q().tenant("meters").aggregate(hotlake_client::Aggregate::Count)).await,
            "permission_denied",
        );
        refused_with(c.last(LastBuilder::new("m").tenant("meters")).await, "permission_denied");
        assert!(!c.query(q().tenant("fleet")).await.unwrap().groups.is_empty());
        let fleet_admin = Client::builder().seeds([node.grpc.clone()]).token(fleet.secret.clone()).admin().unwrap();
        refused_with(fleet_admin.cluster_status().await, "permission_denied");
        refused_with(fleet_admin.add_node(9, "h:1", "h:2", "h:3").await, "permission_denied");
        // A token cannot grant what it does not hold.
        refused_with(fleet_admin.create_token("more", &["read:*".into()]).await, "permission_denied");
        refused_with(fleet_admin.create_token("other", &["read:fleet".into()]).await, "permission_denied");
        assert!(fleet_admin.tokens().await.unwrap().is_empty(), "it administers no token");
        assert!(fleet_admin.tenants().await.unwrap().is_empty(), "it administers no tenant");

        // Without a token, or with an unknown one: UNAUTHENTICATED, on the stubs as clients see them.
        let mut raw = pb::hotlake_client::HotlakeClient::connect(format!("http://{}", node.grpc)).await.unwrap();
        let req = pb::WriteRequest { tenant: "fleet".into(), series: vec![s.build()], ..Default::default() };
        let e = raw.write(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let e = raw.cluster_map(pb::ClusterMapRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let mut raw_admin = pb::admin_client::AdminClient::connect(format!("http://{}", node.grpc)).await.unwrap();
        let e = raw_admin.cluster_status(pb::ClusterStatusRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        assert!(raw.health(pb::HealthRequest {}).await.is_ok(), "health needs no token");
    });
    assert_eq!(count(&node, "meters"), 1, "refused writes changed the data");
    assert_eq!(count(&node, "fleet"), 5);

    // The admin lists tokens without their secrets, and a revoked token stops working.
    rt.block_on(async {
        let tokens = admin.tokens().await.unwrap();
        let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        assert!(names.contains(&"fleet rw") && names.contains(&"meters ro") && names.contains(&"bootstrap admin"));
        let listed = format!("{tokens:?}");
        assert!(!listed.contains(&fleet.secret), "a listing carries a secret");
        admin.revoke_token(fleet_id).await.unwrap();
        refused_with(admin.revoke_token(fleet_id).await, "not_found");
        admin.set_tenant("fleet", TenantSettings { retention_s: 86_400 }).await.unwrap();
        let tenants = admin.tenants().await.unwrap();
        let fleet_settings = tenants.iter().find(|t| t.name == "fleet").and_then(|t| t.settings);
        assert_eq!(fleet_settings.map(|s| s.retention_s), Some(86_400));
    });
    status_of(write_one(&as_token, &node, "fleet", 11), 401, "not known");

    // A first write to a new tenant creates it.
    assert_eq!(write_one(&client(), &node, "created_by_a_write", 12).status().as_u16(), 204);
    let tenants = rt.block_on(admin.tenants()).unwrap();
    assert!(tenants.iter().any(|t| t.name == "created_by_a_write"), "{tenants:?}");
    assert_eq!(count(&node, "fleet"), 5);
}

/// A node creating a cluster with no token file prints the admin token once on stdout, and
/// that token works; a cluster created with `--insecure-no-auth` takes requests without one,
/// and a node restarted on it without the flag refuses to start, naming the setting.
#[test]
fn the_bootstrap_token_is_printed_once_and_auth_can_be_off_for_experiments() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = NodeProcess::free_addrs();
    let data = dir.path().join("printed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotlake"))
        .args(["serve", "--shard-count", "2", "--http-addr", &addrs.http, "--grpc-addr", &addrs.grpc])
        .args(["--peer-addr", &addrs.peer])
        .arg("--data-dir")
        .arg(&data)
        .env("HOTLAKE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let token = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.trim().strip_prefix("hlk_").map(|rest| format!("hlk_{rest}")))
        .expect("the admin token on stdout");
    let deadline = Instant::now() + Duration::from_secs(60);
    let admitted = loop {
        let r = http(&token)
            .post(format!("http://{}/write?db=printed", addrs.http))
            .body(format!("m,device_id=a v=1 {T0}\n"))
            .send();
        if let Ok(r) = r {
            if r.status().as_u16() != 503 {
                break r.status().as_u16();
            }
        }
        assert!(Instant::now() < deadline, "the node did not take writes in time");
        // tidy: sleep (polls the node's start, bounded by the deadline above).
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(admitted, 204);
    let _ = child.kill();
    let _ = child.wait();

    let open_dir = dir.path().join("open");
    let mut open = NodeProcess::start(&open_dir, &["--shard-count", "2", "--insecure-no-auth"]);
    assert_eq!(write_one(&anonymous_client(), &open, "lab", 1).status().as_u16(), 204);
    let (status, v) = query(&anonymous_client(), &open, "lab", true);
    assert_eq!(status, 200, "{v}");
    open.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_hotlake"))
        .args(["serve", "--shard-count", "2", "--http-addr", &open.http, "--grpc-addr", &open.grpc])
        .args(["--peer-addr", &open.peer])
        .arg("--data-dir")
        .arg(&open_dir)
        .env("HOTLAKE_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a node with auth on started on a cluster without it");
    assert!(stderr.contains("auth.enabled is true here but false in the cluster"), "{stderr}");
}
