//! The XDP side of the benchmarks (`tls-inspect-bench xdp-redirect | xdp-sink | prog-run`): a
//! bare devmap redirect as the baseline bridge, a counting sink for the far end of a
//! packet-rate run, and the per-frame cost of a program through the kernel's
//! `BPF_PROG_TEST_RUN` (what `bpftool prog run ... repeat N` does), independent of any generator.
//!
//! The bare and sink programs are an object of their own (`tls-inspect-bench-xdp`), built by
//! this crate's build.rs; the appliance's object carries only what `run` attaches. Their links
//! are not pinned: they go when this process goes.
#![allow(unsafe_code, reason = "BPF_OBJ_GET and BPF_PROG_TEST_RUN through the bpf syscall")]

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{DevMapHash, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use aya::EbpfLoader;

use tls_inspect_dataplane::control::maps::{FlowTable, Paths};
use tls_inspect_dataplane::control::xdp::PROGRAM_PIN;
use tls_inspect_dataplane::sys::{ifindex, Signals};

/// The benchmark programs, built by build.rs.
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tls-inspect-bench-xdp"));

const BARE: &str = "bench_redirect";

/// Native (driver) mode, or generic (skb) mode for NICs without XDP.
pub fn mode(generic: bool) -> XdpMode {
    if generic {
        XdpMode::Skb
    } else {
        XdpMode::Driver
    }
}
const SINK: &str = "bench_sink";

fn load_object() -> Result<aya::Ebpf> {
    EbpfLoader::new().load(BENCH_OBJECT).context("loading the benchmark XDP object")
}

/// Loads the bare redirect program with `a` <-> `b` in its devmap (not attached).
fn load_bare(a: u32, b: u32) -> Result<aya::Ebpf> {
    let mut ebpf = load_object()?;
    let mut peers: DevMapHash<MapData> = DevMapHash::try_from(ebpf.take_map("BENCH_PEERS").context("map BENCH_PEERS")?)?;
    peers.insert(a, b, None, 0)?;
    peers.insert(b, a, None, 0)?;
    let program: &mut Xdp = ebpf.program_mut(BARE).context("program bench_redirect")?.try_into()?;
    program.load().context("loading bench_redirect (verifier)")?;
    Ok(ebpf)
}

/// Attaches the bare redirect between `a` and `b` until SIGINT/SIGTERM.
pub fn bench_redirect(a: &str, b: &str, mode: XdpMode) -> Result<()> {
    let set = Signals::block()?;
    let (ia, ib) = (ifindex("a", a)?, ifindex("b", b)?);
    let mut ebpf = load_bare(ia, ib)?;
    let program: &mut Xdp = ebpf.program_mut(BARE).context("program bench_redirect")?.try_into()?;
    for name in [a, b] {
        program.attach(name, mode).with_context(|| format!("attaching bench_redirect to {name}"))?;
    }
    println!("xdp-redirect: attached to {a} and {b}");
    set.wait_stop()?;
    Ok(())
}

/// Attaches the counting sink to `dev` until SIGINT/SIGTERM; prints the frames it dropped.
pub fn bench_sink(dev: &str, mode: XdpMode) -> Result<u64> {
    let set = Signals::block()?;
    let mut ebpf = load_object()?;
    let program: &mut Xdp = ebpf.program_mut(SINK).context("program bench_sink")?.try_into()?;
    program.load().context("loading bench_sink (verifier)")?;
    program.attach(dev, mode).with_context(|| format!("attaching bench_sink to {dev}"))?;
    println!("xdp-sink: attached to {dev}");
    set.wait_stop()?;
    let counts: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map("BENCH_SINK").context("map BENCH_SINK")?)?;
    let total = counts.get(&0, 0)?.iter().sum();
    Ok(total)
}

/// What `prog-run` measures: the appliance's program through its pin, or the bare redirect.
pub enum Target<'a> {
    Pinned(&'a Path),
    Bare,
}

pub struct ProgRun<'a> {
    pub target: Target<'a>,
    /// The appliance's pins (its program only): a passed flow is marked bypass in its flow
    /// table, as a worker does after its decision.
    pub paths: Option<&'a Paths>,
    /// The interface the frames arrive on (inside; its peer in the devmap is `outside`).
    pub inside: &'a str,
    pub outside: &'a str,
    pub repeat: u32,
    /// Distinct new flows for the matching-SYN frame (one run each: a repeated SYN would find
    /// the flow it created in the flow table).
    pub new_flows: u32,
    pub first_port: u16,
    /// A flow the scopes match: client address, server address, server port.
    pub client: [u8; 4],
    pub server: [u8; 4],
    pub port: u16,
}

/// ns per frame for each frame kind, and the XDP action each returned.
pub fn prog_run(opts: &ProgRun) -> Result<Vec<(&'static str, f64, u32)>> {
    let inside = ifindex("inside", opts.inside)?;
    let outside = ifindex("outside", opts.outside)?;
    let (_ebpf, fd): (Option<aya::Ebpf>, std::os::fd::OwnedFd) = match opts.target {
        Target::Pinned(path) => (None, obj_get(path)?),
        Target::Bare => {
            let mut ebpf = load_bare(inside, outside)?;
            let program: &mut Xdp = ebpf.program_mut(BARE).context("program bench_redirect")?.try_into()?;
            let fd = program.fd()?.as_fd().try_clone_to_owned()?;
            (Some(ebpf), fd)
        }
    };
    let fd = fd.as_raw_fd();
    let other = [198, 18, 99, 1];
    let frames: [(&'static str, Vec<u8>); 7] = [
        ("tcp, no scope", frames::tcp(opts.client, other, 40_000, 80, frames::ACK)),
        ("udp/443 (QUIC)", frames::udp(opts.client, opts.server, 40_001, 443)),
        ("ipv6 tcp", frames::ipv6_tcp()),
        ("arp", frames::arp(opts.client, opts.server)),
        ("steered flow (ACK)", frames::tcp(opts.client, opts.server, 1_024, opts.port, frames::ACK)),
        ("passed flow (ACK, bypass)", frames::tcp(opts.client, opts.server, 1_025, opts.port, frames::ACK)),
        ("handshake (ACK)", frames::tcp(opts.client, opts.server, 1_026, opts.port, frames::ACK)),
    ];
    let mut out = Vec::new();
    // Each flow is made as on the wire (a no-op for the bare program): the handshake is bridged
    // and recorded, and the first data segment makes the flow a worker's (steered); the passed
    // one is then marked bypass as its worker would after the decision; the third stays in its
    // handshake.
    for sport in [1_024, 1_025, 1_026] {
        test_run(fd, &frames::tcp(opts.client, opts.server, sport, opts.port, frames::SYN), inside, 1)?;
        test_run(fd, &frames::tcp(opts.server, opts.client, opts.port, sport, frames::SYN | frames::ACK), outside, 1)?;
        if sport != 1_026 {
            test_run(fd, &frames::tcp_data(opts.client, opts.server, sport, opts.port, 100), inside, 1)?;
        }
    }
    if let Some(paths) = opts.paths {
        mark_bypass(paths, opts.client, opts.server, 1_025, opts.port)?;
    }
    for (name, frame) in &frames {
        let (ns, action) = test_run(fd, frame, inside, opts.repeat)?;
        out.push((*name, ns, action));
    }
    // Frames of two flows in turn, one run each: every frame misses the CPU's copy of the last
    // flow and pays the table lookup (one run costs more than one of `repeat`, for the bare
    // program too: compare with its row).
    let (steered, passed) = (&frames[4].1, &frames[5].1);
    let (mut total, mut action) = (0.0, 0);
    let turns = opts.new_flows.max(1);
    for _ in 0..turns {
        let (a, _) = test_run(fd, passed, inside, 1)?;
        let (b, act) = test_run(fd, steered, inside, 1)?;
        total += a + b;
        action = act;
    }
    out.push(("two flows in turn (table lookups)", total / f64::from(2 * turns), action));
    // New flows: each SYN once, on ports nothing has used.
    let (mut total, mut action) = (0.0, 0);
    for i in 0..opts.new_flows.max(1) {
        let sport = opts.first_port.wrapping_add((i % 40_000) as u16).max(1_024);
        let (ns, a) = test_run(fd, &frames::tcp(opts.client, opts.server, sport, opts.port, frames::SYN), inside, 1)?;
        total += ns;
        action = a;
    }
    out.push(("matching SYN (new flow)", total / f64::from(opts.new_flows.max(1)), action));
    Ok(out)
}

/// Marks a flow bypass in the flow table, as a worker does when it passes the flow.
fn mark_bypass(paths: &Paths, client: [u8; 4], server: [u8; 4], sport: u16, dport: u16) -> Result<()> {
    let mut flows = FlowTable::open(paths)?;
    let key = tls_inspect_common::FlowKey { client_addr: client, server_addr: server, client_port: sport.to_be_bytes(), server_port: dport.to_be_bytes() };
    if !flows.set_bypass(&key, None) {
        bail!("the passed flow has no entry (its first data segment makes it)");
    }
    flows.publish();
    Ok(())
}

/// `struct xdp_md` as `BPF_PROG_TEST_RUN` takes it for the context.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The `test` member of `union bpf_attr`, zero-padded.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `obj_pin` member of `union bpf_attr`, zero-padded.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// Opens a pinned BPF object.
fn obj_get(path: &Path) -> Result<std::os::fd::OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| anyhow!("{e}"))?;
    let mut attr = ObjGetAttr { pathname: c.as_ptr() as u64, ..Default::default() };
    // SAFETY: a valid bpf_attr for BPF_OBJ_GET; the path outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &mut attr as *mut ObjGetAttr, std::mem::size_of::<ObjGetAttr>()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("opening {}", path.display()));
    }
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(rc as RawFd) })
}

/// Runs the program `repeat` times on `frame` as if it arrived on `ifindex` queue 0; returns the
/// kernel's average ns per run and the action.
fn test_run(fd: RawFd, frame: &[u8], ifindex: u32, repeat: u32) -> Result<(f64, u32)> {
    let len = u32::try_from(frame.len()).context("frame length")?;
    let ctx = XdpMd { data_end: len, ingress_ifindex: ifindex, ..Default::default() };
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(fd).context("fd")?,
        data_size_in: len,
        data_in: frame.as_ptr() as u64,
        repeat: repeat.max(1),
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        ..Default::default()
    };
    // SAFETY: a valid bpf_attr for BPF_PROG_TEST_RUN whose pointers outlive the call; the
    // kernel writes only retval and duration back into it (no data_out, no ctx_out).
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &mut attr as *mut TestRunAttr, std::mem::size_of::<TestRunAttr>())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_PROG_TEST_RUN");
    }
    Ok((f64::from(attr.duration), attr.retval))
}

/// Parses `a.b.c.d`.
pub fn ipv4(field: &str, s: &str) -> Result<[u8; 4]> {
    s.parse::<std::net::Ipv4Addr>().map(|a| a.octets()).map_err(|_| anyhow!("{field}: '{s}': not an IPv4 address"))
}

/// The frames `prog-run` feeds the program: Ethernet with correct IPv4 checksums.
mod frames {
    pub const SYN: u8 = 0x02;
    pub const ACK: u8 = 0x10;
    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&MAC_B);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4(f: &mut Vec<u8>, proto: u8, src: [u8; 4], dst: [u8; 4], payload: usize) {
        let total = (20 + payload) as u16;
        let start = f.len();
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        let sum = checksum(&f[start..start + 20]);
        f[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
    }

    pub fn checksum(bytes: &[u8]) -> u16 {
        let mut sum = 0u32;
        for pair in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn tcp_header(f: &mut Vec<u8>, sport: u16, dport: u16, flags: u8) {
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    }

    pub fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = eth(0x0800);
        ipv4(&mut f, 6, src, dst, 20);
        tcp_header(&mut f, sport, dport, flags);
        f.resize(64, 0);
        f
    }

    /// A segment with `n` bytes of payload (PSH|ACK).
    pub fn tcp_data(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, n: usize) -> Vec<u8> {
        let mut f = eth(0x0800);
        ipv4(&mut f, 6, src, dst, 20 + n);
        tcp_header(&mut f, sport, dport, ACK | 0x08);
        f.resize(f.len() + n, 0x16);
        f
    }

    pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = eth(0x0800);
        ipv4(&mut f, 17, src, dst, 8 + 32);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&40u16.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&[0xc3; 32]); // a QUIC long header's first byte, and padding
        f
    }

    pub fn ipv6_tcp() -> Vec<u8> {
        let mut f = eth(0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
        f.extend_from_slice(&[0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x20, 0x01, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        tcp_header(&mut f, 40_000, 443, SYN);
        f
    }

    pub fn arp(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = eth(0x0806);
        f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&sender);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f.resize(64, 0);
        f
    }

    #[cfg(test)]
    mod tests {
        use tls_inspect_common::{parse_frame, Frame, L4};

        #[test]
        fn frames_parse_as_what_they_claim() {
            let (c, s) = ([198, 18, 0, 1], [198, 18, 0, 2]);
            match parse_frame(&super::tcp(c, s, 1024, 443, super::SYN)[..]) {
                Ok(Frame::Ipv4 { src, dst, l4: L4::Tcp { sport, dport, seg }, .. }) => {
                    assert_eq!((src, dst, u16::from_be_bytes(sport), u16::from_be_bytes(dport), seg.flags), (c, s, 1024, 443, super::SYN));
                }
                other => panic!("tcp frame parsed as {other:?}"),
            }
            assert!(matches!(parse_frame(&super::udp(c, s, 1, 443)[..]), Ok(Frame::Ipv4 { l4: L4::Udp { .. }, .. })));
            assert!(!matches!(parse_frame(&super::ipv6_tcp()[..]), Ok(Frame::Ipv4 { .. })));
            assert!(!matches!(parse_frame(&super::arp(c, s)[..]), Ok(Frame::Ipv4 { .. })));
            // The IPv4 header checksum verifies to zero.
            let f = super::tcp(c, s, 1, 2, super::ACK);
            assert_eq!(super::checksum(&f[14..34]), 0);
        }
    }
}

/// The running appliance's pinned XDP program, or an error saying no appliance runs.
pub fn program_pin(paths: &Paths) -> Result<std::path::PathBuf> {
    let p = paths.pin(PROGRAM_PIN);
    if !p.exists() {
        bail!("{} does not exist: is `tls-inspect run` running for this instance?", p.display());
    }
    Ok(p)
}
