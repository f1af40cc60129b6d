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
use super::wire::EthHeader;
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
    /// The buffers `sockets` borrows: after it, so that it is dropped first.
    _buffers: Option<Lease>,
}

/// smoltcp's view of the wire for one poll: the IP packets this leg received in the batch, and
/// frames out through the worker's transmitter with this leg's Ethernet header in front.
struct LegDevice<'a, T: Transmit> {
    rx: &'a [&'a [u8]],
    tx: &'a mut T,
    side: Side,
    eth: &'a EthHeader,
    mtu: usize,
}

pub struct LegRx<'a>(&'a [u8]);

pub struct LegTx<'a, T: Transmit> {
    tx: &'a mut T,
    side: Side,
    eth: &'a EthHeader,
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
        Some((
            LegRx(packet),
            LegTx {
                tx: self.tx,
                side: self.side,
                eth: self.eth,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(LegTx {
            tx: self.tx,
            side: self.side,
            eth: self.eth,
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
        let mut device = LegDevice {
            rx: &[],
            tx: &mut NoTransmit,
            side,
            eth: &eth_copy,
            mtu,
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
            _buffers: lease,
        }
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
        };
        self.iface.poll(now, &mut device, &mut self.sockets);
    }

    /// Takes in the packets `rx` without sending what they call for (ACKs, window updates):
    /// the flow's next [`Leg::poll`], after the relay has queued its data, sends the ACK with that
    /// data instead of on its own. Only segments that need an immediate answer of their own (a
    /// RST to a stray segment, a challenge ACK) go out here.
    pub fn ingest<T: Transmit>(&mut self, now: Instant, rx: &[&[u8]], tx: &mut T) {
        let mut device = LegDevice {
            rx,
            tx,
            side: self.side,
            eth: &self.eth,
            mtu: self.mtu,
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
