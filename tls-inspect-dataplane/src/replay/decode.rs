//! A captured frame to a TCP segment: the link layer ([`LinkType`]), at most two VLAN tags,
//! IPv4 (its total length trims the link's padding), TCP. Every read is bounds-checked; what is
//! not an IPv4 TCP segment says why, so the replay can count it.

use std::net::Ipv4Addr;

use super::pcap::LinkType;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// A TCP segment of an IPv4 packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    pub seq: u32,
    pub flags: u8,
    pub payload: &'a [u8],
}

/// Why a frame is not a segment we follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// IPv6: not followed (counted).
    Ipv6,
    /// Another EtherType (ARP, ...).
    NotIp,
    /// IPv4 but not TCP (UDP, ICMP, ...).
    NotTcp,
    /// An IPv4 fragment: not reassembled.
    Fragment,
    /// Headers that do not fit the captured bytes, or are inconsistent.
    Malformed,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

/// The frame's network-layer packet and its EtherType (0x0800 IPv4, 0x86dd IPv6).
fn network(link: LinkType, frame: &[u8]) -> Result<(u16, &[u8]), Skip> {
    match link {
        LinkType::Ethernet => {
            let mut ethertype = be16(frame, 12).ok_or(Skip::Malformed)?;
            let mut at = 14;
            for _ in 0..2 {
                if ethertype == 0x8100 || ethertype == 0x88a8 {
                    ethertype = be16(frame, at + 2).ok_or(Skip::Malformed)?;
                    at += 4;
                }
            }
            Ok((ethertype, frame.get(at..).ok_or(Skip::Malformed)?))
        }
        LinkType::LinuxSll => Ok((be16(frame, 14).ok_or(Skip::Malformed)?, frame.get(16..).ok_or(Skip::Malformed)?)),
        LinkType::Null => {
            // The address family in the capturing host's order: 2 is AF_INET; 24, 28 and 30 are
            // AF_INET6 on the BSDs and macOS.
            let family = frame.get(..4).ok_or(Skip::Malformed)?;
            let af = u32::from_le_bytes([family[0], family[1], family[2], family[3]]).min(u32::from_be_bytes([family[0], family[1], family[2], family[3]]));
            let ethertype = match af {
                2 => 0x0800,
                24 | 28 | 30 => 0x86dd,
                _ => 0,
            };
            Ok((ethertype, &frame[4..]))
        }
        LinkType::RawIpv4 => {
            let version = frame.first().ok_or(Skip::Malformed)? >> 4;
            Ok((if version == 6 { 0x86dd } else { 0x0800 }, frame))
        }
    }
}

/// Decodes one frame into its TCP segment.
pub fn segment(link: LinkType, frame: &[u8]) -> Result<Segment<'_>, Skip> {
    let (ethertype, ip) = network(link, frame)?;
    match ethertype {
        0x0800 => {}
        0x86dd => return Err(Skip::Ipv6),
        _ => return Err(Skip::NotIp),
    }
    let first = *ip.first().ok_or(Skip::Malformed)?;
    if first >> 4 == 6 {
        return Err(Skip::Ipv6);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 {
        return Err(Skip::Malformed);
    }
    let total = usize::from(be16(ip, 2).ok_or(Skip::Malformed)?);
    // A total length of 0 is TSO on the capturing host: take what was captured.
    let ip = match total {
        0 => ip,
        t if t >= ihl && t <= ip.len() => &ip[..t],
        _ => return Err(Skip::Malformed),
    };
    let fragment = be16(ip, 6).ok_or(Skip::Malformed)?;
    if fragment & 0x3fff != 0 {
        return Err(Skip::Fragment);
    }
    if *ip.get(9).ok_or(Skip::Malformed)? != 6 {
        return Err(Skip::NotTcp);
    }
    let addr = |at: usize| -> Result<Ipv4Addr, Skip> { be32(ip, at).map(Ipv4Addr::from).ok_or(Skip::Malformed) };
    let (src, dst) = (addr(12)?, addr(16)?);
    let tcp = ip.get(ihl..).ok_or(Skip::Malformed)?;
    let data_offset = usize::from(tcp.get(12).ok_or(Skip::Malformed)? >> 4) * 4;
    if data_offset < 20 {
        return Err(Skip::Malformed);
    }
    Ok(Segment {
        src: (src, be16(tcp, 0).ok_or(Skip::Malformed)?),
        dst: (dst, be16(tcp, 2).ok_or(Skip::Malformed)?),
        seq: be32(tcp, 4).ok_or(Skip::Malformed)?,
        flags: *tcp.get(13).ok_or(Skip::Malformed)?,
        payload: tcp.get(data_offset..).ok_or(Skip::Malformed)?,
    })
}

/// Builds frames for the tests: Ethernet + IPv4 + TCP (no options, checksums zero).
#[cfg(test)]
pub(crate) fn frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend([0x08, 0x00]);
    let total = (20 + 20 + payload.len()) as u16;
    f.extend([0x45, 0]);
    f.extend(total.to_be_bytes());
    f.extend([0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend(src.0.octets());
    f.extend(dst.0.octets());
    f.extend(src.1.to_be_bytes());
    f.extend(dst.1.to_be_bytes());
    f.extend(seq.to_be_bytes());
    f.extend(0u32.to_be_bytes());
    f.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 0, 1), 40000);
    const B: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 0, 2), 80);

    #[test]
    fn ethernet_vlan_sll_raw_and_padding() {
        let f = frame(A, B, 7, ACK, b"hi");
        let s = segment(LinkType::Ethernet, &f).unwrap();
        assert_eq!((s.src, s.dst, s.seq, s.flags, s.payload), (A, B, 7, ACK, &b"hi"[..]));
        // Ethernet padding after the IP packet is not payload.
        let mut padded = f.clone();
        padded.extend([0u8; 8]);
        assert_eq!(segment(LinkType::Ethernet, &padded).unwrap().payload, b"hi");
        let mut tagged = f[..12].to_vec();
        tagged.extend([0x81, 0x00, 0, 5]);
        tagged.extend(&f[12..]);
        assert_eq!(segment(LinkType::Ethernet, &tagged).unwrap().payload, b"hi");
        assert_eq!(segment(LinkType::RawIpv4, &f[14..]).unwrap().payload, b"hi");
        let mut sll = vec![0u8; 14];
        sll.extend([0x08, 0x00]);
        sll.extend(&f[14..]);
        assert_eq!(segment(LinkType::LinuxSll, &sll).unwrap().payload, b"hi");
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend(&f[14..]);
        assert_eq!(segment(LinkType::Null, &null).unwrap().payload, b"hi");
    }

    #[test]
    fn what_is_skipped_says_why() {
        let f = frame(A, B, 7, ACK, b"hi");
        let mut v6 = f.clone();
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(segment(LinkType::Ethernet, &v6), Err(Skip::Ipv6));
        let mut udp = f.clone();
        udp[14 + 9] = 17;
        assert_eq!(segment(LinkType::Ethernet, &udp), Err(Skip::NotTcp));
        let mut frag = f.clone();
        frag[14 + 6] = 0x20;
        assert_eq!(segment(LinkType::Ethernet, &frag), Err(Skip::Fragment));
        for n in 0..f.len() - 2 {
            assert!(segment(LinkType::Ethernet, &f[..n]).is_err(), "{n} bytes");
        }
    }
}
