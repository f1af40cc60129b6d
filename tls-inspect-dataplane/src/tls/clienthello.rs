//! The client's first flight read as a TLS ClientHello, by a parser of our own that survives any
//! bytes: every read is bounds-checked, lengths are checked against what they claim to contain,
//! and the handshake message may be split over several records and TCP segments.
//!
//! It extracts what the decision needs (versions offered, SNI, ALPN, Encrypted Client Hello) and
//! computes the JA3 and JA4 fingerprints of the hello for the logs and the IPS.

use sha2::{Digest, Sha256};

/// Extension type numbers.
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_GROUPS: u16 = 0x000a;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_ECH: u16 = 0xfe0d;
const EXT_EC_POINT_FORMATS: u16 = 0x000b;

/// What the first bytes of a flow are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant, reason = "made once per flow's first flight and moved into its decision")]
pub enum Sniff {
    /// Not enough bytes yet to tell: nothing can change before the first flight holds at least
    /// this many bytes (the end of the record being received), so a caller need not look again
    /// until then.
    NeedMore(usize),
    /// Not TLS at all (the first byte is not a handshake record's): the flow is not TLS.
    NotTls(&'static str),
    /// Starts as a TLS handshake record but is not a valid ClientHello: what was wrong.
    Malformed(&'static str),
    /// A complete ClientHello (an SSL 2.0-format one offers only [`SSL2`]).
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
    /// Key exchange groups offered (supported_groups), in the client's order, GREASE removed.
    pub groups: Vec<u16>,
    /// Key exchange groups as sent (GREASE included), for JA3.
    pub groups_sent: Vec<u16>,
    /// ec_point_formats, for JA3.
    pub ec_point_formats: Vec<u8>,
    /// An Encrypted Client Hello extension is present (the real SNI is hidden).
    pub ech: bool,
    /// Bytes of the records that carried the hello (what to replay to a rustls server).
    pub record_len: usize,
}

/// What an SSL 2.0-format ClientHello offers, whatever its version field says: only legacy stacks
/// send that format, and no TLS library we relay with reads it.
pub const SSL2: u16 = 0x0002;
pub const SSL3: u16 = 0x0300;
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
pub const MAX_HELLO: usize = 64 * 1024;

/// The most records a hello may span (real clients use one; 64 KiB in 1 KiB records is 65): the
/// bound on how often a first flight is reread before it is decided.
const MAX_RECORDS: usize = 256;

/// Reads the first flight. Bytes past the hello are ignored (they wait in the client's buffer).
/// Anything that starts as a TLS handshake record (type 22, version 3.x) is a ClientHello or
/// [`Sniff::Malformed`], never [`Sniff::NotTls`]: a hello the parser cannot read is not a reason
/// to let the flow through unseen.
pub fn sniff(data: &[u8]) -> Sniff {
    if data.first().is_some_and(|b| b & 0x80 != 0) {
        return sniff_sslv2(data);
    }
    // Reassemble the handshake message from as many handshake records as it spans.
    let mut msg: Vec<u8> = Vec::new();
    let mut rest = data;
    let mut consumed = 0;
    let mut record_version = 0;
    let mut records = 0;
    loop {
        // The record header, as far as it has arrived.
        let first = consumed == 0;
        match (rest.first(), rest.get(1), rest.get(2)) {
            (Some(22), Some(3) | None, minor) => {
                if minor.is_some_and(|m| *m > 4) {
                    return Sniff::Malformed("not a TLS record version");
                }
            }
            (Some(22), Some(_), _) if first => return Sniff::NotTls("not a TLS record version"),
            (Some(_), _, _) if first => return Sniff::NotTls("not a handshake record"),
            (Some(_), _, _) => return Sniff::Malformed("ClientHello interrupted by another record"),
            (None, _, _) => {}
        }
        if rest.len() < 5 {
            return Sniff::NeedMore(consumed + 5);
        }
        if record_version == 0 {
            record_version = u16::from_be_bytes([rest[1], rest[2]]);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16_384 + 256 {
            return Sniff::Malformed("bad record length");
        }
        if rest.len() < 5 + len {
            return Sniff::NeedMore(consumed + 5 + len);
        }
        records += 1;
        if records > MAX_RECORDS {
            return Sniff::Malformed("ClientHello in more than 256 records");
        }
        msg.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        consumed += 5 + len;
        if msg.len() >= 4 {
            if msg[0] != 1 {
                return Sniff::Malformed("first handshake message is not a ClientHello");
            }
            let body = (usize::from(msg[1]) << 16) | (usize::from(msg[2]) << 8) | usize::from(msg[3]);
            if body > MAX_HELLO {
                return Sniff::Malformed("ClientHello larger than 64 KiB");
            }
            if msg.len() >= 4 + body {
                msg.truncate(4 + body);
                break;
            }
        }
    }
    match parse_hello(&msg) {
        Ok(mut hello) => {
            hello.record_len = consumed;
            if hello.versions.is_empty() {
                hello.versions.push(hello.legacy_version.max(record_version));
            }
            Sniff::Hello(hello)
        }
        Err(why) => Sniff::Malformed(why),
    }
}

/// An SSL 2.0-format record (a two-byte header with the top bit set) that carries a
/// CLIENT-HELLO: what SSLv2 and some SSLv3/TLS 1.0-era clients send.
fn sniff_sslv2(data: &[u8]) -> Sniff {
    if data.len() < 5 {
        return Sniff::NeedMore(5);
    }
    let len = (usize::from(data[0] & 0x7f) << 8) | usize::from(data[1]);
    let (kind, major) = (data[2], data[3]);
    if kind != 1 || !(major == 0 || major == 3) || len < 9 {
        return Sniff::NotTls("not a handshake record");
    }
    if data.len() < 2 + len {
        return Sniff::NeedMore(2 + len);
    }
    Sniff::Hello(ClientHello {
        legacy_version: u16::from_be_bytes([data[3], data[4]]),
        versions: vec![SSL2],
        record_len: 2 + len,
        ..ClientHello::default()
    })
}

/// `Option` to the reason a hello is malformed.
trait Need<T> {
    fn need(self, what: &'static str) -> Result<T, &'static str>;
}

impl<T> Need<T> for Option<T> {
    fn need(self, what: &'static str) -> Result<T, &'static str> {
        self.ok_or(what)
    }
}

const TRUNCATED: &str = "truncated ClientHello";

fn parse_hello(msg: &[u8]) -> Result<ClientHello, &'static str> {
    let mut r = Reader::new(msg);
    if r.u8().need(TRUNCATED)? != 1 {
        return Err("first handshake message is not a ClientHello");
    }
    let len = r.u24().need(TRUNCATED)?;
    let mut body = Reader::new(r.take(len).need(TRUNCATED)?);
    let mut hello = ClientHello {
        legacy_version: body.u16().need(TRUNCATED)?,
        ..ClientHello::default()
    };
    body.take(32).need(TRUNCATED)?; // random
    body.vec(1).need("bad session id")?;
    let mut suites = body.vec(2).need("bad cipher suite list")?;
    while !suites.is_empty() {
        hello.cipher_suites.push(suites.u16().need("bad cipher suite list")?);
    }
    body.vec(1).need("bad compression methods")?;
    if body.is_empty() {
        return Ok(hello); // no extensions (SSLv3-era hello)
    }
    let mut exts = body.vec(2).need("bad extensions length")?;
    if !body.is_empty() {
        return Err("bytes after the extensions");
    }
    while !exts.is_empty() {
        let ty = exts.u16().need("bad extension")?;
        let mut data = exts.vec(2).need("bad extension length")?;
        if !is_grease(ty) && hello.extensions.contains(&ty) {
            // RFC 8446 4.2: no two extensions of one type (a second SNI could tell the server
            // another name than the one decided on).
            return Err("duplicate extension");
        }
        hello.extensions.push(ty);
        match ty {
            EXT_SERVER_NAME => {
                let mut list = data.vec(2).need("bad server_name")?;
                while !list.is_empty() {
                    let kind = list.u8().need("bad server_name")?;
                    let name = list.vec(2).need("bad server_name")?;
                    if kind == 0 {
                        if hello.sni.is_some() {
                            return Err("two host names in server_name");
                        }
                        let name = std::str::from_utf8(name.buf).map_err(|_| "server_name is not ASCII")?;
                        if name.is_empty() || name.len() > 253 {
                            return Err("server_name empty or longer than 253 bytes");
                        }
                        if !name.bytes().all(|b| b.is_ascii_graphic()) {
                            return Err("server_name is not ASCII");
                        }
                        hello.sni = Some(name.to_ascii_lowercase());
                    }
                }
            }
            EXT_ALPN => {
                let mut list = data.vec(2).need("bad ALPN list")?;
                while !list.is_empty() {
                    let proto = list.vec(1).need("bad ALPN list")?;
                    if proto.buf.is_empty() {
                        return Err("empty ALPN protocol name");
                    }
                    hello.alpn.push(proto.buf.to_vec());
                }
            }
            EXT_SUPPORTED_VERSIONS => {
                let mut list = data.vec(1).need("bad supported_versions")?;
                while !list.is_empty() {
                    let v = list.u16().need("bad supported_versions")?;
                    if !is_grease(v) {
                        hello.versions.push(v);
                    }
                }
            }
            EXT_SUPPORTED_GROUPS => {
                let mut list = data.vec(2).need("bad supported_groups")?;
                while !list.is_empty() {
                    let g = list.u16().need("bad supported_groups")?;
                    hello.groups_sent.push(g);
                    if !is_grease(g) {
                        hello.groups.push(g);
                    }
                }
            }
            EXT_SIGNATURE_ALGORITHMS => {
                let mut list = data.vec(2).need("bad signature_algorithms")?;
                while !list.is_empty() {
                    hello.signature_algorithms.push(list.u16().need("bad signature_algorithms")?);
                }
            }
            EXT_EC_POINT_FORMATS => {
                let list = data.vec(1).need("bad ec_point_formats")?;
                hello.ec_point_formats.extend_from_slice(list.buf);
            }
            EXT_ECH => hello.ech = true,
            _ => {}
        }
    }
    Ok(hello)
}

impl ClientHello {
    /// The highest version offered.
    pub fn max_version(&self) -> u16 {
        self.versions.iter().copied().max().unwrap_or(self.legacy_version)
    }

    pub fn offers(&self, version: u16) -> bool {
        self.versions.contains(&version)
    }

    /// The JA3 string (Salesforce's JA3, as Suricata computes it): the hello's version, cipher
    /// suites, extensions, groups and point formats, in decimal, GREASE left out.
    pub fn ja3_string(&self) -> String {
        let list = |v: &mut dyn Iterator<Item = u16>| v.map(|x| x.to_string()).collect::<Vec<_>>().join("-");
        format!(
            "{},{},{},{},{}",
            self.legacy_version,
            list(&mut self.cipher_suites.iter().copied().filter(|c| !is_grease(*c))),
            list(&mut self.extensions.iter().copied().filter(|e| !is_grease(*e))),
            list(&mut self.groups_sent.iter().copied().filter(|g| !is_grease(*g))),
            list(&mut self.ec_point_formats.iter().map(|p| u16::from(*p))),
        )
    }

    /// The JA3 hash: the MD5 of [`Self::ja3_string`], in hex.
    pub fn ja3_hash(string: &str) -> String {
        md5::Md5::digest(string.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The JA4 fingerprint (FoxIO's JA4, TCP): e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`.
    pub fn ja4(&self) -> String {
        let version = match self.max_version() {
            TLS1_3 => "13",
            TLS1_2 => "12",
            TLS1_1 => "11",
            TLS1_0 => "10",
            SSL3 => "s3",
            SSL2 => "s2",
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
/// A version as Suricata's EVE writes it (`TLS 1.3`, ..., `TLSv1`, `SSLv3`), so tools that read
/// Suricata's logs (Filebeat's Suricata module splits on the space) read ours.
pub fn version_name(v: u16) -> &'static str {
    match v {
        TLS1_3 => "TLS 1.3",
        TLS1_2 => "TLS 1.2",
        TLS1_1 => "TLS 1.1",
        TLS1_0 => "TLSv1",
        SSL3 => "SSLv3",
        SSL2 => "SSLv2",
        _ => "unknown",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    /// One extension: type, length, data.
    fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
        [&ty.to_be_bytes()[..], &(data.len() as u16).to_be_bytes(), data].concat()
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let entry = [&[0u8][..], &(name.len() as u16).to_be_bytes(), name].concat();
        ext(EXT_SERVER_NAME, &[&(entry.len() as u16).to_be_bytes()[..], &entry].concat())
    }

    fn alpn_ext(protocols: &[&[u8]]) -> Vec<u8> {
        let list: Vec<u8> = protocols.iter().flat_map(|a| [&[a.len() as u8][..], a].concat()).collect();
        ext(EXT_ALPN, &[&(list.len() as u16).to_be_bytes()[..], &list].concat())
    }

    /// The handshake message of a ClientHello with these extensions (already encoded).
    fn hello_message(exts: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&TLS1_2.to_be_bytes());
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 6, 0x13, 0x01, 0xc0, 0x2f, 0x0a, 0x0a]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(exts);
        [&[1u8][..], &(body.len() as u32).to_be_bytes()[1..], &body].concat()
    }

    /// `msg` in handshake records of at most `size` bytes each.
    fn records(msg: &[u8], size: usize) -> Vec<u8> {
        msg.chunks(size).flat_map(|c| [&[22u8, 3, 1][..], &(c.len() as u16).to_be_bytes(), c].concat()).collect()
    }

    /// Builds a ClientHello with the given pieces (the tests' fixture builder).
    pub(crate) fn hello_bytes(sni: Option<&str>, alpn: &[&str], versions: &[u16], ech: bool) -> Vec<u8> {
        let mut exts = ext(0x0a0a, &[]); // GREASE
        if let Some(name) = sni {
            exts.extend(sni_ext(name.as_bytes()));
        }
        if !alpn.is_empty() {
            exts.extend(alpn_ext(&alpn.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()));
        }
        if !versions.is_empty() {
            let list: Vec<u8> = versions.iter().flat_map(|v| v.to_be_bytes()).collect();
            exts.extend(ext(EXT_SUPPORTED_VERSIONS, &[&[list.len() as u8][..], &list].concat()));
        }
        exts.extend(ext(EXT_SIGNATURE_ALGORITHMS, &[0, 4, 0x04, 0x03, 0x08, 0x04]));
        // GREASE, X25519MLKEM768, X25519
        exts.extend(ext(EXT_SUPPORTED_GROUPS, &[0, 6, 0x3a, 0x3a, 0x11, 0xec, 0x00, 0x1d]));
        if ech {
            exts.extend(ext(EXT_ECH, &[0, 1, 2, 3]));
        }
        let msg = hello_message(&exts);
        records(&msg, msg.len())
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
        assert_eq!(h.groups, vec![0x11ec, 0x001d], "GREASE removed, order kept");
        assert_eq!(h.record_len, b.len());
        let ja4 = h.ja4();
        assert!(ja4.starts_with("t13d0206h2_"), "{ja4}");
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
            assert!(matches!(sniff(&two[..cut]), Sniff::NeedMore(n) if n > cut && n <= two.len()), "cut at {cut}");
        }
        let Sniff::Hello(h) = sniff(&two) else { panic!() };
        assert_eq!(h.sni.as_deref(), Some("a.test"));
        assert_eq!(h.record_len, two.len());
    }

    #[test]
    fn not_tls() {
        assert!(matches!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::NotTls(_)));
        assert!(matches!(sniff(b"SSH-2.0-OpenSSH_9\r\n"), Sniff::NotTls(_)));
        assert!(matches!(sniff(&[22, 9, 9, 0, 5, 1, 0, 0, 1, 0]), Sniff::NotTls(_)));
        assert_eq!(sniff(&[]), Sniff::NeedMore(5));
        assert_eq!(sniff(&[22, 3]), Sniff::NeedMore(5));
        assert_eq!(sniff(&[22, 3, 1, 1, 0]), Sniff::NeedMore(5 + 256), "the record's end");
        assert_eq!(sniff(&[0x80]), Sniff::NeedMore(5));
    }

    #[test]
    fn a_handshake_record_that_is_not_a_valid_hello_is_malformed_not_tls() {
        assert_eq!(sniff(&[22, 3, 9, 0, 5, 1, 0, 0, 1, 0]), Sniff::Malformed("not a TLS record version"));
        assert_eq!(sniff(&[22, 3, 1, 0, 4, 2, 0, 0, 0]), Sniff::Malformed("first handshake message is not a ClientHello"));
        assert_eq!(sniff(&[22, 3, 1, 0, 0]), Sniff::Malformed("bad record length"));
        let hello = |exts: &[Vec<u8>]| {
            let msg = hello_message(&exts.concat());
            sniff(&records(&msg, msg.len()))
        };
        // The pieces read when well formed, so what is refused below is the fault itself.
        assert!(matches!(hello(&[sni_ext(b"abc.test"), alpn_ext(&[b"h2"])]), Sniff::Hello(h) if h.sni.as_deref() == Some("abc.test")));
        let long = format!("{}.test", "a".repeat(250));
        for (exts, why) in [
            (vec![sni_ext("\u{e9}bc.test".as_bytes())], "server_name is not ASCII"),
            (vec![sni_ext(b"a\x01c.test")], "server_name is not ASCII"),
            (vec![sni_ext(long.as_bytes())], "server_name empty or longer than 253 bytes"),
            (vec![sni_ext(b"")], "server_name empty or longer than 253 bytes"),
            (vec![alpn_ext(&[b"h2", b""])], "empty ALPN protocol name"),
            (vec![sni_ext(b"a.test"), sni_ext(b"b.test")], "duplicate extension"),
            (vec![ext(EXT_SERVER_NAME, &[0, 9, 0, 0, 6, b'a'])], "bad server_name"),
            (vec![ext(EXT_SUPPORTED_VERSIONS, &[3, 3, 4])], "bad supported_versions"),
        ] {
            assert_eq!(hello(&exts), Sniff::Malformed(why), "{exts:?}");
        }
        // Two GREASE extensions are not duplicates.
        assert!(matches!(hello(&[ext(0x0a0a, &[]), sni_ext(b"g.test"), ext(0x0a0a, &[0])]), Sniff::Hello(_)));
        // Truncated: more is needed (the caller decides when the client has stopped sending).
        let b = hello_bytes(Some("a.test"), &["h2"], &[TLS1_3], false);
        assert_eq!(sniff(&b[..b.len() - 1]), Sniff::NeedMore(b.len()));
        // A record of another type in the middle of the hello's records.
        let mut two = b[..15].to_vec();
        two[3..5].copy_from_slice(&10u16.to_be_bytes());
        two.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(sniff(&two), Sniff::Malformed("ClientHello interrupted by another record"));
    }

    #[test]
    fn a_64_kib_hello_over_many_records_is_reassembled() {
        // A hello padded (extension 21) to exactly 64 KiB, sent in records of 1 KiB.
        let base = [sni_ext(b"big.test"), alpn_ext(&[b"h2"])].concat();
        // A message's body is its length less the 4-byte header; the padding extension adds 4.
        let fixed = hello_message(&base).len();
        let padded = |body: usize| hello_message(&[base.clone(), ext(0x0015, &vec![0; body - fixed])].concat());
        let msg = padded(MAX_HELLO);
        assert_eq!(msg.len(), MAX_HELLO + 4);
        let r = records(&msg, 1024);
        let Sniff::Hello(h) = sniff(&r) else { panic!("{:?}", sniff(&r)) };
        assert_eq!(h.sni.as_deref(), Some("big.test"));
        assert_eq!(h.record_len, r.len());
        assert_eq!(sniff(&r[..r.len() - 1]), Sniff::NeedMore(r.len()));
        // In 7-byte records it would take 9,363 records: refused, not reread thousands of times.
        assert_eq!(sniff(&records(&msg, 7)), Sniff::Malformed("ClientHello in more than 256 records"));
        // One byte more is refused.
        assert_eq!(sniff(&records(&padded(MAX_HELLO + 1), 1024)), Sniff::Malformed("ClientHello larger than 64 KiB"));
    }

    #[test]
    fn an_sslv2_format_hello_offers_sslv2_only() {
        // SSLv2-format CLIENT-HELLO offering TLS 1.0: 3 cipher specs, no session id, 16-byte challenge.
        let mut b = vec![0x80, 0, 1, 3, 1, 0, 9, 0, 0, 0, 16];
        b.extend_from_slice(&[0, 0, 4, 0, 0, 5, 0, 0, 0x0a]);
        b.extend_from_slice(&[7; 16]);
        b[1] = (b.len() - 2) as u8;
        let Sniff::Hello(h) = sniff(&b) else { panic!("{:?}", sniff(&b)) };
        assert_eq!(h.versions, vec![SSL2]);
        assert_eq!(h.max_version(), SSL2);
        assert_eq!(h.record_len, b.len());
        assert!(h.ja4().starts_with("ts2"));
        assert_eq!(sniff(&b[..b.len() - 1]), Sniff::NeedMore(b.len()));
    }

    #[test]
    fn corrupted_hellos_never_panic_and_keep_their_promises() {
        let b = hello_bytes(Some("x.test"), &["h2"], &[TLS1_3], true);
        // Every truncation asks for more, never more than the hello's own length, and never
        // claims a hello it does not hold.
        for i in 0..b.len() {
            match sniff(&b[..i]) {
                Sniff::NeedMore(need) => assert!(need > i && need <= b.len(), "cut at {i}: need {need} of {}", b.len()),
                other => panic!("cut at {i}: {other:?}"),
            }
        }
        // Every single-byte change is a hello, more, malformed or not TLS: no panic, and what
        // reads as a hello reads its SNI from the bytes it was given.
        let mut hellos = 0;
        for i in 0..b.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut c = b.clone();
                c[i] = v;
                if let Sniff::Hello(h) = sniff(&c) {
                    hellos += 1;
                    assert!(h.record_len <= c.len());
                    let _ = h.ja4();
                }
            }
        }
        assert!(hellos > 0, "some changes (in the random, the session id) leave a hello");
        // Pseudo-random garbage behind a valid handshake record header: never a hello.
        let mut rng = crate::testutil::Prng::new(12345);
        for _ in 0..2000 {
            let mut c = vec![22, 3, 1, 0, 200];
            c.extend(rng.bytes(200));
            assert!(!matches!(sniff(&c), Sniff::Hello(_)), "{c:?}");
        }
    }
}
