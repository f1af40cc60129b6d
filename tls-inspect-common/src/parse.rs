//! A frame parser with one bounds-checked cursor: Ethernet, at most one 802.1Q/802.1ad tag,
//! IPv4, TCP and UDP. It runs in the XDP program (over the packet, through [`Packet`]) and on
//! the host (over a byte slice) for tests.
//!
//! Every read goes through [`Packet::load`], which returns `None` past the end of the frame, so
//! no input can make the parser read out of bounds; a frame it cannot make sense of is an error
//! the caller turns into "bridge unchanged".

/// Byte access to a frame, bounds-checked on every read.
pub trait Packet {
    /// The `N` bytes at offset `off`, or `None` if any of them lies past the end of the frame.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
}

impl Packet for [u8] {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let end = off.checked_add(N)?;
        let bytes = self.get(off..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// The transport part of an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// Ports in network byte order, and the rest of the header.
    Tcp {
        sport: [u8; 2],
        dport: [u8; 2],
        seg: TcpSegment,
    },
    Udp {
        sport: [u8; 2],
        dport: [u8; 2],
    },
    /// A non-first fragment, or a first fragment of a fragmented packet: no ports to classify.
    Fragment,
    /// Any other IP protocol (ICMP, GRE, ...).
    Other(u8),
}

/// What the parser reads of a TCP segment beyond its ports (what the XDP program records of a
/// handshake, and how it tells data from a bare ACK).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    pub flags: u8,
    /// Network byte order.
    pub seq: [u8; 4],
    /// Network byte order.
    pub window: [u8; 2],
    /// Offset of the TCP options from the frame's start, and their length (0 to 40).
    pub opts_offset: u16,
    pub opts_len: u8,
    /// Payload bytes, from the IPv4 total length (not the frame's, which may be padded).
    pub payload_len: u16,
}

/// What a frame is, as far as classification cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Ipv4 {
        /// Offset of the IPv4 header (14, or 18 behind a VLAN tag).
        l3_offset: usize,
        src: [u8; 4],
        dst: [u8; 4],
        l4: L4,
    },
    Ipv6,
    Arp,
    /// Any other EtherType.
    Other(u16),
}

impl Frame {
    /// True for a TCP segment with SYN set and ACK clear: the only segment that is classified.
    #[inline(always)]
    pub fn is_tcp_syn(&self) -> bool {
        matches!(self, Frame::Ipv4 { l4: L4::Tcp { seg, .. }, .. } if seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The frame ends inside a header.
    Truncated,
    /// An IPv4 header with a version other than 4 or a header length under 20 bytes.
    BadIpv4Header,
    /// A TCP header whose data offset is under 20 bytes.
    BadTcpHeader,
}

/// Parses a frame's headers. Never reads past the frame; never panics.
#[inline(always)]
pub fn parse_frame<P: Packet + ?Sized>(p: &P) -> Result<Frame, ParseError> {
    let eth: [u8; ETH_HLEN] = p.load(0).ok_or(ParseError::Truncated)?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut l3_offset = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        // Tag control (2 bytes), then the encapsulated EtherType.
        let tag: [u8; 4] = p.load(ETH_HLEN).ok_or(ParseError::Truncated)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        l3_offset += 4;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(p, l3_offset),
        ETH_P_IPV6 => Ok(Frame::Ipv6),
        ETH_P_ARP => Ok(Frame::Arp),
        other => Ok(Frame::Other(other)),
    }
}

#[inline(always)]
fn parse_ipv4<P: Packet + ?Sized>(p: &P, l3_offset: usize) -> Result<Frame, ParseError> {
    let ip: [u8; 20] = p.load(l3_offset).ok_or(ParseError::Truncated)?;
    if ip[0] >> 4 != 4 {
        return Err(ParseError::BadIpv4Header);
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(ParseError::BadIpv4Header);
    }
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let fragment_offset = frag & 0x1fff;
    let proto = ip[9];
    let l4_offset = l3_offset + ihl;
    let l4 = if more_fragments || fragment_offset != 0 {
        L4::Fragment
    } else {
        match proto {
            IPPROTO_TCP => {
                let tcp: [u8; 16] = p.load(l4_offset).ok_or(ParseError::Truncated)?;
                let data_offset = ((tcp[12] >> 4) as usize) * 4;
                if data_offset < 20 {
                    return Err(ParseError::BadTcpHeader);
                }
                let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
                L4::Tcp {
                    sport: [tcp[0], tcp[1]],
                    dport: [tcp[2], tcp[3]],
                    seg: TcpSegment {
                        flags: tcp[13],
                        seq: [tcp[4], tcp[5], tcp[6], tcp[7]],
                        window: [tcp[14], tcp[15]],
                        opts_offset: (l4_offset + 20) as u16,
                        opts_len: (data_offset - 20) as u8,
                        payload_len: total.saturating_sub(ihl + data_offset) as u16,
                    },
                }
            }
            IPPROTO_UDP => {
                let udp: [u8; 8] = p.load(l4_offset).ok_or(ParseError::Truncated)?;
                L4::Udp {
                    sport: [udp[0], udp[1]],
                    dport: [udp[2], udp[3]],
                }
            }
            other => L4::Other(other),
        }
    };
    Ok(Frame::Ipv4 {
        l3_offset,
        src,
        dst,
        l4,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    /// A real SYN as captured (curl to 198.18.0.2:443 from 198.18.0.1:40000), with options.
    const SYN: [u8; 74] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, // eth
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, // ipv4 ...
        198, 18, 0, 1, 198, 18, 0, 2, // addresses
        0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // ports, seq, ack
        0xa0, 0x02, 0xfa, 0xf0, 0x00, 0x00, 0x00, 0x00, // doff=10, SYN, window, csum, urg
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x03, 0x03, 0x07, // options
    ];

    fn vlan(frame: &[u8], tpid: u16) -> [u8; 78] {
        let mut out = [0u8; 78];
        out[..12].copy_from_slice(&frame[..12]);
        out[12..14].copy_from_slice(&tpid.to_be_bytes());
        out[14..16].copy_from_slice(&[0x00, 0x64]); // VLAN 100
        out[16..].copy_from_slice(&frame[12..]);
        out
    }

    #[test]
    fn syn() {
        let f = parse_frame(&SYN[..]).unwrap();
        assert_eq!(
            f,
            Frame::Ipv4 {
                l3_offset: 14,
                src: [198, 18, 0, 1],
                dst: [198, 18, 0, 2],
                l4: L4::Tcp {
                    sport: 40000u16.to_be_bytes(),
                    dport: 443u16.to_be_bytes(),
                    seg: TcpSegment {
                        flags: TCP_SYN,
                        seq: [0, 0, 0, 1],
                        window: [0xfa, 0xf0],
                        opts_offset: 54,
                        opts_len: 20,
                        payload_len: 0,
                    },
                }
            }
        );
        assert!(f.is_tcp_syn());
    }

    #[test]
    fn payload_length_comes_from_the_ip_header_not_the_padding() {
        let mut f = [0u8; 84];
        f[..74].copy_from_slice(&SYN);
        // Total length 60 + 5 bytes of payload, then 5 bytes of Ethernet padding.
        f[16..18].copy_from_slice(&65u16.to_be_bytes());
        match parse_frame(&f[..]).unwrap() {
            Frame::Ipv4 { l4: L4::Tcp { seg, .. }, .. } => assert_eq!(seg.payload_len, 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syn_ack_is_not_classified() {
        let mut f = SYN;
        f[47] = TCP_SYN | TCP_ACK;
        assert!(!parse_frame(&f[..]).unwrap().is_tcp_syn());
    }

    #[test]
    fn vlan_tags() {
        for tpid in [ETH_P_8021Q, ETH_P_8021AD] {
            let f = vlan(&SYN, tpid);
            match parse_frame(&f[..]).unwrap() {
                Frame::Ipv4 { l3_offset, l4, .. } => {
                    assert_eq!(l3_offset, 18);
                    assert!(matches!(l4, L4::Tcp { seg: TcpSegment { flags: TCP_SYN, .. }, .. }));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn ip_options_move_the_tcp_header() {
        // IHL 6: one 4-byte option (NOPs) between the IPv4 and TCP headers.
        let mut f = [0u8; 78];
        f[..34].copy_from_slice(&SYN[..34]);
        f[14] = 0x46;
        f[34..38].copy_from_slice(&[1, 1, 1, 0]);
        f[38..].copy_from_slice(&SYN[34..]);
        match parse_frame(&f[..]).unwrap() {
            Frame::Ipv4 { l4: L4::Tcp { dport, .. }, .. } => assert_eq!(dport, 443u16.to_be_bytes()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn udp() {
        let mut f = [0u8; 42];
        f[..34].copy_from_slice(&SYN[..34]);
        f[23] = IPPROTO_UDP;
        f[34..38].copy_from_slice(&[0x13, 0x88, 0x01, 0xbb]); // 5000 -> 443 (QUIC)
        match parse_frame(&f[..]).unwrap() {
            Frame::Ipv4 { l4: L4::Udp { sport, dport }, .. } => {
                assert_eq!(u16::from_be_bytes(sport), 5000);
                assert_eq!(u16::from_be_bytes(dport), 443);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fragments_have_no_ports() {
        let mut f = SYN;
        f[20] = 0x20; // MF
        assert!(matches!(parse_frame(&f[..]), Ok(Frame::Ipv4 { l4: L4::Fragment, .. })));
        let mut f = SYN;
        f[20] = 0x00;
        f[21] = 0x10; // offset 16 (x8 bytes)
        assert!(matches!(parse_frame(&f[..]), Ok(Frame::Ipv4 { l4: L4::Fragment, .. })));
    }

    #[test]
    fn other_ethertypes() {
        let mut f = SYN;
        f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
        assert_eq!(parse_frame(&f[..]), Ok(Frame::Arp));
        f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        assert_eq!(parse_frame(&f[..]), Ok(Frame::Ipv6));
        f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes()); // LLDP
        assert_eq!(parse_frame(&f[..]), Ok(Frame::Other(0x88cc)));
        let mut f = SYN;
        f[23] = 1; // ICMP
        assert!(matches!(parse_frame(&f[..]), Ok(Frame::Ipv4 { l4: L4::Other(1), .. })));
    }

    #[test]
    fn malformed_headers() {
        let mut f = SYN;
        f[14] = 0x65; // version 6 inside an IPv4 EtherType
        assert_eq!(parse_frame(&f[..]), Err(ParseError::BadIpv4Header));
        f[14] = 0x44; // IHL 4
        assert_eq!(parse_frame(&f[..]), Err(ParseError::BadIpv4Header));
        let mut f = SYN;
        f[46] = 0x40; // TCP data offset 4
        assert_eq!(parse_frame(&f[..]), Err(ParseError::BadTcpHeader));
        let mut f = SYN;
        f[14] = 0x4f; // IHL 15: TCP header would start past the frame
        assert_eq!(parse_frame(&f[..]), Err(ParseError::Truncated));
    }

    #[test]
    fn every_truncation_is_an_error_or_a_frame_never_a_panic() {
        for len in 0..SYN.len() {
            let r = parse_frame(&SYN[..len]);
            if len < 14 + 20 + 16 {
                assert_eq!(r, Err(ParseError::Truncated), "len {len}");
            } else {
                assert!(r.is_ok(), "len {len}");
            }
        }
        let v = vlan(&SYN, ETH_P_8021Q);
        for len in 0..v.len() {
            let _ = parse_frame(&v[..len]);
        }
    }
}
