//! In-process tests, no root: a smoltcp client host and a smoltcp server host on Ethernet memory
//! devices, with the engine between them where the XDP program would steer TCP (everything
//! else, ARP here, is bridged by the harness as XDP would).

use std::collections::VecDeque;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

use super::*;

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

struct Host {
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

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.tcp)
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }
}

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

const CLIENT: [u8; 4] = [198, 18, 0, 1];
const SERVER: [u8; 4] = [198, 18, 0, 2];

struct Net {
    now: i64,
    client: Host,
    server: Host,
    engine: Engine,
    col: Collect,
    /// TCP from the server host is dropped (an unreachable server; ARP still passes).
    server_silent: bool,
    /// Every frame the client host received.
    to_client: usize,
    /// Rewrite the MSS option of the client's SYN and of the server's SYN-ACK to these (peers
    /// with an absurd MSS).
    mss: (Option<u16>, Option<u16>),
    /// The largest TCP payload the engine sent the client.
    largest_to_client: usize,
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

impl Net {
    fn new(config: EngineConfig) -> Self {
        let now = Instant::from_millis(0);
        Self {
            now: 0,
            client: Host::new(1, CLIENT, now),
            server: Host::new(2, SERVER, now),
            engine: Engine::new(config, 42, now),
            col: Collect::default(),
            server_silent: false,
            to_client: 0,
            mss: (None, None),
            largest_to_client: 0,
        }
    }

    fn step(&mut self) {
        let now = Instant::from_millis(self.now);
        self.client.poll(now);
        self.server.poll(now);
        while let Some(mut f) = self.client.dev.tx.pop_front() {
            if let Some(m) = self.mss.0 {
                set_mss(&mut f, m);
            }
            if flow_of(Side::Inside, &f).is_some() {
                self.engine.handle_frame(Side::Inside, &f, now, &mut self.col);
            } else {
                self.server.dev.rx.push_back(f);
            }
        }
        while let Some(mut f) = self.server.dev.tx.pop_front() {
            if let Some(m) = self.mss.1 {
                set_mss(&mut f, m);
            }
            if flow_of(Side::Outside, &f).is_some() {
                if self.server_silent {
                    continue;
                }
                self.engine.handle_frame(Side::Outside, &f, now, &mut self.col);
            } else {
                self.client.dev.rx.push_back(f);
            }
        }
        self.engine.poll_timers(now, &mut self.col);
        for (side, f) in self.col.out.drain(..) {
            match side {
                Side::Inside => {
                    self.to_client += 1;
                    self.largest_to_client = self.largest_to_client.max(tcp_payload(&f));
                    self.client.dev.rx.push_back(f);
                }
                Side::Outside => self.server.dev.rx.push_back(f),
            }
        }
        self.now += 1;
    }

    fn run_until(&mut self, limit_ms: i64, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let end = self.now + limit_ms;
        while self.now < end {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    fn connect(&mut self, port: u16) {
        let cx = self.client.iface.context();
        let h = self.client.tcp;
        self.client
            .sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, (IpAddress::Ipv4(Ipv4Address::from(SERVER)), port), 40000)
            .unwrap();
    }
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

#[test]
fn relays_both_ways_with_half_close_and_cleans_up() {
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.client.socket().state() == tcp::State::Established));
    assert_eq!(net.server.socket().state(), tcp::State::Established);

    let up = pattern(300_000, 1);
    let down = pattern(200_000, 7);
    let (mut sent, mut got) = (0, Vec::new());
    // Client -> server, then the client half-closes.
    assert!(net.run_until(20_000, |n| {
        if sent < up.len() {
            sent += n.client.socket().send_slice(&up[sent..]).unwrap_or(0);
            if sent == up.len() {
                n.client.socket().close();
            }
        }
        while n.server.socket().can_recv() {
            n.server.socket().recv(|b| (b.len(), got.extend_from_slice(b))).unwrap();
        }
        got.len() == up.len() && !n.server.socket().may_recv()
    }), "server got {} of {} bytes and the FIN", got.len(), up.len());
    assert!(got == up, "bytes to the server differ");

    // The server still sends after the client's FIN, then closes.
    let (mut sent, mut got) = (0, Vec::new());
    assert!(net.run_until(20_000, |n| {
        if sent < down.len() {
            sent += n.server.socket().send_slice(&down[sent..]).unwrap_or(0);
            if sent == down.len() {
                n.server.socket().close();
            }
        }
        while n.client.socket().can_recv() {
            n.client.socket().recv(|b| (b.len(), got.extend_from_slice(b))).unwrap();
        }
        got.len() == down.len() && !n.client.socket().may_recv()
    }));
    assert!(got == down, "bytes to the client differ");
    assert!(net.run_until(5_000, |n| n.engine.is_empty()), "the flow is removed after both FINs");
    let stats = net.engine.stats();
    assert_eq!((stats.bytes_to_server, stats.bytes_to_client), (300_000, 200_000));
    assert_eq!(stats.flows_total, 1);
    let updates: Vec<_> = net.engine.take_updates().collect();
    assert!(matches!(updates.as_slice(), [MapUpdate::Remove(k)] if k.server_port == 443u16.to_be_bytes()));
}

#[test]
fn a_server_that_speaks_first_is_relayed() {
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(25).unwrap();
    net.connect(25);
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Established));
    net.server.socket().send_slice(b"220 mail.test ESMTP\r\n").unwrap();
    let mut got = Vec::new();
    assert!(net.run_until(2000, |n| {
        while n.client.socket().can_recv() {
            n.client.socket().recv(|b| (b.len(), got.extend_from_slice(b))).unwrap();
        }
        got.ends_with(b"\r\n")
    }), "the banner reaches a client that has sent nothing");
    assert_eq!(got, b"220 mail.test ESMTP\r\n");
}

/// Moves 20 kB each way; returns the largest TCP payload the engine sent the client.
fn transfer_with_mss(mss: (Option<u16>, Option<u16>)) -> usize {
    let mut net = Net::new(EngineConfig::default());
    net.mss = mss;
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    let up_ok = net.run_until(2000, |n| n.client.socket().state() == tcp::State::Established
        && n.server.socket().state() == tcp::State::Established);
    assert!(up_ok, "{mss:?}: client {:?} server {:?} stats {:?}", net.client.socket().state(), net.server.socket().state(), net.engine.stats());
    let (up, down) = (pattern(20_000, 1), pattern(20_000, 2));
    let (mut sent_up, mut sent_down, mut got_up, mut got_down) = (0, 0, Vec::new(), Vec::new());
    assert!(net.run_until(20_000, |n| {
        sent_up += n.client.socket().send_slice(&up[sent_up..]).unwrap_or(0);
        sent_down += n.server.socket().send_slice(&down[sent_down..]).unwrap_or(0);
        while n.server.socket().can_recv() {
            n.server.socket().recv(|b| (b.len(), got_up.extend_from_slice(b))).unwrap();
        }
        while n.client.socket().can_recv() {
            n.client.socket().recv(|b| (b.len(), got_down.extend_from_slice(b))).unwrap();
        }
        got_up.len() == up.len() && got_down.len() == down.len()
    }), "{mss:?}: moved {} of {} up, {} of {} down", got_up.len(), up.len(), got_down.len(), down.len());
    assert!(got_up == up && got_down == down);
    net.largest_to_client
}

#[test]
fn an_absurd_mss_from_either_peer_still_moves_data_in_sane_segments() {
    // Both peers announce an MSS of 1: the data still moves (smoltcp floors a peer's MSS at 48).
    assert!(transfer_with_mss((Some(1), Some(1))) >= 48);
    // The server announces 1: the client leg's segments follow RFC 9293's 536, not 1 byte each.
    assert_eq!(transfer_with_mss((None, Some(1))), 536);
    // A sane server MSS is kept (the device MTU bounds it: 1460 here).
    assert_eq!(transfer_with_mss((None, Some(1000))), 1000);
}

#[test]
fn a_closed_port_looks_closed() {
    let mut net = Net::new(EngineConfig::default());
    net.connect(444); // nothing listens
    let mut saw_syn_sent = false;
    assert!(net.run_until(3000, |n| {
        saw_syn_sent |= n.client.socket().state() == tcp::State::SynSent;
        saw_syn_sent && n.client.socket().state() == tcp::State::Closed
    }), "the client gets a RST, not a timeout");
    assert_eq!(net.engine.stats().connect_refused, 1);
    assert!(net.engine.is_empty());
}

#[test]
fn a_silent_server_leaves_the_client_to_its_own_timeout() {
    let config = EngineConfig {
        connect_timeout: Duration::from_secs(2),
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server_silent = true;
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    net.run_until(4000, |_| false);
    assert!(net.engine.stats().flows_total >= 1, "the SYN reached the engine");
    // Upstream first: the client never got a SYN-ACK, nor a RST.
    assert_eq!(net.to_client, 0, "nothing may reach the client before the server accepts");
    assert_eq!(net.client.socket().state(), tcp::State::SynSent);
    // The flow was dropped after 2 s; a later retransmitted SYN starts afresh.
    assert!(net.engine.stats().connect_timeouts >= 1);
}

#[test]
fn a_server_reset_reaches_the_client() {
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.client.socket().state() == tcp::State::Established
        && n.server.socket().state() == tcp::State::Established));
    net.server.socket().abort();
    assert!(net.run_until(2000, |n| n.client.socket().state() == tcp::State::Closed));
    assert_eq!(net.engine.stats().resets, 1);
    assert!(net.run_until(1000, |n| n.engine.is_empty()));
}

#[test]
fn a_server_reset_after_its_answer_delivers_the_answer_first() {
    // A server that answers early and resets (nginx on an upload it will not read): the client
    // gets every byte of the answer, then the reset.
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.client.socket().state() == tcp::State::Established
        && n.server.socket().state() == tcp::State::Established));
    net.client.socket().send_slice(b"POST / HTTP/1.1\r\n").unwrap();
    assert!(net.run_until(2000, |n| n.server.socket().can_recv()));
    // More than the client's receive buffer (256 KiB) holds while it does not read: the rest
    // waits in the appliance when the server resets.
    let answer = pattern(300_000, 9);
    let mut sent = 0;
    let mut got = Vec::new();
    assert!(net.run_until(5000, |n| {
        if sent < answer.len() {
            sent += n.server.socket().send_slice(&answer[sent..]).unwrap_or(0);
        }
        sent == answer.len() && n.server.socket().send_queue() == 0
    }), "the appliance took the whole answer");
    net.server.socket().abort();
    assert!(net.run_until(5000, |n| {
        while n.client.socket().can_recv() {
            n.client.socket().recv(|b| (b.len(), got.extend_from_slice(b))).unwrap();
        }
        n.client.socket().state() == tcp::State::Closed
    }), "then the reset");
    assert_eq!(got.len(), answer.len(), "every byte of the answer before the reset");
    assert!(got == answer);
    assert!(net.run_until(1000, |n| n.engine.is_empty()));
}

#[test]
fn a_client_reset_reaches_the_server() {
    let mut net = Net::new(EngineConfig::default());
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Established
        && n.client.socket().state() == tcp::State::Established));
    net.client.socket().send_slice(b"hello").unwrap();
    assert!(net.run_until(2000, |n| n.server.socket().can_recv()));
    net.client.socket().abort();
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Closed));
    assert!(net.run_until(1000, |n| n.engine.is_empty()));
}

#[test]
fn a_full_table_fails_open() {
    let config = EngineConfig {
        max_flows: 0,
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    net.run_until(50, |_| false);
    let stats = net.engine.stats();
    assert!(stats.table_full >= 1);
    assert!(net.engine.take_updates().any(|u| matches!(u, MapUpdate::Bypass(_))));
}

#[test]
fn a_full_table_can_refuse() {
    let config = EngineConfig {
        max_flows: 0,
        when_full: WhenFull::Refuse,
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    let mut saw_syn_sent = false;
    assert!(net.run_until(2000, |n| {
        saw_syn_sent |= n.client.socket().state() == tcp::State::SynSent;
        saw_syn_sent && n.client.socket().state() == tcp::State::Closed
    }), "the client's SYN is answered with a RST");
    assert!(net.engine.stats().table_full >= 1);
    assert_eq!(net.server.socket().state(), tcp::State::Listen, "nothing reached the server");
}

#[test]
fn an_idle_flow_is_reset_on_both_sides() {
    let config = EngineConfig {
        idle_timeout: Duration::from_secs(3),
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Established
        && n.client.socket().state() == tcp::State::Established));
    assert!(net.run_until(5000, |n| n.client.socket().state() == tcp::State::Closed
        && n.server.socket().state() == tcp::State::Closed), "both ends get a RST");
    assert_eq!(net.engine.stats().idle_timeouts, 1);
    assert!(net.engine.is_empty());
}

#[test]
fn a_quiet_connection_outlives_the_connect_timeout() {
    // Regression: the connect timeout stayed on the server leg's socket, so a connection whose
    // server had been silent for that long was reset (idle keep-alive connections died at 75 s).
    let config = EngineConfig {
        connect_timeout: Duration::from_secs(2),
        ..EngineConfig::default()
    };
    let mut net = Net::new(config);
    net.server.socket().listen(443).unwrap();
    net.connect(443);
    assert!(net.run_until(2000, |n| n.server.socket().state() == tcp::State::Established
        && n.client.socket().state() == tcp::State::Established));
    net.server.socket().send_slice(b"banner").unwrap();
    let mut got = [0u8; 16];
    assert!(net.run_until(1000, |n| n.client.socket().can_recv()));
    assert_eq!(net.client.socket().recv_slice(&mut got).unwrap(), 6);
    // Ten times the connect timeout with nothing said either way.
    assert!(!net.run_until(20_000, |n| n.client.socket().state() != tcp::State::Established
        || n.server.socket().state() != tcp::State::Established), "the flow was torn down while idle");
    assert_eq!(net.engine.stats().resets, 0);
    net.client.socket().send_slice(b"still here").unwrap();
    assert!(net.run_until(1000, |n| n.server.socket().can_recv()), "data after the quiet period arrives");
    assert_eq!(net.server.socket().recv_slice(&mut got).unwrap(), 10);
}

#[test]
fn owner_is_the_same_for_both_directions_and_spreads() {
    let mut counts = [0usize; 4];
    for port in 0..4000u16 {
        let key = FlowKey {
            client_addr: CLIENT,
            server_addr: SERVER,
            client_port: (10_000 + port).to_be_bytes(),
            server_port: 443u16.to_be_bytes(),
        };
        counts[owner(&key, 4)] += 1;
    }
    assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
    // flow_of maps both directions to the same key.
    let syn = [
        0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0,
        198, 18, 0, 1, 198, 18, 0, 2, 0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff,
        0xff, 0, 0, 0, 0,
    ];
    let mut back = syn;
    back[26..30].copy_from_slice(&SERVER);
    back[30..34].copy_from_slice(&CLIENT);
    back[34..36].copy_from_slice(&443u16.to_be_bytes());
    back[36..38].copy_from_slice(&40000u16.to_be_bytes());
    let a = flow_of(Side::Inside, &syn).unwrap().0;
    let b = flow_of(Side::Outside, &back).unwrap().0;
    assert_eq!(a, b);
}
