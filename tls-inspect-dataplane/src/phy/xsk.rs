//! AF_XDP sockets (xsk-rs) registered in the program's `TI_XSKS` map. libxdp is never allowed to
//! load its own XDP program: our program redirects into the sockets.
//!
//! For now this serves `tls-inspect debug xsk-recv`, a receiver that prints what the XDP
//! program steers to one queue; the per-core workers build on the same socket set-up.

use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tls_inspect_common::{parse_frame, xsk_index, Frame, L4, MAX_QUEUES};
use xsk_rs::config::{LibxdpFlags, SocketConfig, UmemConfig};
use xsk_rs::{Socket, Umem};

use crate::control::maps::{Paths, Sockets};

pub struct RecvOptions {
    pub iface: String,
    pub side: u32,
    pub queue: u32,
    /// Stop after this many frames.
    pub count: u64,
    pub timeout: Duration,
}

/// Opens a socket on `iface`/`queue`, registers it, prints one line per frame received, and
/// unregisters it on the way out. Returns the number of frames received.
pub fn receive(paths: &Paths, opts: &RecvOptions) -> Result<u64> {
    if opts.queue >= MAX_QUEUES {
        anyhow::bail!("queue: '{}': at most {} queues per interface", opts.queue, MAX_QUEUES);
    }
    let frames = NonZeroU32::new(256).context("frame count")?;
    let (umem, mut descs) = Umem::new(UmemConfig::default(), frames, false)
        .map_err(|e| anyhow!("creating the UMEM: {e}"))?;
    let config = SocketConfig::builder()
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .build();
    let iface = opts
        .iface
        .parse()
        .map_err(|_| anyhow!("iface: '{}': not an interface name", opts.iface))?;
    // SAFETY: the UMEM outlives the socket (both live until the end of this function).
    let (_tx, mut rx, fq_cq) = unsafe { Socket::new(config, &umem, &iface, opts.queue) }
        .map_err(|e| anyhow!("creating an AF_XDP socket on {} queue {}: {e}", opts.iface, opts.queue))?;
    let (mut fill, _comp) = fq_cq.context("the socket has no fill queue")?;
    // SAFETY: descriptors of this UMEM, none of them in use yet.
    unsafe { fill.produce(&descs) };

    let mut sockets = Sockets::open(paths)?;
    let index = xsk_index(opts.side, opts.queue);
    sockets.register(index, rx.fd().as_raw_fd())?;
    println!("xsk-recv: ready on {} queue {}", opts.iface, opts.queue);

    let deadline = Instant::now() + opts.timeout;
    let mut received = 0u64;
    let result = (|| -> Result<()> {
        while received < opts.count && Instant::now() < deadline {
            // SAFETY: descriptors of this UMEM; the ones consumed are read, then given back.
            let n = unsafe { rx.poll_and_consume(&mut descs, 100) }
                .map_err(|e| anyhow!("polling the socket: {e}"))?;
            for desc in descs.iter().take(n) {
                // SAFETY: a descriptor the kernel just handed us.
                let data = unsafe { umem.data(desc) };
                println!("xsk-recv: {}", describe(data.contents()));
                received += 1;
            }
            // SAFETY: the frames just read are free again.
            unsafe { fill.produce(&descs[..n]) };
        }
        Ok(())
    })();
    sockets.unregister(index)?;
    result?;
    Ok(received)
}

/// One line per frame: `tcp 198.18.0.1:40000 > 198.18.0.2:443 flags=0x02 len=74`.
pub fn describe(frame: &[u8]) -> String {
    match parse_frame(frame) {
        Ok(Frame::Ipv4 { src, dst, l4, .. }) => {
            let (s, d) = (std::net::Ipv4Addr::from(src), std::net::Ipv4Addr::from(dst));
            match l4 {
                L4::Tcp { sport, dport, flags } => format!(
                    "tcp {s}:{} > {d}:{} flags=0x{flags:02x} len={}",
                    u16::from_be_bytes(sport),
                    u16::from_be_bytes(dport),
                    frame.len()
                ),
                L4::Udp { sport, dport } => format!(
                    "udp {s}:{} > {d}:{} len={}",
                    u16::from_be_bytes(sport),
                    u16::from_be_bytes(dport),
                    frame.len()
                ),
                other => format!("ipv4 {s} > {d} {other:?} len={}", frame.len()),
            }
        }
        Ok(other) => format!("{other:?} len={}", frame.len()),
        Err(e) => format!("unparsed ({e:?}) len={}", frame.len()),
    }
}
