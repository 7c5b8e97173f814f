//! Subscriptions end to end: the client library's stream and Server-Sent Events on one node
//! (filters, resuming after a cursor, `Last-Event-ID`, bad cursors, a token revoked while its
//! subscription runs), and a 3-node cluster whose
//! busiest leader is killed three times while two subscribers read, one of them dropping its
//! stream and resuming from its cursor: each sees every acknowledged write, each shard's entries
//! once and in log order, and both see the same entries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotlake_client::proto::field_column::Values;
use hotlake_client::{SubscribeBuilder, Subscription, SubscriptionMessage};

use crate::cluster::{kill_busiest_leader_three_times, Cluster, Writers, LINES_PER_BATCH};
use crate::support::{NodeProcess, TEST_TOKEN};

const T0: i64 = 1_451_606_400_000_000_000;

fn lines(measurement: &str, from: usize, to: usize) -> String {
    (from..to)
        .map(|i| format!("{measurement},device_id=truck_{} velocity={i}.5,status={i}i {}\n", i % 4, T0 + i as i64))
        .collect()
}

/// The next message that carries points, within `timeout`.
pub(crate) async fn next_points(sub: &mut Subscription, timeout: Duration) -> SubscriptionMessage {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let m = tokio::time::timeout_at(deadline, sub.recv()).await.expect("a message in time");
        let m = m.expect("the subscription goes on").expect("no error");
        if !m.series.is_empty() {
            return m;
        }
    }
}

/// Waits for the first message (the start cursor) so that writes after it are seen.
pub(crate) async fn started(sub: &mut Subscription) -> String {
    let m = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.expect("started").unwrap().unwrap();
    assert!(m.series.is_empty(), "the first message only says where the subscription starts");
    m.cursor
}

fn velocities(m: &SubscriptionMessage) -> Vec<String> {
    let mut out = Vec::new();
    for s in &m.series {
        for f in &s.fields {
            if let Some(Values::F64(v)) = &f.values {
                out.extend(v.values.iter().map(|x| format!("{}:{x}", s.tags[0].value)));
            }
        }
    }
    out
}

#[test]
fn a_subscription_delivers_matching_writes_in_order_and_resumes_after_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (client, mut all, mut one) = rt.block_on(async {
        let client = crate::support::connect([node.grpc.clone()]).await;
        let mut all = client.subscribe(SubscribeBuilder::new("fleet").measurement("readings"));
        let mut one = client.subscribe(SubscribeBuilder::new("fleet").tag("device_id", "truck_1").field("status"));
        started(&mut all).await;
        started(&mut one).await;
        (client, all, one)
    });
    for batch in 0..4 {
        let body = lines("readings", batch * 10, batch * 10 + 10) + &lines("other", batch * 10, batch * 10 + 10);
        assert_eq!(node.write("fleet", &body).status().as_u16(), 204);
    }
    rt.block_on(async {
        let mut seen = Vec::new();
        let mut messages = Vec::new();
        while seen.len() < 40 {
            let m = next_points(&mut all, Duration::from_secs(10)).await;
            assert!(m.series.iter().all(|s| s.measurement == "readings"), "{m:?}");
            seen.extend(velocities(&m));
            messages.push(m);
        }
        let expected: BTreeSet<String> = (0..40).map(|i| format!("truck_{}:{i}.5", i % 4)).collect();
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);
        assert_eq!(seen.len(), 40, "nothing twice");

        // truck_1 only, the status field only.
        let mut statuses = 0;
        while statuses < 20 {
            let m = next_points(&mut one, Duration::from_secs(10)).await;
            for s in &m.series {
                assert!(s.tags.iter().any(|t| t.key == "device_id" && t.value == "truck_1"), "{s:?}");
                assert_eq!(s.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["status"]);
                statuses += s.timestamps_ns.len();
            }
        }
        assert_eq!(statuses, 20, "5 readings and 5 others per batch for truck_1");

        // From the cursor of the first message on: exactly the entries that followed it (each
        // shard's in log order; how shards interleave is not defined).
        let mut resumed =
            client.subscribe(SubscribeBuilder::new("fleet").measurement("readings").after(&messages[0].cursor));
        let by_entry = |m: &SubscriptionMessage| (m.shard, m.index, m.series.clone());
        let mut expected: Vec<_> = messages[1..].iter().map(by_entry).collect();
        let mut got = Vec::new();
        for _ in 1..messages.len() {
            got.push(by_entry(&next_points(&mut resumed, Duration::from_secs(10)).await));
        }
        for list in [&got, &expected] {
            for shard in 0..4 {
                let indexes: Vec<u64> = list.iter().filter(|e| e.0 == shard).map(|e| e.1).collect();
                assert!(indexes.windows(2).all(|w| w[0] < w[1]), "s{shard} out of order: {indexes:?}");
            }
        }
        got.sort_by_key(|e| (e.0, e.1));
        expected.sort_by_key(|e| (e.0, e.1));
        assert_eq!(got, expected);

        let mut bad = client.subscribe(SubscribeBuilder::new("fleet").after("1.2"));
        match bad.recv().await {
            Some(Err(e)) => assert_eq!(e.kind(), Some("invalid_argument"), "{e}"),
            other => panic!("a cursor of the wrong shard count was accepted: {other:?}"),
        }
        let mut wrong = client.subscribe(SubscribeBuilder::new("fleet").after("one.two"));
        assert!(matches!(wrong.recv().await, Some(Err(_))), "a cursor that is not one was accepted");
    });
}

/// One Server-Sent Event.
#[derive(Debug, Default)]
pub(crate) struct Event {
    pub(crate) event: String,
    pub(crate) id: String,
    pub(crate) data: String,
}

pub(crate) fn next_event(reader: &mut impl BufRead) -> Event {
    let mut e = Event::default();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the event stream ended");
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            if !e.event.is_empty() {
                return e;
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("event: ") {
            e.event = v.to_string();
        } else if let Some(v) = line.strip_prefix("id: ") {
            e.id = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            e.data.push_str(v);
        }
    }
}

#[test]
fn server_sent_events_carry_the_cursor_and_resume_from_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    let http = reqwest::blocking::Client::builder().build().unwrap();
    let open = |last_event_id: Option<&str>| {
        let mut r = http
            .get(node.url("/api/v1/subscribe?db=fleet&measurement=readings&tag=device_id=truck_2"))
            .header("Authorization", format!("Bearer {TEST_TOKEN}"));
        if let Some(id) = last_event_id {
            r = r.header("Last-Event-ID", id);
        }
        let r = r.send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        BufReader::new(r)
    };
    let mut stream = open(None);
    let first = next_event(&mut stream);
    assert_eq!(first.event, "progress");
    assert_eq!(node.write("fleet", &lines("readings", 0, 40)).status().as_u16(), 204);
    assert_eq!(node.write("fleet", &lines("readings", 40, 80)).status().as_u16(), 204);
    let a = next_event(&mut stream);
    let b = next_event(&mut stream);
    assert_eq!((a.event.as_str(), b.event.as_str()), ("points", "points"));
    let data: serde_json::Value = serde_json::from_str(&a.data).unwrap();
    let points = data["points"].as_array().unwrap();
    assert_eq!(points.len(), 10, "truck_2's points of the first write: {data}");
    assert_eq!(points[0]["tags"]["device_id"], "truck_2");
    assert_eq!(points[0]["fields"]["velocity"], 2.5);
    assert_eq!(points[0]["time"], T0 + 2);
    drop(stream);

    // What EventSource does after a broken connection: the second event again, nothing else.
    let mut resumed = open(Some(&a.id));
    assert_eq!(next_event(&mut resumed).event, "progress");
    let again = next_event(&mut resumed);
    assert_eq!((again.id, again.data), (b.id, b.data));

    // A token revoked while its subscription runs ends the stream with the refusal.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin = hotlake_client::Client::builder().seeds([node.grpc.clone()]).token(TEST_TOKEN).admin().unwrap();
    let reader = rt.block_on(admin.create_token("reader", &["read:fleet".into()])).unwrap();
    let elsewhere = http
        .get(node.url("/api/v1/subscribe?db=meters"))
        .header("Authorization", format!("Token {}", reader.secret))
        .send()
        .unwrap();
    assert_eq!(elsewhere.status().as_u16(), 403, "a token of one tenant subscribed to another");
    let long_tag = format!("/api/v1/subscribe?db=fleet&tag=device_id={}", "x".repeat(5000));
    let r = http.get(node.url(&long_tag)).header("Authorization", format!("Bearer {TEST_TOKEN}")).send().unwrap();
    assert_eq!(r.status().as_u16(), 400, "a tag value past limits.tag_value_bytes_max");
    let r = http
        .get(node.url("/api/v1/subscribe?db=fleet"))
        .header("Authorization", format!("Token {}", reader.secret))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut revoked = BufReader::new(r);
    assert_eq!(next_event(&mut revoked).event, "progress");
    rt.block_on(admin.revoke_token(reader.token.as_ref().unwrap().id)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = next_event(&mut revoked);
        if e.event == "error" {
            assert!(e.data.contains("unauthenticated"), "{}", e.data);
            break;
        }
        assert!(Instant::now() < deadline, "the subscription of a revoked token went on");
    }

    let anonymous = reqwest::blocking::Client::new().get(node.url("/api/v1/subscribe?db=fleet")).send().unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let bad = http
        .get(node.url("/api/v1/subscribe?db=fleet&start=x"))
        .header("Authorization", format!("Bearer {TEST_TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

/// What a subscriber saw: per shard, the entries' log indexes in delivery order, and the point
/// numbers delivered.
#[derive(Default)]
struct Seen {
    entries: BTreeMap<u32, Vec<u64>>,
    numbers: Vec<u64>,
    first_cursor: Option<String>,
}

impl Seen {
    fn take(&mut self, m: &SubscriptionMessage) {
        if self.first_cursor.is_none() {
            self.first_cursor = Some(m.cursor.clone());
        }
        if m.series.is_empty() {
            return;
        }
        self.entries.entry(m.shard).or_default().push(m.index);
        for s in &m.series {
            for f in &s.fields {
                if let Some(Values::I64(v)) = &f.values {
                    // The writers' value of point n is 7n - 3.
                    self.numbers.extend(v.values.iter().map(|x| ((x + 3) / 7) as u64));
                }
            }
        }
    }
}

/// Reads a subscription into `seen` until `stop`; with `resume_every`, drops the stream after
/// that many entries and opens a new one after the last cursor, through the seeds turned round.
fn subscriber(
    seeds: Vec<String>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    resume_every: Option<usize>,
    ready: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut seeds = seeds;
            let mut cursor: Option<String> = None;
            let mut ready = Some(ready);
            while !stop.load(Ordering::Relaxed) {
                let client = crate::support::connect(&seeds).await;
                let mut what = SubscribeBuilder::new("cl").measurement("cl");
                if let Some(c) = &cursor {
                    what = what.after(c);
                }
                let mut sub = client.subscribe(what);
                let mut entries = 0;
                while !stop.load(Ordering::Relaxed) {
                    let m = match tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
                        Err(_) => continue,
                        Ok(Some(Ok(m))) => m,
                        Ok(other) => panic!("the subscription ended: {other:?}"),
                    };
                    seen.lock().unwrap().take(&m);
                    cursor = Some(m.cursor.clone());
                    if let Some(r) = ready.take() {
                        r.send(()).unwrap();
                    }
                    entries += usize::from(!m.series.is_empty());
                    if resume_every.is_some_and(|n| entries >= n) {
                        break;
                    }
                }
                seeds.rotate_left(1);
            }
        })
    })
}

#[test]
fn subscribers_see_every_acknowledged_write_once_across_leader_kills() {
    let mut c = Cluster::start(3);
    let seeds: Vec<String> = c.nodes.iter().map(|n| n.grpc.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (steady, resuming) = (Arc::new(Mutex::new(Seen::default())), Arc::new(Mutex::new(Seen::default())));
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let readers = [
        subscriber(seeds.clone(), steady.clone(), stop.clone(), None, ready_tx.clone()),
        subscriber(seeds.iter().rev().cloned().collect(), resuming.clone(), stop.clone(), Some(7), ready_tx),
    ];
    for _ in 0..2 {
        ready.recv_timeout(Duration::from_secs(30)).expect("the subscriptions started");
    }
    let http: Vec<String> = c.nodes.iter().map(|n| n.http.clone()).collect();
    let writers = Writers::start(http, 2);
    kill_busiest_leader_three_times(&mut c, &writers);
    let (acked, failed) = writers.finish();
    let wanted: BTreeSet<u64> = acked.iter().flat_map(|&(from, to)| from..to).collect();
    // Batch numbers are taken in turn: beyond the last acknowledged batch are only the failed
    // ones (which may have been written) and one in flight per writer.
    let written_below = acked.iter().map(|&(_, to)| to).max().unwrap() + (failed as u64 + 2) * LINES_PER_BATCH;
    let deadline = Instant::now() + Duration::from_secs(120);
    for (name, seen) in [("steady", &steady), ("resuming", &resuming)] {
        loop {
            let missing = {
                let s = seen.lock().unwrap();
                let have: BTreeSet<u64> = s.numbers.iter().copied().collect();
                wanted.difference(&have).count()
            };
            if missing == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: {missing} acknowledged points never delivered");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let (steady, resuming) = (steady.lock().unwrap(), resuming.lock().unwrap());
    for (name, s) in [("steady", &*steady), ("resuming", &*resuming)] {
        for (shard, indexes) in &s.entries {
            assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{name}: s{shard} entries repeated or out of order");
        }
        assert!(s.numbers.iter().all(|&n| n < written_below), "{name}: a point nobody wrote");
    }
    // Both read the same feed: where they overlap, they saw the same entries.
    for (shard, later) in &resuming.entries {
        let earlier = &steady.entries[shard];
        let from = earlier.iter().position(|i| *i == later[0]).expect("the resuming subscriber's first entry");
        let until = (from + later.len()).min(earlier.len());
        assert_eq!(&earlier[from..until], &later[..until - from], "s{shard}: the subscribers disagree");
    }
}

/// The point numbers (`status` values) of a message.
fn statuses(m: &SubscriptionMessage) -> Vec<i64> {
    let mut out = Vec::new();
    for s in &m.series {
        for f in &s.fields {
            if let (true, Some(Values::I64(v))) = (f.name == "status", &f.values) {
                out.extend(&v.values);
            }
        }
    }
    out
}

/// The members of a consumer group and their shards, once `count` members are listed.
async fn members_once(client: &hotlake_client::Client, group: &str, count: usize) -> BTreeMap<String, Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g = client.consumer_groups("fleet", group).await.expect("the group is listed");
        if g[0].members.len() == count {
            return g[0].members.iter().map(|m| (m.member.clone(), m.shards.clone())).collect();
        }
        assert!(Instant::now() < deadline, "{} members instead of {count}", g[0].members.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
// tidy: long (one node for the whole life of a group: share, commit, resume, reset, delete).
fn consumer_group_members_share_the_shards_and_a_new_member_resumes_after_the_commits() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let group = || SubscribeBuilder::new("fleet").measurement("readings").group("dash");
    let (client, mut a, mut b, members) = rt.block_on(async {
        let client = crate::support::connect([node.grpc.clone()]).await;
        let mut a = client.subscribe(group());
        started(&mut a).await;
        let mut b = client.subscribe(group());
        started(&mut b).await;
        let members = members_once(&client, "dash", 2).await;
        // tidy: sleep (the first member learns its smaller share at its next heartbeat, every 2 s).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        (client, a, b, members)
    });
    assert_eq!(members.values().map(Vec::len).sum::<usize>(), 4, "every shard has one reader: {members:?}");
    for batch in 0..4 {
        assert_eq!(node.write("fleet", &lines("readings", batch * 10, batch * 10 + 10)).status().as_u16(), 204);
    }
    rt.block_on(async {
        // Between them the members get every point once, each only from its own shards.
        let mut seen: Vec<i64> = Vec::new();
        let (mut last_a, mut last_b) = (None, None);
        while seen.len() < 40 {
            let (m, last) = tokio::select! {
                m = next_points(&mut a, Duration::from_secs(10)) => (m, &mut last_a),
                m = next_points(&mut b, Duration::from_secs(10)) => (m, &mut last_b),
            };
            assert!(members[&m.member].contains(&m.shard), "{} read s{} outside its share", m.member, m.shard);
            seen.extend(statuses(&m));
            *last = Some(m.cursor.clone());
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<i64>>(), "points lost or repeated between the members");
        // Each commits what it processed; a member's commit moves only its own shards.
        for (sub, last) in [(&a, last_a), (&b, last_b)] {
            if let Some(cursor) = last {
                let moved = sub.commit(&cursor).await.expect("commit");
                assert!(moved.iter().all(|s| members.values().any(|m| m.contains(s))), "{moved:?}");
            }
        }
    });
    drop((a, b));
    for batch in 4..6 {
        assert_eq!(node.write("fleet", &lines("readings", batch * 10, batch * 10 + 10)).status().as_u16(), 204);
    }
    // The meta leader (this node) reports the group's lag: at least the two writes since the
    // commits, once the shards' applied indexes have been reported to it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = crate::support::client().get(node.url("/metrics")).send().unwrap().text().unwrap();
        let lag = text
            .lines()
            .find_map(|l| l.strip_prefix("hotlake_consumer_lag_entries{tenant=\"fleet\",group=\"dash\"} "))
            .map(|v| v.parse::<u64>().unwrap());
        if lag.is_some_and(|l| l >= 2) {
            break;
        }
        assert!(Instant::now() < deadline, "no lag reported for the group: {lag:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let admin = rt.block_on(async {
        // A new member resumes after the commits: exactly what the others did not process.
        let mut c = client.subscribe(group());
        let mut seen: Vec<i64> = Vec::new();
        while seen.len() < 20 {
            seen.extend(statuses(&next_points(&mut c, Duration::from_secs(10)).await));
        }
        seen.sort_unstable();
        assert_eq!(seen, (40..60).collect::<Vec<i64>>(), "the new member did not resume after the commits");
        let admin = hotlake_client::Client::builder()
            .seeds([node.grpc.clone()])
            .token(crate::support::TEST_TOKEN)
            .admin()
            .unwrap();
        let refused = admin.reset_consumer_group("fleet", "dash", "now").await.unwrap_err();
        assert!(refused.to_string().contains("reading"), "{refused}");
        drop(c);
        members_once(&client, "dash", 0).await;
        admin
    });
    rt.block_on(async {
        admin.reset_consumer_group("fleet", "dash", "now").await.expect("reset");
        let g = client.consumer_groups("fleet", "dash").await.unwrap();
        assert_eq!(g[0].lag_entries, 0, "a group reset to now has nothing to catch up: {:?}", g[0]);
        let bad = admin.reset_consumer_group("fleet", "dash", "1.2").await.unwrap_err();
        assert!(bad.to_string().contains("shards"), "{bad}");
        admin.delete_consumer_group("fleet", "dash").await.expect("delete");
        let gone = client.consumer_groups("fleet", "dash").await.unwrap_err();
        assert_eq!(gone.kind(), Some("not_found"), "{gone}");
    });
    // Over HTTP: a commit for a group that does not exist, and one that is not JSON.
    let http = reqwest::blocking::Client::new();
    let commit = |body: &str| {
        http.post(node.url("/api/v1/consumers/dash/commit?db=fleet"))
            .header("Authorization", format!("Bearer {TEST_TOKEN}"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(commit(r#"{"member": "1.0.0", "cursor": "0.0.0.0"}"#), 404);
    assert_eq!(commit("not json"), 400);
}

/// A member of consumer group `cl` that records what it is given and commits it every second,
/// opening its stream again whenever it ends, until `stop`.
fn group_member(
    seeds: Vec<String>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let client = crate::support::connect(&seeds).await;
            let mut sub = client.subscribe(SubscribeBuilder::new("cl").measurement("cl").group("pipeline"));
            let mut ready = Some(ready);
            let mut committed_at = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let m = match tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
                    Err(_) => continue,
                    Ok(Some(Ok(m))) => m,
                    Ok(other) => panic!("the member's subscription ended: {other:?}"),
                };
                seen.lock().unwrap().take(&m);
                if let Some(r) = ready.take() {
                    r.send(()).unwrap();
                }
                if committed_at.elapsed() >= Duration::from_secs(1) {
                    // A commit that fails (the coordinator moved with a killed node) is made
                    // again with a later cursor; in between the group may deliver some twice.
                    let _ = sub.commit(&m.cursor).await;
                    committed_at = Instant::now();
                }
            }
        })
    })
}

#[test]
fn a_consumer_group_of_two_members_processes_every_acknowledged_write_across_leader_kills() {
    let mut c = Cluster::start(3);
    let seeds: Vec<String> = c.nodes.iter().map(|n| n.grpc.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (one, two) = (Arc::new(Mutex::new(Seen::default())), Arc::new(Mutex::new(Seen::default())));
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let members = [
        group_member(seeds.clone(), one.clone(), stop.clone(), ready_tx.clone()),
        group_member(seeds.iter().rev().cloned().collect(), two.clone(), stop.clone(), ready_tx),
    ];
    for _ in 0..2 {
        ready.recv_timeout(Duration::from_secs(30)).expect("the members started");
    }
    let http: Vec<String> = c.nodes.iter().map(|n| n.http.clone()).collect();
    let writers = Writers::start(http, 2);
    kill_busiest_leader_three_times(&mut c, &writers);
    let (acked, _) = writers.finish();
    let wanted: BTreeSet<u64> = acked.iter().flat_map(|&(from, to)| from..to).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have: BTreeSet<u64> =
            one.lock().unwrap().numbers.iter().chain(two.lock().unwrap().numbers.iter()).copied().collect();
        let missing = wanted.difference(&have).count();
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} acknowledged points were never given to a member");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for m in members {
        m.join().unwrap();
    }
    // Both members took part: the group's shards were shared.
    for (name, seen) in [("one", &one), ("two", &two)] {
        assert!(!seen.lock().unwrap().numbers.is_empty(), "member {name} was given nothing");
    }
}

#[test]
fn history_and_last_starts_deliver_the_stored_points_then_what_follows_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small-history.toml");
    std::fs::write(&config, "[limits]\nquery_rows_max = 15\n").unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4", "--config", config.to_str().unwrap()]);
    assert_eq!(node.write("fleet", &lines("readings", 0, 20)).status().as_u16(), 204);
    assert_eq!(node.write("fleet", &lines("other", 0, 20)).status().as_u16(), 204);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (client, mut sub) = rt.block_on(async {
        let client = crate::support::connect([node.grpc.clone()]).await;
        let what = SubscribeBuilder::new("fleet").measurement("readings").history_from(&(T0 + 10).to_string());
        let mut sub = client.subscribe(what);
        // The history, shard by shard, then the progress message that starts the live part.
        let mut history = Vec::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.unwrap().unwrap().unwrap();
            if !m.history {
                assert!(m.series.is_empty(), "the live part starts with a progress message");
                break;
            }
            assert!(m.series.iter().all(|s| s.measurement == "readings"), "{m:?}");
            history.extend(statuses(&m));
        }
        history.sort_unstable();
        assert_eq!(history, (10..20).collect::<Vec<i64>>(), "the stored points from the start time");
        (client, sub)
    });
    assert_eq!(node.write("fleet", &lines("readings", 20, 25)).status().as_u16(), 204);
    rt.block_on(async {
        let mut live = Vec::new();
        while live.len() < 5 {
            let m = next_points(&mut sub, Duration::from_secs(10)).await;
            assert!(!m.history);
            live.extend(statuses(&m));
        }
        live.sort_unstable();
        assert_eq!(live, (20..25).collect::<Vec<i64>>(), "what followed the history");
        // `last`: the latest values of the series selected, then the live part.
        let what = SubscribeBuilder::new("fleet").measurement("readings").tag("device_id", "truck_1").latest();
        let mut latest = client.subscribe(what);
        let m = tokio::time::timeout(Duration::from_secs(10), latest.recv()).await.unwrap().unwrap().unwrap();
        assert!(m.history, "{m:?}");
        assert_eq!((statuses(&m), velocities(&m)), (vec![21], vec!["truck_1:21.5".to_string()]));
        let m = tokio::time::timeout(Duration::from_secs(10), latest.recv()).await.unwrap().unwrap().unwrap();
        assert!(!m.history && m.series.is_empty(), "the live part starts after the latest values: {m:?}");
        // More history than a query may read is refused, with the limit named.
        let mut too_much = client.subscribe(SubscribeBuilder::new("fleet").history_from("1970-01-01T00:00:00Z"));
        let e = tokio::time::timeout(Duration::from_secs(10), too_much.recv()).await.unwrap().unwrap().unwrap_err();
        assert_eq!(e.kind(), Some("limit_exceeded"), "{e}");
        assert!(e.to_string().contains("query_rows_max"), "{e}");
    });
    // Over Server-Sent Events: `history` events carry no id, the `progress` after them does.
    let r = reqwest::blocking::Client::new()
        .get(node.url(&format!("/api/v1/subscribe?db=fleet&measurement=readings&start=history:{}", T0 + 15)))
        .header("Authorization", format!("Bearer {TEST_TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut stream = BufReader::new(r);
    let mut points = 0;
    loop {
        let e = next_event(&mut stream);
        if e.event == "progress" {
            assert!(!e.id.is_empty(), "the live part's first event carries the cursor");
            break;
        }
        assert_eq!((e.event.as_str(), e.id.as_str()), ("history", ""), "{e:?}");
        let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        points += data["points"].as_array().unwrap().len();
    }
    assert_eq!(points, 10, "points 15 to 24");
}
