//! `[log] pcap`: the decrypted plaintext of inspected flows, written as TCP/IPv4 packets with the
//! flows' real addresses and ports (raw IP link type, correct checksums, a handshake before the
//! first data and FINs at the end), so that Wireshark, tshark, Zeek and Suricata read the files
//! directly. Workers hand events to a writer thread over a bounded channel (a full channel drops
//! the event and counts it, it never stalls a worker); the thread owns the files, writes them
//! with the `pcap-file` crate and starts a new one when the current one reaches `max_size`.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, Sender};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

use crate::inspect::Direction;

/// `[log] pcap = { dir = "...", max_size = ..., policies = [...] }`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcapSettings {
    /// Where the files go (created 0700 if need be; files 0600).
    pub dir: String,
    /// Bytes a file holds before the next one starts (default 100 MiB, at least 64 KiB).
    #[serde(default = "default_max_size")]
    pub max_size: u64,
    /// The policies whose inspected flows are written; empty: every policy's.
    #[serde(default)]
    pub policies: Vec<u32>,
}

fn default_max_size() -> u64 {
    100 << 20
}

impl PcapSettings {
    pub fn check(&self) -> Result<()> {
        if self.dir.is_empty() {
            bail!("log.pcap.dir: empty");
        }
        if self.max_size < 64 * 1024 {
            bail!("log.pcap.max_size: {} bytes: at least 65536", self.max_size);
        }
        if Path::new(&self.dir).is_file() {
            bail!("log.pcap.dir: {} is a file", self.dir);
        }
        Ok(())
    }

    /// The flows of `policy` are written.
    pub fn covers(&self, policy: u32) -> bool {
        self.policies.is_empty() || self.policies.contains(&policy)
    }
}

/// What happened on an inspected flow, for its packets.
#[derive(Debug)]
pub enum Event {
    /// The flow's decrypted stream starts: a handshake is written.
    Start { flow: u64, client: (Ipv4Addr, u16), server: (Ipv4Addr, u16), at: SystemTime },
    /// Plaintext in one direction, in order.
    Data { flow: u64, direction: Direction, bytes: Vec<u8>, at: SystemTime },
    /// The flow ended: FINs both ways.
    End { flow: u64, at: SystemTime },
}

/// The largest TCP payload of one packet written (an IPv4 packet's 16-bit length bounds it;
/// this keeps packets a size every reader takes).
const SEGMENT: usize = 16 * 1024;

/// A flow's sequence numbers as written so far.
struct Seq {
    client: (Ipv4Addr, u16),
    server: (Ipv4Addr, u16),
    /// Next sequence number of each side (client, server).
    next: [u32; 2],
}

/// The IPv4 header checksum, or the TCP checksum over a pseudo-header: the ones' complement
/// of the ones' complement sum of 16-bit words (RFC 1071).
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for chunk in chunks {
        for &b in *chunk {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// TCP flags written.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// One TCP/IPv4 packet.
fn packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let tcp_len = 20 + payload.len();
    let total = 20 + tcp_len;
    let mut p = Vec::with_capacity(total);
    // IPv4: version 4, IHL 5, DF, TTL 64, TCP.
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.0.octets());
    p.extend_from_slice(&dst.0.octets());
    let ip_sum = checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP: data offset 5, a window of 65535.
    let mut tcp = Vec::with_capacity(tcp_len);
    tcp.extend_from_slice(&src.1.to_be_bytes());
    tcp.extend_from_slice(&dst.1.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&if flags & ACK != 0 { ack } else { 0 }.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let pseudo = [&src.0.octets()[..], &dst.0.octets()[..], &[0, 6], &(tcp_len as u16).to_be_bytes()[..]].concat();
    let tcp_sum = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    p.extend_from_slice(&tcp);
    p
}

/// The current file's buffered writer, shared between the pcap writer and the thread's
/// flushes (the `pcap-file` writer does not lend its inner writer out).
#[derive(Clone)]
struct Shared(std::rc::Rc<std::cell::RefCell<BufWriter<File>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// The files being written, and the flows' sequence numbers.
struct Files {
    dir: PathBuf,
    max_size: u64,
    writer: Option<(PcapWriter<Shared>, Shared)>,
    written: u64,
    /// Files started so far (their names count up).
    started: u64,
    flows: HashMap<u64, Seq>,
}

impl Files {
    fn open_next(&mut self) -> Result<()> {
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        self.started += 1;
        let path = self.dir.join(format!("tls-inspect-{stamp}-{:04}.pcap", self.started));
        let file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&path).with_context(|| format!("log.pcap: creating {}", path.display()))?;
        let header = PcapHeader { datalink: DataLink::RAW, ..PcapHeader::default() };
        let shared = Shared(std::rc::Rc::new(std::cell::RefCell::new(BufWriter::new(file))));
        let writer = PcapWriter::with_header(shared.clone(), header).map_err(|e| anyhow::anyhow!("log.pcap: {}: {e}", path.display()))?;
        self.writer = Some((writer, shared));
        self.written = 24;
        Ok(())
    }

    fn write(&mut self, at: SystemTime, data: &[u8]) -> Result<()> {
        if self.writer.is_none() || self.written + data.len() as u64 + 16 > self.max_size {
            self.flush();
            self.writer = None;
            self.open_next()?;
        }
        let ts = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        if let Some((w, _)) = self.writer.as_mut() {
            w.write_packet(&PcapPacket::new(ts, data.len() as u32, data)).map_err(|e| anyhow::anyhow!("log.pcap: {e}"))?;
        }
        self.written += data.len() as u64 + 16;
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Start { flow, client, server, at } => {
                // Initial sequence numbers from the flow id: two flows never share a stream.
                let isn = (flow as u32).wrapping_mul(0x9e37_79b9);
                let (c, s) = (isn, isn ^ 0x5a5a_5a5a);
                self.write(at, &packet(client, server, c, 0, SYN, &[]))?;
                self.write(at, &packet(server, client, s, c.wrapping_add(1), SYN | ACK, &[]))?;
                self.write(at, &packet(client, server, c.wrapping_add(1), s.wrapping_add(1), ACK, &[]))?;
                // A bounded table: a flow whose end was lost to a full channel is forgotten
                // with the oldest others.
                if self.flows.len() >= 65_536 {
                    self.flows.clear();
                }
                self.flows.insert(flow, Seq { client, server, next: [c.wrapping_add(1), s.wrapping_add(1)] });
            }
            Event::Data { flow, direction, bytes, at } => {
                let Some(seq) = self.flows.get(&flow) else { return Ok(()) };
                let (from, to, d) = match direction {
                    Direction::ToServer => (seq.client, seq.server, 0),
                    Direction::ToClient => (seq.server, seq.client, 1),
                };
                let (mut mine, theirs) = (seq.next[d], seq.next[1 - d]);
                let mut out = Vec::new();
                for piece in bytes.chunks(SEGMENT) {
                    out.push(packet(from, to, mine, theirs, PSH | ACK, piece));
                    mine = mine.wrapping_add(piece.len() as u32);
                }
                for p in out {
                    self.write(at, &p)?;
                }
                if let Some(seq) = self.flows.get_mut(&flow) {
                    seq.next[d] = mine;
                }
            }
            Event::End { flow, at } => {
                let Some(seq) = self.flows.remove(&flow) else { return Ok(()) };
                let [c, s] = seq.next;
                self.write(at, &packet(seq.client, seq.server, c, s, FIN | ACK, &[]))?;
                self.write(at, &packet(seq.server, seq.client, s, c.wrapping_add(1), FIN | ACK, &[]))?;
                self.write(at, &packet(seq.client, seq.server, c.wrapping_add(1), s.wrapping_add(1), ACK, &[]))?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        if let Some((_, shared)) = self.writer.as_mut() {
            let _ = std::io::Write::flush(shared);
        }
    }
}

/// The writer thread, and the sending end the workers share.
pub struct PcapLog {
    pub tap: PcapTap,
    thread: JoinHandle<()>,
}

/// What a worker holds: the channel, the policies written, and the count of events dropped.
#[derive(Clone)]
pub struct PcapTap {
    sender: Sender<Event>,
    settings: Arc<PcapSettings>,
    pub dropped: Arc<AtomicU64>,
}

impl PcapTap {
    /// The flows of `policy` are written.
    pub fn covers(&self, policy: u32) -> bool {
        self.settings.covers(policy)
    }

    /// Hands an event to the writer; a full channel drops it (counted).
    pub fn send(&self, event: Event) {
        if self.sender.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl PcapLog {
    pub fn start(settings: PcapSettings) -> Result<Self> {
        settings.check()?;
        let dir = PathBuf::from(&settings.dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("log.pcap.dir: creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).with_context(|| format!("log.pcap.dir: chmod 0700 {}", dir.display()))?;
        let max_size = settings.max_size;
        let (sender, receiver): (Sender<Event>, Receiver<Event>) = crossbeam_channel::bounded(16_384);
        let thread = std::thread::Builder::new().name("pcap-log".into()).spawn(move || {
            let mut files = Files { dir, max_size, writer: None, written: 0, started: 0, flows: HashMap::new() };
            while let Ok(first) = receiver.recv() {
                for event in std::iter::once(first).chain(receiver.try_iter()) {
                    if let Err(e) = files.handle(event) {
                        tracing::error!(error = %format!("{e:#}"), "writing the decrypted pcap failed");
                    }
                }
                files.flush();
            }
            files.flush();
        })?;
        Ok(Self { tap: PcapTap { sender, settings: Arc::new(settings), dropped: Arc::default() }, thread })
    }

    /// Writes what was sent and stops (once every tap is gone).
    pub fn stop(self) {
        drop(self.tap);
        let _ = self.thread.join();
    }
}

/// An inspector that also writes the plaintext it sees to the pcap log (the flow's `Start`
/// when built, its `End` when dropped); everything else is the inner inspector's.
pub struct Tapped {
    pub inner: Box<dyn crate::inspect::Inspector>,
    tap: PcapTap,
    flow: u64,
}

impl Tapped {
    pub fn new(inner: Box<dyn crate::inspect::Inspector>, tap: PcapTap, flow: u64, client: (Ipv4Addr, u16), server: (Ipv4Addr, u16)) -> Self {
        tap.send(Event::Start { flow, client, server, at: SystemTime::now() });
        Self { inner, tap, flow }
    }
}

impl Drop for Tapped {
    fn drop(&mut self) {
        self.tap.send(Event::End { flow: self.flow, at: SystemTime::now() });
    }
}

impl crate::inspect::Inspector for Tapped {
    fn inspect(&mut self, direction: Direction, data: &[u8]) -> crate::inspect::Verdict {
        self.tap.send(Event::Data { flow: self.flow, direction, bytes: data.to_vec(), at: SystemTime::now() });
        self.inner.inspect(direction, data)
    }

    fn unfinished_head(&self, direction: Direction) -> usize {
        self.inner.unfinished_head(direction)
    }

    fn server_certificates(&mut self, chain: &[&[u8]], version: Option<u16>) -> crate::inspect::Verdict {
        self.inner.server_certificates(chain, version)
    }

    fn http_transactions(&mut self, flush: bool) -> Vec<crate::inspect::HttpTx> {
        self.inner.http_transactions(flush)
    }

    fn alerts(&mut self) -> Vec<crate::inspect::ips::Hit> {
        self.inner.alerts()
    }

    fn unscanned(&self) -> [u64; 2] {
        self.inner.unscanned()
    }

    fn block_response(&self) -> Option<Vec<u8>> {
        self.inner.block_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_valid_checksums() {
        let p = packet((Ipv4Addr::new(198, 18, 0, 1), 40000), (Ipv4Addr::new(198, 18, 0, 2), 443), 1000, 2000, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n");
        // A header whose checksum is right sums to 0 with it.
        assert_eq!(checksum(&[&p[..20]]), 0);
        let tcp = &p[20..];
        let pseudo = [&p[12..16], &p[16..20], &[0, 6][..], &(tcp.len() as u16).to_be_bytes()[..]].concat();
        assert_eq!(checksum(&[&pseudo, tcp]), 0);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
        // RFC 1071's example: 0001 f203 f4f5 f6f7 sums to ddf2, so its checksum is 220d.
        assert_eq!(checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]), 0x220d);
    }

    #[test]
    fn a_file_rotates_at_its_size_and_a_flow_is_a_handshake_data_and_fins() {
        let dir = std::env::temp_dir().join(format!("tls-inspect-pcap-{}", std::process::id()));
        let log = PcapLog::start(PcapSettings { dir: dir.display().to_string(), max_size: 64 * 1024, policies: vec![] }).unwrap();
        let (c, s) = ((Ipv4Addr::new(198, 18, 0, 1), 40001), (Ipv4Addr::new(198, 18, 0, 2), 443));
        let at = SystemTime::now();
        log.tap.send(Event::Start { flow: 1, client: c, server: s, at });
        for _ in 0..10 {
            log.tap.send(Event::Data { flow: 1, direction: Direction::ToClient, bytes: vec![b'x'; 10_000], at });
        }
        log.tap.send(Event::End { flow: 1, at });
        log.stop();
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(files.len() >= 2, "100 kB in files of 64 KiB: {files:?}");
        let mut packets = 0;
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 64 * 1024);
            let mut r = pcap_file::pcap::PcapReader::new(File::open(f).unwrap()).unwrap();
            while let Some(p) = r.next_packet() {
                p.unwrap();
                packets += 1;
            }
        }
        assert_eq!(packets, 3 + 10 + 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
