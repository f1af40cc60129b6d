//! Keys and values of the BPF maps, and the maps' names.
//!
//! Addresses and ports are kept exactly as they are on the wire (network byte order) so the XDP
//! program never swaps bytes; `from_wire`/`to_wire` helpers convert on the userspace side.
//! Enums are never read out of map bytes: values carry integers that userspace converts with
//! `TryFrom`.

use core::mem::size_of;

use crate::classify::MAX_SCOPES;
#[cfg(feature = "user")]
use crate::classify::ScopeBitmap;

// Map names as they appear in the BPF object and under the pin directory (at most 15 bytes).
pub const MAP_CONFIG: &str = "TI_CONFIG";
pub const MAP_PEERS: &str = "TI_PEERS";
pub const MAP_XSKS: &str = "TI_XSKS";
pub const MAP_FLOWS: &str = "TI_FLOWS";
pub const MAP_SRC_ADDR: &str = "TI_SRC_ADDR";
pub const MAP_DST_ADDR: &str = "TI_DST_ADDR";
pub const MAP_SRC_PORT: &str = "TI_SRC_PORT";
pub const MAP_DST_PORT: &str = "TI_DST_PORT";
pub const MAP_SLOTS: &str = "TI_SLOTS";
pub const MAP_COUNTERS: &str = "TI_COUNTERS";
pub const MAP_SCOPE_COUNTERS: &str = "TI_SCOPE_CNT";
pub const MAP_INTEL: &str = "TI_INTEL";
pub const MAP_INTEL_COUNTERS: &str = "TI_INTEL_CNT";
pub const MAP_HANDSHAKES: &str = "TI_HANDSHAKES";
pub const MAP_SCOPE_INDEX: &str = "TI_SCOPE_IDX";
pub const MAP_FLOW_EPOCH: &str = "TI_FLOW_EPOCH";
pub const MAP_FLOW_CACHE: &str = "TI_FLOW_CACHE";
/// Every map the program defines, in the order the loader pins them.
pub const ALL_MAPS: [&str; 17] = [
    MAP_CONFIG,
    MAP_PEERS,
    MAP_XSKS,
    MAP_FLOWS,
    MAP_SRC_ADDR,
    MAP_DST_ADDR,
    MAP_SRC_PORT,
    MAP_DST_PORT,
    MAP_SLOTS,
    MAP_COUNTERS,
    MAP_SCOPE_COUNTERS,
    MAP_INTEL,
    MAP_INTEL_COUNTERS,
    MAP_HANDSHAKES,
    MAP_SCOPE_INDEX,
    MAP_FLOW_EPOCH,
    MAP_FLOW_CACHE,
];
/// The XDP program's name in the object.
pub const PROGRAM_NAME: &str = "tls_inspect";

/// Scope tables exist in two generations; [`Config::generation`] names the live one.
pub const GENERATIONS: u32 = 2;
/// Entries per generation in the port tables (one per port).
pub const PORTS: u32 = 65_536;
/// Receive queues per interface that can hold an AF_XDP socket.
pub const MAX_QUEUES: u32 = 64;
/// `BPF_F_MMAPABLE`: the port tables are written by userspace through a shared mapping.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Which of the appliance's interfaces a frame arrived on.
pub const SIDE_INSIDE: u32 = 0;
pub const SIDE_OUTSIDE: u32 = 1;

/// Index of the AF_XDP socket for `side`'s receive queue `queue` in `TI_XSKS`.
#[inline(always)]
pub const fn xsk_index(side: u32, queue: u32) -> u32 {
    side * MAX_QUEUES + queue
}

/// Index of `port` of `generation` in the port tables.
#[inline(always)]
pub const fn port_index(generation: u32, port: u16) -> u32 {
    generation * PORTS + port as u32
}

/// Index of `slot` of `generation` in `TI_SLOTS`.
#[inline(always)]
pub const fn slot_index(generation: u32, slot: u32) -> u32 {
    generation * MAX_SCOPES + slot
}

/// `TI_CONFIG[0]`: what the program needs to know about its place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The live generation of the scope tables (0 or 1).
    pub generation: u32,
    pub inside_ifindex: u32,
    pub outside_ifindex: u32,
    /// `CONFIG_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<Config>() == 16);

/// `Config::flags`: the threat-intelligence list is in use.
pub const CONFIG_INTEL_ACTIVE: u32 = 1;
/// ... and its matches are dropped (otherwise only counted).
pub const CONFIG_INTEL_BLOCK: u32 = 2;
/// ... and its live generation is 1 (otherwise 0).
pub const CONFIG_INTEL_GENERATION: u32 = 4;
/// Each CPU may use its copy of its last flow (`TI_FLOW_CACHE`). Set by the loader on x86-64
/// only: the copy is safe where a CPU never reads the table ahead of the epoch it read before
/// it (x86's ordered loads); on weakly ordered CPUs (arm64) a CPU could pair a new epoch with
/// the table as it was, so every frame looks the table up there.
pub const CONFIG_FLOW_CACHE: u32 = 8;

/// `TI_INTEL` and `TI_INTEL_CNT` hold each generation's entries in one half.
#[inline(always)]
pub const fn intel_index(generation: u32, half: u32, entry: u32) -> u32 {
    generation * half + entry
}

/// Data part of an LPM key in `TI_SRC_ADDR` / `TI_DST_ADDR`. The prefix length covers the
/// generation (always all 32 bits) plus the CIDR's length, so both generations live in one trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrKey {
    /// Generation, big-endian so that it is the key's most significant bits.
    pub generation: [u8; 4],
    /// IPv4 address, network byte order.
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<AddrKey>() == 8);

impl AddrKey {
    /// Bits of the generation at the front of every key.
    pub const GENERATION_BITS: u32 = 32;

    #[inline(always)]
    pub const fn new(generation: u32, addr: [u8; 4]) -> Self {
        Self {
            generation: generation.to_be_bytes(),
            addr,
        }
    }
}

/// A TCP flow as seen from the inside: the client is the host behind the appliance.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client_addr: [u8; 4],
    pub server_addr: [u8; 4],
    /// Network byte order.
    pub client_port: [u8; 2],
    /// Network byte order.
    pub server_port: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 12);

/// `FlowValue::action` values.
pub const FLOW_STEER: u32 = 1;
pub const FLOW_BYPASS: u32 = 2;

/// The most TCP option bytes a header can carry.
pub const TCP_OPTIONS_MAX: usize = 40;

/// `TI_HANDSHAKES[key]`: a scoped connection whose handshake the XDP program bridges between
/// the real ends, and what it recorded of it for the worker that takes the flow at its first
/// data segment (to peek at it, then pass it back or adopt it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub policy_id: u32,
    pub scope_id: u32,
    /// The `SLOT_*` flags of the scope the SYN matched.
    pub flags: u32,
    /// The scope's element in `TI_SCOPE_CNT`.
    pub counter: u32,
    /// `HANDSHAKE_*` bits: which of the two SYNs were seen.
    pub seen: u32,
    /// Initial sequence numbers, network byte order.
    pub client_isn: [u8; 4],
    pub server_isn: [u8; 4],
    /// The windows of the SYN and SYN-ACK (never scaled), network byte order.
    pub client_window: [u8; 2],
    pub server_window: [u8; 2],
    pub client_opts_len: u8,
    pub server_opts_len: u8,
    pub _pad: [u8; 2],
    /// The SYN's and SYN-ACK's TCP options, as sent (`*_opts_len` bytes of each are valid).
    pub client_opts: [u8; TCP_OPTIONS_MAX],
    pub server_opts: [u8; TCP_OPTIONS_MAX],
}
const _: () = assert!(size_of::<Handshake>() == 116);

/// `Handshake::seen`: the client's SYN.
pub const HANDSHAKE_SYN: u32 = 1;
/// ... and the server's SYN-ACK.
pub const HANDSHAKE_SYN_ACK: u32 = 2;
/// The SYN came on the addresses and ports of a steered flow both ends had closed: until the
/// SYN-ACK, the server's other segments are that flow's last ones (the worker's side of its
/// close) and go to the worker, not to the client.
pub const HANDSHAKE_AFTER_STEERED: u32 = 4;

/// What happens to a flow's frames, decided on its SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowAction {
    /// Both directions go to the AF_XDP sockets.
    Steer,
    /// Both directions are bridged (the flow matched but could not be steered).
    Bypass,
}

impl TryFrom<u32> for FlowAction {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            FLOW_STEER => Ok(Self::Steer),
            FLOW_BYPASS => Ok(Self::Bypass),
            other => Err(other),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowValue {
    pub policy_id: u32,
    pub scope_id: u32,
    /// The scope's element in `TI_SCOPE_CNT`, as it was when the flow was made.
    pub counter: u32,
    /// [`FLOW_STEER`] or [`FLOW_BYPASS`].
    pub action: u32,
    /// The `SLOT_*` flags of the scope the SYN matched, as they were then; and, for a bypass
    /// flow, the `FLOW_FIN_*` bits of the FINs seen.
    pub flags: u32,
}
const _: () = assert!(size_of::<FlowValue>() == 20);

/// `TI_FLOW_CACHE`, per CPU: the last flow this CPU found in `TI_FLOWS`, valid while
/// `TI_FLOW_EPOCH` still holds `epoch`. Every change to `TI_FLOWS` (the program's inserts and
/// removals, a worker's batch of updates) adds one to the epoch, so a copy is never used after
/// the table changed; a bulk flow's frames, which come in runs on a CPU, skip the hash lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCacheEntry {
    pub epoch: u64,
    /// The key as three words, compared without a byte loop.
    pub key: [u32; 3],
    pub value: FlowValue,
}
const _: () = assert!(size_of::<FlowCacheEntry>() == 40);

impl FlowKey {
    /// The key as three native-endian words (the bytes unchanged).
    #[inline(always)]
    pub fn words(&self) -> [u32; 3] {
        let [p0, p1] = self.client_port;
        let [q0, q1] = self.server_port;
        [u32::from_ne_bytes(self.client_addr), u32::from_ne_bytes(self.server_addr), u32::from_ne_bytes([p0, p1, q0, q1])]
    }
}

/// `FlowValue::flags` of a bypass flow: the client sent its FIN ...
pub const FLOW_FIN_CLIENT: u32 = 1 << 16;
/// ... the server sent its FIN (with both, the entry is removed).
pub const FLOW_FIN_SERVER: u32 = 1 << 17;

/// `TI_SLOTS[generation * MAX_SCOPES + slot]`: who owns a bit of that generation, and what its
/// policy says beyond steering.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotOwner {
    pub policy_id: u32,
    pub scope_id: u32,
    /// `SLOT_*` bits.
    pub flags: u32,
    /// The scope's element in `TI_SCOPE_CNT` (from `TI_SCOPE_IDX`).
    pub counter: u32,
}
const _: () = assert!(size_of::<SlotOwner>() == 16);

/// `SlotOwner::flags`: UDP from the scope's sources to its destinations and destination ports
/// (QUIC) is dropped, so that browsers fall back to TCP, where the scope inspects them.
pub const SLOT_QUIC_BLOCK: u32 = 1;
/// ... and a server that asks for a client certificate is refused instead of excluded from
/// inspection.
pub const SLOT_CLIENT_AUTH_BLOCK: u32 = 2;
/// ... and while no worker serves the queue, the scope's flows are dropped (fail-closed)
/// instead of bridged uninspected (fail-open).
pub const SLOT_FAIL_CLOSED: u32 = 4;

/// Indices into [`GlobalCounters::values`].
pub mod counter {
    /// Every frame redirected to the other interface (including fail-open and bypass).
    pub const BRIDGED_FRAMES: usize = 0;
    pub const BRIDGED_BYTES: usize = 1;
    /// Every frame redirected to an AF_XDP socket.
    pub const STEERED_FRAMES: usize = 2;
    pub const STEERED_BYTES: usize = 3;
    /// Frames that matched (or belong to a steered flow) but found no socket: bridged.
    pub const FAILOPEN_FRAMES: usize = 4;
    pub const FAILOPEN_BYTES: usize = 5;
    /// Frames of flows marked bypass (bridged).
    pub const BYPASS_FRAMES: usize = 6;
    pub const BYPASS_BYTES: usize = 7;
    /// Frames whose redirect to the other interface failed.
    pub const DROPPED_FRAMES: usize = 8;
    pub const DROPPED_BYTES: usize = 9;
    /// Frames the parser gave up on (bridged unchanged).
    pub const UNPARSED_FRAMES: usize = 10;
    /// SYNs from inside looked up in the scope tables.
    pub const SYN_CLASSIFIED: usize = 11;
    /// ... of which matched a scope of an enabled policy.
    pub const SYN_MATCHED: usize = 12;
    /// Flow entries that could not be written (the frame was bridged).
    pub const FLOW_INSERT_FAILED: usize = 13;
    /// Frames that arrived on an interface the program was not configured for (passed up).
    pub const FOREIGN_FRAMES: usize = 14;
    /// Frames the program could not handle for an internal reason (bridged).
    pub const ERROR_FRAMES: usize = 15;
    /// Frames from or to an address on the threat-intelligence list.
    pub const INTEL_FRAMES: usize = 16;
    /// ... of which dropped (block mode).
    pub const INTEL_DROPPED: usize = 17;
    /// UDP datagrams from inside that matched a scope whose policy blocks QUIC (dropped).
    pub const QUIC_DROPPED: usize = 18;
    /// ... whose policy passes QUIC (bridged).
    pub const QUIC_PASSED: usize = 19;
    /// Frames of scoped connections' handshakes (SYN, SYN-ACK, ACK, before any data), bridged.
    pub const HANDSHAKE_FRAMES: usize = 20;
    /// Scoped connections whose first data segment went to a worker (to peek at).
    pub const FLOWS_PEEKED: usize = 21;
    /// Data segments from inside of a scoped connection the program has no record of (the
    /// record was evicted, or the connection predates the scope): steered, and the worker
    /// resets the connection rather than let it pass uninspected.
    pub const UNRECORDED_STEERED: usize = 22;
    /// SYNs from inside of a scope that carried data (TCP Fast Open, or a flood), dropped.
    pub const SYN_DATA_DROPPED: usize = 23;
    pub const COUNT: usize = 24;

    /// Names as printed by `tls-inspect stats` and the metrics endpoint.
    pub const NAMES: [&str; COUNT] = [
        "bridged_frames",
        "bridged_bytes",
        "steered_frames",
        "steered_bytes",
        "failopen_frames",
        "failopen_bytes",
        "bypass_frames",
        "bypass_bytes",
        "dropped_frames",
        "dropped_bytes",
        "unparsed_frames",
        "syn_classified",
        "syn_matched",
        "flow_insert_failed",
        "foreign_frames",
        "error_frames",
        "intel_frames",
        "intel_dropped",
        "quic_dropped",
        "quic_passed",
        "handshake_frames",
        "flows_peeked",
        "unrecorded_steered",
        "syn_data_dropped",
    ];
}

/// `TI_COUNTERS[0]`, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalCounters {
    pub values: [u64; counter::COUNT],
}
const _: () = assert!(size_of::<GlobalCounters>() == 8 * counter::COUNT);

/// `TI_SCOPE_CNT[counter]`, per CPU: the counters of the scope that userspace gave element
/// `counter` (`TI_SCOPE_IDX[scope_id]`), tagged with its ID. Flows carry the element's index, so
/// a frame costs an array lookup, not a hash lookup; the tag keeps the frames of a removed
/// scope's last flows out of the scope that is given its element next.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeCell {
    pub scope_id: u32,
    pub _pad: u32,
    pub counters: ScopeCounters,
}
const _: () = assert!(size_of::<ScopeCell>() == 96);

/// Elements of `TI_SCOPE_CNT` (and entries of `TI_SCOPE_IDX`): the scopes of both generations.
pub const SCOPE_CELLS: u32 = 2 * MAX_SCOPES;

/// One scope's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeCounters {
    /// SYNs that matched this scope and were steered.
    pub flows_steered: u64,
    /// SYNs that matched this scope but found no AF_XDP socket (bridged).
    pub flows_failopen: u64,
    pub steered_frames: u64,
    pub steered_bytes: u64,
    pub failopen_frames: u64,
    pub failopen_bytes: u64,
    /// Frames of this scope's bypass flows (bridged).
    pub bypass_frames: u64,
    pub bypass_bytes: u64,
    pub dropped_frames: u64,
    /// UDP datagrams of this scope (QUIC) dropped by its policy.
    pub quic_dropped: u64,
    /// ... and passed (bridged) by its policy.
    pub quic_passed: u64,
}
const _: () = assert!(size_of::<ScopeCounters>() == 88);

impl ScopeCounters {
    /// Name and value of every counter, in a fixed order.
    pub fn fields(&self) -> [(&'static str, u64); 11] {
        [
            ("flows_steered", self.flows_steered),
            ("flows_failopen", self.flows_failopen),
            ("steered_frames", self.steered_frames),
            ("steered_bytes", self.steered_bytes),
            ("failopen_frames", self.failopen_frames),
            ("failopen_bytes", self.failopen_bytes),
            ("bypass_frames", self.bypass_frames),
            ("bypass_bytes", self.bypass_bytes),
            ("dropped_frames", self.dropped_frames),
            ("quic_dropped", self.quic_dropped),
            ("quic_passed", self.quic_passed),
        ]
    }

    /// Adds every counter of `other` (summing per-CPU values, or scopes into a policy).
    pub fn accumulate(&mut self, other: &Self) {
        self.flows_steered += other.flows_steered;
        self.flows_failopen += other.flows_failopen;
        self.steered_frames += other.steered_frames;
        self.steered_bytes += other.steered_bytes;
        self.failopen_frames += other.failopen_frames;
        self.failopen_bytes += other.failopen_bytes;
        self.bypass_frames += other.bypass_frames;
        self.bypass_bytes += other.bypass_bytes;
        self.dropped_frames += other.dropped_frames;
        self.quic_dropped += other.quic_dropped;
        self.quic_passed += other.quic_passed;
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY: all of these are `repr(C)`, made only of integers and byte arrays, with no
    // implicit padding (the size assertions above), so every bit pattern is valid.
    #[allow(unsafe_code)]
    mod impls {
        use super::*;
        unsafe impl aya::Pod for Config {}
        unsafe impl aya::Pod for AddrKey {}
        unsafe impl aya::Pod for FlowKey {}
        unsafe impl aya::Pod for FlowValue {}
        unsafe impl aya::Pod for Handshake {}
        unsafe impl aya::Pod for SlotOwner {}
        unsafe impl aya::Pod for GlobalCounters {}
        unsafe impl aya::Pod for ScopeCounters {}
        unsafe impl aya::Pod for ScopeCell {}
        unsafe impl aya::Pod for FlowCacheEntry {}
        unsafe impl aya::Pod for ScopeBitmap {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache compares keys as words: two keys have the same words exactly when they are the
    /// same key, and the words hold the key's bytes in order.
    #[test]
    fn flow_key_words_are_its_bytes() {
        let key = FlowKey { client_addr: [198, 18, 0, 1], server_addr: [198, 18, 0, 2], client_port: [0x9c, 0x40], server_port: [0x01, 0xbb] };
        let mut bytes = [0u8; 12];
        for (chunk, w) in bytes.chunks_mut(4).zip(key.words()) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        assert_eq!(bytes, [198, 18, 0, 1, 198, 18, 0, 2, 0x9c, 0x40, 0x01, 0xbb]);
        let mut other = key;
        other.server_port = [0x01, 0xbc];
        assert_ne!(key.words(), other.words());
        other = key;
        other.client_port = [0x40, 0x9c];
        assert_ne!(key.words(), other.words());
    }
}
