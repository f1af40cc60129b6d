//! A worker: one core, one receive queue on each interface ([`XskDevice`]), one [`Engine`].
//! Every ring is worked in batches; the only syscalls on the hot path are the TX kick and the
//! fill-ring wakeup when the kernel asks for them (need_wakeup), and a `poll` when there is
//! nothing to do.
//!
//! A frame of a flow another worker owns (the two NICs need not hash a flow's directions to the
//! same queue) is copied into a batch for that worker and sent over a crossbeam channel, once per
//! batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use smoltcp::time::Instant;
use tls_inspect_common::{xsk_index, FlowKey, FlowValue, Handshake, MAP_FLOWS, MAP_HANDSHAKES, SIDE_INSIDE, SIDE_OUTSIDE};
use tracing::{debug, warn};

use crate::control::maps::{FlowTable, Paths, Sockets};
use crate::inspect::SharedRules;
use crate::log::Record;
use crate::net::counters::{Counter, Counters, COUNTERS};
use crate::inspect::WorkerIps;
use crate::net::{flow_of, owner, Engine, EngineConfig, FlowIds, Hooks, MapUpdate, TlsWorker};
use crate::phy::xsk::XskDevice;
use crate::phy::Side;
use crate::tls::forge::Forger;
use crate::tls::intercept::WorkerTls;

/// What every worker needs to inspect TLS.
#[derive(Clone)]
pub struct TlsPlan {
    pub config: Arc<crate::tls::intercept::TlsConfig>,
    pub policy: Arc<crate::tls::policy::TlsPolicy>,
    pub ca: Arc<crate::tls::ca::Ca>,
    pub cert_cache: usize,
}

#[derive(Clone)]
pub struct WorkerConfig {
    pub id: usize,
    pub workers: usize,
    pub queue: u32,
    pub inside: String,
    pub outside: String,
    pub engine: EngineConfig,
    /// Pin the worker's thread to this CPU.
    pub cpu: Option<usize>,
    pub tls: Option<TlsPlan>,
    pub ips: Option<SharedRules>,
    pub log: Option<Sender<Record>>,
    pub pcap: Option<crate::log::pcap::PcapTap>,
}

/// A worker's counters as the supervisor reads them, published once per loop iteration (never
/// per packet), in [`COUNTERS`] order.
#[derive(Debug)]
pub struct WorkerStats {
    values: Vec<AtomicU64>,
    /// Turns of the worker's loop (the watchdog's sign of life).
    beats: AtomicU64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self { values: COUNTERS.iter().map(|_| AtomicU64::new(0)).collect(), beats: AtomicU64::new(0) }
    }
}

impl WorkerStats {
    /// Each counter's declaration with its last published value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static crate::net::counters::Def, u64)> + '_ {
        COUNTERS.iter().zip(self.values.iter().map(|v| v.load(Ordering::Relaxed)))
    }

    fn publish(&self, values: &Counters) {
        for (slot, v) in self.values.iter().zip(values.values()) {
            slot.store(*v, Ordering::Relaxed);
        }
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// How often the worker's loop has gone round.
    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Relaxed)
    }
}

/// Batches a worker's inbox holds at most (each up to one receive batch per port).
pub const HANDOFF_BATCHES: usize = 1024;

/// Frames handed from one worker to another: one buffer, many frames.
#[derive(Default)]
pub struct Handoff {
    data: Vec<u8>,
    frames: Vec<(u32, u16, Side)>,
}

impl Handoff {
    fn push(&mut self, side: Side, frame: &[u8]) {
        self.frames.push((self.data.len() as u32, frame.len() as u16, side));
        self.data.extend_from_slice(frame);
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

pub struct Worker {
    pub config: WorkerConfig,
    pub paths: Paths,
    /// Set by the supervisor to stop every worker.
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<WorkerStats>,
    /// Frames other workers hand over to this one.
    pub inbox: Receiver<Handoff>,
    /// Every worker's inbox, by worker ID.
    pub peers: Vec<Sender<Handoff>>,
    /// Told once the sockets are registered (or why they could not be).
    pub ready: Sender<std::result::Result<(), String>>,
}

impl Worker {
    /// Runs until the stop flag is set; unregisters the sockets on the way out, so the XDP
    /// program bridges (fails open) as soon as this worker is gone.
    pub fn run(self) -> Result<()> {
        let result = self.run_inner();
        if let Err(e) = &result {
            // No-op if readiness was already reported.
            let _ = self.ready.send(Err(format!("{e:#}")));
        }
        result
    }

    fn run_inner(&self) -> Result<()> {
        if let Some(cpu) = self.config.cpu {
            crate::sys::pin_to_cpu(cpu);
        }
        let q = self.config.queue;
        let mut device = XskDevice::open(&self.config.inside, &self.config.outside, q).map_err(|e| anyhow!("worker {}: {e:#}", self.config.id))?;
        let mut sockets = Sockets::open(&self.paths)?;
        let mut flows = FlowTable::open(&self.paths).context("opening the flow map")?;
        let indices = [xsk_index(SIDE_INSIDE, q), xsk_index(SIDE_OUTSIDE, q)];
        for (fd, i) in device.fds().into_iter().zip(indices) {
            sockets.register(i, fd)?;
        }
        debug!(worker = self.config.id, queue = q, "sockets registered");
        let _ = self.ready.send(Ok(()));

        let result = self.main_loop(&mut device, &mut flows);

        for i in indices {
            let _ = sockets.unregister(i);
        }
        result
    }

    fn hooks(&self) -> Result<Hooks> {
        let tls = match &self.config.tls {
            Some(plan) => Some(TlsWorker {
                policy: plan.policy.clone(),
                shared: WorkerTls::new(plan.config.clone(), Forger::new(&plan.ca, plan.cert_cache)?),
            }),
            None => None,
        };
        // The policy and scope the XDP program recorded for a flow, read once per flow.
        let ids: BpfHashMap<MapData, FlowKey, FlowValue> = Map::from_map_data(MapData::from_pin(self.paths.pin(MAP_FLOWS))?)?.try_into()?;
        // The handshake the XDP program recorded of a peeked connection, taken once per flow.
        let mut handshakes: BpfHashMap<MapData, FlowKey, Handshake> =
            Map::from_map_data(MapData::from_pin(self.paths.pin(MAP_HANDSHAKES)).context("opening the handshake map")?)?.try_into()?;
        Ok(Hooks {
            tls,
            ips: self.config.ips.clone().map(WorkerIps::new).transpose()?,
            log: self.config.log.clone(),
            pcap: self.config.pcap.clone(),
            flow_ids: Some(Box::new(move |k: &FlowKey| {
                ids.get(k, 0).map_or(FlowIds::default(), |v| FlowIds { policy_id: v.policy_id, scope_id: v.scope_id, flags: v.flags })
            })),
            // Read and removed in one call; where the kernel has no such call, in two.
            handshake: Some(Box::new(move |k: &FlowKey| match crate::sys::bpf_take(&handshakes, k) {
                Ok(record) => record,
                Err(_) => {
                    let record = handshakes.get(k, 0).ok();
                    if record.is_some() {
                        let _ = handshakes.remove(k);
                    }
                    record
                }
            })),
        })
    }

    fn main_loop(&self, device: &mut XskDevice, flows: &mut FlowTable) -> Result<()> {
        let start = std::time::Instant::now();
        let now = || Instant::from_micros(start.elapsed().as_micros() as i64);
        let mut engine = Engine::new(self.config.engine, seed(self.config.id), now()).with_hooks(self.hooks()?);
        let workers = self.config.workers.max(1);
        let mut outboxes: Vec<Handoff> = (0..workers).map(|_| Handoff::default()).collect();
        // The worker's own counts, beside the engine's and the device's.
        let mut own = Counters::default();
        // Handshakes recorded since a flow here ended: a new connection on its addresses and
        // ports, whose entry the ended flow's removal must leave alone.
        let recorded: BpfHashMap<MapData, FlowKey, Handshake> =
            Map::from_map_data(MapData::from_pin(self.paths.pin(MAP_HANDSHAKES)).context("opening the handshake map")?)?.try_into()?;

        while !self.stop.load(Ordering::Relaxed) {
            let t = now();
            let mut work = device.receive();
            let inbound: Vec<Handoff> = self.inbox.try_iter().collect();
            work += inbound.len();
            device.with_received(|received, tx| {
                let mut mine: Vec<(Side, &[u8])> = Vec::with_capacity(2 * crate::phy::xsk::BATCH);
                for (side, frame) in received {
                    let target = if workers > 1 { flow_of(side, frame).map_or(self.config.id, |(k, _, _)| owner(&k, workers)) } else { self.config.id };
                    if target == self.config.id {
                        mine.push((side, frame));
                    } else {
                        outboxes[target].push(side, frame);
                        own.incr(Counter::HandoffsOut);
                    }
                }
                for batch in &inbound {
                    for &(off, len, side) in &batch.frames {
                        mine.push((side, &batch.data[off as usize..off as usize + usize::from(len)]));
                        own.incr(Counter::HandoffsIn);
                    }
                }
                if !mine.is_empty() {
                    engine.handle_batch(&mine, t, tx);
                }
                engine.poll_timers(t, tx);
            });

            for (target, outbox) in outboxes.iter_mut().enumerate() {
                if !outbox.is_empty() {
                    let batch = std::mem::take(outbox);
                    // The channel is bounded: a worker that falls behind loses frames (TCP
                    // resends them) rather than holding ever more memory.
                    match self.peers[target].try_send(batch) {
                        Ok(()) => {}
                        Err(TrySendError::Full(batch)) => own.add(Counter::HandoffsDropped, batch.frames.len() as u64),
                        Err(TrySendError::Disconnected(_)) => warn!(worker = self.config.id, target, "handoff channel closed"),
                    }
                }
            }
            // The flow map first, then the frames: a passed flow's held first flight leaves only
            // once its entry says bypass, so the server's answer is bridged in XDP rather than
            // steered to a worker that has already let the flow go.
            for update in engine.take_updates() {
                let ok = match update {
                    // The client may have reconnected from the same port while the flow's
                    // last segments were carried: the XDP program recorded the new SYN (and
                    // may have made the new connection's entry since). The old flow's entry
                    // went at that SYN.
                    MapUpdate::Remove(key) if recorded.get(&key, 0).is_ok() => true,
                    MapUpdate::Remove(key) => flows.remove(&key),
                    MapUpdate::Bypass(key, entry) => flows.set_bypass(&key, entry),
                };
                if !ok {
                    own.incr(Counter::MapErrors);
                }
            }
            flows.publish();

            work += device.flush();

            self.stats.publish(&published(&engine, device, &own));

            if work == 0 {
                // Nothing to do: sleep until a frame arrives, a peer hands one over (checked
                // every millisecond while flows are open) or a timer is due.
                let timeout = if engine.is_empty() { 20 } else { 1 };
                crate::sys::wait_readable(&device.fds(), timeout);
            }
        }
        Ok(())
    }
}

/// Every counter of a worker: the engine's, the device's and the worker's own.
fn published(engine: &Engine, device: &XskDevice, own: &Counters) -> Counters {
    let mut c = engine.stats();
    let d = device.counters();
    c.set(Counter::FramesRx, d.frames_rx);
    c.set(Counter::FramesTx, d.frames_tx);
    c.set(Counter::TxRingFull, d.tx_ring_full);
    c.set(Counter::TxDroppedNoFrame, d.tx_dropped_no_frame);
    for counter in [Counter::HandoffsOut, Counter::HandoffsIn, Counter::HandoffsDropped, Counter::MapErrors] {
        c.set(counter, own.get(counter));
    }
    c
}

fn seed(id: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed);
    t ^ ((id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}
