//! The client's first flight read as a TLS ClientHello, by a parser of our own that survives any
//! bytes: every read is bounds-checked, lengths are checked against what they claim to contain,
//! and the handshake message may be split over several records and TCP segments.
//!
//! It extracts what the decision needs (versions offered, SNI, ALPN, Encrypted Client Hello) and
//! computes the JA4 fingerprint of the hello for the logs.

use sha2::{Digest, Sha256};

/// Extension type numbers.
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_ECH: u16 = 0xfe0d;

/// What the first bytes of a flow are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// Not a TLS handshake: the flow is not TLS.
    NotTls(&'static str),
    /// A complete ClientHello.
    Hello(ClientHello),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The record layer's and the hello's legacy version fields.
    pub legacy_version: u16,
    /// The versions offered (supported_versions, or the legacy version), GREASE removed.
    pub versions: Vec<u16>,
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
    pub cipher_suites: Vec<u16>,
    /// Extension types in the order sent (GREASE included).
    pub extensions: Vec<u16>,
    pub signature_algorithms: Vec<u16>,
    /// An Encrypted Client Hello extension is present (the real SNI is hidden).
    pub ech: bool,
    /// Bytes of the records that carried the hello (what to replay to a rustls server).
    pub record_len: usize,
}

pub const TLS1_0: u16 = 0x0301;
pub const TLS1_1: u16 = 0x0302;
pub const TLS1_2: u16 = 0x0303;
pub const TLS1_3: u16 = 0x0304;

fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
    /// A vector with a `len_bytes`-byte length prefix.
    fn vec(&mut self, len_bytes: usize) -> Option<Reader<'a>> {
        let n = match len_bytes {
            1 => usize::from(self.u8()?),
            2 => usize::from(self.u16()?),
            _ => return None,
        };
        self.take(n).map(Reader::new)
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The largest handshake message we wait for (a hello with post-quantum key shares is a few KB).
const MAX_HELLO: usize = 64 * 1024;

/// Reads the first flight. Bytes past the hello are ignored (they wait in the client's buffer).
pub fn sniff(data: &[u8]) -> Sniff {
    // Reassemble the handshake message from as many handshake records as it spans.
    let mut msg: Vec<u8> = Vec::new();
    let mut rest = data;
    let mut consumed = 0;
    let mut record_version = 0;
    loop {
        if rest.len() < 5 {
            return if rest.is_empty() || rest[0] == 22 { Sniff::NeedMore } else { Sniff::NotTls("not a handshake record") };
        }
        if rest[0] != 22 {
            return Sniff::NotTls("not a handshake record");
        }
        let version = u16::from_be_bytes([rest[1], rest[2]]);
        if rest[1] != 3 || rest[2] > 4 {
            return Sniff::NotTls("not a TLS record version");
        }
        if record_version == 0 {
            record_version = version;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16_384 + 256 {
            return Sniff::NotTls("bad record length");
        }
        if rest.len() < 5 + len {
            return Sniff::NeedMore;
        }
        msg.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        consumed += 5 + len;
        if msg.len() >= 4 {
            if msg[0] != 1 {
                return Sniff::NotTls("first handshake message is not a ClientHello");
            }
            let body = (usize::from(msg[1]) << 16) | (usize::from(msg[2]) << 8) | usize::from(msg[3]);
            if body > MAX_HELLO {
                return Sniff::NotTls("ClientHello too large");
            }
            if msg.len() >= 4 + body {
                msg.truncate(4 + body);
                break;
            }
        }
        if msg.len() > MAX_HELLO {
            return Sniff::NotTls("ClientHello too large");
        }
    }
    match parse_hello(&msg) {
        Some(mut hello) => {
            hello.record_len = consumed;
            if hello.versions.is_empty() {
                hello.versions.push(hello.legacy_version.max(record_version));
            }
            Sniff::Hello(hello)
        }
        None => Sniff::NotTls("malformed ClientHello"),
    }
}

fn parse_hello(msg: &[u8]) -> Option<ClientHello> {
    let mut r = Reader::new(msg);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut body = Reader::new(r.take(len)?);
    let mut hello = ClientHello {
        legacy_version: body.u16()?,
        ..ClientHello::default()
    };
    body.take(32)?; // random
    body.vec(1)?; // legacy session id
    let mut suites = body.vec(2)?;
    while !suites.is_empty() {
        hello.cipher_suites.push(suites.u16()?);
    }
    body.vec(1)?; // compression methods
    if body.is_empty() {
        return Some(hello); // no extensions (SSLv3-era hello)
    }
    let mut exts = body.vec(2)?;
    while !exts.is_empty() {
        let ty = exts.u16()?;
        let mut data = exts.vec(2)?;
        hello.extensions.push(ty);
        match ty {
            EXT_SERVER_NAME => {
                let mut list = data.vec(2)?;
                while !list.is_empty() {
                    let kind = list.u8()?;
                    let name = list.vec(2)?;
                    if kind == 0 && hello.sni.is_none() {
                        let name = std::str::from_utf8(name.buf).ok()?;
                        if name.is_empty() || name.len() > 253 || !name.bytes().all(|b| b.is_ascii_graphic()) {
                            return None;
                        }
                        hello.sni = Some(name.to_ascii_lowercase());
                    }
                }
            }
            EXT_ALPN => {
                let mut list = data.vec(2)?;
                while !list.is_empty() {
                    let proto = list.vec(1)?;
                    if proto.buf.is_empty() {
                        return None;
                    }
                    hello.alpn.push(proto.buf.to_vec());
                }
            }
            EXT_SUPPORTED_VERSIONS => {
                let mut list = data.vec(1)?;
                while !list.is_empty() {
                    let v = list.u16()?;
                    if !is_grease(v) {
                        hello.versions.push(v);
                    }
                }
            }
            EXT_SIGNATURE_ALGORITHMS => {
                let mut list = data.vec(2)?;
                while !list.is_empty() {
                    hello.signature_algorithms.push(list.u16()?);
                }
            }
            EXT_ECH => hello.ech = true,
            _ => {}
        }
    }
    Some(hello)
}

impl ClientHello {
    /// The highest version offered.
    pub fn max_version(&self) -> u16 {
        self.versions.iter().copied().max().unwrap_or(self.legacy_version)
    }

    pub fn offers(&self, version: u16) -> bool {
        self.versions.contains(&version)
    }

    /// The JA4 fingerprint (FoxIO's JA4, TCP): e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`.
    pub fn ja4(&self) -> String {
        let version = match self.max_version() {
            TLS1_3 => "13",
            TLS1_2 => "12",
            TLS1_1 => "11",
            TLS1_0 => "10",
            0x0300 => "s3",
            _ => "00",
        };
        let sni = if self.sni.is_some() { 'd' } else { 'i' };
        let ciphers: Vec<u16> = self.cipher_suites.iter().copied().filter(|c| !is_grease(*c)).collect();
        let exts: Vec<u16> = self.extensions.iter().copied().filter(|e| !is_grease(*e)).collect();
        let alpn = match self.alpn.first() {
            Some(a) => {
                let (first, last) = (a[0], a[a.len() - 1]);
                if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
                    format!("{}{}", first as char, last as char)
                } else {
                    format!("{:x}{:x}", first >> 4, last & 0xf)
                }
            }
            None => "00".into(),
        };
        let a = format!("t{version}{sni}{:02}{:02}{alpn}", ciphers.len().min(99), exts.len().min(99));
        let mut sorted = ciphers.clone();
        sorted.sort_unstable();
        let b = hash12(&hex_list(&sorted));
        let mut sorted_exts: Vec<u16> = exts.into_iter().filter(|e| *e != EXT_SERVER_NAME && *e != EXT_ALPN).collect();
        sorted_exts.sort_unstable();
        let mut c_in = hex_list(&sorted_exts);
        if !self.signature_algorithms.is_empty() {
            c_in.push('_');
            c_in.push_str(&hex_list(&self.signature_algorithms));
        }
        let c = hash12(&c_in);
        format!("{a}_{b}_{c}")
    }
}

fn hex_list(v: &[u16]) -> String {
    v.iter().map(|x| format!("{x:04x}")).collect::<Vec<_>>().join(",")
}

fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The name of a TLS version for logs.
pub fn version_name(v: u16) -> &'static str {
    match v {
        TLS1_3 => "TLSv1.3",
        TLS1_2 => "TLSv1.2",
        TLS1_1 => "TLSv1.1",
        TLS1_0 => "TLSv1",
        0x0300 => "SSLv3",
        _ => "unknown",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    /// Builds a ClientHello with the given pieces (the tests' fixture builder).
    pub(crate) fn hello_bytes(sni: Option<&str>, alpn: &[&str], versions: &[u16], ech: bool) -> Vec<u8> {
        let mut exts = Vec::new();
        let mut push = |ty: u16, data: Vec<u8>| {
            exts.extend_from_slice(&ty.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(&data);
        };
        push(0x0a0a, vec![]); // GREASE
        if let Some(name) = sni {
            let mut d = Vec::new();
            d.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
            d.push(0);
            d.extend_from_slice(&(name.len() as u16).to_be_bytes());
            d.extend_from_slice(name.as_bytes());
            push(EXT_SERVER_NAME, d);
        }
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for a in alpn {
                list.push(a.len() as u8);
                list.extend_from_slice(a.as_bytes());
            }
            let mut d = (list.len() as u16).to_be_bytes().to_vec();
            d.extend_from_slice(&list);
            push(EXT_ALPN, d);
        }
        if !versions.is_empty() {
            let mut d = vec![(versions.len() * 2) as u8];
            for v in versions {
                d.extend_from_slice(&v.to_be_bytes());
            }
            push(EXT_SUPPORTED_VERSIONS, d);
        }
        push(EXT_SIGNATURE_ALGORITHMS, vec![0, 4, 0x04, 0x03, 0x08, 0x04]);
        if ech {
            push(EXT_ECH, vec![0, 1, 2, 3]);
        }
        let mut body = Vec::new();
        body.extend_from_slice(&TLS1_2.to_be_bytes());
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 6, 0x13, 0x01, 0xc0, 0x2f, 0x0a, 0x0a]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        rec.extend_from_slice(&msg);
        rec
    }

    #[test]
    fn reads_sni_alpn_versions_and_ech() {
        let b = hello_bytes(Some("Example.TEST"), &["h2", "http/1.1"], &[0x1a1a, TLS1_3, TLS1_2], true);
        let Sniff::Hello(h) = sniff(&b) else { panic!() };
        assert_eq!(h.sni.as_deref(), Some("example.test"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(h.versions, vec![TLS1_3, TLS1_2]);
        assert_eq!(h.max_version(), TLS1_3);
        assert!(h.ech);
        assert_eq!(h.record_len, b.len());
        let ja4 = h.ja4();
        assert!(ja4.starts_with("t13d0205h2_"), "{ja4}");
        assert_eq!(ja4.len(), "t13d0205h2_".len() + 12 + 1 + 12);
    }

    #[test]
    fn legacy_only_hello() {
        let b = hello_bytes(None, &[], &[], false);
        let Sniff::Hello(h) = sniff(&b) else { panic!() };
        assert_eq!(h.versions, vec![TLS1_2]);
        assert!(h.sni.is_none() && !h.ech);
        assert!(h.ja4().starts_with("t12i"));
    }

    #[test]
    fn split_over_records_and_segments() {
        let b = hello_bytes(Some("a.test"), &["h2"], &[TLS1_3], false);
        // Re-frame the handshake message as two records.
        let msg = &b[5..];
        let (m1, m2) = msg.split_at(20);
        let mut two = vec![22, 3, 1];
        two.extend_from_slice(&(m1.len() as u16).to_be_bytes());
        two.extend_from_slice(m1);
        two.extend_from_slice(&[22, 3, 3]);
        two.extend_from_slice(&(m2.len() as u16).to_be_bytes());
        two.extend_from_slice(m2);
        for cut in 0..two.len() {
            assert_eq!(sniff(&two[..cut]), Sniff::NeedMore, "cut at {cut}");
        }
        let Sniff::Hello(h) = sniff(&two) else { panic!() };
        assert_eq!(h.sni.as_deref(), Some("a.test"));
        assert_eq!(h.record_len, two.len());
    }

    #[test]
    fn not_tls() {
        assert!(matches!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::NotTls(_)));
        assert!(matches!(sniff(b"SSH-2.0-OpenSSH_9\r\n"), Sniff::NotTls(_)));
        assert!(matches!(sniff(&[22, 3, 9, 0, 5, 1, 0, 0, 1, 0]), Sniff::NotTls(_)));
        assert!(matches!(sniff(&[22, 3, 1, 0, 4, 2, 0, 0, 0]), Sniff::NotTls(_)), "a ServerHello first");
        assert_eq!(sniff(&[]), Sniff::NeedMore);
        assert_eq!(sniff(&[22, 3]), Sniff::NeedMore);
    }

    #[test]
    fn corrupted_hellos_never_panic() {
        let b = hello_bytes(Some("x.test"), &["h2"], &[TLS1_3], true);
        // Every single-byte change, and every truncation, is a hello, more, or not TLS.
        for i in 0..b.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut c = b.clone();
                c[i] = v;
                let _ = sniff(&c);
            }
            let _ = sniff(&b[..i]);
        }
        // Pseudo-random garbage behind a valid record header.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut c = vec![22, 3, 1, 0, 200];
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                c.push(x as u8);
            }
            let _ = sniff(&c);
        }
    }
}
