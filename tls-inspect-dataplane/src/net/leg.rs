//! One leg of a flow: a smoltcp interface that owns exactly one TCP socket and exactly the one
//! address it impersonates (the server's, towards the client; the client's, towards the server).
//! One small interface per leg keeps smoltcp's per-packet walk over its sockets at one socket,
//! whatever the number of flows.

use std::net::Ipv4Addr;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::buffers::{BufferPool, Lease};
use super::wire::{build_segment, segment, EthHeader, SynOptions, Xlate};
use super::{Side, Transmit};

/// Socket buffer sizes and TCP behaviour of a leg.
#[derive(Debug, Clone, Copy)]
pub struct LegConfig {
    pub rx_buffer: usize,
    pub tx_buffer: usize,
}

pub struct Leg {
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    /// IP MTU of this leg: the path's, bounded by the peer's MSS.
    mtu: usize,
    side: Side,
    eth: EthHeader,
    /// The socket's state after the last poll (to tell a reset from an orderly close).
    pub last_state: tcp::State,
    /// An adopted leg's translation into the numbers its peer agreed on.
    xlate: Option<Xlate>,
    /// Where an adopted leg's received packets are translated (reused).
    scratch: Vec<u8>,
    /// The buffers `sockets` borrows: after it, so that it is dropped first.
    _buffers: Option<Lease>,
}

/// What the real ends agreed on in a handshake the XDP program bridged between them, as the
/// worker learned it (the SYN and SYN-ACK it recorded, the segments the worker held).
#[derive(Clone, Copy, Debug)]
pub struct Agreed {
    pub client: (Ipv4Addr, u16),
    pub server: (Ipv4Addr, u16),
    pub client_isn: u32,
    pub server_isn: u32,
    /// The SYN's and SYN-ACK's windows (never scaled).
    pub client_syn_window: u16,
    pub server_syn_window: u16,
    /// The client's window field in its latest segment (scaled as agreed).
    pub client_window: u16,
    pub client_opts: SynOptions,
    pub server_opts: SynOptions,
    /// The latest TSval each end sent.
    pub client_tsval: u32,
    pub server_tsval: u32,
    /// The MSS each leg is told its peer takes (floored like a SYN's).
    pub client_mss: u16,
    pub server_mss: u16,
}

impl Agreed {
    /// Window scaling, when both ends offered it: (the client's shift, the server's).
    fn scale(&self) -> Option<(u8, u8)> {
        Some((self.client_opts.wscale?, self.server_opts.wscale?))
    }

    fn sack(&self) -> bool {
        self.client_opts.sack && self.server_opts.sack
    }

    fn timestamps(&self) -> bool {
        self.client_opts.ts.is_some() && self.server_opts.ts.is_some()
    }
}

/// A transmitter that keeps the last frame a leg sent and sends nothing: the segments a leg
/// makes while it is shown a handshake that already happened.
#[derive(Default)]
struct Capture {
    frame: Vec<u8>,
}

impl Transmit for Capture {
    fn frame(&mut self, _side: Side, len: usize) -> &mut [u8] {
        self.frame.clear();
        self.frame.resize(len, 0);
        &mut self.frame
    }
    fn commit(&mut self, _side: Side, _len: usize) {}
}

/// The options of the captured segment (after the leg's Ethernet header).
fn captured(cap: &Capture, eth: usize) -> Option<(super::wire::SegmentInfo, SynOptions)> {
    let ip = cap.frame.get(eth..)?;
    let info = segment(ip)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    let doff = usize::from(*ip.get(ihl + 12)? >> 4) * 4;
    let opts = SynOptions::parse(ip.get(ihl + 20..ihl + doff)?);
    Some((info, opts))
}

/// smoltcp's view of the wire for one poll: the IP packets this leg received in the batch, and
/// frames out through the worker's transmitter with this leg's Ethernet header in front.
struct LegDevice<'a, T: Transmit> {
    rx: &'a [&'a [u8]],
    tx: &'a mut T,
    side: Side,
    eth: &'a EthHeader,
    mtu: usize,
    xlate: Option<Xlate>,
    scratch: &'a mut Vec<u8>,
}

pub struct LegRx<'a>(&'a [u8]);

pub struct LegTx<'a, T: Transmit> {
    tx: &'a mut T,
    side: Side,
    eth: &'a EthHeader,
    xlate: Option<Xlate>,
}

impl smoltcp::phy::RxToken for LegRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl<T: Transmit> smoltcp::phy::TxToken for LegTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let header = self.eth.len();
        let frame = self.tx.frame(self.side, header + len);
        frame[..header].copy_from_slice(self.eth.as_bytes());
        let r = f(&mut frame[header..]);
        if let Some(x) = self.xlate {
            x.outbound(&mut frame[header..]);
        }
        self.tx.commit(self.side, header + len);
        r
    }
}

impl<'a, T: Transmit> Device for LegDevice<'a, T> {
    type RxToken<'b>
        = LegRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = LegTx<'b, T>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (packet, rest) = self.rx.split_first()?;
        self.rx = rest;
        let packet: &[u8] = match self.xlate {
            Some(x) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(packet);
                x.inbound(self.scratch);
                self.scratch
            }
            None => packet,
        };
        Some((
            LegRx(packet),
            LegTx {
                tx: self.tx,
                side: self.side,
                eth: self.eth,
                xlate: self.xlate,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(LegTx {
            tx: self.tx,
            side: self.side,
            eth: self.eth,
            xlate: self.xlate,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// The transmitter used while an interface is created (it sends nothing).
struct NoTransmit;

impl Transmit for NoTransmit {
    fn frame(&mut self, _side: Side, _len: usize) -> &mut [u8] {
        &mut []
    }
    fn commit(&mut self, _side: Side, _len: usize) {}
}

/// Milliseconds of the wall clock: increases across flows and restarts.
fn tsval() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u32)
        .unwrap_or(0)
}

impl Leg {
    #[allow(clippy::too_many_arguments, reason = "private, called by connect and listen")]
    fn new(local: Ipv4Addr, side: Side, eth: EthHeader, mtu: usize, cfg: &LegConfig, pool: &BufferPool, seed: u64, now: Instant) -> Self {
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let eth_copy = eth;
        let mut scratch = Vec::new();
        let mut device = LegDevice {
            rx: &[],
            tx: &mut NoTransmit,
            side,
            eth: &eth_copy,
            mtu,
            xlate: None,
            scratch: &mut scratch,
        };
        let mut iface = Interface::new(config, &mut device, now);
        // A /0 prefix: every destination is on-link for this point-to-point leg.
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(local), 0));
        });
        let lease = pool.lease();
        let mut socket = match &lease {
            // SAFETY: the slices live in the lease, which this leg drops after its sockets.
            Some(lease) => {
                #[allow(unsafe_code, reason = "the pool's one unsafe call: the lease outlives the socket")]
                let (rx, tx) = unsafe { lease.buffers() };
                tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx))
            }
            None => tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; cfg.rx_buffer]),
                tcp::SocketBuffer::new(vec![0; cfg.tx_buffer]),
            ),
        };
        socket.set_ack_delay(None);
        socket.set_nagle_enabled(false);
        // Timestamps (RFC 7323), from one clock for every flow: a server that still holds an
        // earlier connection on the same addresses and ports in TIME-WAIT accepts the new SYN
        // only if its timestamp is newer (PAWS), as it would from the client's own kernel.
        socket.set_tsval_generator(Some(tsval));
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let handle = sockets.add(socket);
        Self {
            iface,
            sockets,
            handle,
            mtu,
            side,
            eth,
            last_state: tcp::State::Closed,
            xlate: None,
            scratch,
            _buffers: lease,
        }
    }

    /// The leg towards the server of a connection the real ends already opened: its socket
    /// connects, is shown the server's SYN-ACK as recorded, and from then on sends in the
    /// client's sequence space, with the client's timestamps and window scale. `None` if the
    /// socket does not take the handshake.
    #[allow(clippy::too_many_arguments, reason = "one constructor, called once")]
    pub fn adopt_server(a: &Agreed, eth: EthHeader, mtu: usize, cfg: &LegConfig, pool: &BufferPool, seed: u64, now: Instant) -> Option<Self> {
        let mut leg = Self::new(a.client.0, Side::Outside, eth, mtu, cfg, pool, seed, now);
        let cx = leg.iface.context();
        leg.sockets
            .get_mut::<tcp::Socket>(leg.handle)
            .connect(cx, (IpAddress::Ipv4(a.server.0), a.server.1), (IpAddress::Ipv4(a.client.0), a.client.1))
            .ok()?;
        let mut cap = Capture::default();
        leg.poll(now, &[], &mut cap);
        let (syn, syn_opts) = captured(&cap, eth.len())?;
        let scale = a.scale();
        let opts = SynOptions {
            mss: Some(a.server_mss),
            wscale: scale.map(|(_, server)| server),
            sack: a.sack(),
            ts: a.timestamps().then(|| (a.server_tsval, syn_opts.ts.map_or(0, |t| t.0))),
        };
        let syn_ack = build_segment(a.server, a.client, a.server_isn, Some(syn.seq.wrapping_add(1)), true, a.server_syn_window, &opts);
        leg.poll(now, &[&syn_ack], &mut cap);
        if leg.state() != tcp::State::Established {
            return None;
        }
        leg.xlate = Some(Xlate {
            seq: a.client_isn.wrapping_sub(syn.seq),
            ts: syn_opts.ts.map_or(0, |t| a.client_tsval.wrapping_sub(t.0)),
            ts_cap: a.timestamps().then_some(a.client_tsval),
            win_from: scale.and(syn_opts.wscale).unwrap_or(0),
            win_to: scale.map_or(0, |(client, _)| client),
        });
        leg.last_state = tcp::State::Established;
        Some(leg)
    }

    /// The leg towards the client of a connection the real ends already opened: its socket
    /// listens, is shown the client's SYN and ACK as recorded, and from then on sends in the
    /// server's sequence space, with the server's timestamps and window scale.
    #[allow(clippy::too_many_arguments, reason = "one constructor, called once")]
    pub fn adopt_client(a: &Agreed, eth: EthHeader, mtu: usize, cfg: &LegConfig, pool: &BufferPool, seed: u64, now: Instant) -> Option<Self> {
        let mut leg = Self::new(a.server.0, Side::Inside, eth, mtu, cfg, pool, seed, now);
        leg.socket().listen((IpAddress::Ipv4(a.server.0), a.server.1)).ok()?;
        let scale = a.scale();
        let opts = SynOptions {
            mss: Some(a.client_mss),
            wscale: scale.map(|(client, _)| client),
            sack: a.sack(),
            ts: a.timestamps().then_some((a.client_tsval, 0)),
        };
        let syn = build_segment(a.client, a.server, a.client_isn, None, true, a.client_syn_window, &opts);
        let mut cap = Capture::default();
        leg.poll(now, &[&syn], &mut cap);
        let (syn_ack, ours) = captured(&cap, eth.len())?;
        let ack_opts = SynOptions {
            ts: a.timestamps().then(|| (a.client_tsval, ours.ts.map_or(0, |t| t.0))),
            ..SynOptions::default()
        };
        let ack = build_segment(a.client, a.server, a.client_isn.wrapping_add(1), Some(syn_ack.seq.wrapping_add(1)), false, a.client_window, &ack_opts);
        leg.poll(now, &[&ack], &mut cap);
        if leg.state() != tcp::State::Established {
            return None;
        }
        leg.xlate = Some(Xlate {
            seq: a.server_isn.wrapping_sub(syn_ack.seq),
            ts: ours.ts.map_or(0, |t| a.server_tsval.wrapping_sub(t.0)),
            ts_cap: None,
            win_from: scale.and(ours.wscale).unwrap_or(0),
            win_to: scale.map_or(0, |(_, server)| server),
        });
        leg.last_state = tcp::State::Established;
        Some(leg)
    }

    /// The leg towards the server: connects from the client's address and port.
    #[allow(clippy::too_many_arguments, reason = "one constructor, called once")]
    pub fn connect(
        client: (Ipv4Addr, u16),
        server: (Ipv4Addr, u16),
        eth: EthHeader,
        mtu: usize,
        cfg: &LegConfig,
        pool: &BufferPool,
        seed: u64,
        now: Instant,
        connect_timeout: Duration,
    ) -> Option<Self> {
        let mut leg = Self::new(client.0, Side::Outside, eth, mtu, cfg, pool, seed, now);
        let cx = leg.iface.context();
        let socket = leg.sockets.get_mut::<tcp::Socket>(leg.handle);
        socket.set_timeout(Some(connect_timeout));
        socket
            .connect(cx, (IpAddress::Ipv4(server.0), server.1), (IpAddress::Ipv4(client.0), client.1))
            .ok()?;
        leg.last_state = tcp::State::SynSent;
        Some(leg)
    }

    /// The leg towards the client: listens as the server's address and port.
    #[allow(clippy::too_many_arguments, reason = "one constructor, called once")]
    pub fn listen(server: (Ipv4Addr, u16), eth: EthHeader, mtu: usize, cfg: &LegConfig, pool: &BufferPool, seed: u64, now: Instant) -> Option<Self> {
        let mut leg = Self::new(server.0, Side::Inside, eth, mtu, cfg, pool, seed, now);
        leg.socket().listen((IpAddress::Ipv4(server.0), server.1)).ok()?;
        leg.last_state = tcp::State::Listen;
        Some(leg)
    }

    pub fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }

    pub fn state(&self) -> tcp::State {
        self.sockets.get::<tcp::Socket>(self.handle).state()
    }

    /// Feeds the packets of a batch, in order, then sends whatever the socket has to send: one
    /// ACK can answer a whole batch of segments.
    pub fn poll<T: Transmit>(&mut self, now: Instant, rx: &[&[u8]], tx: &mut T) {
        let mut device = LegDevice {
            rx,
            tx,
            side: self.side,
            eth: &self.eth,
            mtu: self.mtu,
            xlate: self.xlate,
            scratch: &mut self.scratch,
        };
        self.iface.poll(now, &mut device, &mut self.sockets);
    }

    /// Takes in the packets `rx` without sending what they call for (ACKs, window updates):
    /// the flow's next [`Leg::poll`], after the relay has queued its data, sends the ACK with that
    /// data instead of on its own. Only segments that need an immediate answer of their own (a
    /// RST to a stray segment, a challenge ACK) go out here.
    /// Segments from the real end whose clock this (adopted) leg continues, seen on the other
    /// leg: the leg's TSval is kept from passing theirs (`Xlate::ts_cap`).
    pub fn follow_tsval(&mut self, segments: &[&[u8]]) {
        let Some(cap) = self.xlate.as_mut().and_then(|x| x.ts_cap.as_mut()) else {
            return;
        };
        for ts in segments.iter().filter_map(|ip| super::wire::tsval(ip)) {
            if (ts.wrapping_sub(*cap) as i32) > 0 {
                *cap = ts;
            }
        }
    }

    pub fn ingest<T: Transmit>(&mut self, now: Instant, rx: &[&[u8]], tx: &mut T) {
        let mut device = LegDevice {
            rx,
            tx,
            side: self.side,
            eth: &self.eth,
            mtu: self.mtu,
            xlate: self.xlate,
            scratch: &mut self.scratch,
        };
        self.iface.poll_maintenance(now);
        while !matches!(
            self.iface.poll_ingress_single(now, &mut device, &mut self.sockets),
            smoltcp::iface::PollIngressSingleResult::None
        ) {}
    }

    /// When this leg next needs a poll (retransmission, timeout, delayed work).
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        self.iface.poll_at(now, &self.sockets)
    }

    /// Takes received bytes into `buf`; returns how many.
    pub fn recv_into(&mut self, buf: &mut [u8]) -> usize {
        let socket = self.socket();
        if !socket.can_recv() {
            return 0;
        }
        socket.recv_slice(buf).unwrap_or(0)
    }

    /// Queues as much of `data` as the send buffer takes; returns how much.
    pub fn send_from(&mut self, data: &[u8]) -> usize {
        let socket = self.socket();
        if !socket.can_send() {
            return 0;
        }
        socket.send_slice(data).unwrap_or(0)
    }

    /// Both sockets of a relay: moves what `self` received into what `to` sends, as far as
    /// `to` has room (the rest stays in `self`'s buffer and shrinks the window it advertises).
    pub fn relay_to(&mut self, to: &mut Leg) -> usize {
        let to = to.sockets.get_mut::<tcp::Socket>(to.handle);
        let from = self.sockets.get_mut::<tcp::Socket>(self.handle);
        let mut moved = 0;
        while from.can_recv() && to.can_send() {
            let n = from
                .recv(|buf| {
                    let n = to.send_slice(buf).unwrap_or(0);
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            moved += n;
        }
        moved
    }
}
