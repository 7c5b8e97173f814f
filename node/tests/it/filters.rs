//! Field filters on every field type end to end: strings (`=`, `!=`, `in`, prefix, regex) and
//! booleans in JSON and gRPC queries, booleans aggregated as 0/1, bad filters refused with
//! nothing read, and the same filters on subscriptions (a live stream, a `last` start and
//! Server-Sent Events).

use std::io::BufReader;
use std::time::Duration;

use serde_json::json;

use hotlake_client::proto::field_column::Values;
use hotlake_client::{Aggregate, Cmp, QueryBuilder, SubscribeBuilder, SubscriptionMessage};

use crate::subscribe::{next_event, next_points, started};
use crate::support::{NodeProcess, TEST_TOKEN};

const T0: i64 = 1_451_606_400_000_000_000;
const ERRORS: [&str; 4] = ["OK", "E_DECODER", "E_TUNER", "W_DECODER"];

/// Box `i`'s event: device `box_{i % 5}`, `error` cycling through `ERRORS`, `reboot` every
/// third event, `uptime` the event's number.
fn events(from: usize, to: usize) -> String {
    (from..to)
        .map(|i| {
            format!(
                "events,device_id=box_{} error=\"{}\",reboot={},uptime={i}i {}\n",
                i % 5,
                ERRORS[i % 4],
                i % 3 == 0,
                T0 + i as i64
            )
        })
        .collect()
}

/// How many events of `from..to` pass `keep`.
fn expected(from: usize, to: usize, keep: impl Fn(usize) -> bool) -> usize {
    (from..to).filter(|&i| keep(i)).count()
}

fn count(node: &NodeProcess, filter: serde_json::Value) -> (u16, serde_json::Value) {
    node.query(json!({
        "tenant": "stb", "measurement": "events", "fields": ["uptime"], "filter": filter,
        "start": T0, "end": T0 + 1_000, "aggregates": ["count"],
    }))
}

/// The `uptime`s (event numbers) a subscription message carries.
fn uptimes(m: &SubscriptionMessage) -> Vec<usize> {
    let mut out = Vec::new();
    for s in &m.series {
        for f in s.fields.iter().filter(|f| f.name == "uptime") {
            if let Some(Values::I64(v)) = &f.values {
                out.extend(v.values.iter().map(|x| *x as usize));
            }
        }
    }
    out
}

#[test]
fn strings_and_booleans_filter_queries_and_subscriptions_and_booleans_sum_as_zero_or_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    assert_eq!(node.write("stb", &events(0, 200)).status().as_u16(), 204);

    json_queries(&node);
    grpc_queries_and_subscriptions(&node);
    server_sent_events(&node);
    hotlakectl_filters(&node);
}

/// JSON queries: every operator on strings, booleans, both together, booleans as 0/1, and bad
/// filters refused.
fn json_queries(node: &NodeProcess) {
    // JSON: each string operator, a boolean, and both together.
    let cases = [
        (json!([{"field": "error", "op": "=", "value": "E_DECODER"}]), expected(0, 200, |i| i % 4 == 1)),
        (json!([{"field": "error", "op": "!=", "value": "OK"}]), expected(0, 200, |i| i % 4 != 0)),
        (json!([{"field": "error", "op": "prefix", "value": "E_"}]), expected(0, 200, |i| i % 4 == 1 || i % 4 == 2)),
        (json!([{"field": "error", "op": "=~", "value": "DECODER$"}]), expected(0, 200, |i| i % 4 == 1 || i % 4 == 3)),
        (json!([{"field": "error", "op": "!~", "value": "^E_"}]), expected(0, 200, |i| i % 4 == 0 || i % 4 == 3)),
        (json!([{"field": "error", "op": "in", "values": ["OK", "E_TUNER"]}]), expected(0, 200, |i| i % 2 == 0)),
        (json!([{"field": "reboot", "op": "=", "value": true}]), expected(0, 200, |i| i % 3 == 0)),
        (
            json!([{"field": "reboot", "op": "!=", "value": true}, {"field": "error", "op": "=", "value": "E_TUNER"}]),
            expected(0, 200, |i| i % 3 != 0 && i % 4 == 2),
        ),
        // Numbers see booleans as 0/1; a string never equals a number.
        (json!([{"field": "reboot", "op": ">", "value": 0}]), expected(0, 200, |i| i % 3 == 0)),
        (json!([{"field": "error", "op": "=", "value": 1}]), 0),
    ];
    for (filter, want) in cases {
        let (status, v) = count(node, filter.clone());
        assert_eq!(status, 200, "{filter}: {v}");
        let got = v["groups"].get(0).map_or(0, |g| g["rows"][0][1].as_u64().unwrap() as usize);
        assert_eq!(got, want, "{filter}: {v}");
    }

    // Booleans aggregate as 0/1: the sum is the number of reboots, the mean their share.
    let (status, v) = node.query(json!({
        "tenant": "stb", "measurement": "events", "fields": ["reboot"],
        "start": T0, "end": T0 + 1_000, "aggregates": ["sum", "mean"],
    }));
    assert_eq!(status, 200, "{v}");
    let reboots = expected(0, 200, |i| i % 3 == 0);
    assert_eq!(v["groups"][0]["rows"][0][1].as_f64().unwrap(), reboots as f64, "{v}");
    assert_eq!(v["groups"][0]["rows"][0][2].as_f64().unwrap(), reboots as f64 / 200.0, "{v}");

    // Bad filters are refused with what is wrong, before anything is read.
    for (filter, says) in [
        (json!([{"field": "error", "op": "<", "value": "E"}]), "does not apply to a string"),
        (json!([{"field": "reboot", "op": ">", "value": true}]), "does not apply to a boolean"),
        (json!([{"field": "error", "op": "in", "value": "E"}]), "needs \"values\""),
        (json!([{"field": "error", "op": "=~", "value": "("}]), "bad regex"),
        (json!([{"field": "error", "op": "=", "value": ["E"]}]), "must be a number, a boolean or a string"),
        (json!([{"field": "error", "op": "="}]), "needs \"value\""),
    ] {
        let (status, v) = count(node, filter.clone());
        assert_eq!(status, 400, "{filter}: {v}");
        assert_eq!(v["error"]["kind"], "invalid_argument", "{filter}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{filter}: {v}");
    }
}

/// The client's builders: queries, then a live and a `last` subscription with filters.
fn grpc_queries_and_subscriptions(node: &NodeProcess) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (client, mut sub) = rt.block_on(async {
        let client = crate::support::connect([node.grpc.clone()]).await;
        // gRPC queries through the client's builders.
        let counted = |q: QueryBuilder| {
            let client = client.clone();
            async move {
                let r = client.query(q.aggregate(Aggregate::Count)).await.unwrap();
                r.groups.first().map_or(0, |g| g.rows[0].values[0].as_f64().unwrap() as usize)
            }
        };
        let base = || QueryBuilder::new("events").tenant("stb").field("uptime").range(T0, T0 + 1_000);
        assert_eq!(counted(base().filter("error", Cmp::Eq, "E_TUNER")).await, expected(0, 200, |i| i % 4 == 2));
        assert_eq!(counted(base().filter("reboot", Cmp::Eq, false)).await, expected(0, 200, |i| i % 3 != 0));
        assert_eq!(counted(base().filter("error", Cmp::Regex, "^W_")).await, expected(0, 200, |i| i % 4 == 3));
        assert_eq!(
            counted(base().filter_in("error", ["OK", "W_DECODER"]).filter("uptime", Cmp::Ge, 100)).await,
            expected(100, 200, |i| i % 4 == 0 || i % 4 == 3)
        );
        let e = client.query(base().filter("error", Cmp::Gt, "E").aggregate(Aggregate::Count)).await.unwrap_err();
        assert_eq!(e.kind(), Some("invalid_argument"), "{e}");

        // A live subscription with a filter on a field it does not deliver: only the decoder
        // errors come, each once.
        let what =
            SubscribeBuilder::new("stb").measurement("events").field("uptime").filter("error", Cmp::Eq, "E_DECODER");
        let mut sub = client.subscribe(what);
        started(&mut sub).await;
        (client, sub)
    });
    // Written outside the runtime: the blocking HTTP client must not run inside it.
    assert_eq!(node.write("stb", &events(200, 300)).status().as_u16(), 204);
    rt.block_on(async {
        let want: Vec<usize> = (200..300).filter(|i| i % 4 == 1).collect();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let m = next_points(&mut sub, Duration::from_secs(10)).await;
            assert!(m.series.iter().all(|s| s.fields.iter().all(|f| f.name == "uptime")), "{m:?}");
            got.extend(uptimes(&m));
        }
        got.sort_unstable();
        assert_eq!(got, want);

        // `last` with a filter: the boxes whose latest reboot is true, with their latest uptime.
        // Events 295..300 are each box's latest; of those 297 rebooted (297 % 3 == 0).
        let what = SubscribeBuilder::new("stb").measurement("events").filter("reboot", Cmp::Eq, true).latest();
        let mut latest = client.subscribe(what);
        let mut boxes = Vec::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), latest.recv()).await.unwrap().unwrap().unwrap();
            if !m.history {
                break;
            }
            boxes.extend(uptimes(&m));
        }
        assert_eq!(boxes, vec![297]);
    });
}

/// Server-Sent Events with a filter in text form, and a bad one refused.
fn server_sent_events(node: &NodeProcess) {
    // Server-Sent Events take filters in text form: the history of box_0's reboots.
    let r = reqwest::blocking::Client::new()
        .get(node.url(&format!(
            "/api/v1/subscribe?db=stb&measurement=events&tag=device_id=box_0&filter=reboot%3Dtrue&start=history:{T0}"
        )))
        .header("Authorization", format!("Bearer {TEST_TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut stream = BufReader::new(r);
    let mut times = Vec::new();
    loop {
        let e = next_event(&mut stream);
        if e.event != "history" {
            assert_eq!(e.event, "progress");
            break;
        }
        let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        for p in data["points"].as_array().unwrap() {
            assert_eq!(p["fields"]["reboot"], true, "{p}");
            times.push(p["time"].as_i64().unwrap() - T0);
        }
    }
    let want: Vec<i64> = (0..300).filter(|i| i % 5 == 0 && i % 3 == 0).collect();
    assert_eq!(times, want);
    let bad = reqwest::blocking::Client::new()
        .get(node.url("/api/v1/subscribe?db=stb&filter=reboot%3E"))
        .header("Authorization", format!("Bearer {TEST_TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

/// hotlakectl's `--filter` on `query` and `tail`.
fn hotlakectl_filters(node: &NodeProcess) {
    // hotlakectl: `query --filter` and `tail --filter` in text form; a bad one is a usage error.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(crate::ctl::hotlakectl())
            .args(["--cluster", &node.grpc])
            .args(args)
            .env("HOTLAKE_TOKEN", TEST_TOKEN)
            .env("HOME", "/nonexistent")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let range = ["--start", "2016-01-01T00:00:00Z", "--end", "2016-01-02T00:00:00Z"];
    let query = |filters: &[&str]| {
        let mut args =
            vec!["query", "events", "--db", "stb", "--field", "uptime", "--agg", "count", "--output", "json"];
        args.extend(range);
        for f in filters {
            args.extend(["--filter", f]);
        }
        let (code, out, err) = ctl(&args);
        assert_eq!(code, Some(0), "{filters:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["groups"].get(0).map_or(0, |g| g["rows"][0][1].as_u64().unwrap() as usize)
    };
    assert_eq!(query(&["error=E_DECODER"]), expected(0, 300, |i| i % 4 == 1));
    assert_eq!(query(&["reboot=true", "error^=W_"]), expected(0, 300, |i| i % 3 == 0 && i % 4 == 3));
    assert_eq!(query(&["error in OK,E_TUNER", "uptime>=150"]), expected(150, 300, |i| i % 2 == 0));
    let (code, _, err) = ctl(&[&["query", "events", "--db", "stb", "--filter", "error<E"][..], &range].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not apply to a string"), "{err}");
    let (code, out, err) = ctl(&[
        "tail",
        "events",
        "--db",
        "stb",
        "--filter",
        "reboot=true",
        "--latest",
        "--count",
        "1",
        "--output",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(line["fields"]["uptime"], 297, "{line}");
}
