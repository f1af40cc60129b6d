//! The XDP classifier and bridge, attached to both of the appliance's interfaces.
//!
//! For each frame: parse (one bounds-checked cursor, in `tls-inspect-common`); a TCP frame of a
//! known flow follows its flow (steered to the AF_XDP socket of its receive queue, or bridged
//! when the flow is marked bypass); a SYN from inside is classified against the scope tables of
//! the live generation and, when it matches, creates the flow; everything else is redirected to
//! the other interface through a devmap. No per-packet logging: per-CPU counters instead.
#![no_std]
#![no_main]
#![allow(internal_features, reason = "the atomic add intrinsic: BPF has no atomic types in core")]
#![feature(core_intrinsics, adt_const_params, bpf_target_feature)]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, XskMap},
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use tls_inspect_common::{
    counter, first_common_bit, parse_frame, port_index, slot_index, xsk_index, AddrKey, Config,
    FlowCacheEntry, FlowKey, FlowValue, Frame, GlobalCounters, Handshake, Packet, ScopeBitmap, ScopeCell, ScopeCounters,
    SlotOwner, TcpSegment, CONFIG_FLOW_CACHE, CONFIG_INTEL_ACTIVE, CONFIG_INTEL_BLOCK, CONFIG_INTEL_GENERATION,
    BPF_F_MMAPABLE, FLOW_BYPASS, FLOW_FIN_CLIENT, FLOW_FIN_SERVER, FLOW_STEER, GENERATIONS, HANDSHAKE_AFTER_STEERED, HANDSHAKE_SYN, HANDSHAKE_SYN_ACK, L4,
    MAX_QUEUES, MAX_SCOPES, PORTS, SCOPE_CELLS, SIDE_INSIDE, SIDE_OUTSIDE, SLOT_FAIL_CLOSED, SLOT_QUIC_BLOCK,
    TCP_OPTIONS_MAX,
};
use tls_inspect_common::parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

#[map(name = "TI_CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// ingress ifindex -> the other interface.
#[map(name = "TI_PEERS")]
static PEERS: DevMapHash = DevMapHash::with_max_entries(8, 0);

/// `xsk_index(side, queue)` -> AF_XDP socket.
#[map(name = "TI_XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(2 * MAX_QUEUES, 0);

/// Flows given to a worker (steered) or bridged by decision (bypass); the loader sets the size
/// from the config.
#[map(name = "TI_FLOWS")]
static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(65_536, 0);

/// One more at every change to `TI_FLOWS`, by the program or a worker (through its mapping):
/// what tells a CPU that its copy of a flow in `TI_FLOW_CACHE` may be stale.
#[map(name = "TI_FLOW_EPOCH")]
static FLOW_EPOCH: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Each CPU's last flow found in `TI_FLOWS`, with the epoch it was read in.
#[map(name = "TI_FLOW_CACHE")]
static FLOW_CACHE: PerCpuArray<FlowCacheEntry> = PerCpuArray::with_max_entries(1, 0);

/// Scoped connections between their SYN and their first data segment: the handshake passes
/// between the real ends and is recorded here. Apart from `TI_FLOWS`, so that a SYN flood
/// evicts other half-open handshakes, never a flow a worker holds.
#[map(name = "TI_HANDSHAKES")]
static HANDSHAKES: LruHashMap<FlowKey, Handshake> = LruHashMap::with_max_entries(65_536, 0);

/// Server ports that have had a flow since the program was loaded (one byte each, set when a
/// flow is created, never cleared): a TCP frame on any other port skips the flow-table lookup.
/// A byte, not a bit, so that two CPUs marking ports at once never lose each other's store.
#[map(name = "TI_FLOW_PORTS")]
static FLOW_PORTS: Array<u8> = Array::with_max_entries(PORTS, 0);

#[map(name = "TI_SRC_ADDR")]
static SRC_ADDR: LpmTrie<AddrKey, ScopeBitmap> = LpmTrie::with_max_entries(65_536, 0);

#[map(name = "TI_DST_ADDR")]
static DST_ADDR: LpmTrie<AddrKey, ScopeBitmap> = LpmTrie::with_max_entries(65_536, 0);

#[map(name = "TI_SRC_PORT")]
static SRC_PORT: Array<ScopeBitmap> = Array::with_max_entries(GENERATIONS * PORTS, BPF_F_MMAPABLE);

#[map(name = "TI_DST_PORT")]
static DST_PORT: Array<ScopeBitmap> = Array::with_max_entries(GENERATIONS * PORTS, BPF_F_MMAPABLE);

#[map(name = "TI_SLOTS")]
static SLOTS: Array<SlotOwner> = Array::with_max_entries(GENERATIONS * MAX_SCOPES, 0);

#[map(name = "TI_COUNTERS")]
static COUNTERS: PerCpuArray<GlobalCounters> = PerCpuArray::with_max_entries(1, 0);

/// A scope's counters at the element userspace gave it (`SlotOwner::counter`, carried by its
/// flows and handshakes), tagged with the scope's ID.
#[map(name = "TI_SCOPE_CNT")]
static SCOPE_COUNTERS: PerCpuArray<ScopeCell> = PerCpuArray::with_max_entries(SCOPE_CELLS, 0);

/// scope ID -> its element of `TI_SCOPE_CNT`: kept by userspace (the program reads the index
/// from the slot owner), pinned with the rest so that every process sees one allocation.
#[map(name = "TI_SCOPE_IDX")]
static SCOPE_INDEX: HashMap<u32, u32> = HashMap::with_max_entries(SCOPE_CELLS, 0);

/// Threat intelligence: (generation, prefix) -> entry index in `TI_INTEL_CNT`.
#[map(name = "TI_INTEL")]
static INTEL: LpmTrie<AddrKey, u32> = LpmTrie::with_max_entries(262_144, 0);

/// Frames matched per intelligence entry; the loader sizes it like `TI_INTEL`.
#[map(name = "TI_INTEL_CNT")]
static INTEL_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(262_144, 0);

/// The frame, read through one bounds check per access.
struct XdpFrame<'a>(&'a XdpContext);

impl Packet for XdpFrame<'_> {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let start = self.0.data();
        let end = self.0.data_end();
        if start + off + N > end {
            return None;
        }
        // SAFETY: the N bytes at start + off lie inside the packet (checked above); [u8; N] has
        // alignment 1.
        Some(unsafe { *((start + off) as *const [u8; N]) })
    }
}

/// The program (what `#[xdp]` would generate, with one addition: loads of the packet and of
/// map values may be unaligned, which the kernel allows on the architectures XDP runs on at
/// speed, so the parser reads words instead of bytes).
#[unsafe(no_mangle)]
#[unsafe(link_section = "xdp")]
#[target_feature(enable = "allows-misaligned-mem-access")]
pub fn tls_inspect(ctx: *mut aya_ebpf::bindings::xdp_md) -> u32 {
    let ctx = XdpContext::new(ctx);
    match try_tls_inspect(&ctx) {
        Ok(action) => action,
        // Fail open: whatever went wrong, the frame goes on to the other interface.
        Err(()) => {
            count(counter::ERROR_FRAMES, 1);
            bridge(&ctx, frame_len(&ctx))
        }
    }
}

#[inline(always)]
fn try_tls_inspect(ctx: &XdpContext) -> Result<u32, ()> {
    let len = frame_len(ctx);
    let config = CONFIG.get(0).ok_or(())?;
    let ifindex = ctx.ingress_ifindex() as u32;
    let side = if ifindex == config.inside_ifindex {
        SIDE_INSIDE
    } else if ifindex == config.outside_ifindex {
        SIDE_OUTSIDE
    } else {
        count(counter::FOREIGN_FRAMES, 1);
        return Ok(XDP_PASS);
    };

    let frame = match parse_frame(&XdpFrame(ctx)) {
        Ok(frame) => frame,
        Err(_) => {
            count(counter::UNPARSED_FRAMES, 1);
            return Ok(bridge(ctx, len));
        }
    };
    // Threat intelligence comes first: traffic to or from a listed address is dropped (or, in
    // monitor mode, counted and let through), in both directions.
    if config.flags & CONFIG_INTEL_ACTIVE != 0 {
        if let Frame::Ipv4 { src, dst, .. } = frame {
            let generation = u32::from(config.flags & CONFIG_INTEL_GENERATION != 0);
            let full = AddrKey::GENERATION_BITS + 32;
            let hit = INTEL
                .get(Key::new(full, AddrKey::new(generation, src)))
                .or_else(|| INTEL.get(Key::new(full, AddrKey::new(generation, dst))))
                .copied();
            if let Some(entry) = hit {
                count(counter::INTEL_FRAMES, 1);
                if let Some(c) = INTEL_COUNTERS.get_ptr_mut(entry) {
                    // SAFETY: this CPU's own slot of a per-CPU array.
                    unsafe { *c += 1 };
                }
                if config.flags & CONFIG_INTEL_BLOCK != 0 {
                    count(counter::INTEL_DROPPED, 1);
                    count(counter::DROPPED_FRAMES, 1);
                    count(counter::DROPPED_BYTES, len);
                    return Ok(XDP_DROP);
                }
            }
        }
    }

    // UDP from inside towards a scope (QUIC, HTTP/3): its policy drops it, so that browsers
    // fall back to TCP where the scope inspects them, or passes it; counted either way.
    if let Frame::Ipv4 { src, dst, l4: L4::Udp { sport, dport }, .. } = frame {
        if side == SIDE_INSIDE {
            if let Some(owner) = classify(config.generation & 1, src, dst, sport, dport) {
                if owner.flags & SLOT_QUIC_BLOCK != 0 {
                    count(counter::QUIC_DROPPED, 1);
                    count2(counter::DROPPED_FRAMES, counter::DROPPED_BYTES, len);
                    scope_add(Scope::of(&owner), |c| c.quic_dropped += 1);
                    return Ok(XDP_DROP);
                }
                count(counter::QUIC_PASSED, 1);
                scope_add(Scope::of(&owner), |c| c.quic_passed += 1);
            }
        }
        return Ok(bridge(ctx, len));
    }

    let Frame::Ipv4 {
        src,
        dst,
        l4: L4::Tcp { sport, dport, seg: segment },
        ..
    } = frame
    else {
        // Not TCP or UDP over IPv4: ICMP, ARP, IPv6, ... all bridged.
        return Ok(bridge(ctx, len));
    };
    let (flags, payload_len) = (segment.flags, segment.payload_len);

    let key = if side == SIDE_INSIDE {
        FlowKey {
            client_addr: src,
            server_addr: dst,
            client_port: sport,
            server_port: dport,
        }
    } else {
        FlowKey {
            client_addr: dst,
            server_addr: src,
            client_port: dport,
            server_port: sport,
        }
    };
    let is_syn = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let new_from_inside = side == SIDE_INSIDE && is_syn;

    // A flow already decided keeps its decision, in both directions; a connection in its
    // handshake has it recorded. Only ports that have had a flow can have either.
    let server_port = u32::from(u16::from_be_bytes(key.server_port));
    let port_has_flows = FLOW_PORTS.get(server_port).is_none_or(|marked| *marked != 0);
    let mut after_steered = false;
    if port_has_flows {
        if let Some(flow) = flow_of(&key, config.flags & CONFIG_FLOW_CACHE != 0) {
            if flow.action == FLOW_STEER && !(new_from_inside && ended(&key)) {
                if flags & (TCP_FIN | TCP_RST) != 0 {
                    steered_closing(&key, side, flags);
                }
                return Ok(steer(ctx, side, len, Scope { id: flow.scope_id, counter: flow.counter }, flow.flags));
            }
            // A new connection on the addresses and ports of a passed one, or of a steered one
            // whose ends have both closed, is classified afresh: what passed the last one (its
            // server name) says nothing about this one.
            if !new_from_inside {
                if flags & (TCP_FIN | TCP_RST) != 0 {
                    closing(&key, side, flags);
                }
                return Ok(bypass(ctx, len, Scope { id: flow.scope_id, counter: flow.counter }));
            }
            after_steered = flow.action == FLOW_STEER;
            let _ = FLOWS.remove(&key);
            flows_changed();
        } else if let Some(record) = HANDSHAKES.get_ptr_mut(&key) {
            // SAFETY: this key's value in a hash map; the program's other CPUs write the same
            // fields only for the same connection's own segments, which TCP orders.
            let record = unsafe { &mut *record };
            return Ok(in_handshake(ctx, side, len, &key, record, &segment));
        }
    }

    // Only a new connection from inside is classified, and a data segment from inside on a
    // port with flows: a scoped connection the program has no record of (evicted by a flood of
    // other handshakes, or older than the scope) goes to a worker, which resets it, rather
    // than past inspection.
    if side != SIDE_INSIDE || !(is_syn || (port_has_flows && payload_len > 0 && flags & TCP_SYN == 0)) {
        return Ok(bridge(ctx, len));
    }
    if is_syn {
        count(counter::SYN_CLASSIFIED, 1);
    }
    let generation = config.generation & 1;
    let Some(owner) = classify(generation, src, dst, sport, dport) else {
        return Ok(bridge(ctx, len));
    };
    if !is_syn {
        count(counter::UNRECORDED_STEERED, 1);
        return Ok(steer(ctx, side, len, Scope::of(&owner), owner.flags));
    }
    count(counter::SYN_MATCHED, 1);

    // Given to a worker only when a socket waits on this queue; otherwise the flow is
    // remembered as bypass so it is never half-steered when a socket appears later.
    let queue = ctx.rx_queue_index();
    let has_socket = queue < MAX_QUEUES && XSKS.get(xsk_index(side, queue)).is_some();
    // Fail-closed: no worker, no connection. Nothing is remembered, so the client's next SYN
    // is steered once a worker is back.
    if !has_socket && owner.flags & SLOT_FAIL_CLOSED != 0 {
        return Ok(fail_closed(len, Scope::of(&owner)));
    }
    // Marked before the flow exists, so that no frame of it can skip the lookup.
    if !port_has_flows {
        if let Some(marked) = FLOW_PORTS.get_ptr_mut(server_port) {
            // SAFETY: an element of an array map; a plain byte store, the same from every CPU.
            unsafe { *marked = 1 };
        }
    }
    // A SYN that carries data (TCP Fast Open, or a flood's padding) would hand the server the
    // client's first bytes before any decision, and make every SYN a worker's: it is dropped.
    // A TFO client sends its SYN again without data (and stops using TFO towards that server).
    if payload_len > 0 {
        count(counter::SYN_DATA_DROPPED, 1);
        return Ok(fail_closed(len, Scope::of(&owner)));
    }
    if !has_socket {
        let value = FlowValue {
            policy_id: owner.policy_id,
            scope_id: owner.scope_id,
            counter: owner.counter,
            action: FLOW_BYPASS,
            flags: owner.flags,
        };
        // An LRU insert may evict another flow even when it fails: the epoch moves on either way.
        let inserted = FLOWS.insert(&key, &value, 0).is_ok();
        flows_changed();
        if !inserted {
            count(counter::FLOW_INSERT_FAILED, 1);
            return Ok(bridge(ctx, len));
        }
        scope_add(Scope::of(&owner), |c| c.flows_failopen += 1);
        return Ok(fail_open(ctx, len, Scope::of(&owner)));
    }
    // Peek, then decide: the handshake passes between the real ends (the server's own SYN
    // handling, cookies included, answers a flood; a closed port answers with its own RST),
    // and a worker sees the connection from its first data segment on.
    let mut record = Handshake {
        policy_id: owner.policy_id,
        scope_id: owner.scope_id,
        flags: owner.flags,
        counter: owner.counter,
        seen: 0,
        client_isn: [0; 4],
        server_isn: [0; 4],
        client_window: [0; 2],
        server_window: [0; 2],
        client_opts_len: 0,
        server_opts_len: 0,
        _pad: [0; 2],
        client_opts: [0; TCP_OPTIONS_MAX],
        server_opts: [0; TCP_OPTIONS_MAX],
    };
    record_syn(ctx, &mut record, &segment);
    if after_steered {
        record.seen |= HANDSHAKE_AFTER_STEERED;
    }
    if HANDSHAKES.insert(&key, &record, 0).is_err() {
        count(counter::FLOW_INSERT_FAILED, 1);
        return Ok(bridge(ctx, len));
    }
    scope_add(Scope::of(&owner), |c| c.flows_steered += 1);
    count(counter::HANDSHAKE_FRAMES, 1);
    Ok(bridge(ctx, len))
}

/// A segment of a scoped connection in its handshake: the SYN and SYN-ACK are recorded and
/// bridged, as are the ACKs; the first segment with data (or a FIN) makes it a worker's.
#[inline(always)]
fn in_handshake(ctx: &XdpContext, side: u32, len: u64, key: &FlowKey, record: &mut Handshake, s: &TcpSegment) -> u32 {
    let syn = s.flags & TCP_SYN != 0;
    let ack = s.flags & TCP_ACK != 0;
    if side == SIDE_OUTSIDE && !syn && record.seen & (HANDSHAKE_AFTER_STEERED | HANDSHAKE_SYN_ACK) == HANDSHAKE_AFTER_STEERED {
        // The last segments of the steered flow this one follows (the server's ACK of the
        // worker's FIN, on its way when the client's new SYN overtook it): the worker's.
        return steer(ctx, side, len, Scope { id: record.scope_id, counter: record.counter }, record.flags);
    }
    if s.flags & TCP_RST != 0 {
        let _ = HANDSHAKES.remove(key);
        count(counter::HANDSHAKE_FRAMES, 1);
        return bridge(ctx, len);
    }
    if side == SIDE_INSIDE && syn && !ack && s.payload_len > 0 {
        // Data in a SYN would reach the server before any decision (see the classifier).
        count(counter::SYN_DATA_DROPPED, 1);
        return fail_closed(len, Scope { id: record.scope_id, counter: record.counter });
    }
    if side == SIDE_INSIDE && syn && !ack {
        // The next connection on the tuple is recorded afresh; a retransmitted SYN (the same
        // sequence number) keeps the SYN-ACK already recorded, even when it arrives after it.
        if record.client_isn != s.seq {
            record_syn(ctx, record, s);
        }
        count(counter::HANDSHAKE_FRAMES, 1);
        return bridge(ctx, len);
    }
    if side == SIDE_OUTSIDE && syn && ack {
        if s.payload_len > 0 {
            // Data in a SYN-ACK would reach the client before any decision.
            count2(counter::DROPPED_FRAMES, counter::DROPPED_BYTES, len);
            return XDP_DROP;
        }
        record.server_isn = s.seq;
        record.server_window = s.window;
        record.server_opts_len = copy_options(ctx, s.opts_offset, s.opts_len, &mut record.server_opts);
        record.seen |= HANDSHAKE_SYN_ACK;
        count(counter::HANDSHAKE_FRAMES, 1);
        return bridge(ctx, len);
    }
    if s.payload_len > 0 || s.flags & TCP_FIN != 0 {
        // The first data (or a SYN with data, a FIN): a worker decides. The record stays for
        // the worker to read.
        let value = FlowValue {
            policy_id: record.policy_id,
            scope_id: record.scope_id,
            counter: record.counter,
            action: FLOW_STEER,
            flags: record.flags,
        };
        if FLOWS.insert(key, &value, 0).is_err() {
            count(counter::FLOW_INSERT_FAILED, 1);
        }
        flows_changed();
        count(counter::FLOWS_PEEKED, 1);
        return steer(ctx, side, len, Scope { id: record.scope_id, counter: record.counter }, record.flags);
    }
    count(counter::HANDSHAKE_FRAMES, 1);
    bridge(ctx, len)
}

/// A passed flow that closes leaves the flow table (at a RST, or once both ends sent their FIN),
/// so that the LRU holds live flows rather than evicting them for finished ones.
#[inline(always)]
fn closing(key: &FlowKey, side: u32, flags: u8) {
    if flags & TCP_RST != 0 {
        let _ = FLOWS.remove(key);
        flows_changed();
        return;
    }
    if let Some(value) = FLOWS.get_ptr_mut(key) {
        // SAFETY: this key's value in a hash map; a byte-wide OR of this flow's own bits.
        let value = unsafe { &mut *value };
        value.flags |= if side == SIDE_INSIDE { FLOW_FIN_CLIENT } else { FLOW_FIN_SERVER };
        if value.flags & (FLOW_FIN_CLIENT | FLOW_FIN_SERVER) == FLOW_FIN_CLIENT | FLOW_FIN_SERVER {
            let _ = FLOWS.remove(key);
            flows_changed();
        }
    }
}

/// A steered flow's real ends closing: each FIN (or a RST, for both) is marked in its entry, so
/// that a SYN from the client after both is known for a new connection on the same addresses and
/// ports (a client reconnecting at once from the port it just closed) rather than one for the
/// worker's old flow. The worker still carries the old flow's last segments; the entry stays.
#[inline(always)]
fn steered_closing(key: &FlowKey, side: u32, flags: u8) {
    if let Some(value) = FLOWS.get_ptr_mut(key) {
        // SAFETY: this key's value in a hash map; a word-wide OR of this flow's own bits.
        let value = unsafe { &mut *value };
        value.flags |= if flags & TCP_RST != 0 {
            FLOW_FIN_CLIENT | FLOW_FIN_SERVER
        } else if side == SIDE_INSIDE {
            FLOW_FIN_CLIENT
        } else {
            FLOW_FIN_SERVER
        };
    }
}

/// Both real ends of `key`'s steered flow have closed it (read from the table, not this CPU's
/// copy, which may predate the marks): a SYN from the client starts a new connection, classified
/// afresh.
#[inline(always)]
fn ended(key: &FlowKey) -> bool {
    // SAFETY: a pointer the map returned for this key; one field read.
    FLOWS.get_ptr(key).is_some_and(|v| unsafe { (*v).flags } & (FLOW_FIN_CLIENT | FLOW_FIN_SERVER) == FLOW_FIN_CLIENT | FLOW_FIN_SERVER)
}

/// The flow of `key` in `TI_FLOWS`: this CPU's copy of its last flow when the table has not
/// changed since it was read (the epoch is read before the table, so a change that races the
/// read leaves a copy that is already stale), else the table's, kept for the next frame.
///
/// A flow served from the copy does not touch its LRU entry, but the table only evicts while
/// inserting, and every insert changes the epoch: a live flow is looked up again between any
/// two inserts, so the LRU still sees it in use.
#[inline(always)]
fn flow_of(key: &FlowKey, use_copy: bool) -> Option<FlowValue> {
    let (true, Some(epoch), Some(cache)) = (use_copy, FLOW_EPOCH.get_ptr(0), FLOW_CACHE.get_ptr_mut(0)) else {
        // SAFETY: a pointer the map returned for this key; read once, by value.
        return FLOWS.get_ptr(key).map(|v| unsafe { *v });
    };
    // SAFETY: element 0 of an array map; a volatile read, so that it stays before the lookup.
    let epoch = unsafe { core::ptr::read_volatile(epoch) };
    // SAFETY: this CPU's own slot of a per-CPU array; native XDP runs in its CPU's NAPI poll,
    // which does not nest.
    let cache = unsafe { &mut *cache };
    let words = key.words();
    if cache.epoch == epoch && cache.value.action != 0 && cache.key == words {
        return Some(cache.value);
    }
    // SAFETY: a pointer the map returned for this key; read once, by value.
    let value = unsafe { *FLOWS.get_ptr(key)? };
    *cache = FlowCacheEntry { epoch, key: words, value };
    Some(value)
}

/// Tells every CPU that its copy of a flow may be stale (after the program changed `TI_FLOWS`).
#[inline(always)]
fn flows_changed() {
    if let Some(epoch) = FLOW_EPOCH.get_ptr_mut(0) {
        // SAFETY: element 0 of an array map, 8-aligned; the only writes are atomic adds (here
        // and in the workers' mapping). BPF has no atomic types in `core`: the intrinsic is
        // the program's one `lock add`.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(epoch, 1);
        }
    }
}

/// Records the client's SYN: its sequence number, window and options.
#[inline(always)]
fn record_syn(ctx: &XdpContext, record: &mut Handshake, s: &TcpSegment) {
    record.client_isn = s.seq;
    record.client_window = s.window;
    record.client_opts_len = copy_options(ctx, s.opts_offset, s.opts_len, &mut record.client_opts);
    record.seen = HANDSHAKE_SYN;
}

/// Copies a header's options (a multiple of 4 bytes, at most 40) four bytes at a time; returns
/// how many were copied.
#[inline(always)]
fn copy_options(ctx: &XdpContext, offset: u16, len: u8, out: &mut [u8; TCP_OPTIONS_MAX]) -> u8 {
    let frame = XdpFrame(ctx);
    let len = usize::from(len).min(TCP_OPTIONS_MAX);
    let mut copied = 0u8;
    for word in 0..TCP_OPTIONS_MAX / 4 {
        if word * 4 >= len {
            break;
        }
        let Some(bytes) = frame.load::<4>(usize::from(offset) + word * 4) else {
            break;
        };
        for (i, b) in bytes.iter().enumerate() {
            if let Some(slot) = out.get_mut(word * 4 + i) {
                *slot = *b;
            }
        }
        copied += 4;
    }
    copied
}

/// The owner of the lowest scope slot of the live generation that accepts all four values.
#[inline(always)]
fn classify(
    generation: u32,
    src: [u8; 4],
    dst: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
) -> Option<SlotOwner> {
    // The destination port first: an array lookup, and for most traffic no scope has the port,
    // which spares the two trie lookups (what keeps UDP such as DNS cheap).
    let dport_bits = DST_PORT.get(port_index(generation, u16::from_be_bytes(dport)))?;
    if dport_bits.is_empty() {
        return None;
    }
    let full = AddrKey::GENERATION_BITS + 32;
    let sport_bits = SRC_PORT.get(port_index(generation, u16::from_be_bytes(sport)))?;
    let src_bits = SRC_ADDR.get(Key::new(full, AddrKey::new(generation, src)))?;
    let dst_bits = DST_ADDR.get(Key::new(full, AddrKey::new(generation, dst)))?;
    let slot = first_common_bit(src_bits, dst_bits, sport_bits, dport_bits)?;
    SLOTS.get(slot_index(generation, slot)).copied()
}

#[inline(always)]
fn steer(ctx: &XdpContext, side: u32, len: u64, scope: Scope, flags: u32) -> u32 {
    let queue = ctx.rx_queue_index();
    if queue < MAX_QUEUES {
        // With no flags the redirect fails when the queue has no socket.
        if let Ok(action) = XSKS.redirect(xsk_index(side, queue), 0) {
            count2(counter::STEERED_FRAMES, counter::STEERED_BYTES, len);
            scope_add(scope, |c| {
                c.steered_frames += 1;
                c.steered_bytes += len;
            });
            return action;
        }
    }
    // The socket is gone (dataplane stopped or crashed): keep the network up, unless the
    // scope's policy fails closed.
    if flags & SLOT_FAIL_CLOSED != 0 {
        return fail_closed(len, scope);
    }
    fail_open(ctx, len, scope)
}

/// A frame of a fail-closed scope that found no socket: dropped, and counted as such.
#[inline(always)]
fn fail_closed(len: u64, scope: Scope) -> u32 {
    count2(counter::DROPPED_FRAMES, counter::DROPPED_BYTES, len);
    scope_add(scope, |c| c.dropped_frames += 1);
    XDP_DROP
}

/// A frame that should have gone to a socket and found none: bridged, so the network stays up.
#[inline(always)]
fn fail_open(ctx: &XdpContext, len: u64, scope: Scope) -> u32 {
    scope_add(scope, |c| {
        c.failopen_frames += 1;
        c.failopen_bytes += len;
    });
    to_peer(ctx, len, Some((scope, counter::FAILOPEN_FRAMES, counter::FAILOPEN_BYTES)))
}

/// A frame of a flow marked bypass.
#[inline(always)]
fn bypass(ctx: &XdpContext, len: u64, scope: Scope) -> u32 {
    scope_add(scope, |c| {
        c.bypass_frames += 1;
        c.bypass_bytes += len;
    });
    to_peer(ctx, len, Some((scope, counter::BYPASS_FRAMES, counter::BYPASS_BYTES)))
}

/// A frame no scope cares about.
#[inline(always)]
fn bridge(ctx: &XdpContext, len: u64) -> u32 {
    to_peer(ctx, len, None)
}

/// Redirects to the other interface; every frame that leaves this way is counted as bridged.
/// A scope's frame also counts in the global pair of counters named with it (bypass,
/// fail-open), through the same per-CPU lookup.
#[inline(always)]
fn to_peer(ctx: &XdpContext, len: u64, scoped: Option<(Scope, usize, usize)>) -> u32 {
    let (action, frames, bytes) = match PEERS.redirect(ctx.ingress_ifindex() as u32, 0) {
        Ok(action) => (action, counter::BRIDGED_FRAMES, counter::BRIDGED_BYTES),
        Err(_) => {
            if let Some((scope, _, _)) = scoped {
                scope_add(scope, |c| c.dropped_frames += 1);
            }
            (XDP_DROP, counter::DROPPED_FRAMES, counter::DROPPED_BYTES)
        }
    };
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: this CPU's own slot of a per-CPU array; XDP runs with preemption off.
        let c = unsafe { &mut *c };
        if frames < counter::COUNT && bytes < counter::COUNT {
            c.values[frames] += 1;
            c.values[bytes] += len;
        }
        if let Some((_, frames, bytes)) = scoped {
            if frames < counter::COUNT && bytes < counter::COUNT {
                c.values[frames] += 1;
                c.values[bytes] += len;
            }
        }
    }
    action
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

/// Adds `n` to global counter `index` (the verifier inlines this per-CPU array lookup).
#[inline(always)]
fn count(index: usize, n: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: this CPU's own slot of a per-CPU array; XDP runs with preemption off.
        let c = unsafe { &mut *c };
        if index < counter::COUNT {
            c.values[index] += n;
        }
    }
}

/// One frame of `len` bytes: counters `frames` and `bytes` through one per-CPU lookup.
#[inline(always)]
fn count2(frames: usize, bytes: usize, len: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: this CPU's own slot of a per-CPU array; XDP runs with preemption off.
        let c = unsafe { &mut *c };
        if frames < counter::COUNT && bytes < counter::COUNT {
            c.values[frames] += 1;
            c.values[bytes] += len;
        }
    }
}

/// A scope's ID and its counters' element, as a slot owner, flow or handshake carries them.
#[derive(Clone, Copy)]
struct Scope {
    id: u32,
    counter: u32,
}

impl Scope {
    #[inline(always)]
    fn of(owner: &SlotOwner) -> Self {
        Self { id: owner.scope_id, counter: owner.counter }
    }
}

/// Adds to a scope's counters: an array lookup, and the tag must still name the scope.
#[inline(always)]
fn scope_add(scope: Scope, f: impl FnOnce(&mut ScopeCounters)) {
    if let Some(c) = SCOPE_COUNTERS.get_ptr_mut(scope.counter) {
        // SAFETY: this CPU's own slot of a per-CPU array; XDP runs with preemption off.
        let c = unsafe { &mut *c };
        if c.scope_id == scope.id {
            f(&mut c.counters);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
