//! Frame-level helpers around smoltcp's `wire` types: Ethernet headers learned from a SYN, the
//! MSS option, the RST a client gets when the server refuses the connection, and what adopting
//! a connection whose handshake the XDP program bridged needs: its SYN options, segments made
//! from recorded numbers, and the translation between a leg's sequence space and the one the
//! real ends agreed on.

use std::net::Ipv4Addr;
use std::ops::Range;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, TcpTimestampRepr};

/// An Ethernet header (with its VLAN tag, if the flow has one) to put in front of IP packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHeader {
    bytes: [u8; 18],
    len: u8,
}

impl EthHeader {
    /// The headers for both directions of a flow, from its first frame (sent by `from` to
    /// `to`): returns (towards the sender, towards the receiver).
    pub fn pair(frame: &[u8], l3_offset: usize) -> Option<(Self, Self)> {
        if frame.len() < l3_offset || !(l3_offset == 14 || l3_offset == 18) {
            return None;
        }
        let mut forward = [0u8; 18];
        forward[..l3_offset].copy_from_slice(&frame[..l3_offset]);
        let mut back = forward;
        back[..6].copy_from_slice(&frame[6..12]);
        back[6..12].copy_from_slice(&frame[..6]);
        let len = l3_offset as u8;
        Some((Self { bytes: back, len }, Self { bytes: forward, len }))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    #[expect(clippy::len_without_is_empty, reason = "a header is never empty: its length is 14 or 18")]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
}

/// The IPv4 packet inside a frame, trimmed to its total length (Ethernet pads short frames).
pub fn ip_packet(frame: &[u8], l3_offset: usize) -> Option<&[u8]> {
    let ip = frame.get(l3_offset..)?;
    let packet = Ipv4Packet::new_checked(ip).ok()?;
    let total = usize::from(packet.total_len());
    ip.get(..total)
}

/// An IPv4 packet and the TCP segment inside it, both checked.
type Segment<'a> = (Ipv4Packet<&'a [u8]>, TcpPacket<&'a [u8]>);

/// The TCP header of an IPv4 packet, checked.
fn tcp_of(ip: &[u8]) -> Option<Segment<'_>> {
    let packet = Ipv4Packet::new_checked(ip).ok()?;
    if packet.next_header() != IpProtocol::Tcp {
        return None;
    }
    let header_len = usize::from(packet.header_len());
    let tcp = TcpPacket::new_checked(ip.get(header_len..usize::from(packet.total_len()))?).ok()?;
    Some((packet, tcp))
}

/// The MSS option of a SYN or SYN-ACK.
pub fn tcp_mss(ip: &[u8]) -> Option<u16> {
    let (_, tcp) = tcp_of(ip)?;
    let mut opts = tcp.options();
    while !opts.is_empty() {
        match opts[0] {
            0 => break,
            1 => opts = &opts[1..],
            kind => {
                let len = usize::from(*opts.get(1)?);
                if len < 2 || len > opts.len() {
                    break;
                }
                if kind == 2 && len == 4 {
                    return Some(u16::from_be_bytes([opts[2], opts[3]]));
                }
                opts = &opts[len..];
            }
        }
    }
    None
}

/// Flags of a TCP segment: (SYN, ACK, RST).
pub fn tcp_flags(ip: &[u8]) -> Option<(bool, bool, bool)> {
    let (_, tcp) = tcp_of(ip)?;
    Some((tcp.syn(), tcp.ack(), tcp.rst()))
}

/// The RST|ACK a closed port answers `syn` with, as an IPv4 packet from the SYN's destination.
pub fn rst_for_syn(syn: &[u8]) -> Option<Vec<u8>> {
    let (ip, tcp) = tcp_of(syn)?;
    let ip_repr = Ipv4Repr {
        src_addr: ip.dst_addr(),
        dst_addr: ip.src_addr(),
        next_header: IpProtocol::Tcp,
        payload_len: 20,
        hop_limit: 64,
    };
    let tcp_repr = TcpRepr {
        src_port: tcp.dst_port(),
        dst_port: tcp.src_port(),
        control: TcpControl::Rst,
        seq_number: smoltcp::wire::TcpSeqNumber(0),
        ack_number: Some(tcp.seq_number() + 1),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let mut out = vec![0u8; ip_repr.buffer_len() + tcp_repr.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut out[..]);
    ip_repr.emit(&mut packet, &caps);
    let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
    tcp_repr.emit(
        &mut segment,
        &ip_repr.src_addr.into(),
        &ip_repr.dst_addr.into(),
        &caps,
    );
    Some(out)
}

/// Calls `f(kind, data)` for each option of a TCP header's option bytes, until the end-of-list
/// option or a malformed one.
fn walk_options(mut opts: &[u8], mut f: impl FnMut(u8, &[u8])) {
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let Some(&len) = opts.get(1) else { break };
                let len = usize::from(len);
                if len < 2 || len > opts.len() {
                    break;
                }
                f(kind, &opts[2..len]);
                opts = &opts[len..];
            }
        }
    }
}

/// What a SYN or SYN-ACK offers: what the two ends of a connection negotiate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack: bool,
    /// (TSval, TSecr).
    pub ts: Option<(u32, u32)>,
}

impl SynOptions {
    pub fn parse(opts: &[u8]) -> Self {
        let mut o = Self::default();
        walk_options(opts, |kind, data| match (kind, data.len()) {
            (2, 2) => o.mss = Some(u16::from_be_bytes([data[0], data[1]])),
            // RFC 7323: a shift over 14 is taken as 14.
            (3, 1) => o.wscale = Some(data[0].min(14)),
            (4, 0) => o.sack = true,
            (8, 8) => o.ts = Some((u32::from_be_bytes([data[0], data[1], data[2], data[3]]), u32::from_be_bytes([data[4], data[5], data[6], data[7]]))),
            _ => {}
        });
        o
    }
}

/// The numbers of one TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub seq: u32,
    /// Present when ACK is set.
    pub ack: Option<u32>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub window: u16,
    pub tsval: Option<u32>,
    /// Where the payload lies in the IPv4 packet.
    pub payload: Range<usize>,
}

/// Reads a TCP segment's numbers, checked.
pub fn segment(ip: &[u8]) -> Option<SegmentInfo> {
    let (packet, tcp) = tcp_of(ip)?;
    let start = usize::from(packet.header_len()) + usize::from(tcp.header_len());
    let end = usize::from(packet.total_len());
    let mut tsval = None;
    walk_options(tcp.options(), |kind, data| {
        if kind == 8 && data.len() == 8 {
            tsval = Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]]));
        }
    });
    Some(SegmentInfo {
        seq: tcp.seq_number().0 as u32,
        ack: tcp.ack().then(|| tcp.ack_number().0 as u32),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        window: tcp.window_len(),
        tsval,
        payload: start.min(end)..end,
    })
}

/// A segment without payload from `src` to `dst`, made from recorded numbers: the SYN, SYN-ACK
/// and ACK a leg is shown of a handshake the real ends already made.
#[allow(clippy::too_many_arguments, reason = "every field of a segment header")]
pub fn build_segment(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), seq: u32, ack: Option<u32>, syn: bool, window: u16, opts: &SynOptions) -> Vec<u8> {
    let tcp_repr = TcpRepr {
        src_port: src.1,
        dst_port: dst.1,
        control: if syn { TcpControl::Syn } else { TcpControl::None },
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: window,
        window_scale: opts.wscale,
        max_seg_size: opts.mss,
        sack_permitted: opts.sack,
        sack_ranges: [None, None, None],
        timestamp: opts.ts.map(|(v, e)| TcpTimestampRepr::new(v, e)),
        payload: &[],
    };
    let ip_repr = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Tcp,
        payload_len: tcp_repr.buffer_len(),
        hop_limit: 64,
    };
    let mut out = vec![0u8; ip_repr.buffer_len() + tcp_repr.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut out[..]);
    ip_repr.emit(&mut packet, &caps);
    let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
    tcp_repr.emit(&mut segment, &ip_repr.src_addr.into(), &ip_repr.dst_addr.into(), &caps);
    out
}

/// The RSTs that end the connection of segment `ip` at both ends: (to its sender, to its
/// receiver), each with a sequence number the end accepts.
pub fn rst_both(ip: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (packet, tcp) = tcp_of(ip)?;
    let from = (packet.src_addr(), tcp.src_port());
    let to = (packet.dst_addr(), tcp.dst_port());
    let seq = tcp.seq_number().0 as u32;
    let ack = tcp.ack().then(|| tcp.ack_number().0 as u32)?;
    let rst = |src, dst, seq| {
        let mut out = build_segment(src, dst, seq, None, false, 0, &SynOptions::default());
        // Flags: RST alone.
        out[33] = 0x04;
        fix_tcp_checksum(&mut out);
        out
    };
    Some((rst(to, from, ack), rst(from, to, seq)))
}

/// Recomputes the TCP checksum of an IPv4 packet (after its header was changed by hand).
fn fix_tcp_checksum(ip: &mut [u8]) {
    let Ok(packet) = Ipv4Packet::new_checked(&mut ip[..]) else { return };
    let (src, dst) = (packet.src_addr(), packet.dst_addr());
    let header_len = usize::from(packet.header_len());
    if let Some(tcp) = ip.get_mut(header_len..) {
        let mut segment = TcpPacket::new_unchecked(tcp);
        segment.fill_checksum(&src.into(), &dst.into());
    }
}

/// Where a leg's TCP numbers differ from the ones its peer agreed on with the real other end:
/// the leg's sequence numbers (and timestamps) are shifted by a constant, and its window is
/// announced at the peer's agreed scale. Applied to every segment in and out of an adopted
/// leg; a leg made from a SYN of its own has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Xlate {
    /// Added to the leg's sequence numbers on the way out, taken from the peer's
    /// acknowledgements on the way in.
    pub seq: u32,
    /// Added to the leg's TSval on the way out.
    pub ts: u32,
    /// The latest TSval the real other end sent, which the leg's translated TSval never
    /// passes: the leg's clock and that end's tick apart, and a TSval ahead of the end's own
    /// would leave the peer (in TIME-WAIT after the close) refusing the end's next SYN on the
    /// same addresses and ports as older (PAWS).
    pub ts_cap: Option<u32>,
    /// The window shift the leg announces with, and the one the peer applies.
    pub win_from: u8,
    pub win_to: u8,
}

/// RFC 1624: the one's complement checksum `csum` after a 16-bit word went from `old` to `new`.
fn csum_update(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The TCP header inside an IPv4 packet, if the packet is long enough to hold it.
fn tcp_header(ip: &mut [u8]) -> Option<&mut [u8]> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tcp = ip.get_mut(ihl..)?;
    let doff = usize::from(*tcp.get(12)? >> 4) * 4;
    if doff < 20 || tcp.len() < doff {
        return None;
    }
    Some(&mut tcp[..doff])
}

/// Replaces the 32-bit field at `at` with `f(old)`, keeping the checksum right.
fn rewrite32(tcp: &mut [u8], at: usize, f: impl Fn(u32) -> u32) {
    let old = u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    let new = f(old);
    let mut csum = u16::from_be_bytes([tcp[16], tcp[17]]);
    csum = csum_update(csum, (old >> 16) as u16, (new >> 16) as u16);
    csum = csum_update(csum, old as u16, new as u16);
    tcp[at..at + 4].copy_from_slice(&new.to_be_bytes());
    tcp[16..18].copy_from_slice(&csum.to_be_bytes());
}

impl Xlate {
    /// A segment the leg sends: its sequence number, TSval and window into the peer's terms.
    pub fn outbound(&self, ip: &mut [u8]) {
        let Some(tcp) = tcp_header(ip) else { return };
        rewrite32(tcp, 4, |seq| seq.wrapping_add(self.seq));
        if self.win_from != self.win_to {
            let old = u16::from_be_bytes([tcp[14], tcp[15]]);
            let bytes = u32::from(old) << self.win_from;
            let new = (bytes >> self.win_to).min(u32::from(u16::MAX)) as u16;
            let csum = csum_update(u16::from_be_bytes([tcp[16], tcp[17]]), old, new);
            tcp[14..16].copy_from_slice(&new.to_be_bytes());
            tcp[16..18].copy_from_slice(&csum.to_be_bytes());
        }
        if let Some(at) = ts_offset(tcp) {
            rewrite32(tcp, at, |v| {
                let v = v.wrapping_add(self.ts);
                match self.ts_cap {
                    Some(cap) if (v.wrapping_sub(cap) as i32) > 0 => cap,
                    _ => v,
                }
            });
        }
    }

    /// A segment the leg receives: the acknowledgement into the leg's own sequence space.
    /// (SACK blocks and TSecr stay as they are: smoltcp reads neither.)
    pub fn inbound(&self, ip: &mut [u8]) {
        let Some(tcp) = tcp_header(ip) else { return };
        if tcp[13] & 0x10 != 0 {
            rewrite32(tcp, 8, |ack| ack.wrapping_sub(self.seq));
        }
    }
}

/// The TSval of a TCP segment in an IPv4 packet, if it has a timestamps option.
pub fn tsval(ip: &[u8]) -> Option<u32> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
        return None;
    }
    let tcp = ip.get(usize::from(ip[0] & 0x0f) * 4..)?;
    let doff = usize::from(*tcp.get(12)? >> 4) * 4;
    let tcp = tcp.get(..doff)?;
    let at = ts_offset(tcp)?;
    Some(u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]))
}

/// Offset of the TSval in a TCP header, if it has a timestamps option.
fn ts_offset(tcp: &[u8]) -> Option<usize> {
    let mut at = 20;
    while at < tcp.len() {
        match tcp[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = usize::from(*tcp.get(at + 1)?);
                if len < 2 || at + len > tcp.len() {
                    return None;
                }
                if kind == 8 && len == 10 {
                    return Some(at + 2);
                }
                at += len;
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    /// The SYN of the common crate's parser tests: MSS 1460, window scale 7, SACK, timestamps.
    const SYN: [u8; 74] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 198, 18, 0, 1, 198, 18,
        0, 2, 0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02,
        0xfa, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    #[test]
    fn mss_and_flags() {
        let ip = ip_packet(&SYN, 14).unwrap();
        assert_eq!(tcp_mss(ip), Some(1460));
        assert_eq!(tcp_flags(ip), Some((true, false, false)));
        assert_eq!(tcp_mss(&ip[..30]), None, "truncated");
    }

    #[test]
    fn padded_frames_are_trimmed() {
        let mut f = SYN.to_vec();
        f.extend_from_slice(&[0; 10]);
        assert_eq!(ip_packet(&f, 14).unwrap().len(), 60);
    }

    #[test]
    fn rst_answers_the_syn() {
        let ip = ip_packet(&SYN, 14).unwrap();
        let rst = rst_for_syn(ip).unwrap();
        let p = Ipv4Packet::new_checked(&rst[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr().octets(), [198, 18, 0, 2]);
        let t = TcpPacket::new_checked(p.payload()).unwrap();
        assert!(t.rst() && t.ack());
        assert_eq!((t.src_port(), t.dst_port()), (443, 40000));
        assert_eq!(t.ack_number(), smoltcp::wire::TcpSeqNumber(2));
        assert!(t.verify_checksum(&p.src_addr().into(), &p.dst_addr().into()));
    }

    #[test]
    fn syn_options_are_read() {
        let ip = ip_packet(&SYN, 14).unwrap();
        let tcp = TcpPacket::new_checked(&ip[20..]).unwrap();
        let o = SynOptions::parse(tcp.options());
        assert_eq!(o, SynOptions { mss: Some(1460), wscale: Some(7), sack: true, ts: Some((1, 0)) });
        assert_eq!(SynOptions::parse(&[3, 3, 200]).wscale, Some(14), "RFC 7323 caps the shift");
        assert_eq!(SynOptions::parse(&[2, 9, 1]), SynOptions::default(), "a length past the end");
    }

    fn checksum_ok(ip: &[u8]) -> bool {
        let p = Ipv4Packet::new_checked(ip).unwrap();
        let t = TcpPacket::new_checked(p.payload()).unwrap();
        t.verify_checksum(&p.src_addr().into(), &p.dst_addr().into())
    }

    #[test]
    fn a_built_segment_reads_back() {
        let opts = SynOptions { mss: Some(1400), wscale: Some(9), sack: true, ts: Some((77, 5)) };
        let ip = build_segment((Ipv4Addr::new(198, 18, 0, 2), 443), (Ipv4Addr::new(198, 18, 0, 1), 40000), 0xffff_fff0, Some(9), true, 1000, &opts);
        assert!(checksum_ok(&ip));
        let s = segment(&ip).unwrap();
        assert_eq!((s.seq, s.ack, s.syn, s.window, s.tsval), (0xffff_fff0, Some(9), true, 1000, Some(77)));
        let tcp = TcpPacket::new_checked(&ip[20..]).unwrap();
        assert_eq!(SynOptions::parse(tcp.options()), opts);
    }

    #[test]
    fn translation_keeps_the_checksum_and_moves_the_numbers() {
        let opts = SynOptions { ts: Some((1000, 2000)), ..SynOptions::default() };
        let mut ip = build_segment((Ipv4Addr::new(198, 18, 0, 2), 443), (Ipv4Addr::new(198, 18, 0, 1), 40000), 100, Some(500), false, 0x4000, &opts);
        let x = Xlate { seq: u32::MAX - 9, ts: 5, ts_cap: None, win_from: 0, win_to: 7 };
        x.outbound(&mut ip);
        assert!(checksum_ok(&ip));
        let s = segment(&ip).unwrap();
        assert_eq!((s.seq, s.ack, s.window, s.tsval), (90, Some(500), 0x4000 >> 7, Some(1005)), "seq wraps, window rescaled");
        x.inbound(&mut ip);
        assert!(checksum_ok(&ip));
        assert_eq!(segment(&ip).unwrap().ack, Some(510));
        // A window larger than the peer's scale can say is capped, not wrapped.
        let mut ip = build_segment((Ipv4Addr::new(1, 1, 1, 1), 1), (Ipv4Addr::new(2, 2, 2, 2), 2), 0, Some(0), false, 0xffff, &SynOptions::default());
        Xlate { seq: 0, ts: 0, ts_cap: None, win_from: 7, win_to: 0 }.outbound(&mut ip);
        assert_eq!(segment(&ip).unwrap().window, 0xffff);
        assert!(checksum_ok(&ip));
    }

    #[test]
    fn a_translated_tsval_never_passes_the_real_ends() {
        let opts = SynOptions { ts: Some((1000, 2000)), ..SynOptions::default() };
        let seg = || build_segment((Ipv4Addr::new(198, 18, 0, 2), 443), (Ipv4Addr::new(198, 18, 0, 1), 40000), 100, Some(500), false, 100, &opts);
        assert_eq!(tsval(&seg()), Some(1000));
        // The leg's clock is 2 ms ahead of the end's latest TSval (1001): capped there.
        let mut ip = seg();
        Xlate { seq: 0, ts: 3, ts_cap: Some(1001), win_from: 0, win_to: 0 }.outbound(&mut ip);
        assert!(checksum_ok(&ip));
        assert_eq!(tsval(&ip), Some(1001));
        // Behind the end's latest: unchanged. Across the 32-bit wrap, in sequence order.
        let mut ip = seg();
        Xlate { seq: 0, ts: 3, ts_cap: Some(5000), win_from: 0, win_to: 0 }.outbound(&mut ip);
        assert_eq!(tsval(&ip), Some(1003));
        let mut ip = seg();
        Xlate { seq: 0, ts: u32::MAX - 1999, ts_cap: Some(u32::MAX - 900), win_from: 0, win_to: 0 }.outbound(&mut ip);
        assert_eq!(tsval(&ip), Some(u32::MAX - 999), "before the cap, across the wrap");
        let mut ip = seg();
        Xlate { seq: 0, ts: 10, ts_cap: Some(u32::MAX - 1), win_from: 0, win_to: 0 }.outbound(&mut ip);
        assert_eq!(tsval(&ip), Some(u32::MAX - 1), "1010 is later than 2^32 - 2");
    }

    #[test]
    fn rsts_reach_both_ends_in_window() {
        let ip = build_segment((Ipv4Addr::new(198, 18, 0, 1), 40000), (Ipv4Addr::new(198, 18, 0, 2), 443), 1001, Some(5001), false, 100, &SynOptions::default());
        let (to_sender, to_receiver) = rst_both(&ip).unwrap();
        for (rst, seq, dport) in [(&to_sender, 5001, 40000), (&to_receiver, 1001, 443)] {
            assert!(checksum_ok(rst));
            let s = segment(rst).unwrap();
            assert!(s.rst && s.ack.is_none());
            assert_eq!(s.seq, seq);
            assert_eq!(TcpPacket::new_checked(&rst[20..]).unwrap().dst_port(), dport);
        }
    }

    #[test]
    fn eth_pair_swaps_addresses() {
        let (back, fwd) = EthHeader::pair(&SYN, 14).unwrap();
        assert_eq!(&fwd.as_bytes()[..12], &SYN[..12]);
        assert_eq!(&back.as_bytes()[..6], &SYN[6..12]);
        assert_eq!(&back.as_bytes()[6..12], &SYN[..6]);
        assert_eq!(back.len(), 14);
        assert!(EthHeader::pair(&SYN, 20).is_none());
    }
}
