//! Starts the workers (one per queue, pinned to cores), publishes their counters (a JSON file
//! for `tls-inspect stats`, and a Prometheus text endpoint), and stops them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tls_inspect_common::{counter, MAX_QUEUES};
use tracing::{error, info, warn};

use super::maps::{Maps, Paths};
use crate::net::EngineConfig;
use crate::phy::worker::{queue_count, Handoff, Worker, WorkerConfig, WorkerStats, HANDOFF_BATCHES};

pub struct Supervisor {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Result<()>>>,
    helpers: Vec<JoinHandle<()>>,
}

pub struct Plan {
    pub inside: String,
    pub outside: String,
    /// 0: one per queue.
    pub workers: usize,
    pub engine: EngineConfig,
    pub metrics: Option<SocketAddr>,
    /// TLS interception (each worker forges with its own leaf key).
    pub tls: Option<TlsPlan>,
    pub ips: Option<super::rules::SharedRules>,
    pub log: Option<crossbeam_channel::Sender<crate::log::Record>>,
    pub alert_counts: Option<crate::log::AlertCounts>,
}

/// What every worker needs to inspect TLS.
#[derive(Clone)]
pub struct TlsPlan {
    pub config: Arc<crate::tls::intercept::TlsConfig>,
    pub policy: Arc<crate::tls::policy::TlsPolicy>,
    pub ca: Arc<crate::tls::ca::Ca>,
    pub cert_cache: usize,
}

/// How often expired entries leave the TLS exclusion cache.
const EXCLUSION_SWEEP: Duration = Duration::from_secs(10);

/// The file `tls-inspect stats` reads the workers' counters from.
pub fn workers_file(paths: &Paths) -> std::path::PathBuf {
    paths.run_dir.join("workers.json")
}

impl Supervisor {
    pub fn start(paths: &Paths, plan: Plan) -> Result<Self> {
        let queues = queue_count(&plan.inside).min(queue_count(&plan.outside)).min(MAX_QUEUES) as usize;
        let n = if plan.workers == 0 { queues } else { plan.workers.min(queues) };
        if plan.workers > queues {
            warn!(asked = plan.workers, queues, "more workers than queues: one worker per queue");
        }
        if n < queues {
            warn!(workers = n, queues, "queues without a worker fail open (their flows are bridged)");
        }
        let cpus = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
        let stop = Arc::new(AtomicBool::new(false));
        let channels: Vec<_> = (0..n).map(|_| crossbeam_channel::bounded::<Handoff>(HANDOFF_BATCHES)).collect();
        let senders: Vec<_> = channels.iter().map(|(s, _)| s.clone()).collect();
        let stats: Arc<Vec<Arc<WorkerStats>>> = Arc::new((0..n).map(|_| Arc::new(WorkerStats::default())).collect());
        let mut workers = Vec::with_capacity(n);
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        for (id, (_, inbox)) in channels.into_iter().enumerate() {
            let config = WorkerConfig {
                id,
                workers: n,
                queue: id as u32,
                inside: plan.inside.clone(),
                outside: plan.outside.clone(),
                engine: plan.engine,
                cpu: Some(id % cpus),
                tls: plan.tls.clone(),
                ips: plan.ips.clone(),
                log: plan.log.clone(),
            };
            let worker = Worker {
                config,
                paths: paths.clone(),
                stop: stop.clone(),
                stats: stats[id].clone(),
                inbox,
                peers: senders.clone(),
                ready: ready_tx.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn(move || {
                    let r = worker.run();
                    if let Err(e) = &r {
                        error!(worker = id, error = %format!("{e:#}"), "worker stopped; its queue fails open");
                    }
                    r
                })
                .context("starting a worker thread")?;
            workers.push(handle);
        }
        // Wait until every worker has its sockets in the map (or has failed: its queue then
        // fails open), so that `run` says it is running only when it steers.
        let mut failed = 0;
        for _ in 0..n {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed += 1;
                    error!(error = %e, "a worker could not start; its queue fails open");
                }
                Err(_) => {
                    failed += 1;
                    error!("a worker did not start within 10 s; its queue fails open");
                }
            }
        }
        info!(workers = n - failed, queues, "workers started");

        let mut helpers = Vec::new();
        // Written once before `run` says it is running, then refreshed.
        write_workers_file(&workers_file(paths), &stats)?;
        {
            let (stop, stats, path) = (stop.clone(), stats.clone(), workers_file(paths));
            let policy = plan.tls.as_ref().map(|t| t.policy.clone());
            helpers.push(std::thread::spawn(move || {
                let mut last_sweep = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let _ = write_workers_file(&path, &stats);
                    // Expired exclusions go on a timer, not only when looked up.
                    if let Some(p) = policy.as_ref().filter(|_| last_sweep.elapsed() >= EXCLUSION_SWEEP) {
                        p.sweep();
                        last_sweep = std::time::Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                let _ = std::fs::remove_file(&path);
            }));
        }
        if let Some(addr) = plan.metrics {
            let listener = TcpListener::bind(addr).with_context(|| format!("metrics: binding {addr}"))?;
            listener.set_nonblocking(true)?;
            let (stop, stats, paths, alerts) = (stop.clone(), stats.clone(), paths.clone(), plan.alert_counts.clone());
            helpers.push(std::thread::spawn(move || serve_metrics(listener, &stop, &stats, &paths, alerts.as_ref())));
            info!(%addr, "metrics endpoint");
        }
        Ok(Self { stop, workers, helpers })
    }

    /// Stops every worker (each unregisters its sockets) and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
        for h in self.helpers {
            let _ = h.join();
        }
    }
}

fn worker_json(stats: &[Arc<WorkerStats>]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = stats
        .iter()
        .enumerate()
        .map(|(id, s)| {
            let mut m: serde_json::Map<String, serde_json::Value> =
                s.fields().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
            m.insert("worker".into(), id.into());
            m.into()
        })
        .collect();
    serde_json::json!({ "workers": list })
}

fn write_workers_file(path: &std::path::Path, stats: &[Arc<WorkerStats>]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&worker_json(stats))?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The Prometheus text format of the XDP counters (global, and per scope of `scopes`: (policy,
/// scope) pairs) and the workers' counters.
pub fn metrics_text(maps: Option<&Maps>, scopes: &[(u32, u32)], stats: &[Arc<WorkerStats>], alerts: Option<&crate::log::AlertCounts>) -> String {
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
    for (id, s) in stats.iter().enumerate() {
        for (name, v) in s.fields() {
            out.push_str(&format!("tls_inspect_worker_{name}{{worker=\"{id}\"}} {v}\n"));
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

fn serve_metrics(listener: TcpListener, stop: &AtomicBool, stats: &[Arc<WorkerStats>], paths: &Paths, alerts: Option<&crate::log::AlertCounts>) {
    let maps = Maps::open(paths).ok();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let scopes: Vec<(u32, u32)> = super::state::read(paths).map(|set| set.scopes.values().map(|s| (s.policy, s.id)).collect()).unwrap_or_default();
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
