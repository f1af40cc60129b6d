//! One relayed flow: its two legs, the phase it is in, and what the log will say about it; and
//! a connection the worker peeks at before it decides (the logic is in `peek`).

use std::collections::{HashMap, VecDeque};

use smoltcp::socket::tcp::State;
use smoltcp::time::Instant;
use tls_inspect_common::{FlowKey, Handshake};

use super::leg::Leg;
use super::wire::EthHeader;
use crate::log::{FlowLog, Reason};
use crate::phy::Side;
use crate::tls::clienthello::ClientHello;
use crate::tls::intercept::Interceptor;

/// The state machine of a flow. The decision (splice now; inspect with the TLS layer) is taken
/// in one place (`decide`), once the client has sent its first bytes.
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

/// What the decision point chose.
pub(super) enum Decided {
    Splice(Reason),
    Block(Reason),
    Inspect(ClientHello),
}

/// A connection the worker peeks at.
pub(super) struct Peek {
    pub(super) record: Handshake,
    pub(super) to_client: EthHeader,
    pub(super) to_server: EthHeader,
    /// The first flight's frames, in arrival order.
    pub(super) held: Vec<(Side, Vec<u8>)>,
    pub(super) held_bytes: usize,
    /// The client's bytes from its first sequence number on, as far as they are contiguous.
    pub(super) first: Vec<u8>,
    /// A held client segment lies past `first` (a gap to fill).
    pub(super) gap: bool,
    pub(super) client_fin: bool,
    /// The client sent a segment again: it waits for an acknowledgement.
    pub(super) retransmitted: bool,
    pub(super) server_spoke: bool,
    pub(super) client_tsval: Option<u32>,
    pub(super) server_tsval: Option<u32>,
    pub(super) client_window: Option<u16>,
    pub(super) deadline: Instant,
    /// Passed: frames are forwarded unchanged until the deadline.
    pub(super) passed: bool,
    pub(super) log: FlowLog,
}

/// Peeked connections and their deadlines.
#[derive(Default)]
pub(super) struct Peeks {
    pub(super) map: HashMap<FlowKey, Peek>,
    pub(super) deadlines: PeekDeadlines,
}

/// The peeks' deadlines: one queue per kind, each set a fixed time ahead, so that a queue's order
/// of setting is its order of expiry (a hold of 100 ms never waits behind a linger of 2 s).
#[derive(Default)]
pub(super) struct PeekDeadlines {
    /// When a held first flight is adopted if it has not decided.
    holds: VecDeque<(Instant, FlowKey)>,
    /// When a passed connection is forgotten.
    lingers: VecDeque<(Instant, FlowKey)>,
}

impl PeekDeadlines {
    pub(super) fn hold(&mut self, at: Instant, key: FlowKey) {
        self.holds.push_back((at, key));
    }

    pub(super) fn linger(&mut self, at: Instant, key: FlowKey) {
        self.lingers.push_back((at, key));
    }

    /// The next peek whose deadline has come, and whether it is a passed one's linger.
    /// `current` gives a key's peek as it is now (its deadline, and whether it was passed):
    /// an entry set for an earlier peek on the same key, or of the other kind, is dropped.
    pub(super) fn pop_due(&mut self, now: Instant, current: impl Fn(&FlowKey) -> Option<(Instant, bool)>) -> Option<(FlowKey, bool)> {
        for (queue, passed) in [(&mut self.holds, false), (&mut self.lingers, true)] {
            while let Some(&(at, key)) = queue.front() {
                if at > now {
                    break;
                }
                queue.pop_front();
                if current(&key).is_some_and(|(deadline, p)| deadline <= now && p == passed) {
                    return Some((key, passed));
                }
            }
        }
        None
    }
}

impl Peeks {
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

pub(super) struct Flow {
    pub key: FlowKey,
    pub phase: Phase,
    pub server: Leg,
    pub client: Option<Leg>,
    /// The client's SYN (an IPv4 packet), replayed into the client leg once the server accepts.
    pub held_syn: Vec<u8>,
    pub to_client: EthHeader,
    pub server_mss: Option<u16>,
    pub upstream_rst: bool,
    /// The server sent bytes (or its FIN) before the client's first bytes.
    pub server_spoke_first: bool,
    /// The scope's `SLOT_*` flags, from the XDP program's flow entry.
    pub scope_flags: u32,
    /// Bytes the client's first flight must hold before it is read again (see `Sniff::NeedMore`).
    pub first_need: usize,
    pub fin_to_server: bool,
    pub fin_to_client: bool,
    /// A blocked non-HTTP flow, or a server that reset after answering: reset the client leg
    /// once it has everything queued for it.
    pub reset_client_when_sent: bool,
    /// A blocked HTTP/1 flow: FIN the client leg once the block page has all been queued.
    pub fin_client_when_sent: bool,
    pub last_activity: Instant,
    pub armed: Option<Instant>,
    pub tls: Option<Box<Interceptor>>,
    /// The flow's IPS state from the ClientHello on (its `tls.sni` scan), handed to the
    /// inspector when the flow is inspected.
    pub ips: Option<crate::inspect::ips::FlowIps>,
    pub log: FlowLog,
    /// The decision taken on the first flight while the worker peeked at it, applied once the
    /// adopted legs hold it.
    pub decided: Option<Decided>,
}

impl Flow {
    /// A flow in `phase` with these legs; everything else starts empty.
    #[allow(clippy::too_many_arguments, reason = "one constructor, for the relay's two ways in")]
    pub fn new(key: FlowKey, phase: Phase, server: Leg, client: Option<Leg>, to_client: EthHeader, log: FlowLog, scope_flags: u32, now: Instant) -> Self {
        Self {
            tls: None,
            ips: None,
            log,
            key,
            phase,
            server,
            client,
            held_syn: Vec::new(),
            to_client,
            server_mss: None,
            upstream_rst: false,
            server_spoke_first: false,
            scope_flags,
            first_need: 0,
            fin_to_server: false,
            fin_to_client: false,
            reset_client_when_sent: false,
            fin_client_when_sent: false,
            last_activity: now,
            armed: None,
            decided: None,
        }
    }

    /// Bytes queued for the client, on its leg or in the interceptor.
    pub fn client_unsent(&mut self) -> bool {
        self.client.as_mut().is_some_and(|c| c.socket().send_queue() > 0) || self.tls.as_ref().is_some_and(|t| !t.to_client.is_empty())
    }
}

/// True when a leg went to Closed from a state that only a RST, an abort or a timeout leaves
/// that way (an orderly close passes through LAST-ACK or TIME-WAIT).
pub(super) fn was_reset(before: State, after: State) -> bool {
    after == State::Closed
        && matches!(
            before,
            State::SynSent | State::SynReceived | State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait
        )
}

/// The peer has sent its FIN and everything before it has been relayed.
/// The real end behind `leg` has closed its side (the leg took its FIN), or the leg is gone.
pub(super) fn peer_closed(leg: &Leg) -> bool {
    matches!(leg.state(), State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed)
}

pub(super) fn finished_receiving(leg: &mut Leg) -> bool {
    let state = leg.state();
    let socket = leg.socket();
    !socket.may_recv() && socket.recv_queue() == 0 && !matches!(state, State::Closed | State::Listen | State::SynSent | State::SynReceived)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey { client_addr: [198, 18, 0, 1], server_addr: [198, 18, 0, 2], client_port: port.to_be_bytes(), server_port: 443u16.to_be_bytes() }
    }

    #[test]
    fn a_hold_is_due_on_time_behind_a_longer_linger() {
        let ms = Instant::from_millis;
        let mut d = PeekDeadlines::default();
        // A passed peek lingers until 2,000 ms; a held one set after it is due at 110 ms.
        d.linger(ms(2_000), key(1));
        d.hold(ms(110), key(2));
        let peeks: HashMap<FlowKey, (Instant, bool)> = [(key(1), (ms(2_000), true)), (key(2), (ms(110), false))].into();
        let current = |k: &FlowKey| peeks.get(k).copied();
        assert_eq!(d.pop_due(ms(100), current), None);
        assert_eq!(d.pop_due(ms(120), current), Some((key(2), false)));
        assert_eq!(d.pop_due(ms(120), current), None);
        assert_eq!(d.pop_due(ms(2_000), current), Some((key(1), true)));
    }

    #[test]
    fn an_earlier_peeks_entry_on_the_same_key_is_dropped() {
        let ms = Instant::from_millis;
        let mut d = PeekDeadlines::default();
        // The key's first peek was held (deadline 100 ms) and passed at 10 ms (linger to
        // 2,010 ms); its hold entry finds a passed peek and is dropped.
        d.hold(ms(100), key(1));
        d.linger(ms(2_010), key(1));
        let passed: HashMap<FlowKey, (Instant, bool)> = [(key(1), (ms(2_010), true))].into();
        assert_eq!(d.pop_due(ms(150), |k| passed.get(k).copied()), None);
        // A new connection on the key is peeked at 500 ms (held to 600 ms): the old linger
        // entry, due at 2,010 ms, finds a held peek and is dropped.
        d.hold(ms(600), key(1));
        let held: HashMap<FlowKey, (Instant, bool)> = [(key(1), (ms(600), false))].into();
        assert_eq!(d.pop_due(ms(650), |k| held.get(k).copied()), Some((key(1), false)));
        assert_eq!(d.pop_due(ms(2_100), |k| held.get(k).copied()), None);
        // Nothing is due for a key with no peek.
        d.hold(ms(700), key(3));
        assert_eq!(d.pop_due(ms(800), |_| None), None);
    }
}
