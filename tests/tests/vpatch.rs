//! Every bundled rule through the appliance, in block mode at level strict: each rule's positive
//! sample is blocked with an alert naming the rule and never reaches the server; each near miss,
//! and the corpus of ordinary traffic, reaches nginx with no alert. The samples are the
//! dataplane's (`tls-inspect-dataplane/tests/fixtures/bundled-samples.json`, which its in-process
//! test reads too), sent over TLS as the exact HTTP/1.1 bytes they are.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use tls_inspect_tests::tlsbed::{bundled_samples, Bed};
use tls_inspect_tests::{check, wait_until, CLIENT_IP, SERVER_IP};

/// Near misses share keep-alive connections, this many to a connection.
const NEAR_MISSES_PER_CONNECTION: usize = 20;
/// The client's source ports count up from here, one per TCP connection.
const FIRST_PORT: u16 = 20000;

/// The start of a sample, for messages.
fn start(sample: &Value) -> String {
    sample.as_str().unwrap_or("").lines().next().unwrap_or("").chars().take(120).collect()
}

#[test]
fn every_bundled_rule_blocks_its_positive_and_lets_its_near_miss_through_the_appliance() -> Result<()> {
    let began = Instant::now();
    let samples = bundled_samples()?;
    let cases = samples["cases"].as_array().unwrap();
    let benign = samples["benign"].as_array().unwrap();
    assert!(cases.len() >= 281, "{} cases", cases.len());
    let sid_of = |c: &Value| c["sid"].as_u64().unwrap();

    let mut b = Bed::new("[ips]\nenabled = true\nmode = \"block\"\nlevel = \"strict\"")?;
    b.nginx()?;

    // One connection per positive (a blocked flow is closed); near misses and the benign
    // corpus on keep-alive connections.
    let mut connections: Vec<Value> = cases
        .iter()
        .map(|c| json!({"one_shot": true, "requests": [{"id": format!("positive {}", sid_of(c)), "bytes": c["positive"]}]}))
        .collect();
    for chunk in cases.chunks(NEAR_MISSES_PER_CONNECTION) {
        let requests: Vec<Value> = chunk.iter().map(|c| json!({"id": format!("near-miss {}", sid_of(c)), "bytes": c["near_miss"]})).collect();
        connections.push(json!({ "requests": requests }));
    }
    let requests: Vec<Value> = benign.iter().enumerate().map(|(i, r)| json!({"id": format!("benign {i}"), "bytes": r})).collect();
    connections.push(json!({ "requests": requests }));
    let plan = json!({
        "host": SERVER_IP, "port": 443, "sni": "server.test", "cafile": b.ca, "bind": CLIENT_IP,
        "first_port": FIRST_PORT, "parallel": 4, "connections": connections,
    });
    let plan_path = b.t.dir.join("plan.json");
    std::fs::write(&plan_path, plan.to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/https_requests.py");
    let sending = Instant::now();
    let out = check(b.t.client.cmd("python3").arg(&script).arg(&plan_path))?;
    let sent_in = sending.elapsed();
    let results: BTreeMap<String, Value> = out
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (r["id"].as_str().unwrap().to_string(), r)
        })
        .collect();
    assert_eq!(results.len(), 2 * cases.len() + benign.len(), "a result per request");

    // Every flow's record is written when it closes, its alerts before it.
    let ports: BTreeSet<u64> = results.values().filter_map(|r| r["port"].as_u64()).collect();
    let flow_records = |b: &Bed| b.eve().into_iter().filter(|r| r["event_type"] == "tls" && r["src_port"].as_u64().is_some_and(|p| ports.contains(&p))).count();
    wait_until("a flow record per connection", Duration::from_secs(30), || Ok(flow_records(&b) >= ports.len()))
        .map_err(|e| anyhow::anyhow!("{e}: {} of {}", flow_records(&b), ports.len()))?;
    let records = b.wait_records(ports.len())?;
    let mut alerts: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for a in records.iter().filter(|r| r["event_type"] == "alert") {
        alerts.entry(a["src_port"].as_u64().unwrap()).or_default().push(a);
    }
    let describe = |list: &[&Value]| -> Vec<String> {
        list.iter().map(|a| format!("{} {} on {}", a["alert"]["signature_id"], a["alert"]["action"], a["http"]["url"])).collect()
    };

    let mut failing = BTreeSet::new();
    let mut failures = Vec::new();
    let mut fail = |sid: String, why: String| {
        failing.insert(sid.clone());
        failures.push(format!("{sid}: {why}"));
    };
    // Positives: the block page naming a rule (or a reset), the connection closed, and an alert
    // with the rule's sid on that flow, blocked.
    for c in cases {
        let sid = sid_of(c);
        let r = &results[&format!("positive {sid}")];
        let page = r["status"] == 403 && r["headers"]["x-tls-inspect-sid"].is_string();
        let reset = r["status"].is_null() && r["error"].is_string();
        if !(page || reset) || r["closed"] != true {
            fail(sid.to_string(), format!("positive {:?} not blocked: {r}", start(&c["positive"])));
        }
        let on_flow = r["port"].as_u64().and_then(|p| alerts.get(&p)).cloned().unwrap_or_default();
        if !on_flow.iter().any(|a| a["alert"]["signature_id"] == sid && a["alert"]["action"] == "blocked") {
            fail(sid.to_string(), format!("positive {:?}: no blocked alert of its sid, alerts {:?}", start(&c["positive"]), describe(&on_flow)));
        }
    }
    // Near misses and the benign corpus: nginx's answer, and no alert on their connections.
    let quiet: Vec<(String, &Value)> = cases
        .iter()
        .map(|c| (sid_of(c).to_string(), &c["near_miss"]))
        .chain(benign.iter().enumerate().map(|(i, r)| (format!("benign {i}"), r)))
        .collect();
    let mut near_miss_ports = BTreeSet::new();
    for (name, sample) in &quiet {
        let id = if name.starts_with("benign") { name.clone() } else { format!("near-miss {name}") };
        let r = &results[&id];
        let from_nginx = r["status"].is_u64() && r["headers"]["server"].as_str().is_some_and(|s| s.starts_with("nginx")) && r["headers"]["x-tls-inspect-sid"].is_null();
        if !from_nginx {
            fail(name.clone(), format!("{id} {:?} did not reach nginx: {r}", start(sample)));
        }
        near_miss_ports.extend(r["port"].as_u64());
    }
    // No alert on their connections either (a blocking one has shown above as a block page).
    for port in &near_miss_ports {
        if let Some(list) = alerts.get(port) {
            let on: Vec<&str> = results.values().filter(|r| r["port"] == *port).filter_map(|r| r["id"].as_str()).collect();
            fail(format!("port {port}"), format!("alerts {:?} on the connection of {on:?}", describe(list)));
        }
    }
    // nginx saw exactly the requests it answered: none of a blocked flow's bytes reached it.
    let access = std::fs::read_to_string(b.t.dir.join("nginx/access.log")).unwrap_or_default();
    let answered = results.values().filter(|r| r["headers"]["server"].as_str().is_some_and(|s| s.starts_with("nginx"))).count();
    if access.lines().count() != answered {
        fail("nginx".into(), format!("{} requests in its access log, {answered} answered by it:\n{access}", access.lines().count()));
    }
    eprintln!(
        "vpatch: {} positives, {} near misses, {} benign over {} connections in {:.1} s ({:.1} s with the bed)",
        cases.len(),
        cases.len(),
        benign.len(),
        ports.len(),
        sent_in.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "failing: {failing:?}\n{failures:#?}");
    Ok(())
}
