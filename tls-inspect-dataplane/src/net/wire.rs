//! Frame-level helpers around smoltcp's `wire` types: Ethernet headers learned from a SYN, the
//! MSS option, and the RST a client gets when the server refuses the connection.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr};

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
    fn eth_pair_swaps_addresses() {
        let (back, fwd) = EthHeader::pair(&SYN, 14).unwrap();
        assert_eq!(&fwd.as_bytes()[..12], &SYN[..12]);
        assert_eq!(&back.as_bytes()[..6], &SYN[6..12]);
        assert_eq!(&back.as_bytes()[6..12], &SYN[..6]);
        assert_eq!(back.len(), 14);
        assert!(EthHeader::pair(&SYN, 20).is_none());
    }
}
