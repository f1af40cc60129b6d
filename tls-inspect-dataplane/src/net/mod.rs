//! The transparent TCP relay, sans I/O: frames of steered flows in, frames out through a
//! [`Transmit`]. Each flow is terminated towards the client (the appliance answers as the server)
//! and re-originated towards the server (from the client's own address and port), upstream
//! first: the client gets its SYN-ACK only once the server has accepted.
//!
//! Per-packet cost does not grow with the number of flows: frames find their flow through a hash
//! map, each leg is a smoltcp interface with one socket, and timers sit in a hashed wheel.
//!
//! A flow moves through its [`Phase`]s in [`Engine::advance`], one function per phase: connecting
//! (here), deciding (`decide`), spliced or inspected (`relay`), with resets, half-closes and the
//! idle timeout on the way. `counters` declares what the relay counts.

mod buffers;
pub mod counters;
mod decide;
mod flow;
pub mod leg;
mod peek;
mod relay;
pub mod timer;
pub mod wire;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::Sender;
use smoltcp::socket::tcp::State;
use smoltcp::time::{Duration, Instant};
use tls_inspect_common::parse::{TCP_ACK, TCP_SYN};
use tls_inspect_common::{parse_frame, FlowKey, Frame, L4};

use crate::inspect::ips::Hit;
use crate::inspect::WorkerIps;
use crate::log::{AlertLog, FlowLog, Outcome, Reason, Record};
use crate::phy::{Side, Transmit};
use crate::tls::intercept::WorkerTls;
use crate::tls::policy::TlsPolicy;
use buffers::BufferPool;
use counters::{Counter, Counters};
pub use flow::Phase;
use flow::{was_reset, Flow};
use leg::{Leg, LegConfig};
use timer::TimerWheel;
use wire::EthHeader;

/// What happens to a new flow when the flow table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Forward the SYN unchanged and mark the flow bypass: it is bridged, not inspected.
    FailOpen,
    /// Answer the SYN with a RST.
    Refuse,
}

#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    pub max_flows: usize,
    /// IP MTU of the appliance's links.
    pub mtu: usize,
    pub leg: LegConfig,
    /// How long the server may take to accept before the flow is dropped (the client then sees
    /// its own SYN time out, as it would without the appliance).
    pub connect_timeout: Duration,
    /// A flow with no packet for this long is reset on both sides.
    pub idle_timeout: Duration,
    pub when_full: WhenFull,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_flows: 65_536,
            mtu: 1500,
            leg: LegConfig {
                rx_buffer: 64 * 1024,
                tx_buffer: 64 * 1024,
            },
            connect_timeout: Duration::from_secs(75),
            idle_timeout: Duration::from_secs(3600),
            when_full: WhenFull::FailOpen,
        }
    }
}

/// TLS interception for one worker (absent: every flow is spliced).
pub struct TlsWorker {
    pub policy: Arc<TlsPolicy>,
    /// The forger, the configurations and the sessions this worker's flows share.
    pub shared: WorkerTls,
}

/// What the XDP program recorded of a flow on its SYN: the policy and scope it matched, and the
/// scope's `SLOT_*` flags as they were then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowIds {
    pub policy_id: u32,
    pub scope_id: u32,
    pub flags: u32,
}

/// What an engine is connected to besides frames: TLS, the IPS, the flow log, and the XDP
/// program's policy and scope of each flow.
#[derive(Default)]
pub struct Hooks {
    pub tls: Option<TlsWorker>,
    pub ips: Option<WorkerIps>,
    pub log: Option<Sender<Record>>,
    /// `[log] pcap`: inspected flows' plaintext goes here too.
    pub pcap: Option<crate::log::pcap::PcapTap>,
    #[allow(clippy::type_complexity, reason = "a plain callback")]
    pub flow_ids: Option<Box<dyn FnMut(&FlowKey) -> FlowIds + Send>>,
    /// Takes the XDP program's record of a connection's handshake (read once, then removed).
    #[allow(clippy::type_complexity, reason = "a plain callback")]
    pub handshake: Option<Box<dyn FnMut(&FlowKey) -> Option<tls_inspect_common::Handshake> + Send>>,
}

/// RFC 9293's default IPv4 MSS: what a peer that sends none, or an absurd one, gets.
const DEFAULT_MSS: u16 = 536;

/// What the worker must mirror into the BPF flow map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapUpdate {
    /// The flow is gone: remove its entry, so the next connection on this tuple is classified
    /// afresh.
    Remove(FlowKey),
    /// The flow is passed (after its peek), or could not be taken (table full, fail-open): mark
    /// it bypass. With the entry the XDP program made (known from the handshake record), the
    /// write needs no read first.
    Bypass(FlowKey, Option<tls_inspect_common::FlowValue>),
}

/// What every flow's phase functions share: settings, counters, hooks, buffers.
struct Context {
    config: EngineConfig,
    stats: Counters,
    hooks: Hooks,
    /// The legs' socket buffers.
    buffers: BufferPool,
    scratch: Vec<u8>,
}

impl Context {
    /// Logs a flow's decrypted HTTP transactions.
    fn log_http(&self, flow: &FlowLog, txs: Vec<crate::inspect::HttpTx>) {
        if let Some(log) = &self.hooks.log {
            for tx in txs {
                let _ = log.try_send(Record::Http(Box::new(crate::log::HttpLog { flow: flow.clone(), tx })));
            }
        }
    }

    /// Counts and logs the rules that fired on a flow.
    fn log_alerts(&mut self, flow: &mut FlowLog, hits: Vec<Hit>) {
        flow.alerted |= hits.iter().any(|h| h.dlp.is_none());
        for hit in hits {
            self.stats.incr(Counter::IpsAlerts);
            if let Some(log) = &self.hooks.log {
                // A full log channel drops the record rather than stall the worker.
                let _ = log.try_send(Record::Alert(Box::new(AlertLog { flow: flow.clone(), hit })));
            }
        }
    }
}

pub struct Engine {
    cx: Context,
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    index: HashMap<FlowKey, usize>,
    /// Connections whose first flight the worker holds (`peek`).
    peeks: flow::Peeks,
    timers: TimerWheel,
    expired: Vec<usize>,
    updates: Vec<MapUpdate>,
    seed: u64,
    next_flow_id: u64,
    /// Reused per batch: (flow, side, IP packet) of each frame, and the packets alone.
    work: Vec<(usize, Side, usize, usize)>,
}

/// The worker that owns a flow: the same for both directions, on every worker.
pub fn owner(key: &FlowKey, workers: usize) -> usize {
    // FNV-1a over the key's bytes: stable across processes, unlike std's RandomState.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.client_addr.iter().chain(&key.server_addr).chain(&key.client_port).chain(&key.server_port) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// The flow a TCP frame belongs to, as seen from the inside, with its IP offset and flags.
pub fn flow_of(side: Side, frame: &[u8]) -> Option<(FlowKey, usize, u8)> {
    match parse_frame(frame).ok()? {
        Frame::Ipv4 {
            l3_offset,
            src,
            dst,
            l4: L4::Tcp { sport, dport, seg },
        } => {
            let key = match side {
                Side::Inside => FlowKey {
                    client_addr: src,
                    server_addr: dst,
                    client_port: sport,
                    server_port: dport,
                },
                Side::Outside => FlowKey {
                    client_addr: dst,
                    server_addr: src,
                    client_port: dport,
                    server_port: sport,
                },
            };
            Some((key, l3_offset, seg.flags))
        }
        _ => None,
    }
}

fn ms(t: Instant) -> i64 {
    t.total_millis()
}

/// The wheel's millisecond for deadline `t` (see [`timer::ceil_millis`]).
fn ms_ceil(t: Instant) -> i64 {
    timer::ceil_millis(t.total_micros())
}

impl Engine {
    pub fn new(config: EngineConfig, seed: u64, now: Instant) -> Self {
        Self {
            cx: Context {
                config,
                stats: Counters::default(),
                hooks: Hooks::default(),
                buffers: BufferPool::new(config.max_flows.saturating_mul(2), config.leg.rx_buffer, config.leg.tx_buffer),
                scratch: vec![0; 16 * 1024],
            },
            flows: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            peeks: flow::Peeks::default(),
            timers: TimerWheel::new(4096, ms(now)),
            expired: Vec::new(),
            updates: Vec::new(),
            seed: seed | 1,
            next_flow_id: seed & 0xffff_ffff,
            work: Vec::new(),
        }
    }

    pub fn with_hooks(mut self, hooks: Hooks) -> Self {
        self.cx.hooks = hooks;
        self
    }

    /// The relay's counters (the flows it holds and the certificates it forged included).
    pub fn stats(&self) -> Counters {
        let mut c = self.cx.stats;
        c.set(Counter::FlowsOpen, (self.index.len() + self.peeks.len()) as u64);
        c.set(Counter::CertsForged, self.cx.hooks.tls.as_ref().map_or(0, |t| t.shared.forger.signed));
        c
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty() && self.peeks.len() == 0
    }

    /// BPF flow map changes since the last call.
    pub fn take_updates(&mut self) -> std::vec::Drain<'_, MapUpdate> {
        self.updates.drain(..)
    }

    fn next_seed(&mut self) -> u64 {
        // xorshift64*
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// One frame from `side` that the XDP program steered to this worker's flows.
    #[cfg(test)]
    pub fn handle_frame<T: Transmit>(&mut self, side: Side, frame: &[u8], now: Instant, tx: &mut T) {
        self.handle_batch(&[(side, frame)], now, tx);
    }

    /// A batch of frames steered to this worker. Each flow's packets of the batch go into its
    /// legs together, and each touched flow moves on once: a bulk flow is acknowledged and
    /// relayed per batch, not per segment.
    pub fn handle_batch<T: Transmit>(&mut self, frames: &[(Side, &[u8])], now: Instant, tx: &mut T) {
        // (flow, side, frame index, IP offset): kept between batches, so no allocation per batch.
        let mut work = std::mem::take(&mut self.work);
        work.clear();
        for (i, &(side, frame)) in frames.iter().enumerate() {
            self.cx.stats.incr(Counter::FramesHandled);
            let Some((key, l3_offset, flags)) = flow_of(side, frame) else {
                self.cx.stats.incr(Counter::NotTcp);
                continue;
            };
            let Some(ip) = wire::ip_packet(frame, l3_offset) else {
                self.cx.stats.incr(Counter::NotTcp);
                continue;
            };
            let known = self.index.get(&key).copied();
            // Not while this batch still has frames for the old flow (its slot must not be
            // reused under them); the new connection's next segment finds it then.
            let renewed = match known {
                Some(id) if self.may_be_reconnection(id, ip) && !work.iter().any(|w| w.0 == id) => self.take_complete_record(&key).map(|r| (id, r)),
                _ => None,
            };
            if let Some((old, record)) = renewed {
                // A new connection on the addresses and ports of a flow both ends have closed:
                // the old flow is forgotten (the entry is the new connection's now) and the new
                // one peeked like any other.
                self.end_flow(old, false);
                self.cx.stats.incr(Counter::PortReused);
                if !self.peek_frame(key, Some(record), side, frame, l3_offset, now, tx) {
                    self.cx.stats.incr(Counter::UnknownFlow);
                    self.updates.push(MapUpdate::Remove(key));
                }
            } else if let Some(id) = known.filter(|&id| !(side == Side::Outside && self.closed_at_both_ends(id) && bare_ack(ip))) {
                work.push((id, side, i, l3_offset));
            } else if side == Side::Inside && flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                self.new_flow(key, frame, l3_offset, ip, now, tx);
            } else if self.peek_frame(key, None, side, frame, l3_offset, now, tx) {
                // Held, decided on, passed or adopted (`peek`).
            } else if side == Side::Outside && bare_ack(ip) {
                // The server's bare ACK on the addresses and ports of a flow that is over at
                // both ends (which the XDP program gives the worker between a client's new SYN
                // there and the server's SYN-ACK): the server's answer to that SYN (a
                // TIME-WAIT's challenge), on its way to the client as the bridge would carry it.
                self.cx.stats.incr(Counter::UnknownFlow);
                peek::forward(tx, side, frame);
                self.updates.push(MapUpdate::Remove(key));
            } else {
                // A flow steered by the XDP program that no worker knows (an earlier
                // dataplane, or one already closed here): forget it, so its frames are bridged
                // and its peers find out (with a RST) that the connection is gone.
                self.cx.stats.incr(Counter::UnknownFlow);
                self.updates.push(MapUpdate::Remove(key));
            }
        }
        // Group by flow and side, keeping each group's arrival order.
        work.sort_by_key(|&(id, side, i, _)| (id, side == Side::Outside, i));
        let mut packets: Vec<&[u8]> = Vec::with_capacity(work.len());
        for &(_, _, i, l3) in &work {
            packets.push(wire::ip_packet(frames[i].1, l3).unwrap_or(&[]));
        }
        let mut start = 0;
        while start < work.len() {
            let (id, side, _, _) = work[start];
            let mut end = start + 1;
            while end < work.len() && work[end].0 == id && work[end].1 == side {
                end += 1;
            }
            self.on_packets(id, side, &packets[start..end], now, tx);
            let next_is_same_flow = end < work.len() && work[end].0 == id;
            if !next_is_same_flow {
                self.advance(id, now, tx);
            }
            start = end;
        }
        self.work = work;
    }

    fn new_flow<T: Transmit>(&mut self, key: FlowKey, frame: &[u8], l3_offset: usize, ip: &[u8], now: Instant, tx: &mut T) {
        let Some((to_client, to_server)) = EthHeader::pair(frame, l3_offset) else {
            self.cx.stats.incr(Counter::NotTcp);
            return;
        };
        if self.index.len() >= self.cx.config.max_flows {
            self.cx.stats.incr(Counter::TableFull);
            match self.cx.config.when_full {
                WhenFull::FailOpen => {
                    // Forward the SYN as it came; its flow is bridged from now on.
                    tx.frame(Side::Outside, frame.len()).copy_from_slice(frame);
                    tx.commit(Side::Outside, frame.len());
                    self.updates.push(MapUpdate::Bypass(key, None));
                }
                WhenFull::Refuse => {
                    send_ip(tx, Side::Inside, &to_client, wire::rst_for_syn(ip).as_deref());
                    self.updates.push(MapUpdate::Remove(key));
                }
            }
            return;
        }
        // The server leg's segments fit the client's MSS, floored like the client leg's (a
        // client announcing a few bytes would otherwise leave the leg unable to send a SYN).
        let client_mss = wire::tcp_mss(ip).unwrap_or(DEFAULT_MSS).max(DEFAULT_MSS);
        let mtu = self.cx.config.mtu.min(usize::from(client_mss) + 40);
        let seed = self.next_seed();
        let client = (Ipv4Addr::from(key.client_addr), u16::from_be_bytes(key.client_port));
        let server = (Ipv4Addr::from(key.server_addr), u16::from_be_bytes(key.server_port));
        let Some(mut server_leg) = Leg::connect(
            client,
            server,
            to_server,
            mtu,
            &self.cx.config.leg,
            &self.cx.buffers,
            seed,
            now,
            self.cx.config.connect_timeout,
        ) else {
            self.cx.stats.incr(Counter::NotTcp);
            return;
        };
        server_leg.poll(now, &[], tx);
        let ids = self.cx.hooks.flow_ids.as_mut().map_or(FlowIds::default(), |f| f(&key));
        let mut log = self.flow_log(&key, ids.policy_id, ids.scope_id);
        // The SYN.
        log.pkts_toserver = 1;
        let mut flow = Flow::new(key, Phase::Connecting, server_leg, None, to_client, log, ids.flags, now);
        flow.held_syn = ip.to_vec();
        let id = self.insert_flow(key, flow);
        self.cx.stats.incr(Counter::FlowsTotal);
        self.schedule(id, now);
    }

    /// The log record a new flow starts with (its ID, addresses, policy and scope, start).
    fn flow_log(&mut self, key: &FlowKey, policy_id: u32, scope_id: u32) -> FlowLog {
        self.next_flow_id += 1;
        FlowLog {
            flow_id: self.next_flow_id,
            src_ip: Some(Ipv4Addr::from(key.client_addr)),
            src_port: u16::from_be_bytes(key.client_port),
            dest_ip: Some(Ipv4Addr::from(key.server_addr)),
            dest_port: u16::from_be_bytes(key.server_port),
            policy_id,
            scope_id,
            start: Some(SystemTime::now()),
            ..FlowLog::default()
        }
    }

    /// A new flow into the table; returns its ID.
    fn insert_flow(&mut self, key: FlowKey, flow: Flow) -> usize {
        let id = match self.free.pop() {
            Some(id) => {
                self.flows[id] = Some(flow);
                id
            }
            None => {
                self.flows.push(Some(flow));
                self.flows.len() - 1
            }
        };
        self.index.insert(key, id);
        id
    }

    fn on_packets<T: Transmit>(&mut self, id: usize, side: Side, ips: &[&[u8]], now: Instant, tx: &mut T) {
        let Some(flow) = self.flows.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        flow.last_activity = now;
        match side {
            Side::Inside => flow.log.pkts_toserver += ips.len() as u64,
            Side::Outside => flow.log.pkts_toclient += ips.len() as u64,
        }
        match side {
            Side::Outside => {
                if flow.phase == Phase::Connecting {
                    for ip in ips {
                        if let Some((syn, ack, rst)) = wire::tcp_flags(ip) {
                            if syn && ack {
                                flow.server_mss = wire::tcp_mss(ip);
                            }
                            flow.upstream_rst |= rst;
                        }
                    }
                }
                flow.server.ingest(now, ips, tx);
            }
            Side::Inside => {
                // While the server leg connects, the client's retransmitted SYNs wait with the
                // first one.
                if let Some(client) = flow.client.as_mut() {
                    flow.server.follow_tsval(ips);
                    client.ingest(now, ips, tx);
                }
            }
        }
    }

    /// Fires due timers (retransmissions, timeouts).
    pub fn poll_timers<T: Transmit>(&mut self, now: Instant, tx: &mut T) {
        self.poll_peeks(now, tx);
        let mut expired = std::mem::take(&mut self.expired);
        self.timers.expire(ms(now), &mut expired);
        for id in expired.drain(..) {
            let due = self
                .flows
                .get_mut(id)
                .and_then(Option::as_mut)
                .is_some_and(|f| f.armed.is_some_and(|at| at <= now));
            if !due {
                continue;
            }
            if let Some(flow) = self.flows[id].as_mut() {
                flow.armed = None;
                flow.server.poll(now, &[], tx);
                if let Some(c) = flow.client.as_mut() {
                    c.poll(now, &[], tx);
                }
            }
            self.advance(id, now, tx);
        }
        self.expired = expired;
    }

    /// Moves a flow's state machine on after any input or timer, one phase function at a time,
    /// and ends with a poll of both legs that sends what the input and the relay called for
    /// (`on_packets` only takes input in).
    fn advance<T: Transmit>(&mut self, id: usize, now: Instant, tx: &mut T) {
        let seed = self.next_seed();
        let Some(flow) = self.flows.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let cx = &mut self.cx;
        let mut done = false;
        if flow.phase == Phase::Connecting {
            done = cx.connecting(flow, seed, now, tx);
        }
        if flow.client.is_some() {
            cx.pass_resets_on(flow);
            if flow.phase == Phase::Handshaking && flow.client.as_mut().is_some_and(|c| c.state() == State::Established) {
                flow.phase = Phase::Deciding;
            }
            if flow.phase == Phase::Deciding {
                cx.deciding(flow);
            }
            if flow.phase == Phase::Inspected {
                cx.relay_inspected(flow);
            }
            if flow.phase == Phase::Spliced {
                cx.splice(flow);
            }
            done |= poll_legs(flow, now, tx);
        } else {
            // No client leg (yet): send what the server leg's input called for.
            flow.server.poll(now, &[], tx);
            flow.server.last_state = flow.server.state();
        }
        if !done && now - flow.last_activity >= cx.config.idle_timeout {
            cx.stats.incr(Counter::IdleTimeouts);
            flow.log.end_reason = crate::log::FlowEnd::Timeout;
            flow.server.socket().abort();
            flow.server.poll(now, &[], tx);
            if let Some(c) = flow.client.as_mut() {
                c.socket().abort();
                c.poll(now, &[], tx);
            }
            done = true;
        }
        if done {
            self.remove(id);
        } else {
            self.schedule(id, now);
        }
    }

    fn schedule(&mut self, id: usize, now: Instant) {
        let Some(flow) = self.flows.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let mut next = flow.last_activity + self.cx.config.idle_timeout;
        if let Some(at) = flow.server.poll_at(now) {
            next = next.min(at);
        }
        if let Some(at) = flow.client.as_mut().and_then(|c| c.poll_at(now)) {
            next = next.min(at);
        }
        if flow.armed.is_none_or(|armed| next < armed || armed <= now) {
            flow.armed = Some(next);
            self.timers.arm(id, ms_ceil(next));
        }
    }

    /// Both real ends closed the flow, and its server leg expects nothing more (closed, or in
    /// TIME-WAIT).
    fn closed_at_both_ends(&self, id: usize) -> bool {
        use smoltcp::socket::tcp::State;
        let Some(flow) = self.flows.get(id).and_then(Option::as_ref) else {
            return false;
        };
        matches!(flow.server.state(), State::Closed | State::TimeWait) && flow.client.as_ref().is_some_and(flow::peer_closed)
    }

    fn remove(&mut self, id: usize) {
        self.end_flow(id, true);
    }

    /// Forgets a flow and logs it; with `unmap`, its entry leaves the flow table too (not when a
    /// new connection on its addresses and ports holds the entry now).
    fn end_flow(&mut self, id: usize, unmap: bool) {
        if let Some(mut flow) = self.flows.get_mut(id).and_then(Option::take) {
            self.index.remove(&flow.key);
            if unmap {
                self.updates.push(MapUpdate::Remove(flow.key));
            }
            self.free.push(id);
            if let Some(icpt) = flow.tls.as_mut() {
                let txs = icpt.take_http(true);
                self.cx.log_http(&flow.log, txs);
                if icpt.info.client_resumed {
                    self.cx.stats.incr(Counter::TlsResumedClient);
                }
                if icpt.info.upstream_resumed {
                    self.cx.stats.incr(Counter::TlsResumedUpstream);
                }
            }
            if let Some(log) = &self.cx.hooks.log {
                if let Some(icpt) = &flow.tls {
                    let info = &icpt.info;
                    flow.log.alpn = info.alpn.clone();
                    flow.log.client_version = info.client_version.clone();
                    flow.log.client_cipher = info.client_cipher.clone();
                    flow.log.upstream_version = info.upstream_version.clone();
                    flow.log.upstream_cipher = info.upstream_cipher.clone();
                    flow.log.client_kx_group = info.client_kx_group.clone();
                    flow.log.upstream_kx_group = info.upstream_kx_group.clone();
                    flow.log.server_cert = info.server_cert.clone();
                    flow.log.resumed = (info.client_resumed, info.upstream_resumed);
                    // Graded once both legs are up.
                    if info.client_leg.version.is_some() && info.upstream_leg.version.is_some() {
                        let pq = info.offer.pq_we_speak;
                        flow.log.grades = Some((crate::tls::grade::grade(&info.client_leg, pq), crate::tls::grade::grade(&info.upstream_leg, pq)));
                        flow.log.weakened = crate::tls::grade::weakened(&info.offer, &info.client_leg, &info.upstream_leg);
                        if !flow.log.weakened.is_empty() {
                            self.cx.stats.incr(Counter::TlsWeakened);
                            tracing::error!(flow = flow.log.flow_id, weakened = ?flow.log.weakened, "the appliance gave a client less than it asked for");
                        }
                    }
                }
                if flow.log.decision == Outcome::Pending {
                    flow.log.decision = Outcome::Closed;
                    flow.log.reason = Reason::BeforeAnyData;
                }
                flow.log.end = Some(SystemTime::now());
                // A full log channel drops the record rather than stall the worker.
                let _ = log.try_send(Record::Flow(Box::new(std::mem::take(&mut flow.log))));
            }
        }
    }
}

impl Context {
    /// A flow in [`Phase::Connecting`]: once the server accepted, the client leg answers the held
    /// SYN; a refused connect is answered with the server's RST, a silent one with nothing.
    /// Returns true when the flow is over.
    fn connecting<T: Transmit>(&mut self, flow: &mut Flow, seed: u64, now: Instant, tx: &mut T) -> bool {
        match flow.server.state() {
            State::Established => {
                // The connect timeout is smoltcp's socket timeout, which would otherwise go on
                // aborting the connection whenever the server has been silent that long (an
                // idle keep-alive connection, reset after 75 s).
                flow.server.socket().set_timeout(None);
                let server = (Ipv4Addr::from(flow.key.server_addr), u16::from_be_bytes(flow.key.server_port));
                // The client leg's segments fit the server's MSS, never below RFC 9293's IPv4
                // default (a peer's MSS of a few bytes would make tiny segments, or none), never
                // above the device's MTU.
                let mss = flow.server_mss.unwrap_or(DEFAULT_MSS).max(DEFAULT_MSS);
                let mtu = self.config.mtu.min(usize::from(mss) + 40);
                match Leg::listen(server, flow.to_client, mtu, &self.config.leg, &self.buffers, seed, now) {
                    Some(mut client) => {
                        let syn = std::mem::take(&mut flow.held_syn);
                        client.poll(now, &[&syn], tx);
                        flow.client = Some(client);
                        flow.phase = Phase::Handshaking;
                    }
                    None => {
                        flow.server.socket().abort();
                        flow.phase = Phase::Closing;
                    }
                }
                false
            }
            State::Closed => {
                if flow.upstream_rst {
                    // A closed port looks closed: the client's SYN gets the RST.
                    send_ip(tx, Side::Inside, &flow.to_client, wire::rst_for_syn(&flow.held_syn).as_deref());
                    self.stats.incr(Counter::ConnectRefused);
                } else {
                    // No answer: the client's own SYN timeout decides, as without us.
                    self.stats.incr(Counter::ConnectTimeouts);
                }
                true
            }
            _ => false,
        }
    }

    /// A reset (or a timeout) on either leg is passed on to the other one.
    fn pass_resets_on(&mut self, flow: &mut Flow) {
        let unsent = flow.client_unsent();
        let Some(client) = flow.client.as_mut() else {
            return;
        };
        let client_reset = was_reset(client.last_state, client.state());
        let server_reset = was_reset(flow.server.last_state, flow.server.state());
        if !(client_reset || server_reset) || flow.phase == Phase::Closing || flow.reset_client_when_sent {
            return;
        }
        self.stats.incr(Counter::Resets);
        if client_reset {
            flow.server.socket().abort();
        }
        // What the server sent before its RST reaches the client first, then the RST (a server
        // that answers an upload early and resets, as nginx does with a 413, is understood by
        // the client only if the answer arrives).
        if server_reset && !client_reset && unsent && matches!(flow.phase, Phase::Inspected | Phase::Spliced) {
            flow.reset_client_when_sent = true;
        } else {
            if server_reset {
                client.socket().abort();
            }
            flow.phase = Phase::Closing;
        }
    }
}

/// Delivers what a closing flow still owes the client, closes or resets the client once it
/// has it all (when asked to), sends what the relay queued on both legs, and says whether both
/// legs are gone.
fn poll_legs<T: Transmit>(flow: &mut Flow, now: Instant, tx: &mut T) -> bool {
    let Some(client) = flow.client.as_mut() else {
        return false;
    };
    if flow.phase == Phase::Closing {
        // What `fail` left for the client (a block page behind TLS records the client has not
        // taken yet) follows as the client acknowledges.
        if let Some(icpt) = flow.tls.as_mut().filter(|t| !t.to_client.is_empty()) {
            let n = client.send_from(&icpt.to_client);
            icpt.to_client.drain(..n);
        }
    }
    let unsent_tls = flow.tls.as_ref().is_some_and(|t| !t.to_client.is_empty());
    if flow.fin_client_when_sent && !unsent_tls {
        client.socket().close();
        flow.fin_client_when_sent = false;
    }
    if flow.reset_client_when_sent && client.socket().send_queue() == 0 && !unsent_tls {
        client.socket().abort();
        flow.reset_client_when_sent = false;
    }
    // Send what the relay queued, and the RSTs of an abort.
    flow.server.poll(now, &[], tx);
    client.poll(now, &[], tx);
    flow.server.last_state = flow.server.state();
    client.last_state = client.state();
    let gone = |s: State| matches!(s, State::Closed | State::TimeWait);
    gone(client.state()) && gone(flow.server.state())
}

/// A TCP segment with no data and no SYN, FIN or RST.
fn bare_ack(ip: &[u8]) -> bool {
    wire::segment(ip).is_some_and(|s| s.payload.is_empty() && !s.syn && !s.fin && !s.rst)
}

fn send_ip<T: Transmit>(tx: &mut T, side: Side, eth: &EthHeader, ip: Option<&[u8]>) {
    if let Some(ip) = ip {
        let len = eth.len() + ip.len();
        let frame = tx.frame(side, len);
        frame[..eth.len()].copy_from_slice(eth.as_bytes());
        frame[eth.len()..].copy_from_slice(ip);
        tx.commit(side, len);
    }
}

/// `Duration` in whole seconds (config files speak seconds).
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests;
