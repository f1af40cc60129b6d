//! `tls-inspect-bench pktgen`: a userspace packet generator for kernels without
//! `/proc/net/pktgen`. One AF_XDP socket per thread (queue `thread`), frames built once into the
//! thread's UMEM, one frame per flow, then replayed: the ring gets descriptors of frames that
//! never change, so the only per-packet work is the kernel's. IPv4 or IPv6, UDP or TCP SYN.
//!
//! The options follow the kernel's samples/pktgen `parameters.sh` (see `bench/pktgen/`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use xsk_rs::config::{LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{FrameDesc, Socket, Umem};

#[derive(clap::Args, Clone, Debug)]
pub struct PktgenArgs {
    /// Output device (in the caller's network namespace).
    #[arg(short = 'i', long)]
    pub dev: String,
    /// Frame size in bytes without the 4-byte FCS the NIC adds, as the kernel's pktgen
    /// `pkt_size` (60..1514; 60 is a 64-byte frame on the wire).
    #[arg(short = 's', long, default_value_t = 60)]
    pub size: usize,
    /// Destination IP, or a CIDR whose addresses the flows spread over.
    #[arg(short = 'd', long)]
    pub dst: String,
    /// Destination MAC.
    #[arg(short = 'm', long, default_value = "02:00:00:00:00:02")]
    pub dst_mac: String,
    /// Source IP or CIDR.
    #[arg(long, default_value = "198.18.0.1")]
    pub src: String,
    /// Source MAC.
    #[arg(long, default_value = "02:00:00:00:00:01")]
    pub src_mac: String,
    /// Destination port or range MIN-MAX.
    #[arg(short = 'p', long, default_value = "9")]
    pub port: String,
    /// Source port or range MIN-MAX.
    #[arg(long, default_value = "9")]
    pub sport: String,
    /// Threads, one per TX queue (0..THREADS-1).
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: u32,
    /// Packets per thread; 0: until --duration.
    #[arg(short = 'n', long, default_value_t = 0)]
    pub count: u64,
    /// Descriptors handed to the kernel per wakeup.
    #[arg(short = 'b', long, default_value_t = 64)]
    pub burst: usize,
    /// Distinct flows (frames built once, sent round-robin); 1: a single flow.
    #[arg(short = 'f', long, default_value_t = 1)]
    pub flows: u32,
    /// Seconds to send when --count is 0.
    #[arg(short = 'D', long, default_value_t = 5.0)]
    pub duration: f64,
    /// TCP SYNs instead of UDP datagrams.
    #[arg(long)]
    pub syn: bool,
    /// Print one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

pub struct Report {
    pub sent: u64,
    pub secs: f64,
}

impl Report {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9)
    }
}

pub fn run(args: &PktgenArgs) -> Result<Report> {
    let plan = Plan::new(args)?;
    let start = Instant::now();
    let handles: Vec<_> = (0..args.threads.max(1))
        .map(|queue| {
            let (plan, args) = (plan.clone(), args.clone());
            std::thread::spawn(move || send(&plan, &args, queue))
        })
        .collect();
    let mut sent = 0;
    for h in handles {
        sent += h.join().map_err(|_| anyhow!("a generator thread panicked"))??;
    }
    let report = Report { sent, secs: start.elapsed().as_secs_f64() };
    if args.json {
        println!("{}", serde_json::json!({ "sent": report.sent, "secs": report.secs, "pps": report.pps() }));
    } else {
        println!("pktgen: {} packets in {:.2} s: {:.0} pps", report.sent, report.secs, report.pps());
    }
    Ok(report)
}

/// Everything a frame is built from, validated once.
#[derive(Clone)]
struct Plan {
    frame_len: usize,
    dst: Range,
    src: Range,
    dport: (u16, u16),
    sport: (u16, u16),
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    flows: u32,
    syn: bool,
}

/// Addresses `base + 0 .. base + count - 1`.
#[derive(Clone)]
enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

impl Range {
    fn parse(field: &str, s: &str) -> Result<Self> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u32>().map_err(|_| anyhow!("{field}: '{s}': bad prefix length"))?)),
            None => (s, None),
        };
        match addr.parse::<IpAddr>().map_err(|_| anyhow!("{field}: '{s}': not an IP address or CIDR"))? {
            IpAddr::V4(a) => {
                let len = len.unwrap_or(32);
                if !(8..=32).contains(&len) {
                    bail!("{field}: '{s}': prefix length must be 8..32");
                }
                let count = 1u32 << (32 - len);
                Ok(Self::V4(u32::from(a) & !(count - 1), count))
            }
            IpAddr::V6(a) => {
                let len = len.unwrap_or(128);
                if !(64..=128).contains(&len) {
                    bail!("{field}: '{s}': prefix length must be 64..128");
                }
                let count = 1u128 << (128 - len);
                Ok(Self::V6(u128::from(a) & !(count - 1), count))
            }
        }
    }

    fn nth(&self, i: u64) -> IpAddr {
        match *self {
            Self::V4(base, count) => IpAddr::V4(Ipv4Addr::from(base.wrapping_add((i % u64::from(count)) as u32))),
            Self::V6(base, count) => IpAddr::V6(Ipv6Addr::from(base.wrapping_add(u128::from(i) % count))),
        }
    }
}

fn port_range(field: &str, s: &str) -> Result<(u16, u16)> {
    let bad = || anyhow!("{field}: '{s}': a port or MIN-MAX");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b {
        bail!("{field}: '{s}': MIN is above MAX");
    }
    Ok((a, b))
}

fn mac(field: &str, s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().map_err(|_| anyhow!("{field}: '{s}': not a MAC address"))?;
    parts.try_into().map_err(|_| anyhow!("{field}: '{s}': not a MAC address"))
}

impl Plan {
    fn new(a: &PktgenArgs) -> Result<Self> {
        if !(60..=1514).contains(&a.size) {
            bail!("size: '{}': 60..1514 bytes (without the FCS, as pktgen's pkt_size)", a.size);
        }
        let (dst, src) = (Range::parse("dst", &a.dst)?, Range::parse("src", &a.src)?);
        if matches!(dst, Range::V4(..)) != matches!(src, Range::V4(..)) {
            bail!("src and dst: one is IPv4, the other IPv6");
        }
        if a.flows == 0 || a.flows > 65_536 {
            bail!("flows: '{}': 1..65536", a.flows);
        }
        if a.burst == 0 || a.burst > 1024 {
            bail!("burst: '{}': 1..1024", a.burst);
        }
        let plan = Self {
            frame_len: a.size,
            dst,
            src,
            dport: port_range("port", &a.port)?,
            sport: port_range("sport", &a.sport)?,
            dst_mac: mac("dst-mac", &a.dst_mac)?,
            src_mac: mac("src-mac", &a.src_mac)?,
            flows: a.flows,
            syn: a.syn,
        };
        let min = plan.headers();
        if min > plan.frame_len {
            bail!("size: '{}': these headers need at least {} bytes", a.size, min);
        }
        Ok(plan)
    }

    /// Ethernet + IP + UDP or TCP header bytes.
    fn headers(&self) -> usize {
        let ip = if matches!(self.dst, Range::V4(..)) { 20 } else { 40 };
        14 + ip + if self.syn { 20 } else { 8 }
    }

    /// Flow `i`: source address, source port, destination address and port each walk their
    /// range at a different stride, so the flows differ in all four (a "many flows" run).
    fn frame(&self, i: u32) -> Vec<u8> {
        let i = u64::from(i);
        let pick = |(lo, hi): (u16, u16), k: u64| lo + (k % (u64::from(hi - lo) + 1)) as u16;
        let (src, dst) = (self.src.nth(i.wrapping_mul(7)), self.dst.nth(i.wrapping_mul(13)));
        let (sport, dport) = (pick(self.sport, i.wrapping_mul(31)), pick(self.dport, i));
        let mut f = Vec::with_capacity(self.frame_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        let l4_len = if self.syn { 20 } else { 8 };
        let proto = if self.syn { 6u8 } else { 17u8 };
        // A SYN carries no data (as a real flood's does not): the rest of its frame is
        // Ethernet padding. A datagram carries the rest as payload.
        let payload = if self.syn { 0 } else { self.frame_len.saturating_sub(self.headers()) };
        let l4_total = l4_len + payload;
        let pseudo: Vec<u8> = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let start = f.len();
                f.extend_from_slice(&[0x45, 0]);
                f.extend_from_slice(&((20 + l4_total) as u16).to_be_bytes());
                f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let sum = !fold(sum16(&f[start..start + 20], 0));
                f[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
                [&s.octets()[..], &d.octets()[..], &[0, proto], &(l4_total as u16).to_be_bytes()].concat()
            }
            (s, d) => {
                let to6 = |a: IpAddr| match a {
                    IpAddr::V6(a) => a,
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                };
                let (s, d) = (to6(s), to6(d));
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4_total as u16).to_be_bytes());
                f.extend_from_slice(&[proto, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                [&s.octets()[..], &d.octets()[..], &(l4_total as u32).to_be_bytes(), &[0, 0, 0, proto]].concat()
            }
        };
        let l4 = f.len();
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        if self.syn {
            // seq, ack, data offset 5, SYN, window, checksum, urgent
            f.extend_from_slice(&(i as u32).wrapping_mul(2_654_435_761).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            f.extend_from_slice(&(l4_total as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        f.resize(self.frame_len, 0);
        let at = if self.syn { l4 + 16 } else { l4 + 6 };
        let mut sum = !fold(sum16(&f[l4..l4 + l4_total], sum16(&pseudo, 0)));
        if sum == 0 && !self.syn {
            sum = 0xffff;
        }
        f[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        f
    }
}

fn sum16(bytes: &[u8], mut sum: u64) -> u64 {
    for pair in bytes.chunks(2) {
        sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// One thread: its own UMEM and socket on queue `queue`.
fn send(plan: &Plan, args: &PktgenArgs, queue: u32) -> Result<u64> {
    let ring = 2048u32;
    let frames = NonZeroU32::new(plan.flows.max(ring)).context("frames")?;
    let qs = QueueSize::new(ring).map_err(|e| anyhow!("{e}"))?;
    let umem_config = UmemConfig::builder().comp_queue_size(qs).fill_queue_size(qs).build().map_err(|e| anyhow!("{e}"))?;
    let (umem, mut descs) = Umem::new(umem_config, frames, false).map_err(|e| anyhow!("creating the UMEM: {e}"))?;
    let config = SocketConfig::builder()
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .tx_queue_size(qs)
        .build();
    let iface = args.dev.parse().map_err(|_| anyhow!("dev: '{}': not an interface name", args.dev))?;
    // SAFETY: the UMEM outlives the socket (both live until the end of this function).
    let (mut tx, _rx, fq_cq) = unsafe { Socket::new(config, &umem, &iface, queue) }
        .map_err(|e| anyhow!("AF_XDP socket on {} queue {queue}: {e} (does the device have {} TX queues?)", args.dev, queue + 1))?;
    let (_fill, mut comp) = fq_cq.context("the socket has no completion queue")?;

    // Build each flow's frame once, into frames of the UMEM, varied per thread.
    let flows = plan.flows as usize;
    for (i, desc) in descs.iter_mut().enumerate() {
        let frame = plan.frame((i % flows) as u32 + queue * 40_503);
        // SAFETY: a descriptor of this UMEM that no ring holds yet.
        let mut data = unsafe { umem.data_mut(desc) };
        std::io::Write::write_all(&mut data.cursor(), &frame).map_err(|e| anyhow!("writing a frame: {e}"))?;
    }
    let send_descs: Vec<FrameDesc> = descs[..flows.max(args.burst)].to_vec();
    let mut scratch = vec![FrameDesc::default(); ring as usize];

    let (mut produced, mut completed) = (0u64, 0u64);
    let mut next = 0usize;
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let limit = if args.count == 0 { u64::MAX } else { args.count };
    let mut checks = 0u32;
    loop {
        // SAFETY: completions of frames we produced; the frames themselves are never rewritten.
        completed += unsafe { comp.consume(&mut scratch) } as u64;
        let in_flight = produced - completed;
        let want = (limit - produced).min(args.burst as u64).min(u64::from(ring) - in_flight) as usize;
        if want > 0 {
            let end = (next + want).min(send_descs.len());
            // SAFETY: descriptors of this UMEM whose frames stay valid and unchanged.
            let n = unsafe { tx.produce(&send_descs[next..end]) };
            produced += n as u64;
            next = if end == send_descs.len() { 0 } else { next + n };
        }
        // Copy mode: each wakeup sends what the ring holds (up to the kernel's batch).
        let _ = tx.wakeup();
        if produced >= limit && completed >= produced {
            break;
        }
        checks = checks.wrapping_add(1);
        if args.count == 0 && checks.is_multiple_of(64) && Instant::now() >= deadline {
            break;
        }
    }
    // Let the last frames complete.
    let settle = Instant::now() + Duration::from_millis(200);
    while completed < produced && Instant::now() < settle {
        let _ = tx.wakeup();
        // SAFETY: as above.
        completed += unsafe { comp.consume(&mut scratch) } as u64;
    }
    Ok(completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> PktgenArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: PktgenArgs,
        }
        let mut v = vec!["pktgen", "-i", "eth0"];
        if !extra.contains(&"-d") {
            v.extend_from_slice(&["-d", "198.18.1.0/24"]);
        }
        v.extend_from_slice(extra);
        <P as clap::Parser>::parse_from(v).a
    }

    #[test]
    fn frames_have_the_size_asked_and_valid_checksums() {
        for (extra, size) in [(&["-s", "60"][..], 60), (&["-s", "1514", "--syn"][..], 1514), (&["-s", "128"][..], 128)] {
            let plan = Plan::new(&args(extra)).unwrap();
            let f = plan.frame(3);
            assert_eq!(f.len(), size);
            assert_eq!(fold(sum16(&f[14..34], 0)), 0xffff, "IPv4 header checksum");
            // The IPv4 total length says where the segment ends: a SYN carries no data (the rest
            // of its frame is padding), a datagram fills the frame.
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            assert_eq!(total, if f[23] == 6 { 40 } else { size - 14 });
            let l4_len = total - 20;
            let pseudo = [&f[26..34], &[0, f[23]], &(l4_len as u16).to_be_bytes()[..]].concat();
            assert_eq!(fold(sum16(&f[34..34 + l4_len], sum16(&pseudo, 0))), 0xffff, "L4 checksum");
        }
    }

    #[test]
    fn many_flows_differ_and_stay_in_their_ranges() {
        let plan = Plan::new(&args(&["-f", "1000", "--src", "198.18.0.0/24", "--sport", "1024-65535", "-p", "443"])).unwrap();
        let frames: std::collections::HashSet<Vec<u8>> = (0..1000).map(|i| plan.frame(i)).collect();
        assert_eq!(frames.len(), 1000);
        for f in &frames {
            assert_eq!(&f[26..29], &[198, 18, 0]);
            assert_eq!(&f[30..33], &[198, 18, 1]);
            assert!(u16::from_be_bytes([f[34], f[35]]) >= 1024);
            assert_eq!(u16::from_be_bytes([f[36], f[37]]), 443);
        }
    }

    #[test]
    fn ipv6_frames() {
        let plan = Plan::new(&args(&["-d", "2001:2::2", "--src", "2001:2::1", "-s", "128"])).unwrap();
        let f = plan.frame(0);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f.len(), 128);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 128 - 54, "payload length");
        let pseudo = [&f[22..54], &(74u32).to_be_bytes()[..], &[0, 0, 0, 17]].concat();
        assert_eq!(fold(sum16(&f[54..], sum16(&pseudo, 0))), 0xffff, "UDP checksum");
        assert!(Plan::new(&args(&["-d", "2001:2::2", "--src", "2001:2::1", "-s", "60"])).is_err(), "IPv6 UDP needs 62 bytes");
    }

    #[test]
    fn bad_options_are_refused_with_the_field() {
        for (extra, field) in [
            (&["-s", "59"][..], "size"),
            (&["-s", "9000"][..], "size"),
            (&["-p", "9-1"][..], "port"),
            (&["-m", "zz"][..], "dst-mac"),
            (&["--src", "2001:2::1"][..], "src and dst"),
            (&["-f", "0"][..], "flows"),
            (&["-b", "0"][..], "burst"),
        ] {
            let e = Plan::new(&args(extra)).err().expect("refused").to_string();
            assert!(e.starts_with(field), "{extra:?}: {e}");
        }
    }
}
