//! The Prometheus text endpoint: the XDP program's counters (global and per scope), the flow
//! table, every worker's counters (declared once, in `net::counters`) and the alerts per rule.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tls_inspect_common::counter;

use super::worker::WorkerStats;
use crate::control::maps::{Maps, Paths};
use crate::log::AlertCounts;

/// The Prometheus text format of the XDP counters (global, and per scope of `scopes`: (policy,
/// scope) pairs) and the workers' counters.
pub fn metrics_text(maps: Option<&Maps>, scopes: &[(u32, u32)], stats: &[Arc<WorkerStats>], alerts: Option<&AlertCounts>) -> String {
    let mut out = String::new();
    if let Some(global) = maps.and_then(|m| m.counters().ok()) {
        for (name, v) in counter::NAMES.iter().zip(global) {
            out.push_str(&format!("# TYPE tls_inspect_xdp_{name} counter\ntls_inspect_xdp_{name} {v}\n"));
        }
    }
    if let Some(m) = maps {
        let counters: Vec<_> = scopes.iter().map(|&(policy, scope)| (policy, scope, m.scope_counters(scope))).collect();
        for (i, name) in tls_inspect_common::ScopeCounters::default().fields().iter().map(|(n, _)| *n).enumerate() {
            out.push_str(&format!("# TYPE tls_inspect_scope_{name} counter\n"));
            for (policy, scope, c) in &counters {
                out.push_str(&format!("tls_inspect_scope_{name}{{policy=\"{policy}\",scope=\"{scope}\"}} {}\n", c.fields()[i].1));
            }
        }
    }
    if let Some((flows, capacity)) = maps.map(Maps::flow_count) {
        out.push_str(&format!("tls_inspect_xdp_flow_entries {flows}\ntls_inspect_xdp_flow_capacity {capacity}\n"));
    }
    let values: Vec<Vec<u64>> = stats.iter().map(|s| s.iter().map(|(_, v)| v).collect()).collect();
    for (i, d) in crate::net::counters::COUNTERS.iter().enumerate() {
        let name = format!("tls_inspect_worker_{}", d.name);
        out.push_str(&format!("# HELP {name} {}\n# TYPE {name} {}\n", d.help, d.kind.as_str()));
        for (id, v) in values.iter().enumerate() {
            out.push_str(&format!("{name}{{worker=\"{id}\"}} {}\n", v[i]));
        }
    }
    if let Some(Ok(counts)) = alerts.map(|a| a.lock()) {
        out.push_str("# TYPE tls_inspect_alerts counter\n");
        for ((sid, action), n) in counts.iter() {
            out.push_str(&format!("tls_inspect_alerts{{sid=\"{sid}\",action=\"{action}\"}} {n}\n"));
        }
    }
    out
}

pub fn serve(listener: TcpListener, stop: &AtomicBool, stats: &[Arc<WorkerStats>], paths: &Paths, alerts: Option<&AlertCounts>) {
    let maps = Maps::open(paths).ok();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let scopes: Vec<(u32, u32)> = crate::control::state::read(paths).map(|set| set.scopes.values().map(|s| (s.policy, s.id)).collect()).unwrap_or_default();
                let body = metrics_text(maps.as_ref(), &scopes, stats, alerts);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
