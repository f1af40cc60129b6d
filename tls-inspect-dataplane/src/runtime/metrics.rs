//! The Prometheus endpoint: the XDP program's counters (global and per scope), the flow table,
//! every worker's counters (declared once, in `net::counters`), the alerts per rule and the build,
//! in Prometheus' text format through the `prometheus` crate, named as its conventions say
//! (`_total` on counters, units in the name, dimensions as labels: path, direction, decision,
//! action, policy, scope, worker; HELP and TYPE on every family). `promtool check metrics`
//! passes on it (tests/tests/dataplane.rs). Scrapes are served concurrently, each on its own
//! thread, a bounded number at a time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tls_inspect_common::counter;

use super::worker::WorkerStats;
use crate::control::maps::{Maps, Paths};
use crate::log::AlertCounts;
use crate::net::counters::{Counter, Kind};

/// Scrapes served at once; one more gets a 503 at once.
const MAX_CONCURRENT: usize = 8;

/// One metric family being filled: its help, kind, label names and samples.
struct Family {
    help: &'static str,
    kind: Kind,
    labels: Vec<&'static str>,
    samples: Vec<(Vec<String>, u64)>,
}

/// The families of one scrape, by name: what the endpoint serves as text and `stats --json`
/// prints as JSON, from one place.
#[derive(Default)]
pub struct Scrape(BTreeMap<String, Family>);

impl Scrape {
    fn add(&mut self, name: &str, help: &'static str, kind: Kind, labels: &[(&'static str, String)], value: u64) {
        // By name, as the text format prints them.
        let mut labels = labels.to_vec();
        labels.sort_by_key(|(k, _)| *k);
        let f = self.0.entry(name.to_string()).or_insert_with(|| Family { help, kind, labels: labels.iter().map(|(k, _)| *k).collect(), samples: Vec::new() });
        f.samples.push((labels.iter().map(|(_, v)| v.clone()).collect(), value));
    }

    /// The XDP program's counters of one scope (of `policy`).
    pub fn add_scope(&mut self, m: &Maps, policy: u32, scope: u32) {
        for (field, v) in m.scope_counters(scope).fields() {
            let (name, help, label) = scope_series(field);
            let mut labels = vec![("policy", policy.to_string()), ("scope", scope.to_string())];
            labels.extend(label.map(|(k, v)| (k, v.to_string())));
            self.add(name, help, Kind::Counter, &labels, v);
        }
    }

    /// Every family as JSON, by name: `{"type": "counter", "help": ..., "samples": [{"labels":
    /// {"path": "steered"}, "value": 7}]}` (the names, labels and values of the text format).
    pub fn to_json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|(name, f)| {
                let samples: Vec<serde_json::Value> = f
                    .samples
                    .iter()
                    .map(|(values, v)| {
                        let labels: serde_json::Map<String, serde_json::Value> = f.labels.iter().zip(values).map(|(k, v)| ((*k).to_string(), v.clone().into())).collect();
                        serde_json::json!({ "labels": labels, "value": v })
                    })
                    .collect();
                (name.clone(), serde_json::json!({ "type": f.kind.as_str(), "help": f.help, "samples": samples }))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// One line per sample, `name{label="value"} 7`, for people (the text format without its
    /// comments).
    pub fn to_lines(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.0 {
            for (values, v) in &f.samples {
                let labels: Vec<String> = f.labels.iter().zip(values).map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                let series = if labels.is_empty() { name.clone() } else { format!("{name}{{{}}}", labels.join(",")) };
                out.push_str(&format!("{series} {v}\n"));
            }
        }
        out
    }

    /// The text format of every family.
    pub fn encode(self) -> Result<String, prometheus::Error> {
        let registry = Registry::new();
        for (name, f) in self.0 {
            let opts = Opts::new(name, f.help);
            match f.kind {
                Kind::Counter => {
                    let vec = IntCounterVec::new(opts, &f.labels)?;
                    for (values, v) in &f.samples {
                        let values: Vec<&str> = values.iter().map(String::as_str).collect();
                        vec.get_metric_with_label_values(&values)?.inc_by(*v);
                    }
                    registry.register(Box::new(vec))?;
                }
                Kind::Gauge => {
                    let vec = IntGaugeVec::new(opts, &f.labels)?;
                    for (values, v) in &f.samples {
                        let values: Vec<&str> = values.iter().map(String::as_str).collect();
                        vec.get_metric_with_label_values(&values)?.set(i64::try_from(*v).unwrap_or(i64::MAX));
                    }
                    registry.register(Box::new(vec))?;
                }
            }
        }
        let mut out = String::new();
        TextEncoder::new().encode_utf8(&registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// Where one of the XDP program's global counters (`counter::NAMES[i]`) goes: family, help,
/// and the `path` label for the three disjoint fates of a frame (bridged to the other
/// interface, steered to a worker, dropped because the redirect failed) or the `action` on QUIC.
fn xdp_series(i: usize) -> (&'static str, &'static str, Option<(&'static str, &'static str)>) {
    const FRAMES: &str = "Frames the XDP program sent on, by path: bridged to the other interface (fail-open and bypass included), steered to a worker's AF_XDP socket, or dropped because the redirect failed.";
    const BYTES: &str = "Bytes of the frames the XDP program sent on, by path (as tls_inspect_xdp_frames_total).";
    match i {
        counter::BRIDGED_FRAMES => ("tls_inspect_xdp_frames_total", FRAMES, Some(("path", "bridged"))),
        counter::STEERED_FRAMES => ("tls_inspect_xdp_frames_total", FRAMES, Some(("path", "steered"))),
        counter::DROPPED_FRAMES => ("tls_inspect_xdp_frames_total", FRAMES, Some(("path", "dropped"))),
        counter::BRIDGED_BYTES => ("tls_inspect_xdp_bytes_total", BYTES, Some(("path", "bridged"))),
        counter::STEERED_BYTES => ("tls_inspect_xdp_bytes_total", BYTES, Some(("path", "steered"))),
        counter::DROPPED_BYTES => ("tls_inspect_xdp_bytes_total", BYTES, Some(("path", "dropped"))),
        counter::FAILOPEN_FRAMES => ("tls_inspect_xdp_failopen_frames_total", "Frames of matching or steered flows that found no AF_XDP socket and were bridged (fail-open).", None),
        counter::FAILOPEN_BYTES => ("tls_inspect_xdp_failopen_bytes_total", "Bytes of the fail-open frames.", None),
        counter::BYPASS_FRAMES => ("tls_inspect_xdp_bypass_frames_total", "Frames of flows a worker passed, bridged in XDP.", None),
        counter::BYPASS_BYTES => ("tls_inspect_xdp_bypass_bytes_total", "Bytes of the bypass frames.", None),
        counter::UNPARSED_FRAMES => ("tls_inspect_xdp_unparsed_frames_total", "Frames the parser gave up on (bridged unchanged).", None),
        counter::SYN_CLASSIFIED => ("tls_inspect_xdp_syns_classified_total", "SYNs from inside looked up in the scope tables.", None),
        counter::SYN_MATCHED => ("tls_inspect_xdp_syns_matched_total", "SYNs that matched a scope of an enabled policy.", None),
        counter::FLOW_INSERT_FAILED => ("tls_inspect_xdp_flow_insert_failures_total", "Flow entries that could not be written (the frame was bridged).", None),
        counter::FOREIGN_FRAMES => ("tls_inspect_xdp_foreign_frames_total", "Frames on an interface the program was not configured for (passed up).", None),
        counter::ERROR_FRAMES => ("tls_inspect_xdp_error_frames_total", "Frames the program could not handle for an internal reason (bridged).", None),
        counter::INTEL_FRAMES => ("tls_inspect_xdp_intel_frames_total", "Frames from or to an address on the threat-intelligence list.", None),
        counter::INTEL_DROPPED => ("tls_inspect_xdp_intel_dropped_frames_total", "Threat-intelligence frames dropped (block mode).", None),
        counter::QUIC_DROPPED => ("tls_inspect_xdp_quic_datagrams_total", "UDP datagrams from inside of a scope, by what its policy does with QUIC (dropped or passed).", Some(("action", "dropped"))),
        counter::QUIC_PASSED => ("tls_inspect_xdp_quic_datagrams_total", "UDP datagrams from inside of a scope, by what its policy does with QUIC (dropped or passed).", Some(("action", "passed"))),
        counter::HANDSHAKE_FRAMES => ("tls_inspect_xdp_handshake_frames_total", "Frames of scoped connections' handshakes (before any data), bridged between the real ends.", None),
        counter::FLOWS_PEEKED => ("tls_inspect_xdp_peeked_flows_total", "Scoped connections whose first data segment went to a worker to decide on.", None),
        counter::UNRECORDED_STEERED => ("tls_inspect_xdp_unrecorded_frames_total", "Data segments from inside of scoped connections without a handshake record (the worker resets them).", None),
        counter::SYN_DATA_DROPPED => ("tls_inspect_xdp_syn_data_dropped_total", "SYNs from inside of a scope that carried data (TCP Fast Open, or a flood), dropped before any decision.", None),
        _ => ("tls_inspect_xdp_unknown_total", "A counter this build does not name.", None),
    }
}

/// Where a scope counter (`ScopeCounters::fields()` name) goes: family, help, label.
fn scope_series(name: &str) -> (&'static str, &'static str, Option<(&'static str, &'static str)>) {
    const FLOWS: &str = "Flows whose SYN matched the scope, by path: steered to a worker, or bridged for want of one (fail-open).";
    const FRAMES: &str = "Frames of the scope's flows, by path: steered, fail-open, bypass (passed by a worker, bridged in XDP), dropped (redirect failed).";
    const BYTES: &str = "Bytes of the scope's frames, by path (as tls_inspect_scope_frames_total).";
    const QUIC: &str = "UDP datagrams of the scope (QUIC), by what its policy does: dropped or passed.";
    match name {
        "flows_steered" => ("tls_inspect_scope_flows_total", FLOWS, Some(("path", "steered"))),
        "flows_failopen" => ("tls_inspect_scope_flows_total", FLOWS, Some(("path", "failopen"))),
        "steered_frames" => ("tls_inspect_scope_frames_total", FRAMES, Some(("path", "steered"))),
        "failopen_frames" => ("tls_inspect_scope_frames_total", FRAMES, Some(("path", "failopen"))),
        "bypass_frames" => ("tls_inspect_scope_frames_total", FRAMES, Some(("path", "bypass"))),
        "dropped_frames" => ("tls_inspect_scope_frames_total", FRAMES, Some(("path", "dropped"))),
        "steered_bytes" => ("tls_inspect_scope_bytes_total", BYTES, Some(("path", "steered"))),
        "failopen_bytes" => ("tls_inspect_scope_bytes_total", BYTES, Some(("path", "failopen"))),
        "bypass_bytes" => ("tls_inspect_scope_bytes_total", BYTES, Some(("path", "bypass"))),
        "quic_dropped" => ("tls_inspect_scope_quic_datagrams_total", QUIC, Some(("action", "dropped"))),
        "quic_passed" => ("tls_inspect_scope_quic_datagrams_total", QUIC, Some(("action", "passed"))),
        _ => ("tls_inspect_scope_unknown_total", "A scope counter this build does not name.", None),
    }
}

/// Where a worker counter goes: family (`tls_inspect_worker_` + it), the family's help when
/// several counters share it (else the counter's own), and its label. Exhaustive: a counter
/// declared in `net::counters` is exported, or the build fails.
fn worker_series(c: Counter) -> (&'static str, Option<&'static str>, Option<(&'static str, &'static str)>) {
    const FRAMES: &str = "Frames through the worker's AF_XDP rings, by direction: rx taken from its receive rings, tx handed to its transmit rings.";
    const HANDOFFS: &str = "Frames passed between workers to the one that owns their flow, by direction: out to another worker, in from another.";
    const BYTES: &str = "Payload bytes the worker relayed, by direction.";
    const RESUMED: &str = "Inspected flows that resumed a TLS session, by leg: client (an appliance ticket), upstream (a session the worker kept).";
    const TLS: &str = "TLS flows the worker decided, by decision: inspected (decrypted, inspected, re-encrypted), passed unchanged, blocked (policy, IPS, DLP, invalid upstream), failed (a peer's TLS error).";
    match c {
        Counter::FramesRx => ("frames_total", Some(FRAMES), Some(("direction", "rx"))),
        Counter::FramesTx => ("frames_total", Some(FRAMES), Some(("direction", "tx"))),
        Counter::HandoffsOut => ("handoff_frames_total", Some(HANDOFFS), Some(("direction", "out"))),
        Counter::HandoffsIn => ("handoff_frames_total", Some(HANDOFFS), Some(("direction", "in"))),
        Counter::HandoffsDropped => ("handoff_dropped_frames_total", None, None),
        Counter::TxRingFull => ("tx_ring_full_total", None, None),
        Counter::TxDroppedNoFrame => ("tx_no_frame_dropped_frames_total", None, None),
        Counter::FlowsOpen => ("flows_open", None, None),
        Counter::FlowsTotal => ("flows_total", None, None),
        Counter::BytesToServer => ("relayed_bytes_total", Some(BYTES), Some(("direction", "to_server"))),
        Counter::BytesToClient => ("relayed_bytes_total", Some(BYTES), Some(("direction", "to_client"))),
        Counter::TableFull => ("table_full_total", None, None),
        Counter::ConnectRefused => ("connect_refused_total", None, None),
        Counter::ConnectTimeouts => ("connect_timeouts_total", None, None),
        Counter::Resets => ("resets_total", None, None),
        Counter::FlowsPeeked => ("peeked_flows_total", None, None),
        Counter::FlowsBypassed => ("bypassed_flows_total", None, None),
        Counter::FlowsAdopted => ("adopted_flows_total", None, None),
        Counter::AdoptFailed => ("adopt_failed_flows_total", None, None),
        Counter::BypassedFramesSeen => ("bypassed_frames_seen_total", None, None),
        Counter::PortReused => ("peeks_port_reused_total", None, None),
        Counter::Unrecorded => ("unrecorded_resets_total", None, None),
        Counter::UnknownFlow => ("unknown_flow_frames_total", None, None),
        Counter::MapErrors => ("map_errors_total", None, None),
        Counter::TlsInspected => ("tls_flows_total", Some(TLS), Some(("decision", "inspected"))),
        Counter::TlsPassed => ("tls_flows_total", Some(TLS), Some(("decision", "passed"))),
        Counter::TlsBlocked => ("tls_flows_total", Some(TLS), Some(("decision", "blocked"))),
        Counter::TlsFailed => ("tls_flows_total", Some(TLS), Some(("decision", "failed"))),
        Counter::TlsResumedClient => ("tls_resumed_total", Some(RESUMED), Some(("leg", "client"))),
        Counter::TlsResumedUpstream => ("tls_resumed_total", Some(RESUMED), Some(("leg", "upstream"))),
        Counter::TlsWeakened => ("tls_weakened_total", None, None),
        Counter::CertsForged => ("certs_forged_total", None, None),
        Counter::IpsAlerts => ("ips_alerts_total", None, None),
        Counter::IpsUnscanned => ("ips_unscanned_bytes_total", None, None),
        Counter::IdleTimeouts => ("idle_timeouts_total", None, None),
        Counter::NotTcp => ("not_tcp_frames_total", None, None),
        Counter::FramesHandled => ("frames_handled_total", None, None),
    }
}

/// A scrape: the XDP counters (global, and per scope of `scopes`: (policy, scope) pairs), the
/// flow table, the workers' counters (each worker's values in `net::counters::ALL`'s order),
/// the alerts and the build.
pub fn scrape(maps: Option<&Maps>, scopes: &[(u32, u32)], workers: &[Vec<u64>], alerts: Option<&AlertCounts>) -> Scrape {
    let mut s = Scrape::default();
    s.add("tls_inspect_build_info", "The running build: its version (always 1).", Kind::Gauge, &[("version", env!("CARGO_PKG_VERSION").to_string())], 1);
    if let Some(global) = maps.and_then(|m| m.counters().ok()) {
        for (i, v) in global.iter().enumerate() {
            let (name, help, label) = xdp_series(i);
            let labels: Vec<(&str, String)> = label.map(|(k, v)| (k, v.to_string())).into_iter().collect();
            s.add(name, help, Kind::Counter, &labels, *v);
        }
    }
    if let Some(m) = maps {
        for &(policy, scope) in scopes {
            s.add_scope(m, policy, scope);
        }
        let (flows, capacity) = m.flow_count();
        s.add("tls_inspect_xdp_flows", "Flows in the XDP program's flow table now.", Kind::Gauge, &[], flows as u64);
        s.add("tls_inspect_xdp_flows_capacity", "Flows the XDP program's flow table holds at most.", Kind::Gauge, &[], u64::from(capacity));
    }
    for (id, w) in workers.iter().enumerate() {
        for ((&c, def), &v) in crate::net::counters::ALL.iter().zip(crate::net::counters::COUNTERS).zip(w) {
            let (family, family_help, label) = worker_series(c);
            let mut labels = vec![("worker", id.to_string())];
            labels.extend(label.map(|(k, v)| (k, v.to_string())));
            s.add(&format!("tls_inspect_worker_{family}"), family_help.unwrap_or(def.help), def.kind, &labels, v);
        }
    }
    if let Some(Ok(counts)) = alerts.map(|a| a.lock()) {
        for ((sid, action), n) in counts.iter() {
            s.add("tls_inspect_alerts_total", "IPS alerts by rule (sid) and what was done: allowed or blocked.", Kind::Counter, &[("sid", sid.to_string()), ("action", (*action).to_string())], *n);
        }
    }
    s
}

/// The text format of a scrape of the running workers.
pub fn metrics_text(maps: Option<&Maps>, scopes: &[(u32, u32)], stats: &[Arc<WorkerStats>], alerts: Option<&AlertCounts>) -> String {
    let workers: Vec<Vec<u64>> = stats.iter().map(|w| w.iter().map(|(_, v)| v).collect()).collect();
    scrape(maps, scopes, &workers, alerts).encode().unwrap_or_else(|e| format!("# tls-inspect: encoding the metrics failed: {e}\n"))
}

/// Answers one scrape on `conn`.
fn answer(mut conn: std::net::TcpStream, stats: &[Arc<WorkerStats>], paths: &Paths, alerts: Option<&AlertCounts>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 2048];
    let n = conn.read(&mut buf).unwrap_or(0);
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    if !(request.starts_with("GET ") && (path == "/metrics" || path == "/")) {
        let _ = write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let scopes: Vec<(u32, u32)> = crate::control::state::read(paths).map(|set| set.scopes.values().map(|s| (s.policy, s.id)).collect()).unwrap_or_default();
    // The maps are opened per scrape (their mmapped tables stay with one thread).
    let maps = Maps::open(paths).ok();
    let body = metrics_text(maps.as_ref(), &scopes, stats, alerts);
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        prometheus::TEXT_FORMAT,
        body.len()
    );
}

pub fn serve(listener: TcpListener, stop: &AtomicBool, stats: &Arc<Vec<Arc<WorkerStats>>>, paths: &Paths, alerts: Option<&AlertCounts>) {
    let busy = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.set_nonblocking(false);
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONCURRENT {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    let _ = write!(conn, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let (stats, paths, alerts, done) = (stats.clone(), paths.clone(), alerts.cloned(), busy.clone());
                let spawned = std::thread::Builder::new().name("metrics".into()).spawn(move || {
                    answer(conn, &stats, &paths, alerts.as_ref());
                    done.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_counters_end_in_total_and_workers_are_labels() {
        let stats = vec![Arc::new(WorkerStats::default()), Arc::new(WorkerStats::default())];
        let text = metrics_text(None, &[], &stats, None);
        let mut families = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(text.contains(&format!("# HELP {name} ")), "{name} has no help");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{name} is a {kind}");
                families.insert(name.to_string());
            }
        }
        assert!(families.contains("tls_inspect_build_info") && families.contains("tls_inspect_worker_tls_flows_total"), "{families:?}");
        assert!(text.contains("tls_inspect_worker_tls_flows_total{decision=\"inspected\",worker=\"1\"} 0"), "{text}");
        assert!(text.contains("tls_inspect_worker_relayed_bytes_total{direction=\"to_server\",worker=\"0\"} 0"), "{text}");
        // No dimension in a name: one family per kind of thing.
        assert!(!families.iter().any(|f| f.contains("to_server") || f.contains("inspected")), "{families:?}");
    }

    #[test]
    fn the_operators_manual_lists_every_family() {
        let doc = include_str!("../../../docs/dataplane.md");
        let mut families: Vec<String> = (0..counter::COUNT).map(|i| xdp_series(i).0.to_string()).collect();
        families.extend(tls_inspect_common::ScopeCounters::default().fields().iter().map(|(f, _)| scope_series(f).0.to_string()));
        families.extend(crate::net::counters::ALL.iter().map(|&c| format!("tls_inspect_worker_{}", worker_series(c).0)));
        families.extend(["tls_inspect_build_info", "tls_inspect_xdp_flows", "tls_inspect_xdp_flows_capacity", "tls_inspect_alerts_total"].map(String::from));
        for f in families {
            assert!(doc.contains(&format!("`{f}`")), "docs/dataplane.md does not list {f}");
        }
    }

    #[test]
    fn the_series_of_one_family_share_their_label_names() {
        let mut keys: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let series = (0..counter::COUNT).map(|i| { let (f, _, l) = xdp_series(i); (f, l.map(|l| l.0)) });
        let scopes = tls_inspect_common::ScopeCounters::default().fields().iter().map(|(n, _)| { let (f, _, l) = scope_series(n); (f, l.map(|l| l.0)) }).collect::<Vec<_>>();
        let workers = crate::net::counters::ALL.iter().map(|&c| { let (f, _, l) = worker_series(c); (f, l.map(|l| l.0)) });
        for (family, key) in series.chain(scopes).chain(workers) {
            assert_eq!(*keys.entry(family).or_insert(key), key, "{family}: label names differ between its series");
        }
    }

    #[test]
    fn every_xdp_and_scope_counter_has_a_family_of_its_own_kind() {
        for (i, name) in counter::NAMES.iter().enumerate() {
            let (family, help, _) = xdp_series(i);
            assert!(family.ends_with("_total") && !family.contains("unknown") && help.ends_with('.'), "{name} -> {family}");
        }
        for (field, _) in tls_inspect_common::ScopeCounters::default().fields() {
            let (family, _, _) = scope_series(field);
            assert!(!family.contains("unknown"), "{field}");
        }
    }
}
