//! Every bundled rule through the appliance, in block mode at level strict: each rule's positive
//! sample is blocked with an alert naming the rule and never reaches the server; each near miss,
//! and the corpus of ordinary traffic, reaches nginx with no alert. The samples are the
//! dataplane's (`tls-inspect-dataplane/tests/fixtures/bundled-samples.json`, which its in-process
//! test reads too), sent over TLS as the exact HTTP/1.1 bytes they are: each in one TLS record,
//! then each in records of a few bytes.
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

/// One pass over every sample.
struct Round {
    /// Put before the ids of its requests and its failures.
    prefix: &'static str,
    /// The size of the TLS records a request is sent in; 0: one record for the request.
    split: usize,
    /// The client's source ports count up from here, one per TCP connection.
    first_port: u16,
}

/// Whole requests; then each in 7-byte records, so that the appliance's followers see every
/// message in pieces. A head in pieces is held until it is complete and judged, so the server
/// sees nothing of a head that a rule blocks; a body is not held (its first bytes are forwarded
/// before its rule can match, and never recalled: docs/ips.md), so in that round the server may
/// answer a request whose rule is on its body before the body is through, and another rule may
/// block the flow on an earlier piece of the body before the sample's own rule has all of it.
const ROUNDS: [Round; 2] = [Round { prefix: "", split: 0, first_port: 20000 }, Round { prefix: "split ", split: 7, first_port: 22000 }];

/// The start of a sample, for messages.
fn start(sample: &Value) -> String {
    sample.as_str().unwrap_or("").lines().next().unwrap_or("").chars().take(120).collect()
}

/// The connections of a round: one per positive (a blocked flow is closed); near misses and the
/// benign corpus on keep-alive connections.
fn plan(round: &Round, cases: &[Value], benign: &[Value]) -> Vec<Value> {
    let p = round.prefix;
    let mut connections: Vec<Value> = cases
        .iter()
        .map(|c| json!({"one_shot": true, "split": round.split, "requests": [{"id": format!("{p}positive {}", c["sid"]), "bytes": c["positive"]}]}))
        .collect();
    for chunk in cases.chunks(NEAR_MISSES_PER_CONNECTION) {
        let requests: Vec<Value> = chunk.iter().map(|c| json!({"id": format!("{p}near-miss {}", c["sid"]), "bytes": c["near_miss"]})).collect();
        connections.push(json!({ "split": round.split, "requests": requests }));
    }
    let requests: Vec<Value> = benign.iter().enumerate().map(|(i, r)| json!({"id": format!("{p}benign {i}"), "bytes": r})).collect();
    connections.push(json!({ "split": round.split, "requests": requests }));
    connections
}

/// Sends `connections` from the client with `tests/scripts/https_requests.py`; each request's
/// result by its id.
fn send(b: &Bed, round: &Round, connections: Vec<Value>) -> Result<BTreeMap<String, Value>> {
    let plan = json!({
        "host": SERVER_IP, "port": 443, "sni": "server.test", "cafile": b.ca, "bind": CLIENT_IP,
        "first_port": round.first_port, "parallel": 4, "connections": connections,
    });
    let path = b.t.dir.join("plan.json");
    std::fs::write(&path, plan.to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/https_requests.py");
    let out = check(b.t.client.cmd("python3").arg(&script).arg(&path))?;
    Ok(out
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (r["id"].as_str().unwrap().to_string(), r)
        })
        .collect())
}

fn nginx_requests(b: &Bed) -> usize {
    std::fs::read_to_string(b.t.dir.join("nginx/access.log")).unwrap_or_default().lines().count()
}

/// The bundled rule `sid` looks at a request body (the only part of a request not held whole).
fn on_body(rules: &str, sid: u64) -> bool {
    let tag = format!("sid:{sid};");
    let rule = rules.lines().find(|l| l.contains(&tag)).unwrap_or_else(|| panic!("no rule {tag}"));
    ["http.request_body", "http_client_body", "file.data", "file_data"].iter().any(|b| rule.contains(b))
}

fn answered_by_nginx(r: &Value) -> bool {
    r["status"].is_u64() && r["headers"]["server"].as_str().is_some_and(|s| s.starts_with("nginx")) && r["headers"]["x-tls-inspect-sid"].is_null()
}

#[test]
fn every_bundled_rule_blocks_its_positive_and_lets_its_near_miss_through_the_appliance() -> Result<()> {
    let began = Instant::now();
    let samples = bundled_samples()?;
    let cases = samples["cases"].as_array().unwrap();
    let benign = samples["benign"].as_array().unwrap();
    assert!(cases.len() >= 281, "{} cases", cases.len());

    let rules = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tls-inspect-dataplane/rules/default.rules"))?;
    let mut b = Bed::new("[ips]\nenabled = true\nmode = \"block\"\nlevel = \"strict\"")?;
    b.nginx()?;

    let mut failing = BTreeSet::new();
    let mut failures = Vec::new();
    let mut fail = |what: String, why: String| {
        failing.insert(what.clone());
        failures.push(format!("{what}: {why}"));
    };
    let mut summary = Vec::new();
    for round in &ROUNDS {
        let p = round.prefix;
        let logged_before = nginx_requests(&b);
        let sending = Instant::now();
        let results = send(&b, round, plan(round, cases, benign))?;
        let sent_in = sending.elapsed();
        assert_eq!(results.len(), 2 * cases.len() + benign.len(), "{p}a result per request");
        let ports: BTreeSet<u64> = results.values().filter_map(|r| r["port"].as_u64()).collect();
        assert!(ports.iter().all(|&port| port < u64::from(round.first_port) + 2000), "{p}ports {ports:?}");

        // Every flow's record is written when it closes, its alerts before it.
        let flow_records = |b: &Bed| b.eve().into_iter().filter(|r| r["event_type"] == "tls" && r["src_port"].as_u64().is_some_and(|p| ports.contains(&p))).count();
        wait_until("a flow record per connection", Duration::from_secs(30), || Ok(flow_records(&b) >= ports.len()))
            .map_err(|e| anyhow::anyhow!("{p}{e}: {} of {}", flow_records(&b), ports.len()))?;
        let records = b.wait_records(ports.len())?;
        let mut alerts: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
        for a in records.iter().filter(|r| r["event_type"] == "alert") {
            let port = a["src_port"].as_u64().unwrap();
            if ports.contains(&port) {
                alerts.entry(port).or_default().push(a);
            }
        }
        let describe = |list: &[&Value]| -> Vec<String> {
            list.iter().map(|a| format!("{} {} on {}", a["alert"]["signature_id"], a["alert"]["action"], a["http"]["url"])).collect()
        };

        // Positives: an alert with the rule's sid on the flow, blocked, and the connection
        // closed after the block page, with nothing after it (or a reset). In pieces: the flow
        // blocked by a bundled rule and closed.
        let (mut own_sid, mut page_or_reset) = (0, 0);
        // In pieces: answered by nginx before the block; blocked by another rule first.
        let (mut answered_first, mut preempted) = (Vec::new(), Vec::new());
        for c in cases {
            let sid = c["sid"].as_u64().unwrap();
            let r = &results[&format!("{p}positive {sid}")];
            let page = r["status"] == 403 && r["headers"]["x-tls-inspect-sid"].is_string();
            let reset = r["status"].is_null() && r["error"].is_string();
            page_or_reset += usize::from(page || reset);
            let on_flow = r["port"].as_u64().and_then(|port| alerts.get(&port)).cloned().unwrap_or_default();
            let blocked_by = |s: Option<u64>| on_flow.iter().any(|a| s.is_none_or(|s| a["alert"]["signature_id"] == s) && a["alert"]["action"] == "blocked");
            own_sid += usize::from(blocked_by(Some(sid)));
            if answered_by_nginx(r) {
                answered_first.push(sid);
            }
            if !blocked_by(Some(sid)) && blocked_by(None) {
                let by: Vec<String> = on_flow.iter().map(|a| a["alert"]["signature_id"].to_string()).collect();
                preempted.push(format!("{sid} by {}", by.join("+")));
            }
            let whole = round.split == 0;
            // Only a rule on the body can be beaten to it, by nginx or by another rule.
            let head_only = whole || !on_body(&rules, sid);
            if r["closed"] != true || (head_only && (!(page || reset) || r["after"] != "")) {
                fail(format!("{p}{sid}"), format!("positive {:?} not blocked: {r}", start(&c["positive"])));
            }
            if !blocked_by(if head_only { Some(sid) } else { None }) {
                fail(format!("{p}{sid}"), format!("positive {:?}: no blocked alert of its sid, alerts {:?}", start(&c["positive"]), describe(&on_flow)));
            }
        }
        // Near misses and the benign corpus: nginx's answer, and no alert on their connections.
        let mut quiet_ports = BTreeSet::new();
        let near_misses = cases.iter().map(|c| (format!("{p}{}", c["sid"]), format!("{p}near-miss {}", c["sid"]), &c["near_miss"]));
        let ordinary = benign.iter().enumerate().map(|(i, r)| (format!("{p}benign {i}"), format!("{p}benign {i}"), r));
        for (what, id, sample) in near_misses.chain(ordinary) {
            let r = &results[&id];
            if !answered_by_nginx(r) {
                fail(what, format!("{id} {:?} did not reach nginx: {r}", start(sample)));
            }
            quiet_ports.extend(r["port"].as_u64());
        }
        // (A blocking alert has shown above too, as its request's block page.)
        for port in &quiet_ports {
            if let Some(list) = alerts.get(port) {
                let on: Vec<&str> = results.values().filter(|r| r["port"] == *port).filter_map(|r| r["id"].as_str()).collect();
                fail(format!("{p}port {port}"), format!("alerts {:?} on the connection of {on:?}", describe(list)));
            }
        }
        // nginx saw exactly the requests it answered: nothing of a blocked request reached it;
        // in pieces, at most the heads of the requests blocked for their bodies (see ROUNDS).
        let logged = nginx_requests(&b) - logged_before;
        let answered = results.values().filter(|r| answered_by_nginx(r)).count();
        let body_positives = if round.split == 0 { 0 } else { cases.iter().filter(|c| on_body(&rules, c["sid"].as_u64().unwrap())).count() };
        if logged < answered || logged > answered + body_positives {
            fail(format!("{p}nginx"), format!("{logged} requests in its access log, {answered} answered by it, {body_positives} blocked for their bodies"));
        }
        summary.push(format!(
            "{}: {} requests on {} connections in {:.1} s; positives: {own_sid} blocked by their own sid (others first: {preempted:?}), {page_or_reset} got the block page or a reset (nginx's answer first: {answered_first:?}); nginx logged {logged} requests, answered {answered}",
            if round.split == 0 { "whole".to_string() } else { format!("in {}-byte records", round.split) },
            results.len(),
            ports.len(),
            sent_in.as_secs_f64(),
        ));
    }
    eprintln!("vpatch: {} cases, {} benign; {} ({:.1} s with the bed)", cases.len(), benign.len(), summary.join("; "), began.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "failing: {failing:?}\n{failures:#?}");
    Ok(())
}
