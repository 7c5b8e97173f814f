//! The HTTP API end to end: line-protocol writes (v1, v2, gzip, bad lines), JSON queries with
//! aggregates, groups and field filters, `last`, health and metrics.

use std::io::Write;

use serde_json::json;

use crate::support::{client, NodeProcess};

const T0: i64 = 1_451_606_400_000_000_000; // 2016-01-01T00:00:00Z

fn lp(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        let fleet = if i % 2 == 0 { "East" } else { "West" };
        s.push_str(&format!(
            "readings,device_id=truck_{},fleet={fleet} velocity={}.5,status={}i {}\n",
            i % 4,
            i,
            i % 3,
            T0 + (i as i64) * 10_000_000_000
        ));
    }
    s
}

#[test]
fn writes_then_queries_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    let c = client();

    // v1 write: all good lines → 204.
    let r = node.write("fleet", &lp(40));
    assert_eq!(r.status().as_u16(), 204);

    // v2 write with gzip and second precision.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(format!("readings,device_id=truck_9,fleet=North velocity=1 {}\n", T0 / 1_000_000_000).as_bytes())
        .unwrap();
    let r = c
        .post(format!("http://{}/api/v2/write?bucket=fleet&org=x&precision=s", node.http))
        .header("Content-Encoding", "gzip")
        .header("Authorization", format!("Token {}", crate::support::TEST_TOKEN))
        .body(gz.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    // Mixed good and bad lines: good ones written, bad ones reported with line numbers.
    let body = "readings,device_id=truck_5 velocity=2 1451606400000000000\nreadings,device_id=truck_5 velocity=abc 1\n\nreadings,device_id=truck_5 1\n";
    let r = node.write("fleet", body);
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["error"]["kind"], "partial_write");
    assert_eq!(v["error"]["points_written"], 1);
    let lines: Vec<i64> =
        v["error"]["details"].as_array().unwrap().iter().map(|d| d["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, vec![2, 4]);

    // Raw query of one device: exactly its points, in order.
    let (status, v) = node.query(json!({
        "tenant": "fleet", "measurement": "readings", "fields": ["velocity"],
        "where": [{"tag": "device_id", "op": "=", "value": "truck_1"}],
        "start": "2016-01-01T00:00:00Z", "end": "2016-01-02T00:00:00Z",
    }));
    assert_eq!(status, 200, "{v}");
    let rows = v["groups"][0]["rows"].as_array().unwrap();
    let velocities: Vec<f64> = rows.iter().map(|r| r[1].as_f64().unwrap()).collect();
    assert_eq!(velocities, (0..40).filter(|i| i % 4 == 1).map(|i| i as f64 + 0.5).collect::<Vec<_>>());

    // Aggregates grouped by fleet.
    let (status, v) = node.query(json!({
        "tenant": "fleet", "measurement": "readings", "fields": ["velocity"],
        "where": [{"tag": "fleet", "op": "in", "values": ["East", "West"]}],
        "start": T0, "end": T0 + 3_600_000_000_000,
        "aggregates": ["count", "sum", "max"], "group_by": ["fleet"],
    }));
    assert_eq!(status, 200, "{v}");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["tags"]["fleet"], "East");
    assert_eq!(groups[0]["columns"], json!(["time", "count(velocity)", "sum(velocity)", "max(velocity)"]));
    let east_sum: f64 = (0..40).filter(|i| i % 2 == 0).map(|i| i as f64 + 0.5).sum();
    assert_eq!(groups[0]["rows"][0][1], 20);
    assert_eq!(groups[0]["rows"][0][2].as_f64().unwrap(), east_sum);
    assert_eq!(groups[0]["rows"][0][3].as_f64().unwrap(), 38.5);

    // Field filters: only rows whose status (an integer field) is 2 and velocity is above 10
    // count; velocity is aggregated over those rows only.
    let (status, v) = node.query(json!({
        "tenant": "fleet", "measurement": "readings", "fields": ["velocity"],
        "filter": [{"field": "status", "op": "=", "value": 2}, {"field": "velocity", "op": ">", "value": 10}],
        "start": T0, "end": T0 + 3_600_000_000_000, "aggregates": ["count", "sum"],
    }));
    assert_eq!(status, 200, "{v}");
    let passing: Vec<f64> = (0..40).filter(|i| i % 3 == 2 && *i as f64 + 0.5 > 10.0).map(|i| i as f64 + 0.5).collect();
    assert_eq!(v["groups"][0]["rows"][0][1], passing.len());
    assert_eq!(v["groups"][0]["rows"][0][2].as_f64().unwrap(), passing.iter().sum::<f64>());
    // The latest velocity among rows with status 0, per fleet (read newest first).
    let (status, v) = node.query(json!({
        "tenant": "fleet", "measurement": "readings", "fields": ["velocity"],
        "filter": [{"field": "status", "op": "=", "value": 0}],
        "start": T0, "end": T0 + 3_600_000_000_000, "aggregates": ["last"], "group_by": ["fleet"],
    }));
    assert_eq!(status, 200, "{v}");
    // Status is i % 3 and fleets alternate: East's latest is i = 36, West's i = 39.
    // Groups whose rows all fail the filter (no fleet, North: no status) are left out.
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    assert_eq!(groups[0]["tags"]["fleet"], "East");
    assert_eq!(groups[0]["rows"][0][1].as_f64().unwrap(), 36.5, "{v}");
    assert_eq!(groups[1]["rows"][0][1].as_f64().unwrap(), 39.5, "{v}");
    let (status, v) = node.query(json!({
        "tenant": "fleet", "measurement": "readings", "filter": [{"field": "velocity", "op": "~", "value": 1}],
        "start": T0, "end": T0 + 1, "aggregates": ["count"],
    }));
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown comparison"), "{v}");

    // Time buckets with fill: 1-minute buckets over 10 minutes, points every 10 s.
    let (status, v) = node.query(json!({
        "tenant": "fleet", "measurement": "readings", "fields": ["status"],
        "where": [{"tag": "device_id", "op": "=", "value": "truck_0"}],
        "start": T0, "end": T0 + 600_000_000_000, "aggregates": ["count"], "bucket": "1m", "fill": 0,
    }));
    assert_eq!(status, 200, "{v}");
    let counts: Vec<i64> =
        v["groups"][0]["rows"].as_array().unwrap().iter().map(|r| r[1].as_f64().unwrap() as i64).collect();
    // truck_0 writes at i = 0,4,8,..: every 40 s; 10 points over the first 400 s.
    assert_eq!(counts, vec![2, 1, 2, 1, 2, 1, 1, 0, 0, 0]);

    // Last values per device, from the index.
    let r = c
        .post(format!("http://{}/api/v1/last", node.http))
        .json(&json!({"tenant": "fleet", "measurement": "readings", "fields": ["velocity"], "where": [{"tag": "fleet", "op": "=", "value": "West"}]}))
        .send()
        .unwrap();
    let v: serde_json::Value = r.json().unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert_eq!(rows[0]["device"], "truck_1");
    assert_eq!(rows[0]["values"]["velocity"]["value"].as_f64().unwrap(), 37.5);

    // Bad queries are clear 400s naming the problem.
    let (status, v) = node.query(json!({"measurement": "readings", "start": 10, "end": 5}));
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("time range is empty"), "{v}");
    let (status, v) = node.query(json!({"measurement": "readings", "start": 0, "end": 5, "aggregates": ["median"]}));
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown aggregate"), "{v}");
    let r = c.post(format!("http://{}/api/v1/query", node.http)).body("{not json").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = c.post(format!("http://{}/write?db=x&precision=fortnights", node.http)).body("m v=1").send().unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // A field keeps its type: a later write of another type is rejected, nothing half-applied.
    let r = node.write("fleet", &format!("readings,device_id=truck_1,fleet=West velocity=7i {}\n", T0 + 1));
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().unwrap();
    assert!(v.to_string().contains("is float but this write has integer"), "{v}");

    // Health and metrics.
    let r = c.get(format!("http://{}/health", node.http)).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let metrics = c.get(format!("http://{}/metrics", node.http)).send().unwrap().text().unwrap();
    assert!(metrics.contains("hotlake_points_written_total 42"), "{metrics}");
    assert!(metrics.contains("hotlake_query_seconds_count"));
}
