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

/// Peeked connections and their deadlines (in the order they were set, which is their order).
#[derive(Default)]
pub(super) struct Peeks {
    pub(super) map: HashMap<FlowKey, Peek>,
    pub(super) deadlines: VecDeque<(Instant, FlowKey)>,
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
pub(super) fn finished_receiving(leg: &mut Leg) -> bool {
    let state = leg.state();
    let socket = leg.socket();
    !socket.may_recv() && socket.recv_queue() == 0 && !matches!(state, State::Closed | State::Listen | State::SynSent | State::SynReceived)
}
