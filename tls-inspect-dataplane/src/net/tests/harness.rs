//! The in-process test bed: a smoltcp client host and a smoltcp server host on Ethernet memory
//! devices, the engine between them where the XDP program would steer TCP (everything else, ARP
//! here, is bridged as XDP would), a simulated clock, and optional fault injection ([`Lossy`]) on
//! the engine's two legs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use super::super::*;

pub(super) const CLIENT: [u8; 4] = [198, 18, 0, 1];
pub(super) const SERVER: [u8; 4] = [198, 18, 0, 2];

/// The two hosts and the engine, stepped one simulated millisecond at a time.
pub(super) struct Net {
    now: i64,
    pub(super) client: Host,
    pub(super) server: Host,
    pub(super) engine: Engine,
    col: Collect,
    /// TCP from the server host is dropped (an unreachable server; ARP still passes).
    pub(super) server_silent: bool,
    /// Every frame the engine sent the client host (before any loss).
    pub(super) to_client: usize,
    /// Rewrite the MSS option of the client's SYN and of the server's SYN-ACK to these (peers
    /// with an absurd MSS).
    pub(super) mss: (Option<u16>, Option<u16>),
    /// The largest TCP payload the engine sent the client.
    pub(super) largest_to_client: usize,
    /// Drops and reorders the frames between the hosts and the engine, both ways.
    pub(super) loss: Option<Lossy>,
    /// The XDP program's peek-then-decide path (`Net::peeking`): handshakes bridged and
    /// recorded, flows steered from their first data segment, passed flows bridged.
    xdp: Option<XdpModel>,
}

/// What the XDP program does with a flow, as far as the harness models it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum XdpFlow {
    Handshake,
    Steer,
    Bypass,
}

/// A model of the XDP program's flow table and handshake records (the program itself is
/// tested in namespaces; this runs the engine's peek path in process).
struct XdpModel {
    flows: HashMap<FlowKey, XdpFlow>,
    records: Arc<Mutex<HashMap<FlowKey, tls_inspect_common::Handshake>>>,
    /// Frames the model bridged (never seen by the engine).
    bridged: usize,
}

impl XdpModel {
    /// Where a frame from `side` goes: true to the engine, false bridged.
    fn steer(&mut self, side: Side, frame: &[u8]) -> bool {
        use tls_inspect_common::{parse_frame, Frame, HANDSHAKE_SYN, HANDSHAKE_SYN_ACK, L4};
        let Some((key, _, _)) = flow_of(side, frame) else {
            return false;
        };
        let Ok(Frame::Ipv4 { l4: L4::Tcp { seg, .. }, .. }) = parse_frame(frame) else {
            return false;
        };
        let tls_inspect_common::TcpSegment { flags, seq, window, opts_offset, opts_len, payload_len } = seg;
        let opts = |out: &mut [u8; 40]| {
            let n = usize::from(opts_len).min(40);
            let at = usize::from(opts_offset);
            out[..n].copy_from_slice(&frame[at..at + n]);
            n as u8
        };
        let syn = flags & TCP_SYN != 0;
        let ack = flags & TCP_ACK != 0;
        let data = payload_len > 0 || flags & 0x01 != 0;
        let state = self.flows.get(&key).copied();
        let mut records = self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match (state, side) {
            (Some(XdpFlow::Steer), _) => true,
            (Some(XdpFlow::Bypass), Side::Outside) => false,
            (Some(XdpFlow::Bypass), Side::Inside) if !syn || ack => false,
            (_, Side::Inside) if syn && !ack => {
                if payload_len > 0 {
                    self.flows.insert(key, XdpFlow::Steer);
                    return true;
                }
                // A retransmitted SYN keeps the SYN-ACK recorded (as the program does).
                if state == Some(XdpFlow::Handshake) && records.get(&key).is_some_and(|r| r.client_isn == seq) {
                    return false;
                }
                let mut r = tls_inspect_common::Handshake {
                    policy_id: 0,
                    scope_id: 0,
                    flags: 0,
                    counter: 0,
                    seen: HANDSHAKE_SYN,
                    client_isn: seq,
                    server_isn: [0; 4],
                    client_window: window,
                    server_window: [0; 2],
                    client_opts_len: 0,
                    server_opts_len: 0,
                    _pad: [0; 2],
                    client_opts: [0; 40],
                    server_opts: [0; 40],
                };
                r.client_opts_len = opts(&mut r.client_opts);
                records.insert(key, r);
                self.flows.insert(key, XdpFlow::Handshake);
                false
            }
            (Some(XdpFlow::Handshake), _) if flags & 0x04 != 0 => {
                self.flows.remove(&key);
                records.remove(&key);
                false
            }
            (Some(XdpFlow::Handshake), Side::Outside) if syn && ack => {
                if let Some(r) = records.get_mut(&key) {
                    r.server_isn = seq;
                    r.server_window = window;
                    r.server_opts_len = opts(&mut r.server_opts);
                    r.seen |= HANDSHAKE_SYN_ACK;
                }
                false
            }
            (Some(XdpFlow::Handshake), _) if data => {
                self.flows.insert(key, XdpFlow::Steer);
                true
            }
            // A data segment from inside with no record: the worker resets it.
            (None, Side::Inside) if data => true,
            _ => false,
        }
    }
}

impl Net {
    pub(super) fn new(config: EngineConfig) -> Self {
        Self::with_hooks(config, Hooks::default())
    }

    /// An engine with TLS interception, the IPS or a flow log.
    pub(super) fn with_hooks(config: EngineConfig, hooks: Hooks) -> Self {
        let now = Instant::from_millis(0);
        Self {
            now: 0,
            client: Host::new(1, CLIENT, now),
            server: Host::new(2, SERVER, now),
            engine: Engine::new(config, 42, now).with_hooks(hooks),
            col: Collect::default(),
            server_silent: false,
            to_client: 0,
            mss: (None, None),
            largest_to_client: 0,
            loss: None,
            xdp: None,
        }
    }

    /// The engine behind the XDP program's peek-then-decide path: handshakes pass between the
    /// hosts and are recorded, the engine sees each flow from its first data segment on.
    pub(super) fn peeking(config: EngineConfig, mut hooks: Hooks) -> Self {
        let records: Arc<Mutex<HashMap<FlowKey, tls_inspect_common::Handshake>>> = Arc::default();
        let reader = Arc::clone(&records);
        hooks.handshake = Some(Box::new(move |k: &FlowKey| reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(k)));
        let mut net = Self::with_hooks(config, hooks);
        net.xdp = Some(XdpModel { flows: HashMap::new(), records, bridged: 0 });
        net
    }

    /// Frames the XDP model bridged between the hosts.
    pub(super) fn bridged(&self) -> usize {
        self.xdp.as_ref().map_or(0, |x| x.bridged)
    }

    /// Simulated milliseconds since the start.
    pub(super) fn now_ms(&self) -> i64 {
        self.now
    }

    pub(super) fn step(&mut self) {
        let now = Instant::from_millis(self.now);
        self.client.poll(now);
        self.server.poll(now);
        let mut up = Vec::new();
        while let Some(mut f) = self.client.dev.tx.pop_front() {
            if let Some(m) = self.mss.0 {
                set_mss(&mut f, m);
            }
            if flow_of(Side::Inside, &f).is_some() {
                up.push(f);
            } else {
                self.server.dev.rx.push_back(f);
            }
        }
        for f in self.impair(Path::ClientToEngine, up) {
            let bridge = self.xdp.as_mut().is_some_and(|x| !x.steer(Side::Inside, &f));
            if bridge {
                if let Some(x) = self.xdp.as_mut() {
                    x.bridged += 1;
                }
                self.server.dev.rx.push_back(f);
            } else {
                self.engine.handle_frame(Side::Inside, &f, now, &mut self.col);
            }
        }
        let mut down = Vec::new();
        while let Some(mut f) = self.server.dev.tx.pop_front() {
            if let Some(m) = self.mss.1 {
                set_mss(&mut f, m);
            }
            if flow_of(Side::Outside, &f).is_some() {
                if !self.server_silent {
                    down.push(f);
                }
            } else {
                self.client.dev.rx.push_back(f);
            }
        }
        for f in self.impair(Path::ServerToEngine, down) {
            let bridge = self.xdp.as_mut().is_some_and(|x| !x.steer(Side::Outside, &f));
            if bridge {
                if let Some(x) = self.xdp.as_mut() {
                    x.bridged += 1;
                }
                self.client.dev.rx.push_back(f);
            } else {
                self.engine.handle_frame(Side::Outside, &f, now, &mut self.col);
            }
        }
        self.engine.poll_timers(now, &mut self.col);
        if let Some(x) = self.xdp.as_mut() {
            for u in self.engine.take_updates() {
                match u {
                    MapUpdate::Bypass(k, _) => {
                        x.flows.insert(k, XdpFlow::Bypass);
                    }
                    MapUpdate::Remove(k) => {
                        x.flows.remove(&k);
                    }
                }
            }
        }
        let (mut to_client, mut to_server) = (Vec::new(), Vec::new());
        for (side, f) in self.col.out.drain(..) {
            match side {
                Side::Inside => {
                    self.to_client += 1;
                    self.largest_to_client = self.largest_to_client.max(tcp_payload(&f));
                    to_client.push(f);
                }
                Side::Outside => to_server.push(f),
            }
        }
        for f in self.impair(Path::EngineToClient, to_client) {
            self.client.dev.rx.push_back(f);
        }
        for f in self.impair(Path::EngineToServer, to_server) {
            self.server.dev.rx.push_back(f);
        }
        self.now += 1;
    }

    /// Steps until `done` or for `limit_ms`; false if `done` never held.
    pub(super) fn run_until(&mut self, limit_ms: i64, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let end = self.now + limit_ms;
        while self.now < end {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    pub(super) fn connect(&mut self, port: u16) {
        let cx = self.client.iface.context();
        let h = self.client.tcp;
        self.client
            .sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(Ipv4Address::from(SERVER)), port), 40000)
            .unwrap();
    }

    /// The frames of one path that arrive now: all of them without fault injection.
    fn impair(&mut self, path: Path, frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        match self.loss.as_mut() {
            Some(loss) => loss.carry(path, self.now, frames),
            None => frames,
        }
    }
}

/// Fault injection on the four paths between the hosts and the engine (both legs, both ways),
/// in the spirit of smoltcp's `FaultInjector`: a seeded share of the frames is dropped, another
/// share is held back a few milliseconds, so that frames sent after it overtake it.
pub(super) struct Lossy {
    rng: crate::testutil::Prng,
    drop_percent: u64,
    delay_percent: u64,
    max_delay_ms: u64,
    /// Frames held back on each path, with when they arrive.
    held: [Vec<(i64, Vec<u8>)>; 4],
    pub(super) dropped: usize,
    pub(super) delayed: usize,
}

/// A path through [`Lossy`].
#[derive(Clone, Copy)]
enum Path {
    ClientToEngine,
    ServerToEngine,
    EngineToClient,
    EngineToServer,
}

impl Lossy {
    pub(super) fn new(seed: u64, drop_percent: u64, delay_percent: u64, max_delay_ms: u64) -> Self {
        Self {
            rng: crate::testutil::Prng::new(seed),
            drop_percent,
            delay_percent,
            max_delay_ms: max_delay_ms.max(1),
            held: Default::default(),
            dropped: 0,
            delayed: 0,
        }
    }

    /// What arrives on `path` at `now`: the held frames now due, then those of `frames` that are
    /// neither dropped nor held.
    fn carry(&mut self, path: Path, now: i64, frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held[path as usize]).into_iter().partition(|(at, _)| *at <= now);
        self.held[path as usize] = kept;
        let mut out: Vec<Vec<u8>> = due.into_iter().map(|(_, f)| f).collect();
        for f in frames {
            let roll = self.rng.next_u64() % 100;
            if roll < self.drop_percent {
                self.dropped += 1;
            } else if roll < self.drop_percent + self.delay_percent {
                self.delayed += 1;
                let at = now + 1 + (self.rng.next_u64() % self.max_delay_ms) as i64;
                self.held[path as usize].push((at, f));
            } else {
                out.push(f);
            }
        }
        out
    }
}

/// A smoltcp host with one TCP socket (256 KiB each way).
pub(super) struct Host {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Queues,
    tcp: SocketHandle,
}

impl Host {
    fn new(mac: u8, ip: [u8; 4], now: Instant) -> Self {
        let mut dev = Queues::default();
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress([2, 0, 0, 0, 0, mac])));
        let mut iface = Interface::new(config, &mut dev, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(Ipv4Address::from(ip)), 24));
        });
        let mut sockets = SocketSet::new(vec![]);
        let tcp = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        ));
        Self { iface, sockets, dev, tcp }
    }

    pub(super) fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.tcp)
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }
}

/// An Ethernet memory device: frames in `rx`, frames out in `tx`.
#[derive(Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl smoltcp::phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// The engine's transmitter: every frame it commits, with its side.
#[derive(Default)]
struct Collect {
    buf: Vec<u8>,
    out: Vec<(Side, Vec<u8>)>,
}

impl Transmit for Collect {
    fn frame(&mut self, _side: Side, len: usize) -> &mut [u8] {
        self.buf.clear();
        self.buf.resize(len, 0);
        &mut self.buf
    }
    fn commit(&mut self, side: Side, len: usize) {
        self.out.push((side, self.buf[..len].to_vec()));
    }
}

/// Sets the MSS option of a TCP SYN in an Ethernet + IPv4 frame and fixes the checksum.
fn set_mss(frame: &mut [u8], mss: u16) {
    use smoltcp::wire::{Ipv4Packet, TcpPacket};
    let Ok(ip) = Ipv4Packet::new_checked(&frame[14..]) else { return };
    let (src, dst, hl, total) = (ip.src_addr(), ip.dst_addr(), usize::from(ip.header_len()), usize::from(ip.total_len()));
    let tcp = &mut frame[14 + hl..14 + total];
    let Ok(mut t) = TcpPacket::new_checked(&mut *tcp) else { return };
    if !t.syn() {
        return;
    }
    let off = usize::from(t.header_len());
    let mut i = 20;
    while i + 1 < off {
        match tcp[i] {
            0 => break,
            1 => i += 1,
            2 => {
                tcp[i + 2..i + 4].copy_from_slice(&mss.to_be_bytes());
                break;
            }
            _ => i += usize::from(tcp[i + 1]).max(2),
        }
    }
    t = TcpPacket::new_unchecked(&mut *tcp);
    t.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
}

/// The TCP payload length of an Ethernet + IPv4 frame.
fn tcp_payload(frame: &[u8]) -> usize {
    use smoltcp::wire::{Ipv4Packet, TcpPacket};
    let Ok(ip) = Ipv4Packet::new_checked(&frame[14..]) else { return 0 };
    let hl = usize::from(ip.header_len());
    TcpPacket::new_checked(&frame[14 + hl..14 + usize::from(ip.total_len())]).map_or(0, |t| t.payload().len())
}

