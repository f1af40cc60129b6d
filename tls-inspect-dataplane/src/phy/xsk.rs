//! AF_XDP sockets (xsk-rs). libxdp is never allowed to load its own XDP program: the appliance's
//! program redirects into the sockets once their fds are in its `TI_XSKS` map (the caller
//! registers them).
//!
//! - [`XskDevice`]: a worker's two sockets (one per side, same queue) on one UMEM. Every ring is
//!   worked in batches; the only syscalls are the TX kick and the fill-ring wakeup when the
//!   kernel asks for them (need_wakeup).
//! - [`Probe`]: one socket that only receives (`tls-inspect debug xsk-recv`).
#![allow(unsafe_code, reason = "xsk-rs' ring and UMEM accessors are unsafe: each use has its SAFETY line")]

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use xsk_rs::config::{BindFlags, LibxdpFlags, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{Side, Transmit};

/// Frames of a worker's UMEM: a quarter for each fill ring, half for transmitting.
const UMEM_FRAMES: u32 = 4096;
/// Descriptors read from a ring at once.
pub const BATCH: usize = 64;

/// Ring counters of a device, since it opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct XskCounters {
    pub frames_rx: u64,
    pub frames_tx: u64,
    /// A TX ring had no room for every frame queued (they wait for the next flush).
    pub tx_ring_full: u64,
    /// Frames dropped because no UMEM frame was free to transmit them.
    pub tx_dropped_no_frame: u64,
}

/// One side's socket and rings.
struct Port {
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
}

/// A worker's two AF_XDP sockets on one UMEM.
pub struct XskDevice {
    // Field order is drop order: the sockets go before the UMEM they use.
    ports: [Port; 2],
    /// Descriptors read into, one array per side: copies of any frame (the ring overwrites them).
    rx_descs: [Vec<FrameDesc>; 2],
    /// How many of `rx_descs` the last `receive` filled.
    received: [usize; 2],
    comp_descs: Vec<FrameDesc>,
    free: Vec<FrameDesc>,
    /// Frames written and waiting to be produced on each side's TX ring.
    pending: [Vec<FrameDesc>; 2],
    scratch: Vec<u8>,
    counters: XskCounters,
    umem: Umem,
}

impl XskDevice {
    /// Opens a socket on queue `queue` of each interface, both on one fresh UMEM, and fills
    /// their fill rings.
    pub fn open(inside: &str, outside: &str, queue: u32) -> Result<Self> {
        let frames = NonZeroU32::new(UMEM_FRAMES).context("UMEM size")?;
        let (umem, mut descs) = Umem::new(UmemConfig::default(), frames, false).map_err(|e| anyhow!("creating the UMEM: {e}"))?;
        let mut ports = Vec::with_capacity(2);
        for name in [inside, outside] {
            let socket_config = SocketConfig::builder()
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            let iface = name.parse().map_err(|_| anyhow!("'{name}' is not an interface name"))?;
            // SAFETY: the UMEM outlives the sockets (both live in this struct, sockets dropped
            // first), and the prog-load inhibit flag is set.
            let (tx, rx, fq_cq) = unsafe { Socket::new(socket_config, &umem, &iface, queue) }
                .map_err(|e| anyhow!("AF_XDP socket on {name} queue {queue}: {e}"))?;
            let (fill, comp) = fq_cq.context("the socket has no fill and completion rings")?;
            ports.push(Port { rx, tx, fill, comp });
        }
        let quarter = (UMEM_FRAMES / 4) as usize;
        let free: Vec<FrameDesc> = descs.split_off(2 * quarter);
        for (i, port) in ports.iter_mut().enumerate() {
            let mine = &descs[i * quarter..(i + 1) * quarter];
            // SAFETY: frames of this UMEM that nothing else holds.
            let n = unsafe { port.fill.produce(mine) };
            if n != mine.len() {
                tracing::warn!("fill ring took {n} of {} frames", mine.len());
            }
        }
        let placeholder: Vec<FrameDesc> = free.iter().take(BATCH).copied().collect();
        let [inside_port, outside_port]: [Port; 2] = ports.try_into().map_err(|_| anyhow!("two sockets expected"))?;
        Ok(Self {
            ports: [inside_port, outside_port],
            rx_descs: [placeholder.clone(), placeholder.clone()],
            received: [0, 0],
            comp_descs: placeholder,
            free,
            pending: [Vec::with_capacity(BATCH * 4), Vec::with_capacity(BATCH * 4)],
            scratch: Vec::with_capacity(2048),
            counters: XskCounters::default(),
            umem,
        })
    }

    /// The receive sockets' fds (inside, outside): for the XSK map and for `poll`.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.ports[0].rx.fd().as_raw_fd(), self.ports[1].rx.fd().as_raw_fd()]
    }

    pub fn counters(&self) -> XskCounters {
        self.counters
    }

    /// Takes up to a batch of frames from each side's RX ring; returns how many.
    pub fn receive(&mut self) -> usize {
        for (i, port) in self.ports.iter_mut().enumerate() {
            // SAFETY: descriptors of this UMEM; each is read in `with_received`, then given
            // back to the fill ring.
            self.received[i] = unsafe { port.rx.consume(&mut self.rx_descs[i]) };
        }
        let n = self.received[0] + self.received[1];
        self.counters.frames_rx += n as u64;
        n
    }

    /// Lends the frames of the last `receive` (each with its side) and a transmitter, then gives
    /// the frames back to the fill rings.
    pub fn with_received<R>(&mut self, f: impl FnOnce(&mut dyn Iterator<Item = (Side, &[u8])>, &mut XskTx<'_>) -> R) -> R {
        let Self { ports, rx_descs, received, free, pending, scratch, counters, umem, .. } = self;
        let umem: &Umem = umem;
        let mut frames = [Side::Inside, Side::Outside].into_iter().flat_map(|side| {
            rx_descs[side.index()][..received[side.index()]].iter().map(move |desc| {
                // SAFETY: a frame the kernel just handed us; it stays ours until the fill ring
                // gets it back below.
                (side, unsafe { umem.data(desc) }.contents())
            })
        });
        let mut tx = XskTx { umem, free, pending, scratch, dropped: &mut counters.tx_dropped_no_frame };
        let r = f(&mut frames, &mut tx);
        for (i, port) in ports.iter_mut().enumerate() {
            let n = std::mem::take(&mut received[i]);
            if n > 0 {
                // SAFETY: the frames just processed are free again.
                let back = unsafe { port.fill.produce(&rx_descs[i][..n]) };
                if back < n {
                    // The fill ring is full (cannot be: it holds a quarter): keep them.
                    free.extend_from_slice(&rx_descs[i][back..n]);
                }
            }
        }
        r
    }

    /// Hands queued frames to the TX rings (kicking the kernel when it asks), takes completed
    /// ones back, and wakes the fill rings up when asked. Returns the frames handed over.
    pub fn flush(&mut self) -> usize {
        let mut sent = 0;
        // Towards the server first: what the relay owes the server (a FIN, the last data) is on
        // its way before the client hears what its own segments brought (the ACK of its FIN),
        // so that a client reconnecting at once from the same port never overtakes it.
        for i in [1, 0] {
            let port = &mut self.ports[i];
            let queued = &mut self.pending[i];
            if !queued.is_empty() {
                // SAFETY: frames written by XskTx, handed to the kernel until completed.
                let n = unsafe { port.tx.produce(queued) };
                if n < queued.len() {
                    self.counters.tx_ring_full += 1;
                }
                self.counters.frames_tx += n as u64;
                queued.drain(..n);
                sent += n;
            }
            if port.tx.needs_wakeup() || !queued.is_empty() {
                let _ = port.tx.wakeup();
            }
            // SAFETY: completed descriptors of this UMEM come back to the free list.
            let n = unsafe { port.comp.consume(&mut self.comp_descs) };
            self.free.extend_from_slice(&self.comp_descs[..n]);
            if port.fill.needs_wakeup() {
                let _ = port.fill.wakeup(port.rx.fd_mut(), 0);
            }
        }
        sent
    }
}

/// The relay's transmitter: frames are built in a scratch buffer and copied into a free UMEM
/// frame at commit.
pub struct XskTx<'a> {
    umem: &'a Umem,
    free: &'a mut Vec<FrameDesc>,
    pending: &'a mut [Vec<FrameDesc>; 2],
    scratch: &'a mut Vec<u8>,
    dropped: &'a mut u64,
}

impl Transmit for XskTx<'_> {
    fn frame(&mut self, _side: Side, len: usize) -> &mut [u8] {
        self.scratch.clear();
        self.scratch.resize(len, 0);
        self.scratch
    }

    fn commit(&mut self, side: Side, len: usize) {
        let Some(mut desc) = self.free.pop() else {
            *self.dropped += 1;
            return;
        };
        // SAFETY: a free frame of this worker's UMEM: neither the kernel nor a ring holds it.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        let mut cursor = data.cursor();
        cursor.set_pos(0);
        if std::io::Write::write_all(&mut cursor, &self.scratch[..len]).is_err() {
            // Larger than a frame: never happens with the MTUs the relay uses.
            *self.dropped += 1;
            self.free.push(desc);
            return;
        }
        self.pending[side.index()].push(desc);
    }
}

/// One receive-only socket on a small UMEM.
pub struct Probe {
    rx: RxQueue,
    fill: FillQueue,
    descs: Vec<FrameDesc>,
    umem: Umem,
}

impl Probe {
    pub fn open(iface: &str, queue: u32) -> Result<Self> {
        let frames = NonZeroU32::new(256).context("frame count")?;
        let (umem, descs) = Umem::new(UmemConfig::default(), frames, false).map_err(|e| anyhow!("creating the UMEM: {e}"))?;
        let config = SocketConfig::builder().libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD).build();
        let name = iface.parse().map_err(|_| anyhow!("iface: '{iface}': not an interface name"))?;
        // SAFETY: the UMEM outlives the socket (both live in this struct, the socket's rings
        // dropped first).
        let (_tx, rx, fq_cq) = unsafe { Socket::new(config, &umem, &name, queue) }
            .map_err(|e| anyhow!("creating an AF_XDP socket on {iface} queue {queue}: {e}"))?;
        let (mut fill, _comp) = fq_cq.context("the socket has no fill queue")?;
        // SAFETY: descriptors of this UMEM, none of them in use yet.
        unsafe { fill.produce(&descs) };
        Ok(Self { rx, fill, descs, umem })
    }

    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Waits up to `timeout` for frames and passes each to `f`; returns how many.
    pub fn next_batch(&mut self, timeout: Duration, mut f: impl FnMut(&[u8])) -> Result<usize> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: descriptors of this UMEM; the ones consumed are read, then given back.
        let n = unsafe { self.rx.poll_and_consume(&mut self.descs, ms) }.map_err(|e| anyhow!("polling the socket: {e}"))?;
        for desc in self.descs.iter().take(n) {
            // SAFETY: a descriptor the kernel just handed us.
            f(unsafe { self.umem.data(desc) }.contents());
        }
        // SAFETY: the frames just read are free again.
        unsafe { self.fill.produce(&self.descs[..n]) };
        Ok(n)
    }
}
