//! A worker: one core, one receive queue on each interface, one UMEM shared by its two AF_XDP
//! sockets, one [`Engine`]. Every ring is worked in batches; the only syscalls on the hot path
//! are the TX kick and the fill-ring wakeup when the kernel asks for them (need_wakeup), and a
//! `poll` when there is nothing to do.
//!
//! A frame of a flow another worker owns (the two NICs need not hash a flow's directions to the
//! same queue) is copied into a batch for that worker and sent over a crossbeam channel, once per
//! batch.

use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use smoltcp::time::Instant;
use tls_inspect_common::{xsk_index, FlowKey, FlowValue, FLOW_BYPASS, MAP_FLOWS, SIDE_INSIDE, SIDE_OUTSIDE};
use tracing::{debug, warn};
use xsk_rs::config::{BindFlags, LibxdpFlags, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::control::maps::{Paths, Sockets};
use crate::net::{flow_of, owner, Engine, EngineConfig, FlowIds, Hooks, MapUpdate, Side, TlsWorker, Transmit};
use crate::tls::forge::Forger;

/// Frames of a UMEM: a quarter for each fill ring, half for transmitting.
const UMEM_FRAMES: u32 = 4096;
const BATCH: usize = 64;

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
    pub tls: Option<crate::control::supervisor::TlsPlan>,
    pub ips: Option<crate::control::rules::SharedRules>,
    pub log: Option<Sender<crate::log::Record>>,
}

/// Names of a worker's counters, in [`WorkerStats`] order.
pub const WORKER_COUNTERS: [&str; 23] = [
    "frames_rx",
    "frames_tx",
    "handoffs_out",
    "handoffs_in",
    "handoffs_dropped",
    "tx_ring_full",
    "tx_dropped_no_frame",
    "flows_open",
    "flows_total",
    "bytes_to_server",
    "bytes_to_client",
    "table_full",
    "connect_refused",
    "connect_timeouts",
    "resets",
    "unknown_flow",
    "map_errors",
    "tls_inspected",
    "tls_passed",
    "tls_blocked",
    "tls_failed",
    "certs_forged",
    "ips_alerts",
];

/// A worker's counters, published once per loop iteration (never per packet).
#[derive(Default, Debug)]
pub struct WorkerStats {
    values: [AtomicU64; WORKER_COUNTERS.len()],
}

impl WorkerStats {
    /// Name and value of every counter.
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        WORKER_COUNTERS.iter().zip(&self.values).map(|(n, v)| (*n, v.load(Ordering::Relaxed))).collect()
    }

    fn publish(&self, values: [u64; WORKER_COUNTERS.len()]) {
        for (slot, v) in self.values.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
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

/// One side's socket and rings.
struct Port {
    side: Side,
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
}

/// The engine's transmitter: frames are built in a scratch buffer and copied into a free UMEM
/// frame at commit.
struct XskTx<'a> {
    umem: &'a Umem,
    free: &'a mut Vec<FrameDesc>,
    /// Frames written and waiting to be produced on each side's TX ring.
    pending: &'a mut [Vec<FrameDesc>; 2],
    scratch: &'a mut Vec<u8>,
    dropped: &'a mut u64,
}

fn index(side: Side) -> usize {
    match side {
        Side::Inside => 0,
        Side::Outside => 1,
    }
}

impl Transmit for XskTx<'_> {
    fn frame(&mut self, _side: Side, len: usize) -> &mut [u8] {
        self.scratch.clear();
        self.scratch.resize(len, 0);
        self.scratch
    }

    fn commit(&mut self, side: Side, len: usize) {
        let Some(mut desc) = self.free.pop() else {
            *self.dropped += 1;
            return;
        };
        // SAFETY: a free frame of this worker's UMEM: neither the kernel nor a ring holds it.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        let mut cursor = data.cursor();
        cursor.set_pos(0);
        if std::io::Write::write_all(&mut cursor, &self.scratch[..len]).is_err() {
            // Larger than a frame: never happens with the MTUs the engine uses.
            *self.dropped += 1;
            self.free.push(desc);
            return;
        }
        self.pending[index(side)].push(desc);
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
            pin_to_cpu(cpu);
        }
        let frames = NonZeroU32::new(UMEM_FRAMES).context("UMEM size")?;
        let (umem, mut descs) = Umem::new(UmemConfig::default(), frames, false)
            .map_err(|e| anyhow!("worker {}: creating the UMEM: {e}", self.config.id))?;
        let q = self.config.queue;
        let mut ports = Vec::with_capacity(2);
        for (side, name) in [(Side::Inside, &self.config.inside), (Side::Outside, &self.config.outside)] {
            let socket_config = SocketConfig::builder()
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            let iface = name.parse().map_err(|_| anyhow!("'{name}' is not an interface name"))?;
            // SAFETY: the UMEM outlives the sockets (both live until the end of `run`), and the
            // prog-load inhibit flag is set.
            let (tx, rx, fq_cq) = unsafe { Socket::new(socket_config, &umem, &iface, q) }
                .map_err(|e| anyhow!("AF_XDP socket on {name} queue {q}: {e}"))?;
            let (fill, comp) = fq_cq.context("the socket has no fill and completion rings")?;
            ports.push(Port {
                side,
                rx,
                tx,
                fill,
                comp,
            });
        }
        let quarter = (UMEM_FRAMES / 4) as usize;
        let mut free: Vec<FrameDesc> = descs.split_off(2 * quarter);
        for (i, port) in ports.iter_mut().enumerate() {
            let mine = &descs[i * quarter..(i + 1) * quarter];
            // SAFETY: frames of this UMEM that nothing else holds.
            let n = unsafe { port.fill.produce(mine) };
            if n != mine.len() {
                warn!(worker = self.config.id, "fill ring took {n} of {} frames", mine.len());
            }
        }

        let mut sockets = Sockets::open(&self.paths)?;
        let mut flows: BpfHashMap<MapData, FlowKey, FlowValue> = Map::from_map_data(
            MapData::from_pin(self.paths.pin(MAP_FLOWS)).context("opening the flow map")?,
        )
        .context("flow map")?
        .try_into()?;
        let indices = [xsk_index(SIDE_INSIDE, q), xsk_index(SIDE_OUTSIDE, q)];
        for (port, i) in ports.iter().zip(indices) {
            sockets.register(i, port.rx.fd().as_raw_fd())?;
        }
        debug!(worker = self.config.id, queue = q, "sockets registered");
        let _ = self.ready.send(Ok(()));

        let result = self.main_loop(&umem, &mut ports, &mut free, &mut flows);

        for i in indices {
            let _ = sockets.unregister(i);
        }
        result
    }

    fn main_loop(
        &self,
        umem: &Umem,
        ports: &mut [Port],
        free: &mut Vec<FrameDesc>,
        flows: &mut BpfHashMap<MapData, FlowKey, FlowValue>,
    ) -> Result<()> {
        let start = std::time::Instant::now();
        let now = || Instant::from_micros(start.elapsed().as_micros() as i64);
        let tls = match &self.config.tls {
            Some(plan) => Some(TlsWorker {
                config: plan.config.clone(),
                policy: plan.policy.clone(),
                forger: Forger::new(&plan.ca, plan.cert_cache)?,
            }),
            None => None,
        };
        // The policy and scope the XDP program recorded for a flow, read once per flow.
        let ids: BpfHashMap<MapData, FlowKey, FlowValue> = Map::from_map_data(MapData::from_pin(self.paths.pin(MAP_FLOWS))?)?.try_into()?;
        let ips = match &self.config.ips {
            Some(shared) => {
                let set = shared.load_full();
                Some(crate::net::IpsHook {
                    shared: shared.clone(),
                    scratch: std::rc::Rc::new(std::cell::RefCell::new(set.scratch()?)),
                    databases: std::cell::Cell::new(set.databases),
                })
            }
            None => None,
        };
        let hooks = Hooks {
            tls,
            ips,
            log: self.config.log.clone(),
            flow_ids: Some(Box::new(move |k: &FlowKey| {
                ids.get(k, 0).map_or(FlowIds::default(), |v| FlowIds { policy_id: v.policy_id, scope_id: v.scope_id, flags: v.flags })
            })),
        };
        let mut engine = Engine::new(self.config.engine, seed(self.config.id), now()).with_hooks(hooks);
        let workers = self.config.workers.max(1);
        let mut outboxes: Vec<Handoff> = (0..workers).map(|_| Handoff::default()).collect();
        // Descriptors to read into, one array per port: copies of any frame (the ring
        // overwrites them).
        let placeholder: Vec<FrameDesc> = free.iter().take(BATCH).copied().collect();
        let mut rx_descs = [placeholder.clone(), placeholder.clone()];
        let mut comp_descs = placeholder;
        let mut scratch = Vec::with_capacity(2048);
        let mut pending: [Vec<FrameDesc>; 2] = [Vec::with_capacity(BATCH * 4), Vec::with_capacity(BATCH * 4)];
        let mut dropped = 0u64;
        let (mut frames_rx, mut frames_tx, mut handoffs_out, mut handoffs_in, mut ring_full) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut handoffs_dropped = 0u64;
        let mut map_errors = 0u64;

        while !self.stop.load(Ordering::Relaxed) {
            let t = now();
            let mut work = 0usize;
            let (inside, outside) = ports.split_at_mut(1);
            let (inside, outside) = (&mut inside[0], &mut outside[0]);
            {
                // SAFETY: descriptors of this UMEM; each is read below, then given back to the
                // fill ring once the batch is done.
                let received = [unsafe { inside.rx.consume(&mut rx_descs[0]) }, unsafe { outside.rx.consume(&mut rx_descs[1]) }];
                let inbound: Vec<Handoff> = self.inbox.try_iter().collect();
                let mut frames: Vec<(Side, &[u8])> = Vec::with_capacity(received[0] + received[1]);
                for (side, (descs, &n)) in [Side::Inside, Side::Outside].into_iter().zip(rx_descs.iter().zip(&received)) {
                    for desc in &descs[..n] {
                        // SAFETY: a frame the kernel just handed us; it stays ours until the
                        // fill ring gets it back below.
                        let frame = unsafe { umem.data(desc) }.contents();
                        let target = if workers > 1 {
                            flow_of(side, frame).map_or(self.config.id, |(k, _, _)| owner(&k, workers))
                        } else {
                            self.config.id
                        };
                        if target == self.config.id {
                            frames.push((side, frame));
                        } else {
                            outboxes[target].push(side, frame);
                            handoffs_out += 1;
                        }
                    }
                    frames_rx += n as u64;
                    work += n;
                }
                for batch in &inbound {
                    for &(off, len, side) in &batch.frames {
                        frames.push((side, &batch.data[off as usize..off as usize + usize::from(len)]));
                        handoffs_in += 1;
                    }
                    work += 1;
                }
                let mut tx = XskTx {
                    umem,
                    free,
                    pending: &mut pending,
                    scratch: &mut scratch,
                    dropped: &mut dropped,
                };
                if !frames.is_empty() {
                    engine.handle_batch(&frames, t, &mut tx);
                }
                engine.poll_timers(t, &mut tx);
                drop(frames);
                for (port, (descs, &n)) in [&mut *inside, &mut *outside].into_iter().zip(rx_descs.iter().zip(&received)) {
                    if n > 0 {
                        // SAFETY: the frames just processed are free again.
                        let back = unsafe { port.fill.produce(&descs[..n]) };
                        if back < n {
                            // The fill ring is full (cannot be: it holds a quarter): keep them.
                            tx.free.extend_from_slice(&descs[back..n]);
                        }
                    }
                }
            }

            for (target, outbox) in outboxes.iter_mut().enumerate() {
                if !outbox.is_empty() {
                    let batch = std::mem::take(outbox);
                    // The channel is bounded: a worker that falls behind loses frames (TCP
                    // resends them) rather than holding ever more memory.
                    match self.peers[target].try_send(batch) {
                        Ok(()) => {}
                        Err(TrySendError::Full(batch)) => handoffs_dropped += batch.frames.len() as u64,
                        Err(TrySendError::Disconnected(_)) => warn!(worker = self.config.id, target, "handoff channel closed"),
                    }
                }
            }

            for port in [&mut *inside, &mut *outside] {
                let queued = &mut pending[index(port.side)];
                if !queued.is_empty() {
                    // SAFETY: frames written by XskTx, handed to the kernel until completed.
                    let n = unsafe { port.tx.produce(queued) };
                    if n < queued.len() {
                        ring_full += 1;
                    }
                    frames_tx += n as u64;
                    queued.drain(..n);
                    work += n;
                }
                if port.tx.needs_wakeup() || !queued.is_empty() {
                    let _ = port.tx.wakeup();
                }
                // SAFETY: completed descriptors of this UMEM come back to the free list.
                let n = unsafe { port.comp.consume(&mut comp_descs) };
                free.extend_from_slice(&comp_descs[..n]);
                if port.fill.needs_wakeup() {
                    let _ = port.fill.wakeup(port.rx.fd_mut(), 0);
                }
            }

            for update in engine.take_updates() {
                let ok = match update {
                    MapUpdate::Remove(key) => flows.remove(&key).is_ok(),
                    MapUpdate::Bypass(key) => match flows.get(&key, 0) {
                        Ok(mut v) => {
                            v.action = FLOW_BYPASS;
                            flows.insert(key, v, 0).is_ok()
                        }
                        Err(_) => false,
                    },
                };
                if !ok {
                    map_errors += 1;
                }
            }

            let s = engine.stats();
            self.stats.publish([
                frames_rx,
                frames_tx,
                handoffs_out,
                handoffs_in,
                handoffs_dropped,
                ring_full,
                dropped,
                s.flows_open,
                s.flows_total,
                s.bytes_to_server,
                s.bytes_to_client,
                s.table_full,
                s.connect_refused,
                s.connect_timeouts,
                s.resets,
                s.unknown_flow,
                map_errors,
                s.tls_inspected,
                s.tls_passed,
                s.tls_blocked,
                s.tls_failed,
                engine.certs_forged(),
                s.ips_alerts,
            ]);

            if work == 0 {
                // Nothing to do: sleep until a frame arrives, a peer hands one over (checked
                // every millisecond while flows are open) or a timer is due.
                let timeout = if engine.is_empty() { 20 } else { 1 };
                wait_readable(&[inside.rx.fd().as_raw_fd(), outside.rx.fd().as_raw_fd()], timeout);
            }
        }
        Ok(())
    }
}

fn wait_readable(fds: &[i32], timeout_ms: i32) {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: a valid array of pollfd of the given length.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
}

fn seed(id: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed);
    t ^ ((id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Receive queues of an interface (ETHTOOL_GCHANNELS), 1 when the driver does not say.
pub fn queue_count(iface: &str) -> u32 {
    #[repr(C)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut Channels,
        _pad: [u8; 16],
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut ch = Channels {
        cmd: ETHTOOL_GCHANNELS,
        max_rx: 0,
        max_tx: 0,
        max_other: 0,
        max_combined: 0,
        rx_count: 0,
        tx_count: 0,
        other_count: 0,
        combined_count: 0,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut ch,
        _pad: [0; 16],
    };
    let n = iface.len().min(15);
    req.name[..n].copy_from_slice(&iface.as_bytes()[..n]);
    // SAFETY: an ioctl on a socket we own, with a properly sized and initialised request.
    let ok = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return 1;
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        libc::close(fd);
        rc == 0
    };
    if !ok {
        return 1;
    }
    ch.rx_count.max(ch.combined_count).max(1)
}
