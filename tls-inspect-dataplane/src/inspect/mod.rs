//! Inspection of decrypted traffic. An [`Inspector`] sees each direction's plaintext in order
//! and says whether the flow may go on. This layer never names rustls or smoltcp types.
//!
//! - `rules`: the rule language (parsing only); `ips`: rules compiled into Hyperscan databases
//!   (`ips::compile`) and matched per flow (`ips::matcher`);
//! - `http1`, `h2`: the HTTP followers that cut plaintext into the IPS's buffers;
//! - `dlp`: data leak detectors; `block`: what a blocked client gets;
//! - `settings`: the `[ips]` table.

pub mod block;
pub mod cert;
pub mod classification;
pub mod dlp;
pub mod fields;
pub mod h2;
pub mod header;
pub mod http1;
pub mod ips;
pub mod payload;
pub mod reference;
pub mod rules;
pub mod settings;
pub mod transform;

use std::sync::Arc;

use arc_swap::ArcSwap;

/// The lines of a Suricata `config NAME: ...` file that say something, trimmed, with their
/// numbers (from 1): blank lines and `#` comments skipped.
fn config_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, t)| !t.is_empty() && !t.starts_with('#'))
}

/// The bundled rules.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.rules");

/// The live rule set: every worker reads it when a flow starts; a reload swaps it.
pub type SharedRules = Arc<ArcSwap<ips::Ruleset>>;

/// The fields of an HTTP request the IPS scans and the log reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpInfo {
    pub method: String,
    pub uri: String,
    pub host: String,
    pub user_agent: String,
    /// Seen over HTTP/2: the request's stream (a block page is an HTTP/2 response on it).
    pub h2_stream: Option<u32>,
}


/// What the IPS sees of a ClientHello: `tls.sni`, `ja3.hash`, `ja3.string`, `ja4.hash`, and
/// the hello's version (`tls.version` in data to the server).
#[derive(Clone, Copy, Debug)]
pub struct HelloFields<'a> {
    pub sni: Option<&'a str>,
    pub version: u16,
    pub ja3_string: &'a str,
    pub ja3_hash: &'a str,
    pub ja4: &'a str,
}

/// One HTTP request and its response, as the EVE `http` record describes them (decrypted
/// traffic: what path-level filtering is about).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpTx {
    pub hostname: String,
    /// The request-target as sent.
    pub url: String,
    pub method: String,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    /// The response's content type.
    pub content_type: Option<String>,
    pub protocol: String,
    /// The response's status (none: no response before the flow ended).
    pub status: Option<u16>,
    /// Response body bytes.
    pub length: u64,
}

/// Which way plaintext is going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ToServer,
    ToClient,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Stop the flow; the cause goes to the log.
    Block(BlockCause),
}

/// What stopped a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockCause {
    /// An IPS rule whose action blocks.
    Rule { sid: u32, msg: String },
    /// A data leak detector set to block.
    Dlp(dlp::Detector),
}

impl std::fmt::Display for BlockCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockCause::Rule { sid, msg } => write!(f, "ips: sid {sid} ({msg})"),
            BlockCause::Dlp(d) => write!(f, "dlp: {d:?}"),
        }
    }
}

/// Why a follower stopped following a connection that is HTTP: what it was sent cannot be
/// followed, so the `http.*` buffers would stay empty for the rest of it (the raw stream is still
/// scanned). Each is one of Suricata's app-layer events, with the sid and message of its rule in
/// Suricata's `http-events.rules` / `http2-events.rules`; the IPS alerts with it and, in block
/// mode with `[ips] unfollowable = "block"` (the default), blocks the flow: what a peer can send
/// to blind the rules is not let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A head longer than the follower holds (`http.request_field_too_long`).
    Http1FieldTooLong,
    /// A head that is not valid HTTP/1 (too many fields, a bad field, a bad Content-Length), or
    /// a later message that is not HTTP at all (`http.request_header_invalid`).
    Http1HeaderInvalid,
    /// Chunked framing that does not parse (`http.invalid_request_chunk_len`).
    Http1ChunkInvalid,
    /// "PRI " and then not HTTP/2's client preface (`http2.invalid_client_magic`).
    H2InvalidClientMagic,
    /// A frame that does not parse (bad padding, a too-short priority) (`http2.invalid_frame_data`).
    H2InvalidFrame,
    /// A header block or frame larger than the follower holds (`http2.reassembly_limit_reached`).
    H2ReassemblyLimit,
    /// A header block HPACK cannot decode (`http2.failed_decompression`).
    H2FailedDecompression,
}

impl Anomaly {
    /// (sid, message) of Suricata's rule for the event in `direction`.
    pub fn rule(self, direction: Direction) -> (u32, &'static str) {
        let to_server = direction == Direction::ToServer;
        match (self, to_server) {
            (Anomaly::Http1FieldTooLong, true) => (2221018, "SURICATA HTTP request buffer too long"),
            (Anomaly::Http1FieldTooLong, false) => (2221019, "SURICATA HTTP response buffer too long"),
            (Anomaly::Http1HeaderInvalid, true) => (2221013, "SURICATA HTTP request header invalid"),
            (Anomaly::Http1HeaderInvalid, false) => (2221021, "SURICATA HTTP response header invalid"),
            (Anomaly::Http1ChunkInvalid, true) => (2221003, "SURICATA HTTP invalid request chunk len"),
            (Anomaly::Http1ChunkInvalid, false) => (2221004, "SURICATA HTTP invalid response chunk len"),
            (Anomaly::H2InvalidClientMagic, _) => (2290001, "SURICATA HTTP2 invalid client magic"),
            (Anomaly::H2InvalidFrame, _) => (2290002, "SURICATA HTTP2 invalid frame data"),
            (Anomaly::H2ReassemblyLimit, _) => (2290015, "SURICATA HTTP2 reassembly limit reached"),
            (Anomaly::H2FailedDecompression, _) => (2290009, "SURICATA HTTP2 failed decompression"),
        }
    }
}

pub trait Inspector {
    /// The next plaintext bytes of one direction (each direction in order).
    fn inspect(&mut self, direction: Direction, data: &[u8]) -> Verdict;

    /// How many bytes at the end of what `direction` fed so far the relay holds back: an
    /// HTTP/1 head not yet complete, so the peer never sees part of a head that its rules
    /// have not judged (bounded by the follower's largest head).
    fn unfinished_head(&self, _direction: Direction) -> usize {
        0
    }

    /// The real server's certificate chain (DER, leaf first) and the version it chose, once
    /// the upstream handshake has them and before the client is answered.
    fn server_certificates(&mut self, _chain: &[&[u8]], _version: Option<u16>) -> Verdict {
        Verdict::Continue
    }

    /// HTTP transactions complete since the last call (all of them, complete or not, with
    /// `flush` at the flow's end).
    fn http_transactions(&mut self, _flush: bool) -> Vec<HttpTx> {
        Vec::new()
    }

    /// Rules that fired since the last call (for the alert log).
    fn alerts(&mut self) -> Vec<ips::Hit> {
        Vec::new()
    }

    /// Per direction (to the server, to the client), so far: body bytes past `[ips]
    /// body_depth` that no IPS database scanned.
    fn unscanned(&self) -> [u64; 2] {
        [0, 0]
    }

    /// What a client whose request was blocked gets inside its session (an HTTP block page),
    /// if anything.
    fn block_response(&self) -> Option<Vec<u8>> {
        None
    }
}

/// The IPS for one worker: the live rule set and this worker's Hyperscan scratch space.
pub struct WorkerIps {
    shared: SharedRules,
    scratch: std::rc::Rc<std::cell::RefCell<hyperscan::Scratch>>,
    /// The databases the scratch space was last grown for.
    databases: std::cell::Cell<u64>,
}

impl WorkerIps {
    /// The hook of a worker: a scratch space sized for the current rule set.
    pub fn new(shared: SharedRules) -> anyhow::Result<Self> {
        let set = shared.load_full();
        Ok(Self {
            scratch: std::rc::Rc::new(std::cell::RefCell::new(set.scratch()?)),
            databases: std::cell::Cell::new(set.databases),
            shared,
        })
    }

    /// The rule set a new flow starts with (scratch grown after a reload).
    pub fn current(&self) -> Arc<ips::Ruleset> {
        let set = self.shared.load_full();
        if set.databases != self.databases.get() {
            if let Ok(mut s) = self.scratch.try_borrow_mut() {
                let old = std::mem::replace(&mut *s, match set.scratch() {
                    Ok(fresh) => fresh,
                    Err(_) => return set,
                });
                if let Ok(grown) = set.grow_scratch(Some(old)) {
                    *s = grown;
                }
                self.databases.set(set.databases);
            }
        }
        set
    }

    /// A new flow's IPS state, on the current rule set.
    pub fn start_flow(&self, tuple: ips::FlowTuple) -> ips::FlowIps {
        ips::FlowIps::new(self.current(), tuple)
    }

    /// Scans a ClientHello into a flow's state (`tls.sni`, `ja3.*`, `ja4.hash` rules).
    pub fn scan_client_hello(&self, flow: &mut ips::FlowIps, hello: &HelloFields<'_>) -> Verdict {
        match self.scratch.try_borrow_mut() {
            Ok(mut scratch) => flow.scan_client_hello(hello, &mut scratch),
            // Never reached: one worker thread, no re-entrant scans.
            Err(_) => Verdict::Continue,
        }
    }

    /// The inspector of a flow whose IPS state has seen its ClientHello.
    pub fn inspector(&self, flow: ips::FlowIps) -> IpsInspector {
        IpsInspector::new(flow, self.scratch.clone())
    }
}

/// The IPS as an inspector: one flow's Hyperscan state, and the worker's scratch space.
pub struct IpsInspector {
    flow: ips::FlowIps,
    scratch: std::rc::Rc<std::cell::RefCell<hyperscan::Scratch>>,
}

impl IpsInspector {
    /// The inspector of a flow whose IPS state exists already (it saw the ClientHello's SNI).
    fn new(flow: ips::FlowIps, scratch: std::rc::Rc<std::cell::RefCell<hyperscan::Scratch>>) -> Self {
        Self { flow, scratch }
    }
}

impl Inspector for IpsInspector {
    fn inspect(&mut self, direction: Direction, data: &[u8]) -> Verdict {
        match self.scratch.try_borrow_mut() {
            Ok(mut s) => self.flow.inspect(direction, data, &mut s),
            // Never reached: one worker thread, no re-entrant scans.
            Err(_) => Verdict::Continue,
        }
    }

    fn unfinished_head(&self, direction: Direction) -> usize {
        self.flow.unfinished_head(direction)
    }

    fn server_certificates(&mut self, chain: &[&[u8]], version: Option<u16>) -> Verdict {
        match self.scratch.try_borrow_mut() {
            Ok(mut s) => self.flow.scan_certificates(chain, version, &mut s),
            Err(_) => Verdict::Continue,
        }
    }

    fn http_transactions(&mut self, flush: bool) -> Vec<HttpTx> {
        self.flow.take_transactions(flush)
    }

    fn alerts(&mut self) -> Vec<ips::Hit> {
        self.flow.take_hits()
    }

    fn unscanned(&self) -> [u64; 2] {
        self.flow.unscanned()
    }

    fn block_response(&self) -> Option<Vec<u8>> {
        let hit = self.flow.block_hit()?;
        // `drop` ends the connection without a word; `reject` answers with the page.
        if hit.action != rules::Action::Reject {
            return None;
        }
        // A rule on the stream can fire inside an HTTP/1 request head still coming (held, so
        // the server has none of it): that client gets the page too.
        let Some(http) = hit.http.as_ref() else {
            return (self.flow.unfinished_head(Direction::ToServer) > 0 || self.flow.request_unfollowable()).then(|| block::http1_page(hit.sid, &hit.msg));
        };
        match http.h2_stream {
            None => Some(block::http1_page(hit.sid, &hit.msg)),
            // Over HTTP/2: a 403 on the request's stream and a GOAWAY, if our frames can follow
            // the server's (otherwise the connection just ends).
            Some(stream) if self.flow.h2_server_at_frame_boundary() => Some(block::h2_response(stream, hit.sid, &hit.msg)),
            Some(_) => None,
        }
    }
}

/// Lets everything through (the IPS replaces it).
#[derive(Default)]
pub struct PassAll;

impl Inspector for PassAll {
    fn inspect(&mut self, _direction: Direction, _data: &[u8]) -> Verdict {
        Verdict::Continue
    }
}
