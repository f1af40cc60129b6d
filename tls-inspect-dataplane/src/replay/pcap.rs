//! Classic libpcap files, read as a stream: both byte orders, microsecond and nanosecond
//! timestamps. A pcapng file is recognised and refused with a clear error. Every record is
//! bounded ([`MAX_RECORD`]) before it is read, so a lying length field cannot make us allocate.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest packet record read (Wireshark's own limit for classic pcap).
pub const MAX_RECORD: u32 = 256 * 1024;

/// The link layers we decode ([`super::decode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// BSD loopback: a 4-byte address family in host order (0).
    Null,
    /// Ethernet II, with 802.1Q/802.1ad tags (1).
    Ethernet,
    /// Raw IP: the packet starts at its IP header (12, 14, 101, 228).
    RawIpv4,
    /// Linux cooked capture, version 1 (113).
    LinuxSll,
}

impl TryFrom<u32> for LinkType {
    type Error = PcapError;

    fn try_from(v: u32) -> Result<Self, PcapError> {
        match v {
            0 => Ok(LinkType::Null),
            1 => Ok(LinkType::Ethernet),
            12 | 14 | 101 | 228 => Ok(LinkType::RawIpv4),
            113 => Ok(LinkType::LinuxSll),
            other => Err(PcapError::LinkType(other)),
        }
    }
}

/// What is wrong with a file; the offset is where in the file it was found.
#[derive(Debug)]
pub enum PcapError {
    /// Reading the file failed.
    Io(std::io::Error),
    /// The file is shorter than the 24-byte global header.
    NoHeader,
    /// The file starts with a pcapng section header block: not supported.
    Pcapng,
    /// The first four bytes are no pcap magic number.
    Magic(u32),
    /// A link type we do not decode.
    LinkType(u32),
    /// The file ends inside a record's header or data.
    Truncated { packet: u64, offset: u64 },
    /// A record longer than [`MAX_RECORD`] (or than its own original length).
    RecordLength { packet: u64, offset: u64, len: u32 },
}

impl std::fmt::Display for PcapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PcapError::Io(e) => write!(f, "reading: {e}"),
            PcapError::NoHeader => f.write_str("not a pcap file: shorter than the 24-byte file header"),
            PcapError::Pcapng => f.write_str("a pcapng file: only classic pcap is read (convert it with `editcap -F pcap IN OUT`)"),
            PcapError::Magic(m) => write!(f, "not a pcap file: magic number {m:#010x} at offset 0"),
            PcapError::LinkType(t) => write!(f, "link type {t} is not supported (Ethernet 1, raw IPv4 101/228, Linux cooked 113, loopback 0)"),
            PcapError::Truncated { packet, offset } => write!(f, "truncated: packet {packet} at offset {offset} ends before its length"),
            PcapError::RecordLength { packet, offset, len } => {
                write!(f, "packet {packet} at offset {offset}: record length {len} is over the limit of {MAX_RECORD} bytes")
            }
        }
    }
}

impl std::error::Error for PcapError {}

/// One packet record: its capture time and the bytes captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub time: SystemTime,
    pub data: Vec<u8>,
}

/// A classic pcap file being read.
pub struct PcapReader<R> {
    inner: R,
    big_endian: bool,
    nanos: bool,
    pub link: LinkType,
    /// Records read so far, and the offset of the next one.
    packets: u64,
    offset: u64,
}

/// Reads as many bytes as are there, up to `buf.len()`: fewer only at the end of the file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, PcapError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PcapError::Io(e)),
        }
    }
    Ok(n)
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the file header.
    pub fn new(mut inner: R) -> Result<Self, PcapError> {
        let mut h = [0u8; 24];
        let n = read_full(&mut inner, &mut h)?;
        if n >= 4 && h[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
            return Err(PcapError::Pcapng);
        }
        if n < 24 {
            return Err(PcapError::NoHeader);
        }
        let le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (big_endian, nanos) = match le {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            0xd4c3_b2a1 => (true, false),
            0x4d3c_b2a1 => (true, true),
            other => return Err(PcapError::Magic(other)),
        };
        let mut reader = Self { inner, big_endian, nanos, link: LinkType::Ethernet, packets: 0, offset: 24 };
        // The low 28 bits are the link type (the top bits carry FCS information).
        reader.link = LinkType::try_from(reader.u32_at(&h, 20) & 0x0fff_ffff)?;
        Ok(reader)
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let mut w = [0u8; 4];
        if let Some(s) = b.get(at..at + 4) {
            w.copy_from_slice(s);
        }
        if self.big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    }

    /// The next record, `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let mut h = [0u8; 16];
        let n = read_full(&mut self.inner, &mut h)?;
        let packet = self.packets + 1;
        if n == 0 {
            return Ok(None);
        }
        if n < 16 {
            return Err(PcapError::Truncated { packet, offset: self.offset });
        }
        let secs = self.u32_at(&h, 0);
        let frac = self.u32_at(&h, 4);
        let len = self.u32_at(&h, 8);
        if len > MAX_RECORD {
            return Err(PcapError::RecordLength { packet, offset: self.offset, len });
        }
        let mut data = vec![0u8; len as usize];
        if read_full(&mut self.inner, &mut data)? < data.len() {
            return Err(PcapError::Truncated { packet, offset: self.offset });
        }
        let sub = if self.nanos { Duration::from_nanos(u64::from(frac)) } else { Duration::from_micros(u64::from(frac)) };
        let time = UNIX_EPOCH + Duration::from_secs(u64::from(secs)) + sub;
        self.packets = packet;
        self.offset += 16 + u64::from(len);
        Ok(Some(Record { time, data }))
    }

    /// Records read so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, big: bool, link: u32) -> Vec<u8> {
        let w = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut out = Vec::new();
        out.extend(w(magic));
        out.extend(if big { 2u16.to_be_bytes() } else { 2u16.to_le_bytes() });
        out.extend(if big { 4u16.to_be_bytes() } else { 4u16.to_le_bytes() });
        out.extend(w(0));
        out.extend(w(0));
        out.extend(w(65535));
        out.extend(w(link));
        out
    }

    fn record(big: bool, secs: u32, frac: u32, data: &[u8]) -> Vec<u8> {
        let w = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut out = Vec::new();
        for v in [secs, frac, data.len() as u32, data.len() as u32] {
            out.extend(w(v));
        }
        out.extend(data);
        out
    }

    #[test]
    fn both_byte_orders_and_both_resolutions() {
        for big in [false, true] {
            for (magic, nanos) in [(0xa1b2_c3d4u32, false), (0xa1b2_3c4d, true)] {
                let mut file = header(magic, big, 1);
                file.extend(record(big, 10, 500, b"abc"));
                let mut r = PcapReader::new(&file[..]).unwrap();
                assert_eq!(r.link, LinkType::Ethernet);
                let rec = r.next_record().unwrap().unwrap();
                let sub = if nanos { Duration::from_nanos(500) } else { Duration::from_micros(500) };
                assert_eq!(rec.time, UNIX_EPOCH + Duration::from_secs(10) + sub);
                assert_eq!(rec.data, b"abc");
                assert!(r.next_record().unwrap().is_none());
            }
        }
    }

    #[test]
    fn bad_files_say_what_and_where() {
        assert!(matches!(PcapReader::new(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0][..]), Err(PcapError::Pcapng)));
        assert!(matches!(PcapReader::new(&b"short"[..]), Err(PcapError::NoHeader)));
        assert!(matches!(PcapReader::new(&[0u8; 24][..]), Err(PcapError::Magic(0))));
        assert!(matches!(PcapReader::new(&header(0xa1b2_c3d4, false, 105)[..]), Err(PcapError::LinkType(105))));
        let mut file = header(0xa1b2_c3d4, false, 1);
        file.extend(record(false, 1, 0, b"abcdef"));
        file.truncate(file.len() - 2);
        let mut r = PcapReader::new(&file[..]).unwrap();
        let e = r.next_record().unwrap_err();
        assert_eq!(e.to_string(), "truncated: packet 1 at offset 24 ends before its length");
        let mut file = header(0xa1b2_c3d4, false, 1);
        file.extend([0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
        let e = PcapReader::new(&file[..]).unwrap().next_record().unwrap_err();
        assert!(matches!(e, PcapError::RecordLength { packet: 1, offset: 24, .. }), "{e}");
    }
}
