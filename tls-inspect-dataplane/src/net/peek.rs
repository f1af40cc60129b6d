//! Peek, then decide. The XDP program bridges a scoped connection's handshake between the real
//! ends and records it; the worker sees the connection from its first data segment on. It holds
//! the segments of the first flight (nothing reaches the other end meanwhile) and decides on
//! them as it would on a relayed flow's first bytes:
//!
//! - **pass**: the held segments go on unchanged, the flow's map entry becomes bypass, and the
//!   XDP program bridges the rest; the worker forgets the flow (it forwards the few frames that
//!   were already on their way to it);
//! - **inspect or block**, or no answer yet (a hello in slow pieces, a server that speaks
//!   first, a first flight too large to hold): the worker adopts the connection. Each leg's
//!   socket is shown the handshake the real ends made (`Leg::adopt_*`) and then translates
//!   its numbers into theirs; the held segments are fed in, and the flow goes on as a relayed
//!   one, with the decision already taken.
//!
//! A connection with data but no complete record is reset at both ends: whatever evicted its
//! record, it does not pass uninspected.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use smoltcp::time::{Duration, Instant};
use tls_inspect_common::{FlowKey, Handshake, HANDSHAKE_SYN, HANDSHAKE_SYN_ACK};

use super::counters::Counter;
use super::decide::decide;
use super::flow::{peer_closed, Decided, Flow, Peek, Phase};
use super::leg::{Agreed, Leg};
use super::wire::{self, EthHeader, SegmentInfo, SynOptions};
use super::{send_ip, Engine, MapUpdate, WhenFull, DEFAULT_MSS};
use crate::inspect::ips::FlowIps;
use crate::log::{FlowEnd, FlowLog, Outcome, Record};
use crate::phy::{Side, Transmit};

/// How long a first flight that does not decide yet is held before the worker adopts the
/// connection (and acknowledges it, so that a client that waits for an ACK goes on).
const HOLD: Duration = Duration::from_millis(100);
/// How long a passed connection's frames that were already on their way to the worker are
/// forwarded before it forgets the connection.
const LINGER: Duration = Duration::from_millis(2000);
/// Frames of a first flight held at most (ten full segments are a usual initial window).
const MAX_HELD_FRAMES: usize = 64;

fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// `a` is later than `b` in sequence-number order.
fn later(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Engine {
    /// A frame of a flow this worker does not hold: a connection whose first data segment the
    /// XDP program steered (peeked at from now on), or one it holds no record of. Returns false
    /// when the frame is none of these (the caller treats it as unknown).
    ///
    /// `record`: the handshake record of a new connection on the addresses and ports of a flow
    /// that has ended, already taken (`take_complete_record`).
    #[allow(clippy::too_many_arguments, reason = "the frame, where it came from, and the record read for it")]
    pub(super) fn peek_frame<T: Transmit>(&mut self, key: FlowKey, record: Option<Handshake>, side: Side, frame: &[u8], l3_offset: usize, now: Instant, tx: &mut T) -> bool {
        if let Some(record) = record {
            self.peeks.map.remove(&key);
            if !self.start_peek(key, Some(record), side, frame, l3_offset, now, tx) {
                return false;
            }
            return self.hold(key, side, frame, l3_offset, now, tx);
        }
        match self.peeks.map.get(&key).map(|p| p.passed) {
            Some(false) => {}
            Some(true) => {
                // A new connection on the passed one's addresses and ports (its client reused
                // the port within the linger) has a handshake record of its own, made by the
                // XDP program at its SYN: it is peeked and decided afresh. Forwarding it as the
                // last connection's late frames would pass it uninspected, and leave its
                // steered entry behind for the tuple's next connection.
                let Some(record) = opens(frame, l3_offset).then(|| self.take_record(&key)).flatten() else {
                    // On its way before the flow map said bypass: forwarded as the XDP program
                    // would.
                    self.cx.stats.incr(Counter::BypassedFramesSeen);
                    forward(tx, side, frame);
                    return true;
                };
                self.peeks.map.remove(&key);
                self.cx.stats.incr(Counter::PortReused);
                if !self.start_peek(key, Some(record), side, frame, l3_offset, now, tx) {
                    return false;
                }
            }
            None => {
                // A bare segment leaves the record for the connection's first data segment.
                let record = if opens(frame, l3_offset) { self.take_record(&key) } else { None };
                if !self.start_peek(key, record, side, frame, l3_offset, now, tx) {
                    return false;
                }
            }
        }
        self.hold(key, side, frame, l3_offset, now, tx)
    }

    /// Whether `ip` may open a new connection on the addresses and ports of `id`'s flow: the
    /// flow has ended at both real ends (each sent its FIN, or a RST) and `ip` carries data,
    /// which no segment of the old connection can after both FINs. Cheap: legs' states first.
    pub(super) fn may_be_reconnection(&self, id: usize, ip: &[u8]) -> bool {
        let Some(flow) = self.flows.get(id).and_then(Option::as_ref) else {
            return false;
        };
        peer_closed(&flow.server) && flow.client.as_ref().is_some_and(peer_closed) && wire::segment(ip).is_some_and(|s| !s.payload.is_empty())
    }

    /// The record of a new connection's whole handshake on `key` (the XDP program classified
    /// the client's SYN afresh after both ends of the last connection closed), taken.
    pub(super) fn take_complete_record(&mut self, key: &FlowKey) -> Option<Handshake> {
        self.take_record(key).filter(|r| r.seen & (HANDSHAKE_SYN | HANDSHAKE_SYN_ACK) == HANDSHAKE_SYN | HANDSHAKE_SYN_ACK)
    }

    /// Holds a frame of a peeked connection and decides when the first flight allows.
    fn hold<T: Transmit>(&mut self, key: FlowKey, side: Side, frame: &[u8], l3_offset: usize, now: Instant, tx: &mut T) -> bool {
        let Some(ip) = wire::ip_packet(frame, l3_offset) else {
            return true;
        };
        let Some(seg) = wire::segment(ip) else {
            return true;
        };
        let Some(peek) = self.peeks.map.get_mut(&key) else {
            return true;
        };
        if seg.rst {
            // Either end gave up: the RST goes on, and there is nothing left to decide.
            forward(tx, side, frame);
            self.cx.stats.incr(Counter::Resets);
            if let Some(mut peek) = self.peeks.map.remove(&key) {
                peek.log.decision = Outcome::Closed;
                self.log_flow(&mut peek.log, FlowEnd::Closed);
            }
            self.updates.push(MapUpdate::Remove(key));
            return true;
        }
        peek.held_bytes += frame.len();
        peek.held.push((side, frame.to_vec()));
        match side {
            Side::Inside => {
                peek.log.pkts_toserver += 1;
                take_client_segment(peek, ip, &seg);
            }
            Side::Outside => {
                peek.log.pkts_toclient += 1;
                peek.server_spoke |= !seg.payload.is_empty() || seg.fin;
                if let Some(ts) = seg.tsval {
                    peek.server_tsval = Some(peek.server_tsval.map_or(ts, |t| if later(ts, t) { ts } else { t }));
                }
            }
        }
        self.try_decide(key, now, tx);
        true
    }

    /// Takes a connection at its first steered frame, from the record the XDP program kept of
    /// its handshake; one without a complete record is reset at both ends if it has data.
    #[allow(clippy::too_many_arguments, reason = "the frame, where it came from, and the record read for it")]
    fn start_peek<T: Transmit>(&mut self, key: FlowKey, record: Option<Handshake>, side: Side, frame: &[u8], l3_offset: usize, now: Instant, tx: &mut T) -> bool {
        let Some(ip) = wire::ip_packet(frame, l3_offset) else {
            return false;
        };
        let complete = record.is_some_and(|r| r.seen & (HANDSHAKE_SYN | HANDSHAKE_SYN_ACK) == HANDSHAKE_SYN | HANDSHAKE_SYN_ACK);
        let Some(record) = record.filter(|_| complete) else {
            let has_data = wire::segment(ip).is_some_and(|s| !s.payload.is_empty() || s.fin);
            if !has_data || self.cx.hooks.handshake.is_none() {
                return false;
            }
            // Data of a scoped connection the program has no (whole) record of: reset, logged
            // by its counter, never passed uninspected.
            self.cx.stats.incr(Counter::Unrecorded);
            reset_both(tx, frame, l3_offset, side);
            self.updates.push(MapUpdate::Remove(key));
            return true;
        };
        let Some((back, forward)) = EthHeader::pair(frame, l3_offset) else {
            return false;
        };
        let (to_client, to_server) = match side {
            Side::Inside => (back, forward),
            Side::Outside => (forward, back),
        };
        if self.index.len() + self.peeks.len() >= self.cx.config.max_flows {
            self.cx.stats.incr(Counter::TableFull);
            match self.cx.config.when_full {
                WhenFull::FailOpen => {
                    forward_frame_and_bypass(self, tx, key, side, frame);
                }
                WhenFull::Refuse => {
                    reset_both(tx, frame, l3_offset, side);
                    self.updates.push(MapUpdate::Remove(key));
                }
            }
            // Handled here, without a peek.
            return true;
        }
        let log = self.flow_log(&key, record.policy_id, record.scope_id);
        let deadline = now + HOLD;
        self.peeks.map.insert(
            key,
            Peek {
                record,
                to_client,
                to_server,
                held: Vec::new(),
                held_bytes: 0,
                first: Vec::new(),
                gap: false,
                client_fin: false,
                retransmitted: false,
                server_spoke: false,
                client_tsval: None,
                server_tsval: None,
                client_window: None,
                deadline,
                passed: false,
                log,
            },
        );
        self.peeks.deadlines.hold(deadline, key);
        self.cx.stats.incr(Counter::FlowsPeeked);
        true
    }

    /// The XDP program's record of `key`'s handshake, taken (read and removed).
    fn take_record(&mut self, key: &FlowKey) -> Option<Handshake> {
        self.cx.hooks.handshake.as_mut().and_then(|take| take(key))
    }

    /// Decides on a peeked first flight when it can: pass, adopt with the decision, or adopt
    /// without one (the relay decides as the rest arrives).
    fn try_decide<T: Transmit>(&mut self, key: FlowKey, now: Instant, tx: &mut T) {
        let Some(peek) = self.peeks.map.get_mut(&key) else {
            return;
        };
        let limit = super::decide::MAX_FIRST.min(self.cx.config.leg.rx_buffer);
        let full = peek.held.len() >= MAX_HELD_FRAMES || peek.held_bytes >= limit;
        if peek.server_spoke || full {
            self.adopt(key, None, now, tx);
            return;
        }
        if peek.first.is_empty() && !peek.client_fin {
            if peek.retransmitted || peek.deadline <= now {
                self.adopt(key, None, now, tx);
            }
            return;
        }
        let tls = self.cx.hooks.tls.as_ref();
        let decided = match decide(tls, &mut peek.log, &peek.first, !peek.client_fin, false) {
            Ok(d) => d,
            Err(_) => {
                if peek.retransmitted || peek.deadline <= now {
                    self.adopt(key, None, now, tx);
                }
                return;
            }
        };
        let mut log = std::mem::take(&mut peek.log);
        let (decided, ips) = self.cx.scan_client_hello(&key, &mut log, decided);
        if let Some(peek) = self.peeks.map.get_mut(&key) {
            peek.log = log;
        }
        match decided {
            // With inspection off the worker is a transparent relay (how its TCP side is
            // tested and measured): it keeps what it would otherwise hand back.
            Decided::Splice(reason) if self.cx.hooks.tls.is_some() => self.pass(key, reason, now, tx),
            decided => self.adopt(key, Some((decided, ips)), now, tx),
        }
    }

    /// Passes a peeked connection: its held frames go on unchanged and the XDP program bridges
    /// the rest.
    fn pass<T: Transmit>(&mut self, key: FlowKey, reason: crate::log::Reason, now: Instant, tx: &mut T) {
        let Some(peek) = self.peeks.map.get_mut(&key) else {
            return;
        };
        for (side, frame) in peek.held.drain(..) {
            forward(tx, side, &frame);
        }
        peek.held = Vec::new();
        peek.first = Vec::new();
        peek.held_bytes = 0;
        peek.passed = true;
        peek.deadline = now + LINGER;
        peek.log.decision = Outcome::Passed;
        peek.log.reason = reason;
        let mut log = std::mem::take(&mut peek.log);
        self.peeks.deadlines.linger(now + LINGER, key);
        let r = &peek.record;
        let entry = tls_inspect_common::FlowValue {
            policy_id: r.policy_id,
            scope_id: r.scope_id,
            counter: r.counter,
            action: tls_inspect_common::FLOW_BYPASS,
            flags: r.flags,
        };
        self.updates.push(MapUpdate::Bypass(key, Some(entry)));
        self.cx.stats.incr(Counter::TlsPassed);
        self.cx.stats.incr(Counter::FlowsBypassed);
        self.log_flow(&mut log, FlowEnd::Bypassed);
    }

    /// Takes a peeked connection over on both legs and feeds them the held frames; the flow
    /// goes on as a relayed one, with `decided` applied once the client leg holds the hello.
    fn adopt<T: Transmit>(&mut self, key: FlowKey, decided: Option<(Decided, Option<FlowIps>)>, now: Instant, tx: &mut T) {
        let Some(mut peek) = self.peeks.map.remove(&key) else {
            return;
        };
        let r = &peek.record;
        let client_opts = SynOptions::parse(&r.client_opts[..usize::from(r.client_opts_len).min(r.client_opts.len())]);
        let server_opts = SynOptions::parse(&r.server_opts[..usize::from(r.server_opts_len).min(r.server_opts.len())]);
        let client_syn_window = u16::from_be_bytes(r.client_window);
        // Floored as a SYN's MSS is for a relayed flow (a few bytes would make no segments).
        let client_mss = client_opts.mss.unwrap_or(DEFAULT_MSS).max(DEFAULT_MSS);
        let server_mss = server_opts.mss.unwrap_or(DEFAULT_MSS).max(DEFAULT_MSS);
        let agreed = Agreed {
            client: (Ipv4Addr::from(key.client_addr), u16::from_be_bytes(key.client_port)),
            server: (Ipv4Addr::from(key.server_addr), u16::from_be_bytes(key.server_port)),
            client_isn: be32(r.client_isn),
            server_isn: be32(r.server_isn),
            client_syn_window,
            server_syn_window: u16::from_be_bytes(r.server_window),
            client_window: peek.client_window.unwrap_or_else(|| client_syn_window >> client_opts.wscale.unwrap_or(0)),
            client_opts,
            server_opts,
            client_tsval: peek.client_tsval.or(client_opts.ts.map(|t| t.0)).unwrap_or(0),
            server_tsval: peek.server_tsval.or(server_opts.ts.map(|t| t.0)).unwrap_or(0),
            client_mss,
            server_mss,
        };
        let cfg = self.cx.config;
        let (seed_server, seed_client) = (self.next_seed(), self.next_seed());
        let server_leg = Leg::adopt_server(&agreed, peek.to_server, cfg.mtu.min(usize::from(client_mss) + 40), &cfg.leg, &self.cx.buffers, seed_server, now);
        let client_leg = Leg::adopt_client(&agreed, peek.to_client, cfg.mtu.min(usize::from(server_mss) + 40), &cfg.leg, &self.cx.buffers, seed_client, now);
        let (Some(server_leg), Some(client_leg)) = (server_leg, client_leg) else {
            // The legs would not take what the ends agreed: end it at both, never pass it.
            self.cx.stats.incr(Counter::AdoptFailed);
            if let Some((side, frame)) = peek.held.first() {
                if let Some(l3) = l3_offset_of(frame) {
                    reset_both(tx, frame, l3, *side);
                }
            }
            self.updates.push(MapUpdate::Remove(key));
            peek.log.decision = Outcome::Blocked;
            self.log_flow(&mut peek.log, FlowEnd::Closed);
            return;
        };
        let (decided, ips) = match decided {
            Some((d, ips)) => (Some(d), ips),
            None => (None, None),
        };
        let log = std::mem::take(&mut peek.log);
        let mut flow = Flow::new(key, Phase::Deciding, server_leg, Some(client_leg), peek.to_client, log, peek.record.flags, now);
        flow.ips = ips;
        flow.server_mss = Some(server_mss);
        flow.decided = decided;
        let id = self.insert_flow(key, flow);
        self.cx.stats.incr(Counter::FlowsTotal);
        self.cx.stats.incr(Counter::FlowsAdopted);
        // The held segments, in order, into the legs they were meant for.
        if let Some(flow) = self.flows.get_mut(id).and_then(Option::as_mut) {
            for (side, frame) in &peek.held {
                let Some(ip) = l3_offset_of(frame).and_then(|l3| wire::ip_packet(frame, l3)) else {
                    continue;
                };
                match side {
                    Side::Inside => {
                        if let Some(c) = flow.client.as_mut() {
                            flow.server.follow_tsval(&[ip]);
                            c.ingest(now, &[ip], tx);
                        }
                    }
                    Side::Outside => flow.server.ingest(now, &[ip], tx),
                }
            }
        }
        self.advance(id, now, tx);
    }

    /// Peeks whose hold ran out are adopted; passed ones are forgotten once they linger no more.
    pub(super) fn poll_peeks<T: Transmit>(&mut self, now: Instant, tx: &mut T) {
        loop {
            let map = &self.peeks.map;
            let Some((key, passed)) = self.peeks.deadlines.pop_due(now, |k| map.get(k).map(|p| (p.deadline, p.passed))) else {
                break;
            };
            if passed {
                self.peeks.map.remove(&key);
            } else {
                self.adopt(key, None, now, tx);
            }
        }
    }

    /// The flow's record, now (the flow is gone from this worker, or handed to XDP).
    fn log_flow(&self, log: &mut FlowLog, end: FlowEnd) {
        if let Some(sink) = &self.cx.hooks.log {
            log.end_reason = end;
            log.end = Some(SystemTime::now());
            if log.decision == Outcome::Pending {
                log.decision = Outcome::Closed;
                log.reason = crate::log::Reason::BeforeAnyData;
            }
            let _ = sink.try_send(Record::Flow(Box::new(std::mem::take(log))));
        }
    }
}

/// A client segment into the peek's first bytes (contiguous from the first sequence number).
fn take_client_segment(peek: &mut Peek, ip: &[u8], seg: &SegmentInfo) {
    if let Some(ts) = seg.tsval {
        peek.client_tsval = Some(peek.client_tsval.map_or(ts, |t| if later(ts, t) { ts } else { t }));
    }
    peek.client_window = Some(seg.window);
    peek.client_fin |= seg.fin;
    let data = ip.get(seg.payload.clone()).unwrap_or(&[]);
    if data.is_empty() {
        return;
    }
    let base = be32(peek.record.client_isn).wrapping_add(1);
    let offset = seg.seq.wrapping_sub(base) as usize;
    if offset > u32::MAX as usize / 2 {
        // Before the first byte: nothing of the first flight.
        peek.retransmitted = true;
        return;
    }
    if offset + data.len() <= peek.first.len() {
        peek.retransmitted = true;
        return;
    }
    if offset > peek.first.len() {
        peek.gap = true;
        return;
    }
    peek.first.extend_from_slice(&data[peek.first.len() - offset..]);
    if peek.gap {
        fill_gaps(peek, base);
    }
}

/// Appends held client segments that now follow on, until none does.
fn fill_gaps(peek: &mut Peek, base: u32) {
    loop {
        let mut grew = false;
        let mut beyond = false;
        for (side, frame) in &peek.held {
            if *side != Side::Inside {
                continue;
            }
            let Some(ip) = l3_offset_of(frame).and_then(|l3| wire::ip_packet(frame, l3)) else {
                continue;
            };
            let Some(seg) = wire::segment(ip) else {
                continue;
            };
            let data = ip.get(seg.payload.clone()).unwrap_or(&[]);
            let offset = seg.seq.wrapping_sub(base) as usize;
            if offset > u32::MAX as usize / 2 || offset + data.len() <= peek.first.len() {
                continue;
            }
            if offset > peek.first.len() {
                beyond = true;
                continue;
            }
            let from = peek.first.len() - offset;
            peek.first.extend_from_slice(&data[from..]);
            grew = true;
        }
        if !grew {
            peek.gap = beyond;
            return;
        }
    }
}

/// Where a held frame's IPv4 header starts (after its Ethernet header and VLAN tag).
fn l3_offset_of(frame: &[u8]) -> Option<usize> {
    match tls_inspect_common::parse_frame(frame).ok()? {
        tls_inspect_common::Frame::Ipv4 { l3_offset, .. } => Some(l3_offset),
        _ => None,
    }
}

/// Whether the segment in `frame` can be a connection's first steered one (and take its
/// handshake record): only one with data or a FIN.
fn opens(frame: &[u8], l3_offset: usize) -> bool {
    wire::ip_packet(frame, l3_offset).and_then(wire::segment).is_some_and(|s| !s.payload.is_empty() || s.fin)
}

/// A frame out of the other interface, unchanged (as the XDP bridge would send it).
pub(super) fn forward<T: Transmit>(tx: &mut T, from: Side, frame: &[u8]) {
    let to = match from {
        Side::Inside => Side::Outside,
        Side::Outside => Side::Inside,
    };
    tx.frame(to, frame.len()).copy_from_slice(frame);
    tx.commit(to, frame.len());
}

/// A connection the worker cannot take: this frame goes on and the XDP program bridges the rest.
fn forward_frame_and_bypass<T: Transmit>(engine: &mut Engine, tx: &mut T, key: FlowKey, side: Side, frame: &[u8]) {
    forward(tx, side, frame);
    engine.updates.push(MapUpdate::Bypass(key, None));
}

/// Resets the connection of `frame` (sent from `side`) at both ends.
fn reset_both<T: Transmit>(tx: &mut T, frame: &[u8], l3_offset: usize, side: Side) {
    let Some(ip) = wire::ip_packet(frame, l3_offset) else {
        return;
    };
    let Some((to_sender, to_receiver)) = wire::rst_both(ip) else {
        return;
    };
    let Some((back, forward)) = EthHeader::pair(frame, l3_offset) else {
        return;
    };
    let (sender_side, receiver_side) = match side {
        Side::Inside => (Side::Inside, Side::Outside),
        Side::Outside => (Side::Outside, Side::Inside),
    };
    send_ip(tx, sender_side, &back, Some(&to_sender));
    send_ip(tx, receiver_side, &forward, Some(&to_receiver));
}
