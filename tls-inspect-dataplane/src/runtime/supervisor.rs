//! Starts the workers (one per queue, pinned to cores), publishes their counters (a JSON file
//! for `tls-inspect stats`, and the metrics endpoint of `metrics`), and stops them.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tls_inspect_common::MAX_QUEUES;
use tracing::{error, info, warn};

use super::worker::{Handoff, TlsPlan, Worker, WorkerConfig, WorkerStats, HANDOFF_BATCHES};
use crate::control::maps::Paths;
use crate::inspect::SharedRules;
use crate::log::{AlertCounts, Record};
use crate::net::EngineConfig;
use crate::sys::queue_count;

pub struct Supervisor {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Result<()>>>,
    helpers: Vec<JoinHandle<()>>,
    stats: Arc<Vec<Arc<WorkerStats>>>,
    /// Each worker's loop count when [`Supervisor::check`] last looked.
    last_beats: Vec<u64>,
}

/// Which workers are not well, from their threads' ends and their loop counts now and at the
/// last look: a worker whose thread ended, or whose loop did not go round (an idle loop wakes
/// every 20 ms, so between two watchdog checks it always does).
fn unwell(finished: &[bool], beats: &[u64], last: &[u64]) -> Vec<String> {
    let mut out = Vec::new();
    for (id, &done) in finished.iter().enumerate() {
        if done {
            out.push(format!("worker {id} stopped"));
        } else if beats.get(id) == last.get(id) {
            out.push(format!("worker {id} is stuck"));
        }
    }
    out
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
    pub ips: Option<SharedRules>,
    pub log: Option<crossbeam_channel::Sender<Record>>,
    pub pcap: Option<crate::log::pcap::PcapTap>,
    pub alert_counts: Option<AlertCounts>,
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
                pcap: plan.pcap.clone(),
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
            helpers.push(std::thread::spawn(move || super::metrics::serve(listener, &stop, &stats, &paths, alerts.as_ref())));
            info!(%addr, "metrics endpoint");
        }
        let last_beats = stats.iter().map(|s| s.beats()).collect();
        Ok(Self { stop, workers, helpers, stats, last_beats })
    }

    /// Every worker runs and made progress since the last call; otherwise what is wrong (the
    /// systemd watchdog is fed only while this holds, so systemd restarts a sick appliance).
    pub fn check(&mut self) -> std::result::Result<(), String> {
        let finished: Vec<bool> = self.workers.iter().map(JoinHandle::is_finished).collect();
        let beats: Vec<u64> = self.stats.iter().map(|s| s.beats()).collect();
        let problems = unwell(&finished, &beats, &self.last_beats);
        self.last_beats = beats;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join(", "))
        }
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
                s.iter().map(|(d, v)| (d.name.to_string(), v.into())).collect();
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


#[cfg(test)]
mod tests {
    use super::unwell;

    #[test]
    fn a_worker_that_ended_or_made_no_progress_is_unwell() {
        assert!(unwell(&[false, false], &[10, 7], &[3, 2]).is_empty());
        assert_eq!(unwell(&[false, true], &[10, 7], &[3, 2]), ["worker 1 stopped"]);
        assert_eq!(unwell(&[false, false], &[10, 2], &[3, 2]), ["worker 1 is stuck"]);
    }
}
