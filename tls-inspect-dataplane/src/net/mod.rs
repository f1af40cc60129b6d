//! The transparent TCP relay, sans I/O: frames of steered flows in, frames out through a
//! [`Transmit`]. Each flow is terminated towards the client (the appliance answers as the server)
//! and re-originated towards the server (from the client's own address and port), upstream
//! first: the client gets its SYN-ACK only once the server has accepted.
//!
//! Per-packet cost does not grow with the number of flows: frames find their flow through a hash
//! map, each leg is a smoltcp interface with one socket, and timers sit in a hashed wheel.

mod buffers;
pub mod leg;
pub mod timer;
pub mod wire;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::Sender;

use smoltcp::socket::tcp::State;
use smoltcp::time::{Duration, Instant};
use tls_inspect_common::parse::{TCP_ACK, TCP_SYN};
use tls_inspect_common::{parse_frame, FlowKey, Frame, L4};

use crate::inspect::PassAll;
use crate::log::FlowLog;
use crate::tls::clienthello::{sniff, version_name, ClientHello, Sniff};
use crate::tls::forge::Forger;
use crate::tls::intercept::{Failure, Interceptor, TlsConfig};
use crate::tls::policy::{Decision, ExclusionReason, PassOrBlock, TlsPolicy};
use buffers::BufferPool;
use leg::{Leg, LegConfig};
use timer::TimerWheel;
use wire::EthHeader;

/// The appliance's two interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Towards the hosts (the clients).
    Inside,
    /// Towards the internet (the servers).
    Outside,
}

/// Where frames leave. `frame` hands out a buffer for the next frame of `side` (a scratch one
/// when no transmit buffer is free: that frame is then dropped, and TCP retransmits); `commit`
/// queues it.
pub trait Transmit {
    fn frame(&mut self, side: Side, len: usize) -> &mut [u8];
    fn commit(&mut self, side: Side, len: usize);
}

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

/// Counters of one engine (one worker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub frames: u64,
    pub flows_total: u64,
    pub flows_open: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    /// New flows refused or failed open because the flow table was full.
    pub table_full: u64,
    /// Servers that answered the SYN with RST (the client got a RST).
    pub connect_refused: u64,
    /// Servers that never answered (the flow was dropped silently).
    pub connect_timeouts: u64,
    /// Flows ended by a RST from either side (propagated to the other).
    pub resets: u64,
    pub idle_timeouts: u64,
    /// Frames of flows this engine does not know (their BPF entries are removed).
    pub unknown_flow: u64,
    /// Frames that were not TCP over IPv4, or not parsable.
    pub not_tcp: u64,
    /// Flows decided: decrypted and re-encrypted, passed unchanged, blocked, failed.
    pub tls_inspected: u64,
    pub tls_passed: u64,
    pub tls_blocked: u64,
    pub tls_failed: u64,
    /// IPS rules that fired.
    pub ips_alerts: u64,
}

/// The state machine of a flow. The decision (splice now; inspect with the TLS layer) is taken
/// in one place, [`Engine::decide`], once the client has sent its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The server leg is connecting; the client's SYN is held.
    Connecting,
    /// The server accepted; the client leg is completing its handshake.
    Handshaking,
    /// Both legs are up; waiting for the client's first bytes.
    Deciding,
    /// Bytes are relayed unchanged.
    Spliced,
    /// TLS is terminated on both legs; plaintext crosses the inspector.
    Inspected,
    /// One side reset or timed out; the flow is being torn down.
    Closing,
}

struct Flow {
    key: FlowKey,
    phase: Phase,
    server: Leg,
    client: Option<Leg>,
    /// The client's SYN (an IPv4 packet), replayed into the client leg once the server accepts.
    held_syn: Vec<u8>,
    to_client: EthHeader,
    server_mss: Option<u16>,
    upstream_rst: bool,
    /// The server sent bytes (or its FIN) before the client's first bytes.
    server_spoke_first: bool,
    /// The scope's `SLOT_*` flags, from the XDP program's flow entry.
    scope_flags: u32,
    /// Bytes the client's first flight must hold before it is read again (see `Sniff::NeedMore`).
    first_need: usize,
    fin_to_server: bool,
    fin_to_client: bool,
    /// A blocked non-HTTP flow: reset the client leg once it has acknowledged the closing alert.
    reset_client_when_sent: bool,
    last_activity: Instant,
    armed: Option<Instant>,
    tls: Option<Box<Interceptor>>,
    log: FlowLog,
}

/// TLS interception for one worker (absent: every flow is spliced).
pub struct TlsWorker {
    pub config: Arc<TlsConfig>,
    pub policy: Arc<TlsPolicy>,
    pub forger: Forger,
}

/// What the XDP program recorded of a flow on its SYN: the policy and scope it matched, and the
/// scope's `SLOT_*` flags as they were then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowIds {
    pub policy_id: u32,
    pub scope_id: u32,
    pub flags: u32,
}

/// What an engine is connected to besides frames: TLS, the flow log, and the XDP program's
/// policy and scope of each flow.
#[derive(Default)]
pub struct Hooks {
    pub tls: Option<TlsWorker>,
    pub ips: Option<IpsHook>,
    pub log: Option<Sender<crate::log::Record>>,
    #[allow(clippy::type_complexity, reason = "a plain callback")]
    pub flow_ids: Option<Box<dyn FnMut(&FlowKey) -> FlowIds + Send>>,
}

/// The IPS for one worker: the live rule set and this worker's Hyperscan scratch space.
pub struct IpsHook {
    pub shared: crate::control::rules::SharedRules,
    pub scratch: std::rc::Rc<std::cell::RefCell<hyperscan::Scratch>>,
    /// The databases the scratch space was last grown for.
    pub databases: std::cell::Cell<u64>,
}

impl IpsHook {
    /// The rule set a new flow starts with (scratch grown after a reload).
    pub fn current(&self) -> Arc<crate::inspect::ips::Ruleset> {
        let set = self.shared.load_full();
        if set.databases != self.databases.get() {
            if let Ok(mut s) = self.scratch.try_borrow_mut() {
                let old = std::mem::replace(&mut *s, match set.scratch() {
                    Ok(fresh) => fresh,
                    Err(_) => return set,
                });
                if let Ok(grown) = set.grow_scratch(Some(old)) {
                    *s = grown;
                }
                self.databases.set(set.databases);
            }
        }
        set
    }
}

/// RFC 9293's default IPv4 MSS: what a peer that sends none, or an absurd one, gets.
const DEFAULT_MSS: u16 = 536;

/// The first bytes of a client that are read before deciding.
const MAX_FIRST: usize = 96 * 1024;

/// What the decision point chose.
enum Decided {
    Splice(&'static str),
    Block(String),
    Inspect(ClientHello),
}

/// What the worker must mirror into the BPF flow map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapUpdate {
    /// The flow is gone: remove its entry, so the next connection on this tuple is classified
    /// afresh.
    Remove(FlowKey),
    /// The flow could not be taken (table full, fail-open): mark it bypass.
    Bypass(FlowKey),
}

pub struct Engine {
    config: EngineConfig,
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    index: HashMap<FlowKey, usize>,
    timers: TimerWheel,
    expired: Vec<usize>,
    updates: Vec<MapUpdate>,
    stats: EngineStats,
    seed: u64,
    hooks: Hooks,
    scratch: Vec<u8>,
    next_flow_id: u64,
    /// The legs' socket buffers.
    buffers: BufferPool,
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
            l4: L4::Tcp { sport, dport, flags },
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
            Some((key, l3_offset, flags))
        }
        _ => None,
    }
}

fn ms(t: Instant) -> i64 {
    t.total_millis()
}

impl Engine {
    pub fn new(config: EngineConfig, seed: u64, now: Instant) -> Self {
        Self {
            config,
            flows: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            timers: TimerWheel::new(4096, ms(now)),
            expired: Vec::new(),
            updates: Vec::new(),
            stats: EngineStats::default(),
            seed: seed | 1,
            hooks: Hooks::default(),
            scratch: vec![0; 16 * 1024],
            next_flow_id: seed & 0xffff_ffff,
            buffers: BufferPool::new(config.max_flows.saturating_mul(2), config.leg.rx_buffer, config.leg.tx_buffer),
        }
    }

    /// Certificates this engine's forger has signed.
    pub fn certs_forged(&self) -> u64 {
        self.hooks.tls.as_ref().map_or(0, |t| t.forger.signed)
    }

    pub fn with_hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            flows_open: self.index.len() as u64,
            ..self.stats
        }
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
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
        let mut work: Vec<(usize, Side, &[u8])> = Vec::with_capacity(frames.len());
        for &(side, frame) in frames {
            self.stats.frames += 1;
            let Some((key, l3_offset, flags)) = flow_of(side, frame) else {
                self.stats.not_tcp += 1;
                continue;
            };
            let Some(ip) = wire::ip_packet(frame, l3_offset) else {
                self.stats.not_tcp += 1;
                continue;
            };
            if let Some(&id) = self.index.get(&key) {
                work.push((id, side, ip));
            } else if side == Side::Inside && flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                self.new_flow(key, frame, l3_offset, ip, now, tx);
            } else {
                // A flow steered by the XDP program that no worker knows (an earlier
                // dataplane, or one already closed here): forget it, so its frames are bridged
                // and its peers find out (with a RST) that the connection is gone.
                self.stats.unknown_flow += 1;
                self.updates.push(MapUpdate::Remove(key));
            }
        }
        // Group by flow and side, keeping each group's arrival order.
        work.sort_by_key(|&(id, side, _)| (id, side == Side::Outside));
        let packets: Vec<&[u8]> = work.iter().map(|w| w.2).collect();
        let mut start = 0;
        while start < work.len() {
            let (id, side, _) = work[start];
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
    }

    fn new_flow<T: Transmit>(&mut self, key: FlowKey, frame: &[u8], l3_offset: usize, ip: &[u8], now: Instant, tx: &mut T) {
        let Some((to_client, to_server)) = EthHeader::pair(frame, l3_offset) else {
            self.stats.not_tcp += 1;
            return;
        };
        if self.index.len() >= self.config.max_flows {
            self.stats.table_full += 1;
            match self.config.when_full {
                WhenFull::FailOpen => {
                    // Forward the SYN as it came; its flow is bridged from now on.
                    tx.frame(Side::Outside, frame.len()).copy_from_slice(frame);
                    tx.commit(Side::Outside, frame.len());
                    self.updates.push(MapUpdate::Bypass(key));
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
        let mtu = self.config.mtu.min(usize::from(client_mss) + 40);
        let seed = self.next_seed();
        let client = (Ipv4Addr::from(key.client_addr), u16::from_be_bytes(key.client_port));
        let server = (Ipv4Addr::from(key.server_addr), u16::from_be_bytes(key.server_port));
        let Some(mut server_leg) = Leg::connect(
            client,
            server,
            to_server,
            mtu,
            &self.config.leg,
            &self.buffers,
            seed,
            now,
            self.config.connect_timeout,
        ) else {
            self.stats.not_tcp += 1;
            return;
        };
        server_leg.poll(now, &[], tx);
        let ids = self.hooks.flow_ids.as_mut().map_or(FlowIds::default(), |f| f(&key));
        let (policy_id, scope_id) = (ids.policy_id, ids.scope_id);
        self.next_flow_id += 1;
        let log = FlowLog {
            flow_id: self.next_flow_id,
            src_ip: Some(client.0),
            src_port: client.1,
            dest_ip: Some(server.0),
            dest_port: server.1,
            policy_id,
            scope_id,
            start: Some(SystemTime::now()),
            decision: "pending",
            ..FlowLog::default()
        };
        let flow = Flow {
            tls: None,
            log,
            key,
            phase: Phase::Connecting,
            server: server_leg,
            client: None,
            held_syn: ip.to_vec(),
            to_client,
            server_mss: None,
            upstream_rst: false,
            server_spoke_first: false,
            scope_flags: ids.flags,
            first_need: 0,
            fin_to_server: false,
            fin_to_client: false,
            reset_client_when_sent: false,
            last_activity: now,
            armed: None,
        };
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
        self.stats.flows_total += 1;
        self.schedule(id, now);
    }

    fn on_packets<T: Transmit>(&mut self, id: usize, side: Side, ips: &[&[u8]], now: Instant, tx: &mut T) {
        let Some(flow) = self.flows.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        flow.last_activity = now;
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
                    client.ingest(now, ips, tx);
                }
            }
        }
    }

    /// Fires due timers (retransmissions, timeouts).
    pub fn poll_timers<T: Transmit>(&mut self, now: Instant, tx: &mut T) {
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

    /// The decision point, taken once: when the client has sent its first bytes, or has stopped
    /// sending (FIN, or a full receive buffer) before they made a ClientHello. A server that spoke
    /// first (SMTP, FTP and SSH do) is relayed to the client meanwhile, and the flow is still
    /// decided on the client's first bytes: a ClientHello after a server's banner is a
    /// ClientHello. `None`: wait for more bytes.
    fn decide(tls: Option<&TlsWorker>, log: &mut FlowLog, first: &[u8], can_wait: bool, server_spoke: bool) -> Result<Decided, usize> {
        let hello = match sniff(first) {
            Sniff::NeedMore(need) if can_wait => return Err(need),
            // The client stopped before its first bytes made anything.
            Sniff::NeedMore(_) if first.is_empty() => {
                return Ok(Decided::Splice(if server_spoke { "server_first" } else { "not_tls" }));
            }
            Sniff::NeedMore(_) => return Ok(Self::malformed(tls, "ClientHello incomplete when the client stopped sending")),
            Sniff::Malformed(why) => return Ok(Self::malformed(tls, why)),
            Sniff::NotTls(_) => {
                let reason = if server_spoke { "server_first" } else { "not_tls" };
                return Ok(match tls.map(|t| t.policy.non_tls) {
                    Some(PassOrBlock::Block) => Decided::Block(reason.into()),
                    _ => Decided::Splice(reason),
                });
            }
            Sniff::Hello(h) => h,
        };
        log.sni = hello.sni.clone();
        log.ja4 = Some(hello.ja4());
        log.client_versions = hello.versions.iter().map(|v| version_name(*v).to_string()).collect();
        log.client_alpn = hello.alpn.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let Some(tls) = tls else {
            return Ok(Decided::Splice("inspection_off"));
        };
        let client = log.src_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let server = SocketAddrV4::new(log.dest_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), log.dest_port);
        Ok(match tls.policy.decide(&hello, client, server) {
            Decision::Inspect => Decided::Inspect(hello),
            Decision::Pass(reason) => Decided::Splice(reason),
            Decision::Block(reason) => Decided::Block(reason.into()),
        })
    }

    /// A first flight that began as a TLS handshake but is no ClientHello the appliance can
    /// read: blocked when TLS is inspected (passing it would let any client skip inspection by
    /// sending a hello our parser refuses and the server accepts), spliced when it is not.
    fn malformed(tls: Option<&TlsWorker>, why: &str) -> Decided {
        match tls {
            Some(_) => Decided::Block(format!("malformed_client_hello: {why}")),
            None => Decided::Splice("inspection_off"),
        }
    }

    /// Moves a flow's state machine on after any input or timer, and ends with a poll of both legs
    /// that sends what the input and the relay called for (`on_packets` only takes input in).
    fn advance<T: Transmit>(&mut self, id: usize, now: Instant, tx: &mut T) {
        let idle = self.config.idle_timeout;
        let leg_cfg = self.config.leg;
        let mtu = self.config.mtu;
        let seed = self.next_seed();
        let Some(flow) = self.flows.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let mut done = false;

        if flow.phase == Phase::Connecting {
            match flow.server.state() {
                State::Established => {
                    // The connect timeout is smoltcp's socket timeout, which would otherwise go
                    // on aborting the connection whenever the server has been silent that long
                    // (an idle keep-alive connection, reset after 75 s).
                    flow.server.socket().set_timeout(None);
                    let server = (Ipv4Addr::from(flow.key.server_addr), u16::from_be_bytes(flow.key.server_port));
                    // The client leg's segments fit the server's MSS, never below RFC 9293's
                    // IPv4 default (a peer's MSS of a few bytes would make tiny segments, or
                    // none), never above the device's MTU.
                    let mss = flow.server_mss.unwrap_or(DEFAULT_MSS).max(DEFAULT_MSS);
                    let mtu = mtu.min(usize::from(mss) + 40);
                    match Leg::listen(server, flow.to_client, mtu, &leg_cfg, &self.buffers, seed, now) {
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
                }
                State::Closed => {
                    if flow.upstream_rst {
                        // A closed port looks closed: the client's SYN gets the RST.
                        send_ip(tx, Side::Inside, &flow.to_client, wire::rst_for_syn(&flow.held_syn).as_deref());
                        self.stats.connect_refused += 1;
                    } else {
                        // No answer: the client's own SYN timeout decides, as without us.
                        self.stats.connect_timeouts += 1;
                    }
                    done = true;
                }
                _ => {}
            }
        }

        if let Some(client) = flow.client.as_mut() {
            // A reset (or a timeout) on either leg is passed on to the other one.
            let client_reset = was_reset(client.last_state, client.state());
            let server_reset = was_reset(flow.server.last_state, flow.server.state());
            if (client_reset || server_reset) && flow.phase != Phase::Closing && !flow.reset_client_when_sent {
                self.stats.resets += 1;
                if client_reset {
                    flow.server.socket().abort();
                }
                // What the server sent before its RST reaches the client first, then the RST (a
                // server that answers an upload early and resets, as nginx does with a 413, is
                // understood by the client only if the answer arrives).
                let unsent = client.socket().send_queue() > 0 || flow.tls.as_ref().is_some_and(|t| !t.to_client.is_empty());
                if server_reset && !client_reset && unsent && matches!(flow.phase, Phase::Inspected | Phase::Spliced) {
                    flow.reset_client_when_sent = true;
                } else {
                    if server_reset {
                        client.socket().abort();
                    }
                    flow.phase = Phase::Closing;
                }
            }

            if flow.phase == Phase::Handshaking && client.state() == State::Established {
                flow.phase = Phase::Deciding;
            }
            if flow.phase == Phase::Deciding {
                if !client.socket().can_recv() {
                    let s = flow.server.socket();
                    flow.server_spoke_first |= s.can_recv() || !s.may_recv();
                }
                let server_spoke = flow.server_spoke_first;
                if server_spoke && !client.socket().can_recv() {
                    // Relay what the server says until the client speaks (its banner, for
                    // SMTP or SSH); the client's FIN is a decision below, the server's is one now.
                    let down = flow.server.relay_to(client) as u64;
                    flow.log.bytes_toclient += down;
                    self.stats.bytes_to_client += down;
                }
                let server_done = finished_receiving(&mut flow.server);
                let socket = client.socket();
                // The whole hello must fit in the receive buffer, which it waits in.
                let limit = MAX_FIRST.min(socket.recv_capacity());
                let can_wait = socket.may_recv() && socket.recv_queue() < limit && !server_done;
                // The first flight is read again only once it can have changed the answer (the
                // record under way has arrived): never once per segment of a slow hello.
                if (socket.can_recv() && socket.recv_queue() >= flow.first_need) || !can_wait {
                    let first = socket.peek(limit).map(<[u8]>::to_vec).unwrap_or_default();
                    let mut decided = match Self::decide(self.hooks.tls.as_ref(), &mut flow.log, &first, can_wait, server_spoke) {
                        Ok(d) => Some(d),
                        Err(need) => {
                            flow.first_need = need;
                            None
                        }
                    };
                    // tls.sni rules see the ClientHello before any decryption: passed flows too.
                    if let (Some(d), Some(sni), Some(ips)) = (&decided, flow.log.sni.clone(), &self.hooks.ips) {
                        let mut f = crate::inspect::ips::FlowIps::new(ips.current(), u16::from_be_bytes(flow.key.server_port));
                        let verdict = ips
                            .scratch
                            .try_borrow_mut().map(|mut s| f.scan_sni(&sni, &mut s)).unwrap_or(crate::inspect::Verdict::Continue);
                        for hit in f.hits.drain(..) {
                            self.stats.ips_alerts += 1;
                            if let Some(log) = &self.hooks.log {
                                let _ = log.try_send(crate::log::Record::Alert(Box::new(crate::log::AlertLog { flow: flow.log.clone(), hit })));
                            }
                        }
                        if matches!(verdict, crate::inspect::Verdict::Block(_)) && !matches!(d, Decided::Block(_)) {
                            decided = Some(Decided::Block("ips_sni".into()));
                        }
                    }
                    match decided {
                        None => {}
                        Some(Decided::Splice(reason)) => {
                            flow.log.decision = "passed";
                            flow.log.reason = reason.to_string();
                            self.stats.tls_passed += 1;
                            flow.phase = Phase::Spliced;
                        }
                        Some(Decided::Block(reason)) => {
                            flow.log.decision = "blocked";
                            flow.log.reason = reason;
                            self.stats.tls_blocked += 1;
                            client.send_from(&Interceptor::alert(ALERT_ACCESS_DENIED));
                            client.socket().close();
                            flow.server.socket().abort();
                            flow.phase = Phase::Closing;
                        }
                        Some(Decided::Inspect(hello)) => {
                            let mut records = vec![0u8; hello.record_len];
                            let n = client.socket().recv_slice(&mut records).unwrap_or(0);
                            records.truncate(n);
                            let tls = self.hooks.tls.as_ref().map(|t| t.config.clone());
                            let server_ip = Ipv4Addr::from(flow.key.server_addr);
                            let client_ip = Ipv4Addr::from(flow.key.client_addr);
                            let set = self.hooks.ips.as_ref().map(|i| (i.current(), i.scratch.clone()));
                            let inspector: Box<dyn crate::inspect::Inspector> = match set {
                                Some((set, scratch)) if !set.whitelisted(client_ip, server_ip) => Box::new(
                                    crate::inspect::IpsInspector::new(set, scratch, u16::from_be_bytes(flow.key.server_port)),
                                ),
                                _ => Box::new(PassAll),
                            };
                            match tls.map(|c| Interceptor::new(&c, records, &hello, server_ip, inspector)) {
                                Some(Ok(icpt)) => {
                                    flow.log.decision = "inspected";
                                    if hello.ech {
                                        // Decided on the outer hello (GREASE or real ECH).
                                        flow.log.reason = "ech_outer".to_string();
                                    }
                                    flow.tls = Some(Box::new(icpt));
                                    flow.phase = Phase::Inspected;
                                    self.stats.tls_inspected += 1;
                                }
                                Some(Err(f)) => {
                                    fail(flow, f, self.hooks.tls.as_ref().map(|t| &*t.policy), self.hooks.log.as_ref(), &mut self.stats);
                                }
                                None => flow.phase = Phase::Spliced,
                            }
                        }
                    }
                }
            }
            if flow.phase == Phase::Inspected {
                if let (Some(icpt), Some(tls)) = (flow.tls.as_mut(), self.hooks.tls.as_mut()) {
                    let client = flow.client.as_mut();
                    if let Some(client) = client {
                        let relayed = relay_tls(&mut flow.server, client, icpt, &mut tls.forger, &mut self.scratch);
                        for hit in icpt.take_alerts() {
                            self.stats.ips_alerts += 1;
                            if let Some(log) = &self.hooks.log {
                                let _ = log.try_send(crate::log::Record::Alert(Box::new(crate::log::AlertLog { flow: flow.log.clone(), hit })));
                            }
                        }
                        match relayed {
                            Ok((up, down)) => {
                                flow.log.bytes_toserver += up;
                                flow.log.bytes_toclient += down;
                                self.stats.bytes_to_server += up;
                                self.stats.bytes_to_client += down;
                                if !flow.fin_to_server && icpt.to_server.is_empty() && (icpt.client_done() || finished_receiving(client)) {
                                    flow.server.socket().close();
                                    flow.fin_to_server = true;
                                }
                                if !flow.fin_to_client && icpt.to_client.is_empty() && (icpt.server_done() || finished_receiving(&mut flow.server)) {
                                    client.socket().close();
                                    flow.fin_to_client = true;
                                }
                            }
                            Err(f) => {
                                let policy = tls.policy.clone();
                                fail(flow, f, Some(&policy), self.hooks.log.as_ref(), &mut self.stats);
                            }
                        }
                    }
                }
            }
        }
        if let Some(client) = flow.client.as_mut() {
            if flow.phase == Phase::Spliced {
                let up = client.relay_to(&mut flow.server) as u64;
                let down = flow.server.relay_to(client) as u64;
                flow.log.bytes_toserver += up;
                flow.log.bytes_toclient += down;
                self.stats.bytes_to_server += up;
                self.stats.bytes_to_client += down;
                // Half-close: a FIN is passed on once everything before it has been.
                if !flow.fin_to_server && finished_receiving(client) {
                    flow.server.socket().close();
                    flow.fin_to_server = true;
                }
                if !flow.fin_to_client && finished_receiving(&mut flow.server) {
                    client.socket().close();
                    flow.fin_to_client = true;
                }
            }
            if flow.reset_client_when_sent && client.socket().send_queue() == 0 && flow.tls.as_ref().is_none_or(|t| t.to_client.is_empty()) {
                client.socket().abort();
                flow.reset_client_when_sent = false;
            }
            // Send what the relay queued, and the RSTs of an abort.
            flow.server.poll(now, &[], tx);
            client.poll(now, &[], tx);
            flow.server.last_state = flow.server.state();
            client.last_state = client.state();
            let gone = |s: State| matches!(s, State::Closed | State::TimeWait);
            if gone(client.state()) && gone(flow.server.state()) {
                done = true;
            }
        } else {
            // No client leg (yet): send what the server leg's input called for.
            flow.server.poll(now, &[], tx);
            flow.server.last_state = flow.server.state();
        }

        if !done && now - flow.last_activity >= idle {
            self.stats.idle_timeouts += 1;
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
        let mut next = flow.last_activity + self.config.idle_timeout;
        if let Some(at) = flow.server.poll_at(now) {
            next = next.min(at);
        }
        if let Some(at) = flow.client.as_mut().and_then(|c| c.poll_at(now)) {
            next = next.min(at);
        }
        if flow.armed.is_none_or(|armed| next < armed || armed <= now) {
            flow.armed = Some(next);
            self.timers.arm(id, ms(next));
        }
    }

    fn remove(&mut self, id: usize) {
        if let Some(mut flow) = self.flows.get_mut(id).and_then(Option::take) {
            self.index.remove(&flow.key);
            self.updates.push(MapUpdate::Remove(flow.key));
            self.free.push(id);
            if let Some(log) = &self.hooks.log {
                if let Some(icpt) = &flow.tls {
                    let info = &icpt.info;
                    flow.log.alpn = info.alpn.clone();
                    flow.log.client_version = info.client_version.clone();
                    flow.log.client_cipher = info.client_cipher.clone();
                    flow.log.upstream_version = info.upstream_version.clone();
                    flow.log.upstream_cipher = info.upstream_cipher.clone();
                    flow.log.client_kx_group = info.client_kx_group.clone();
                    flow.log.upstream_kx_group = info.upstream_kx_group.clone();
                }
                if flow.log.decision == "pending" {
                    flow.log.decision = "closed";
                    flow.log.reason = "before_any_data".into();
                }
                flow.log.end = Some(SystemTime::now());
                // A full log channel drops the record rather than stall the worker.
                let _ = log.try_send(crate::log::Record::Flow(Box::new(std::mem::take(&mut flow.log))));
            }
        }
    }
}

/// `access_denied`: what a client whose connection is blocked gets.
const ALERT_ACCESS_DENIED: u8 = 49;
/// `handshake_failure`.
const ALERT_HANDSHAKE_FAILURE: u8 = 40;

/// Moves TLS bytes between the legs and the interceptor, as far as each side has room. Returns
/// the bytes sent to the server and to the client.
fn relay_tls(server: &mut Leg, client: &mut Leg, icpt: &mut Interceptor, forger: &mut Forger, scratch: &mut [u8]) -> Result<(u64, u64), Failure> {
    let (mut up, mut down) = (0u64, 0u64);
    for _ in 0..64 {
        let mut moved = false;
        if icpt.wants_from_server() {
            let n = server.recv_into(scratch);
            if n > 0 {
                icpt.take_from_server(&scratch[..n], forger)?;
                moved = true;
            }
        }
        if icpt.wants_from_client() {
            let n = client.recv_into(scratch);
            if n > 0 {
                icpt.take_from_client(&scratch[..n], forger)?;
                moved = true;
            }
        }
        if !icpt.to_server.is_empty() {
            let n = server.send_from(&icpt.to_server);
            icpt.to_server.drain(..n);
            up += n as u64;
            moved |= n > 0;
        }
        if !icpt.to_client.is_empty() {
            let n = client.send_from(&icpt.to_client);
            icpt.to_client.drain(..n);
            down += n as u64;
            moved |= n > 0;
        }
        if !moved {
            break;
        }
    }
    Ok((up, down))
}

/// Ends an inspected flow that failed: says why in the log, tells the client what it should
/// see, and fills the exclusion cache: a valid server that asked for a client certificate is
/// excluded for every client (or blocked, when its policy says `client_auth = "block"`); a client
/// that refused the forged certificate is excluded alone. Every addition is logged.
fn fail(flow: &mut Flow, failure: Failure, policy: Option<&TlsPolicy>, log: Option<&Sender<crate::log::Record>>, stats: &mut EngineStats) {
    let server_ip = Ipv4Addr::from(flow.key.server_addr);
    let client_ip = Ipv4Addr::from(flow.key.client_addr);
    let sni = flow.log.sni.clone().unwrap_or_default();
    let auth_blocked = flow.scope_flags & tls_inspect_common::SLOT_CLIENT_AUTH_BLOCK != 0;
    let (decision, reason, alert, exclude) = match failure {
        Failure::UpstreamInvalid(why) => ("blocked", format!("upstream_invalid: {why}"), Some(ALERT_ACCESS_DENIED), None),
        Failure::ClientAuthRequested if auth_blocked => ("blocked", "client_auth_requested".to_string(), Some(ALERT_ACCESS_DENIED), None),
        Failure::ClientAuthRequested => {
            ("failed", "client_auth_requested".to_string(), Some(ALERT_HANDSHAKE_FAILURE), Some((None, ExclusionReason::ClientAuthRequested)))
        }
        Failure::ClientRejected(a) => {
            ("failed", format!("client_rejected_certificate: {a}"), None, Some((Some(client_ip), ExclusionReason::ClientRejected)))
        }
        Failure::Blocked(why) => ("blocked", why, None, None),
        Failure::Upstream(e) => ("failed", format!("upstream: {e}"), Some(ALERT_HANDSHAKE_FAILURE), None),
        Failure::Client(e) => ("failed", format!("client: {e}"), None, None),
    };
    if decision == "blocked" {
        stats.tls_blocked += 1;
    } else {
        stats.tls_failed += 1;
    }
    if let (Some((client, why)), Some(p)) = (exclude, policy) {
        let evicted = p.exclude(SocketAddrV4::new(server_ip, u16::from_be_bytes(flow.key.server_port)), &sni, client, why);
        if let Some(log) = log {
            let record = crate::log::ExclusionLog { flow: flow.log.clone(), client, reason: why, ttl: p.exclusion_ttl, evicted };
            let _ = log.try_send(crate::log::Record::Exclusion(Box::new(record)));
        }
    }
    flow.log.decision = decision;
    flow.log.reason = reason;
    // Once the client has a TLS session with us, a plaintext alert would be out of place.
    let alert = alert.filter(|_| !flow.tls.as_ref().is_some_and(|t| t.client_session_started()));
    let page_sent = matches!(flow.log.decision, "blocked") && flow.tls.as_ref().is_some_and(|t| !t.to_client.is_empty());
    if let Some(client) = flow.client.as_mut() {
        if page_sent {
            // A block page and the session's closing alert: deliver them, then FIN. Without a
            // page (not HTTP/1), the alert is delivered, then the client's leg is reset. The
            // server's leg is reset at once.
            if let Some(icpt) = flow.tls.as_mut() {
                let n = client.send_from(&icpt.to_client);
                icpt.to_client.drain(..n);
            }
            if flow.tls.as_ref().is_some_and(|t| t.block_page_sent) {
                client.socket().close();
            } else {
                // No page: the alert, then an RST once the client has it (see `process`).
                flow.reset_client_when_sent = true;
            }
            flow.server.socket().abort();
            flow.phase = Phase::Closing;
            return;
        }
        match alert {
            Some(a) => {
                // Nothing was sent to the client in TLS yet: a plain alert record, then FIN.
                client.send_from(&Interceptor::alert(a));
                client.socket().close();
            }
            None => client.socket().abort(),
        }
    }
    flow.server.socket().abort();
    flow.phase = Phase::Closing;
}

/// True when a leg went to Closed from a state that only a RST, an abort or a timeout leaves
/// that way (an orderly close passes through LAST-ACK or TIME-WAIT).
fn was_reset(before: State, after: State) -> bool {
    after == State::Closed
        && matches!(
            before,
            State::SynSent | State::SynReceived | State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait
        )
}

/// The peer has sent its FIN and everything before it has been relayed.
fn finished_receiving(leg: &mut Leg) -> bool {
    let state = leg.state();
    let socket = leg.socket();
    !socket.may_recv() && socket.recv_queue() == 0 && !matches!(state, State::Closed | State::Listen | State::SynSent | State::SynReceived)
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
