//! TCP reassembly for the replay: per connection, both directions, bytes in sequence order.
//!
//! - A direction's stream starts after its SYN's sequence number, or at the first segment seen
//!   with payload (a capture that starts mid-connection).
//! - Bytes already delivered are never delivered again: a retransmission, or the part of a
//!   segment that overlaps what came before, is dropped (the first copy wins; among segments
//!   waiting out of order, the one that starts first wins its bytes).
//! - Segments ahead of the next expected byte wait, at most [`MAX_PENDING`] bytes per direction
//!   and the replay's [`Budget`] in all. When a segment does not fit, the hole before the first
//!   waiting byte is skipped and counted as a gap, as Suricata does with a gap it gives up on.
//! - Which side is the client: the sender of a SYN, else the receiver of a SYN-ACK, else the side
//!   with the higher port (the server's is usually the well-known one), else the sender of the
//!   first segment.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::decode::{Segment, ACK, FIN, RST, SYN};
use crate::inspect::Direction;

/// Bytes waiting out of order per direction, at most.
pub const MAX_PENDING: usize = 1 << 20;

/// Bytes waiting out of order in all flows of a replay, at most.
#[derive(Debug)]
pub struct Budget {
    pub used: usize,
    pub cap: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self { used: 0, cap: 256 << 20 }
    }
}

/// One direction's byte stream.
#[derive(Debug, Default)]
pub struct Stream {
    /// The sequence number of the next byte expected, and its offset in the stream.
    next: Option<(u32, u64)>,
    /// Segments ahead of `next`, by offset.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    /// The SYN's sequence number, if one was seen.
    isn: Option<u32>,
    /// A FIN was seen.
    pub fin: bool,
    /// Holes skipped, and their bytes.
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Payload bytes of this direction's segments, retransmissions included (the flow record's
    /// `bytes_toserver`/`bytes_toclient` count what crossed the wire).
    pub wire_bytes: u64,
    /// Segments of this direction.
    pub packets: u64,
}

impl Stream {
    /// A SYN (or SYN-ACK): the stream's bytes start after its sequence number.
    fn syn(&mut self, seq: u32) {
        self.isn.get_or_insert(seq);
        if self.next.is_none() {
            self.next = Some((seq.wrapping_add(1), 0));
        }
    }

    /// A segment's payload: what is now in order is appended to `out`.
    fn segment(&mut self, seq: u32, mut payload: &[u8], budget: &mut Budget, out: &mut Vec<u8>) {
        if payload.is_empty() {
            return;
        }
        let (next_seq, next_off) = *self.next.get_or_insert((seq, 0));
        // Sequence numbers wrap: the distance is taken modulo 2^32, as TCP does.
        let mut off = next_off as i64 + i64::from(seq.wrapping_sub(next_seq) as i32);
        if off < 0 {
            // Starts before the stream does: only its tail can be new.
            let skip = off.unsigned_abs();
            if skip >= payload.len() as u64 {
                return;
            }
            payload = &payload[skip as usize..];
            off = 0;
        }
        self.place(off as u64, payload, budget, out);
    }

    fn offset(&self) -> u64 {
        self.next.map_or(0, |(_, o)| o)
    }

    fn advance_to(&mut self, to: u64) {
        if let Some((seq, off)) = self.next.as_mut() {
            if to > *off {
                *seq = seq.wrapping_add((to - *off) as u32);
                *off = to;
            }
        }
    }

    fn place(&mut self, off: u64, data: &[u8], budget: &mut Budget, out: &mut Vec<u8>) {
        loop {
            let next = self.offset();
            let end = off + data.len() as u64;
            if end <= next {
                return;
            }
            if off <= next {
                out.extend_from_slice(&data[(next - off) as usize..]);
                self.advance_to(end);
                self.drain(budget, out);
                return;
            }
            let have = self.pending.get(&off).map_or(0, Vec::len);
            if have >= data.len() {
                return;
            }
            let grow = data.len() - have;
            if self.pending_bytes + grow <= MAX_PENDING && budget.used + grow <= budget.cap {
                // The first copy's bytes win; a longer copy adds only its tail.
                self.pending.entry(off).or_default().extend_from_slice(&data[have..]);
                self.pending_bytes += grow;
                budget.used += grow;
                return;
            }
            // No room to wait: skip the hole before the first byte we have.
            let first = self.pending.keys().next().copied().map_or(off, |k| k.min(off));
            self.gaps += 1;
            self.gap_bytes += first - next;
            self.advance_to(first);
            self.drain(budget, out);
        }
    }

    /// Delivers the waiting segments that are now in order.
    fn drain(&mut self, budget: &mut Budget, out: &mut Vec<u8>) {
        loop {
            let next = self.offset();
            let Some(entry) = self.pending.first_entry() else {
                return;
            };
            if *entry.key() > next {
                return;
            }
            let (off, data) = entry.remove_entry();
            self.pending_bytes -= data.len();
            budget.used = budget.used.saturating_sub(data.len());
            let end = off + data.len() as u64;
            if end > next {
                out.extend_from_slice(&data[(next - off) as usize..]);
                self.advance_to(end);
            }
        }
    }

    /// The connection ended: what waits is delivered in order, its holes skipped.
    fn flush(&mut self, budget: &mut Budget, out: &mut Vec<u8>) {
        if let Some(&first) = self.pending.keys().next() {
            let next = self.offset();
            self.gaps += 1;
            self.gap_bytes += first.saturating_sub(next);
            self.advance_to(first);
            self.drain(budget, out);
            self.flush(budget, out);
        }
    }

    fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// A TCP connection's two streams.
#[derive(Debug)]
pub struct Connection {
    pub client: (Ipv4Addr, u16),
    pub server: (Ipv4Addr, u16),
    /// Client to server, server to client.
    pub streams: [Stream; 2],
    /// A RST was seen: the connection is over.
    pub reset: bool,
}

fn index(d: Direction) -> usize {
    match d {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

impl Connection {
    /// The connection its first segment opens; the module's rule picks the client.
    pub fn new(first: &Segment<'_>) -> Self {
        let syn = first.flags & SYN != 0;
        let ack = first.flags & ACK != 0;
        let sender_is_client = match (syn, ack) {
            (true, false) => true,
            (true, true) => false,
            _ if first.src.1 != first.dst.1 => first.src.1 > first.dst.1,
            _ => true,
        };
        let (client, server) = if sender_is_client { (first.src, first.dst) } else { (first.dst, first.src) };
        Self { client, server, streams: [Stream::default(), Stream::default()], reset: false }
    }

    /// The direction of a segment of this connection.
    pub fn direction(&self, s: &Segment<'_>) -> Direction {
        if s.src == self.client {
            Direction::ToServer
        } else {
            Direction::ToClient
        }
    }

    /// A segment: the bytes it puts in order, appended to `out` (at most one entry).
    pub fn segment(&mut self, s: &Segment<'_>, budget: &mut Budget, out: &mut Vec<(Direction, Vec<u8>)>) {
        let d = self.direction(s);
        let stream = &mut self.streams[index(d)];
        if s.flags & SYN != 0 {
            stream.syn(s.seq);
        }
        stream.wire_bytes += s.payload.len() as u64;
        stream.packets += 1;
        let mut bytes = Vec::new();
        // A SYN's payload (TCP Fast Open) starts after the SYN's own sequence number.
        let seq = if s.flags & SYN != 0 { s.seq.wrapping_add(1) } else { s.seq };
        stream.segment(seq, s.payload, budget, &mut bytes);
        if s.flags & FIN != 0 {
            stream.fin = true;
        }
        if s.flags & RST != 0 {
            self.reset = true;
        }
        if !bytes.is_empty() {
            out.push((d, bytes));
        }
    }

    /// A SYN that opens a new connection on this one's addresses and ports (the old one was
    /// not seen to close): a SYN from the client with another initial sequence number.
    pub fn reopened_by(&self, s: &Segment<'_>) -> bool {
        s.flags & (SYN | ACK) == SYN && self.streams[0].isn.is_some_and(|isn| isn != s.seq)
    }

    /// Both sides said FIN and nothing waits, or a RST came.
    pub fn closed(&self) -> bool {
        self.reset || self.streams.iter().all(|s| s.fin && !s.waiting())
    }

    /// The connection ends: what waits is delivered, each direction in order.
    pub fn flush(&mut self, budget: &mut Budget, out: &mut Vec<(Direction, Vec<u8>)>) {
        for d in [Direction::ToServer, Direction::ToClient] {
            let mut bytes = Vec::new();
            self.streams[index(d)].flush(budget, &mut bytes);
            if !bytes.is_empty() {
                out.push((d, bytes));
            }
        }
    }

    /// Holes skipped in both directions.
    pub fn gaps(&self) -> u64 {
        self.streams.iter().map(|s| s.gaps).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(segments: &[(u32, &[u8])]) -> (Vec<u8>, Stream) {
        let mut s = Stream::default();
        s.syn(999);
        let mut budget = Budget::default();
        let mut out = Vec::new();
        for (seq, data) in segments {
            s.segment(*seq, data, &mut budget, &mut out);
        }
        s.flush(&mut budget, &mut out);
        assert_eq!(budget.used, 0);
        (out, s)
    }

    #[test]
    fn in_order_out_of_order_and_retransmitted() {
        assert_eq!(run(&[(1000, b"abc"), (1003, b"def")]).0, b"abcdef");
        assert_eq!(run(&[(1003, b"def"), (1000, b"abc")]).0, b"abcdef");
        assert_eq!(run(&[(1000, b"abc"), (1000, b"abc"), (1003, b"def"), (1001, b"bc")]).0, b"abcdef");
        // Overlap: the first copy's bytes win.
        assert_eq!(run(&[(1000, b"abcd"), (1002, b"XXef")]).0, b"abcdef");
        assert_eq!(run(&[(1004, b"ef"), (1004, b"XXgh"), (1000, b"abcd")]).0, b"abcdefgh");
        // Before the stream's start: only the tail is new.
        assert_eq!(run(&[(998, b"zzabc")]).0, b"abc");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut s = Stream::default();
        s.syn(u32::MAX - 1);
        let (mut budget, mut out) = (Budget::default(), Vec::new());
        s.segment(1, b"cd", &mut budget, &mut out);
        s.segment(u32::MAX, b"ab", &mut budget, &mut out);
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn a_hole_that_never_fills_is_skipped_and_counted() {
        let (out, s) = run(&[(1000, b"ab"), (1010, b"kl")]);
        assert_eq!(out, b"abkl");
        assert_eq!((s.gaps, s.gap_bytes), (1, 8));
    }

    #[test]
    fn waiting_bytes_are_bounded() {
        let mut s = Stream::default();
        s.syn(0);
        let (mut budget, mut out) = (Budget::default(), Vec::new());
        let chunk = vec![b'x'; 64 * 1024];
        // A hole at the start, then more than MAX_PENDING behind it.
        let mut seq = 100u32;
        for _ in 0..(2 * MAX_PENDING / chunk.len()) {
            s.segment(seq, &chunk, &mut budget, &mut out);
            assert!(s.pending_bytes <= MAX_PENDING);
            seq += chunk.len() as u32;
        }
        assert_eq!(s.gaps, 1);
        assert_eq!(s.gap_bytes, 99);
        assert!(out.len() >= MAX_PENDING);
        // The global budget holds too.
        let mut small = Budget { used: 0, cap: 10 };
        let mut t = Stream::default();
        t.syn(0);
        let mut out = Vec::new();
        t.segment(50, b"0123456789abc", &mut small, &mut out);
        assert_eq!(out, b"0123456789abc");
        assert_eq!(small.used, 0);
    }
}
