//! The IPS engine: rules compiled into Hyperscan databases, and the per-flow state that scans
//! each direction's plaintext as it comes.
//!
//! - The stream buffer (rules without a sticky buffer) is one streaming database; each flow and
//!   direction has its own Hyperscan stream, so a pattern split across TCP segments, TLS records
//!   or reads still matches.
//! - HTTP/1.1 heads are parsed (httparse) into method, URI, host and user agent, each scanned
//!   with a block database of its own; bodies (up to a depth) with a streaming database.
//! - `tls.sni` is matched on the ClientHello, before any decryption.
//!
//! Every pattern is compiled with SOM_LEFTMOST, so each match has a start and an end; a rule
//! fires when its contents match in order and within their offset, depth, distance and within,
//! its pcres match, and its negated contents (on sticky buffers) do not.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use foreign_types::ForeignType;
use hyperscan::prelude::*;
use hyperscan::{Block, CompileFlags, Scratch, Streaming};

use super::rules::{Action, Buffer, Confidence, FlowDir, Rule};
use super::{Direction, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpsMode {
    Monitor,
    Block,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// High-confidence rules only.
    Loose,
    Medium,
    /// All rules.
    Strict,
}

/// What a pattern id stands for.
#[derive(Clone, Copy, Debug)]
struct PatternRef {
    rule: u32,
    /// Index among the rule's contents, or `pcre_base + i` for its pcres.
    item: u16,
    is_pcre: bool,
}

/// The rules and their Hyperscan databases: built once, shared by every worker and flow.
pub struct Compiled {
    pub rules: Vec<Rule>,
    refs: Vec<PatternRef>,
    stream: Option<StreamingDatabase>,
    bodies: Option<StreamingDatabase>,
    fields: HashMap<Buffer, BlockDatabase>,
    /// Per rule and pcre: the regex that confirms a pcre Hyperscan cannot compile.
    fallbacks: Vec<Vec<Option<Arc<fancy_regex::Regex>>>>,
}

/// A rule set: the compiled databases and what the operator set on top of them (enabled rules,
/// actions). Cheap to clone: enabling a rule or changing its action swaps this, not the
/// databases.
#[derive(Clone)]
pub struct Ruleset {
    compiled: Arc<Compiled>,
    /// Rule active at this level and not disabled.
    active: Vec<bool>,
    /// Per rule: `Some(true)` blocks, `Some(false)` only alerts (per-rule override), `None`: the mode.
    overrides: Vec<Option<bool>>,
    pub mode: IpsMode,
    pub body_depth: usize,
    /// Data leak detectors run on outbound plaintext.
    pub dlp: Vec<(super::dlp::Detector, super::dlp::DetectorSettings)>,
    /// Source or destination networks whose flows skip the IPS.
    pub whitelist: Vec<crate::control::scopes::Ipv4Cidr>,
    /// Changes when the databases change (workers grow their scratch space then).
    pub databases: u64,
}

impl std::ops::Deref for Ruleset {
    type Target = Compiled;
    fn deref(&self) -> &Compiled {
        &self.compiled
    }
}

static DATABASES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn hex_literal(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

fn stream_kind(b: Buffer) -> u8 {
    match b {
        Buffer::Stream => 0,
        Buffer::HttpRequestBody | Buffer::HttpResponseBody | Buffer::FileData => 1,
        _ => 2,
    }
}

impl Ruleset {
    /// Compiles `rules`; a rule Hyperscan cannot compile (or that needs what this engine does
    /// not do) is returned with the reason, and the others still load.
    pub fn compile(rules: Vec<Rule>, mode: IpsMode, level: Level, body_depth: usize) -> Result<(Self, Vec<(u32, String)>)> {
        let mut refused = Vec::new();
        let mut kept = Vec::new();
        for r in rules {
            match check_supported(&r) {
                Ok(()) => kept.push(r),
                Err(why) => refused.push((r.sid, why)),
            }
        }
        // Try each pcre alone first, compiled as the real database will be, so that one pcre
        // Hyperscan cannot take costs one rule at most: it is confirmed with fancy-regex after the
        // rule's literal contents matched (field buffers), or the rule is refused.
        let mut ok_rules = Vec::new();
        let mut fallback_of: Vec<Vec<Option<Arc<fancy_regex::Regex>>>> = Vec::new();
        for r in kept {
            let mut bad = None;
            let mut fallbacks = Vec::new();
            for p in &r.pcres {
                let hs = pcre_pattern(p).and_then(|mut pat| {
                    pat.flags |= CompileFlags::SOM_LEFTMOST;
                    if stream_kind(p.buffer) == 2 {
                        Patterns(vec![pat]).build::<Block>().map(drop).map_err(|e| anyhow!("{e}"))
                    } else {
                        Patterns(vec![pat]).build::<Streaming>().map(drop).map_err(|e| anyhow!("{e}"))
                    }
                });
                match hs {
                    Ok(()) => fallbacks.push(None),
                    Err(e) => match fallback_regex(&r, p) {
                        Ok(re) => fallbacks.push(Some(Arc::new(re))),
                        Err(why) => {
                            bad = Some(format!("pcre /{}/: Hyperscan: {e}; {why}", p.pattern));
                            break;
                        }
                    },
                }
            }
            match bad {
                Some(why) => refused.push((r.sid, why)),
                None => {
                    ok_rules.push(r);
                    fallback_of.push(fallbacks);
                }
            }
        }
        let active = ok_rules
            .iter()
            .map(|r| match level {
                Level::Loose => r.confidence == Confidence::High,
                Level::Medium => r.confidence >= Confidence::Medium,
                Level::Strict => true,
            } && r.action != Action::Pass)
            .collect();
        let mut refs = Vec::new();
        let mut groups: [Vec<Pattern>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut field_groups: HashMap<Buffer, Vec<Pattern>> = HashMap::new();
        for (ri, r) in ok_rules.iter().enumerate() {
            for (ci, c) in r.contents.iter().enumerate() {
                let mut flags = CompileFlags::SOM_LEFTMOST;
                if c.nocase {
                    flags |= CompileFlags::CASELESS;
                }
                let mut pat = Pattern::with_flags(hex_literal(&c.pattern), flags)?;
                pat.id = Some(refs.len());
                refs.push(PatternRef { rule: ri as u32, item: ci as u16, is_pcre: false });
                match stream_kind(c.buffer) {
                    2 => field_groups.entry(c.buffer).or_default().push(pat),
                    k => groups[k as usize].push(pat),
                }
            }
            for (pi, p) in r.pcres.iter().enumerate() {
                if fallback_of[ri][pi].is_some() {
                    continue;
                }
                let mut pat = pcre_pattern(p)?;
                pat.flags |= CompileFlags::SOM_LEFTMOST;
                pat.id = Some(refs.len());
                refs.push(PatternRef { rule: ri as u32, item: pi as u16, is_pcre: true });
                match stream_kind(p.buffer) {
                    2 => field_groups.entry(p.buffer).or_default().push(pat),
                    k => groups[k as usize].push(pat),
                }
            }
        }
        let build_stream = |v: Vec<Pattern>| -> Result<Option<StreamingDatabase>> {
            if v.is_empty() {
                return Ok(None);
            }
            Ok(Some(Patterns(v).build::<Streaming>().map_err(|e| anyhow!("compiling the rules: {e}"))?))
        };
        let [g0, g1, _] = groups;
        let stream = build_stream(g0)?;
        let bodies = build_stream(g1)?;
        let mut fields = HashMap::new();
        for (b, v) in field_groups {
            fields.insert(b, Patterns(v).build::<Block>().map_err(|e| anyhow!("compiling the rules: {e}"))?);
        }
        let n = ok_rules.len();
        Ok((
            Self {
                compiled: Arc::new(Compiled {
                    rules: ok_rules,
                    refs,
                    stream,
                    bodies,
                    fields,
                    fallbacks: fallback_of,
                }),
                active,
                overrides: vec![None; n],
                mode,
                body_depth,
                dlp: Vec::new(),
                whitelist: Vec::new(),
                databases: DATABASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            },
            refused,
        ))
    }

    /// A scratch space for one worker, big enough for every database of this set.
    pub fn scratch(&self) -> Result<Scratch> {
        self.grow_scratch(None)
    }

    /// Grows a worker's scratch space to fit this set's databases too (after a reload: flows
    /// still on the old databases keep working with it).
    pub fn grow_scratch(&self, existing: Option<Scratch>) -> Result<Scratch> {
        let mut scratch: Option<Scratch> = existing;
        if let Some(db) = &self.stream {
            match scratch.as_mut() {
                Some(s) => {
                    db.realloc_scratch(s).map_err(|e| anyhow!("{e}"))?;
                }
                None => scratch = Some(db.alloc_scratch().map_err(|e| anyhow!("{e}"))?),
            }
        }
        if let Some(db) = &self.bodies {
            match scratch.as_mut() {
                Some(s) => {
                    db.realloc_scratch(s).map_err(|e| anyhow!("{e}"))?;
                }
                None => scratch = Some(db.alloc_scratch().map_err(|e| anyhow!("{e}"))?),
            }
        }
        for db in self.fields.values() {
            match scratch.as_mut() {
                Some(s) => {
                    db.realloc_scratch(s).map_err(|e| anyhow!("{e}"))?;
                }
                None => scratch = Some(db.alloc_scratch().map_err(|e| anyhow!("{e}"))?),
            }
        }
        scratch.ok_or_else(|| anyhow!("the rule set is empty"))
    }

    /// A flow between these addresses skips the IPS (protection whitelist).
    pub fn whitelisted(&self, client: std::net::Ipv4Addr, server: std::net::Ipv4Addr) -> bool {
        let inside = |ip: std::net::Ipv4Addr| {
            self.whitelist
                .iter()
                .any(|c| u32::from(ip) & crate::control::scopes::Ipv4Cidr::mask(c.len) == u32::from(c.addr))
        };
        inside(client) || inside(server)
    }

    fn blocks(&self, rule: usize) -> bool {
        match self.overrides.get(rule).copied().flatten() {
            Some(b) => b,
            None => self.mode == IpsMode::Block,
        }
    }

    /// Overrides one rule's action (`rules action SID alert|drop`).
    pub fn set_override(&mut self, sid: u32, block: Option<bool>) -> bool {
        match self.rules.iter().position(|r| r.sid == sid) {
            Some(i) => {
                self.overrides[i] = block;
                true
            }
            None => false,
        }
    }

    pub fn set_enabled(&mut self, sid: u32, enabled: bool) -> bool {
        match self.rules.iter().position(|r| r.sid == sid) {
            Some(i) => {
                self.active[i] = enabled;
                true
            }
            None => false,
        }
    }

    pub fn is_active(&self, sid: u32) -> bool {
        self.rules.iter().position(|r| r.sid == sid).is_some_and(|i| self.active[i])
    }

    /// The override of a rule: Some(true) block, Some(false) alert, None: the mode decides.
    pub fn override_of(&self, sid: u32) -> Option<bool> {
        self.rules.iter().position(|r| r.sid == sid).and_then(|i| self.overrides[i])
    }
}

fn check_supported(r: &Rule) -> Result<(), String> {
    if r.contents.iter().any(|c| c.negated && c.buffer == Buffer::Stream) || r.pcres.iter().any(|p| p.negated && p.buffer == Buffer::Stream) {
        return Err("a negated content needs a sticky buffer (a stream never ends)".into());
    }
    if r.contents.iter().any(|c| c.negated && stream_kind(c.buffer) == 1) {
        return Err("negated contents on bodies are not supported".into());
    }
    Ok(())
}

fn pcre_pattern(p: &super::rules::Pcre) -> Result<Pattern> {
    let mut flags = CompileFlags::empty();
    for f in p.flags.chars() {
        flags |= match f {
            'i' => CompileFlags::CASELESS,
            's' => CompileFlags::DOTALL,
            'm' => CompileFlags::MULTILINE,
            _ => CompileFlags::empty(),
        };
    }
    let expr = if p.flags.contains('x') { format!("(?x){}", p.pattern) } else { p.pattern.clone() };
    Ok(Pattern::with_flags(expr, flags)?)
}

/// The fancy-regex for a pcre Hyperscan refused. Only on a field buffer (the whole value is at
/// hand) and only in a rule with a literal content that must match first (the prefilter: the
/// regex runs only on values where that content matched).
fn fallback_regex(rule: &Rule, p: &super::rules::Pcre) -> Result<fancy_regex::Regex, String> {
    if stream_kind(p.buffer) != 2 {
        return Err("the regex fallback needs a sticky field buffer (http.method, http.uri, http.host, http.user_agent, tls.sni)".into());
    }
    if !rule.contents.iter().any(|c| !c.negated && c.buffer == p.buffer) {
        return Err("the regex fallback needs a content on the same buffer as a prefilter".into());
    }
    let mut inline = String::new();
    for f in p.flags.chars() {
        if "isxm".contains(f) {
            inline.push(f);
        }
    }
    let expr = if inline.is_empty() { p.pattern.clone() } else { format!("(?{inline}){}", p.pattern) };
    fancy_regex::RegexBuilder::new(&expr)
        .backtrack_limit(100_000)
        .build()
        .map_err(|e| format!("regex: {e}"))
}

/// A Hyperscan stream closed when dropped (the crate's own drop leaks it).
struct OwnedStream(Option<Stream>);

impl Drop for OwnedStream {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            // SAFETY: a stream opened by hs_open_stream and never closed; a NULL scratch is
            // allowed when no match callback is given.
            unsafe {
                hyperscan_sys::hs_close_stream(s.into_ptr(), std::ptr::null_mut(), None, std::ptr::null_mut());
            }
        }
    }
}

/// A rule that fired on a flow.
#[derive(Clone, Debug)]
pub struct Hit {
    pub sid: u32,
    pub rev: u32,
    pub msg: String,
    pub classtype: Option<String>,
    pub priority: u8,
    pub blocked: bool,
    pub direction: Direction,
    pub http: Option<HttpInfo>,
    /// A data leak detector's finding (sid 0), rather than a rule.
    pub dlp: Option<super::dlp::Finding>,
}

#[derive(Clone, Debug, Default)]
pub struct HttpInfo {
    pub method: String,
    pub uri: String,
    pub host: String,
    pub user_agent: String,
    /// Seen over HTTP/2: the request's stream (a block page is an HTTP/2 response on it).
    pub h2_stream: Option<u32>,
}

/// A chunked body being decoded (RFC 9112 section 7.1).
#[derive(Debug, PartialEq, Eq)]
enum Chunked {
    /// Reading a chunk-size line (hex digits, then extensions to the CRLF).
    Size { value: usize, digits: u8, in_ext: bool },
    /// Chunk data still to come, then its CRLF.
    Data(usize),
    /// The CRLF after a chunk's data: bytes of it still to skip.
    DataEnd(u8),
    /// Trailer lines after the last chunk; `line` counts the current line's bytes.
    Trailers { line: usize },
}

/// The body's framing, from the head.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// One HTTP/1.x direction being followed.
#[derive(Default)]
struct HttpDir {
    head: Vec<u8>,
    /// Body bytes still to come in the current message.
    body_left: usize,
    /// Body bytes scanned in the current message.
    body_seen: usize,
    body: Option<OwnedStream>,
    /// The current message's body is chunked: where the decoder is.
    chunked: Option<Chunked>,
    /// Not HTTP (or a head too large to follow): stop parsing.
    off: bool,
}

/// Per flow: the streams, what each rule has matched so far, what has fired.
pub struct FlowIps {
    set: Arc<Ruleset>,
    stream: [Option<OwnedStream>; 2],
    http: [HttpDir; 2],
    /// (rule, is_pcre, item) -> matches (start, end), a few per item.
    matches: HashMap<(u32, bool, u16), Vec<(u64, u64)>>,
    fired: Vec<bool>,
    pub hits: Vec<Hit>,
    pub last_http: Option<HttpInfo>,
    server_port: u16,
    /// HTTP/2 followers (client side, server side), once the client preface was seen.
    h2: Option<[super::h2::H2Dir; 2]>,
    /// Open body streams of HTTP/2 streams, per direction.
    h2_bodies: [HashMap<u32, (OwnedStream, usize)>; 2],
    dlp: super::dlp::DlpState,
    /// Rules with a new match since the last evaluation: only these can start to hold, so the
    /// cost of an evaluation follows the matches, not the size of the rule set.
    touched: Vec<u32>,
}

const MATCHES_PER_ITEM: usize = 16;
const MAX_HEAD: usize = 16 * 1024;

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

impl FlowIps {
    pub fn new(set: Arc<Ruleset>, server_port: u16) -> Self {
        let open = |db: &Option<StreamingDatabase>| db.as_ref().and_then(|d| d.open_stream().ok()).map(|s| OwnedStream(Some(s)));
        let stream = [open(&set.stream), open(&set.stream)];
        let n = set.rules.len();
        Self {
            set,
            stream,
            http: [HttpDir::default(), HttpDir::default()],
            matches: HashMap::new(),
            fired: vec![false; n],
            hits: Vec::new(),
            last_http: None,
            server_port,
            h2: None,
            h2_bodies: [HashMap::new(), HashMap::new()],
            dlp: super::dlp::DlpState::default(),
            touched: Vec::new(),
        }
    }

    fn record(&mut self, id: u32, from: u64, to: u64) {
        if let Some(r) = self.set.refs.get(id as usize) {
            let v = self.matches.entry((r.rule, r.is_pcre, r.item)).or_default();
            if v.len() < MATCHES_PER_ITEM {
                v.push((from, to));
                self.touched.push(r.rule);
            }
        }
    }

    fn scan_stream(&mut self, which: usize, data: &[u8], scratch: &mut Scratch) {
        let mut found: Vec<(u32, u64, u64)> = Vec::new();
        if let Some(Some(s)) = self.stream.get(which).map(|s| s.as_ref().and_then(|o| o.0.as_ref())) {
            let _ = s.scan(data, scratch, |id, from, to, _| {
                found.push((id, from, to));
                Matching::Continue
            });
        }
        for (id, from, to) in found {
            self.record(id, from, to);
        }
    }

    fn scan_field(&mut self, buffer: Buffer, value: &[u8], scratch: &mut Scratch) {
        let Some(db) = self.set.fields.get(&buffer) else {
            return;
        };
        let mut found: Vec<(u32, u64, u64)> = Vec::new();
        let _ = db.scan(value, scratch, |id, from, to, _| {
            found.push((id, from, to));
            Matching::Continue
        });
        let mut prefiltered: Vec<u32> = Vec::new();
        for (id, from, to) in found {
            self.record(id, from, to);
            if let Some(r) = self.set.refs.get(id as usize) {
                if self.set.fallbacks[r.rule as usize].iter().any(Option::is_some) {
                    prefiltered.push(r.rule);
                }
            }
        }
        if prefiltered.is_empty() {
            return;
        }
        prefiltered.sort_unstable();
        prefiltered.dedup();
        let set = self.set.clone();
        let text = String::from_utf8_lossy(value);
        for ri in prefiltered {
            for (pi, re) in set.fallbacks[ri as usize].iter().enumerate() {
                let Some(re) = re else { continue };
                if set.rules[ri as usize].pcres[pi].buffer != buffer {
                    continue;
                }
                // A regex that runs out of its backtrack budget does not match.
                if let Ok(Some(m)) = re.find(&text) {
                    let v = self.matches.entry((ri, true, pi as u16)).or_default();
                    if v.len() < MATCHES_PER_ITEM {
                        v.push((m.start() as u64, m.end() as u64));
                        self.touched.push(ri);
                    }
                }
            }
        }
    }

    /// The SNI of the ClientHello (before any decryption).
    pub fn scan_sni(&mut self, sni: &str, scratch: &mut Scratch) -> Verdict {
        self.scan_field(Buffer::TlsSni, sni.as_bytes(), scratch);
        self.evaluate(Direction::ToServer)
    }

    /// The next plaintext bytes of one direction.
    pub fn inspect(&mut self, direction: Direction, data: &[u8], scratch: &mut Scratch) -> Verdict {
        let d = dir_index(direction);
        self.scan_stream(d, data, scratch);
        if self.h2.is_none() && direction == Direction::ToServer && !self.http[0].off && self.http[0].head.is_empty() && data.starts_with(b"PRI ") {
            self.h2 = Some([super::h2::H2Dir::new(true), super::h2::H2Dir::new(false)]);
            self.http[0].off = true;
            self.http[1].off = true;
        }
        if self.h2.is_some() {
            self.follow_h2(direction, data, scratch);
        } else {
            self.follow_http(direction, data, scratch);
        }
        let mut verdict = self.evaluate(direction);
        if direction == Direction::ToServer && !self.set.dlp.is_empty() {
            let set = self.set.clone();
            for finding in self.dlp.scan(data, &set.dlp) {
                if finding.block && verdict == Verdict::Continue {
                    verdict = Verdict::Block(format!("dlp: {:?}", finding.detector));
                }
                self.hits.push(Hit {
                    sid: 0,
                    rev: 0,
                    msg: format!("DLP: {:?} x{} (sample {})", finding.detector, finding.count, finding.sample),
                    classtype: Some("data-leak".into()),
                    priority: 1,
                    blocked: finding.block,
                    direction,
                    http: self.last_http.clone(),
                    dlp: Some(finding),
                });
            }
        }
        verdict
    }

    /// HTTP/2 only: everything the server sent so far ended on a frame boundary, so frames of
    /// our own can follow it.
    pub fn h2_server_at_frame_boundary(&self) -> bool {
        self.h2.as_ref().is_some_and(|dirs| dirs[1].at_frame_boundary())
    }

    fn scan_fields(&mut self, info: &HttpInfo, scratch: &mut Scratch) {
        self.scan_field(Buffer::HttpMethod, info.method.as_bytes(), scratch);
        // Like Suricata's http.uri: the normalized (percent-decoded) URI.
        self.scan_field(Buffer::HttpUri, &percent_decode(info.uri.as_bytes()), scratch);
        self.scan_field(Buffer::HttpHost, info.host.as_bytes(), scratch);
        self.scan_field(Buffer::HttpUserAgent, info.user_agent.as_bytes(), scratch);
    }

    /// Scans body bytes with a body stream; records matches that belong to this direction's
    /// body buffer.
    fn scan_body(&mut self, direction: Direction, stream: &OwnedStream, data: &[u8], scratch: &mut Scratch) {
        let mut found: Vec<(u32, u64, u64)> = Vec::new();
        if let Some(s) = stream.0.as_ref() {
            let _ = s.scan(data, scratch, |id, from, to, _| {
                found.push((id, from, to));
                Matching::Continue
            });
        }
        let body = if direction == Direction::ToServer { Buffer::HttpRequestBody } else { Buffer::HttpResponseBody };
        for (id, from, to) in found {
            if let Some(r) = self.set.refs.get(id as usize) {
                let rule = &self.set.rules[r.rule as usize];
                let b = if r.is_pcre { rule.pcres[r.item as usize].buffer } else { rule.contents[r.item as usize].buffer };
                if b == body || (b == Buffer::FileData && direction == Direction::ToClient) {
                    self.record(id, from, to);
                }
            }
        }
    }

    fn follow_h2(&mut self, direction: Direction, data: &[u8], scratch: &mut Scratch) {
        let d = dir_index(direction);
        let events = match self.h2.as_mut() {
            Some(dirs) => dirs[d].feed(data),
            None => return,
        };
        for event in events {
            match event {
                super::h2::H2Event::Headers(stream, headers) if direction == Direction::ToServer => {
                    let f = super::h2::fields(&headers);
                    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
                    let info = HttpInfo {
                        method: get("method"),
                        uri: get("uri"),
                        host: get("host"),
                        user_agent: get("user_agent"),
                        h2_stream: Some(stream),
                    };
                    self.scan_fields(&info, scratch);
                    self.last_http = Some(info);
                }
                super::h2::H2Event::Headers(..) => {}
                super::h2::H2Event::Data(stream, bytes, end) => {
                    let mut entry = self.h2_bodies[d].remove(&stream).or_else(|| {
                        self.set.bodies.as_ref().and_then(|db| db.open_stream().ok()).map(|s| (OwnedStream(Some(s)), 0))
                    });
                    if let Some((body, seen)) = entry.as_mut() {
                        let room = self.set.body_depth.saturating_sub(*seen);
                        let n = bytes.len().min(room);
                        if n > 0 {
                            self.scan_body(direction, body, &bytes[..n], scratch);
                        }
                        *seen += bytes.len();
                    }
                    if let (Some(e), false) = (entry, end) {
                        // A bounded number of concurrent bodies per connection.
                        if self.h2_bodies[d].len() < 256 {
                            self.h2_bodies[d].insert(stream, e);
                        }
                    }
                }
            }
        }
    }

    fn follow_http(&mut self, direction: Direction, mut data: &[u8], scratch: &mut Scratch) {
        let d = dir_index(direction);
        while !data.is_empty() && !self.http[d].off {
            if self.http[d].chunked.is_some() {
                let used = self.follow_chunked(direction, data, scratch);
                data = &data[used..];
                continue;
            }
            if self.http[d].body_left > 0 {
                let n = data.len().min(self.http[d].body_left);
                self.body_bytes(direction, &data[..n], scratch);
                self.http[d].body_left -= n;
                data = &data[n..];
                if self.http[d].body_left == 0 {
                    self.http[d].body = None;
                }
                continue;
            }
            // Accumulate a head, up to its end when it ends in this read: the bytes after it
            // (a body, pipelined requests) stay in `data`, copied never and followed in this loop.
            let old = self.http[d].head.len();
            let take = data.len().min(MAX_HEAD.saturating_sub(old) + 1);
            self.http[d].head.extend_from_slice(&data[..take]);
            let from = old.saturating_sub(3);
            let found = self.http[d].head[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|p| from + p + 4);
            let Some(end) = found else {
                data = &data[take..];
                let head = &self.http[d].head;
                if head.len() > MAX_HEAD || !looks_like_http(head, direction) {
                    self.http[d].off = true;
                }
                continue;
            };
            self.http[d].head.truncate(end);
            data = &data[end - old..];
            let head = std::mem::take(&mut self.http[d].head);
            let (framing, info) = parse_head(&head[..end], direction);
            let Some(framing) = framing else {
                self.http[d].off = true;
                continue;
            };
            if let Some(info) = info {
                self.scan_fields(&info, scratch);
                self.last_http = Some(info);
            }
            match framing {
                Framing::Length(n) => self.http[d].body_left = n,
                Framing::Chunked => self.http[d].chunked = Some(Chunked::Size { value: 0, digits: 0, in_ext: false }),
            }
            self.http[d].body_seen = 0;
            self.http[d].body = self.set.bodies.as_ref().and_then(|db| db.open_stream().ok()).map(|s| OwnedStream(Some(s)));
            // Hand the head's buffer back for the next message (no allocation per request).
            self.http[d].head = head;
            self.http[d].head.clear();
        }
    }

    /// Body bytes of the current message: scanned up to the body depth.
    fn body_bytes(&mut self, direction: Direction, bytes: &[u8], scratch: &mut Scratch) {
        let d = dir_index(direction);
        let room = self.set.body_depth.saturating_sub(self.http[d].body_seen);
        let scan = &bytes[..bytes.len().min(room)];
        if !scan.is_empty() {
            if let Some(body) = self.http[d].body.take() {
                self.scan_body(direction, &body, scan, scratch);
                self.http[d].body = Some(body);
            }
        }
        self.http[d].body_seen += bytes.len();
    }

    /// Decodes chunked framing from `data`; returns the bytes used. Malformed framing stops
    /// the parsing of this direction (the stream buffer still sees everything).
    fn follow_chunked(&mut self, direction: Direction, data: &[u8], scratch: &mut Scratch) -> usize {
        let d = dir_index(direction);
        let mut i = 0;
        while i < data.len() {
            let Some(state) = self.http[d].chunked.take() else {
                return i;
            };
            let next = match state {
                Chunked::Size { value, digits, in_ext } => {
                    let c = data[i];
                    i += 1;
                    match c {
                        b'\n' if digits > 0 => {
                            if value == 0 {
                                Some(Chunked::Trailers { line: 0 })
                            } else {
                                Some(Chunked::Data(value))
                            }
                        }
                        b'\r' | b' ' | b'\t' => Some(Chunked::Size { value, digits, in_ext }),
                        _ if in_ext => Some(Chunked::Size { value, digits, in_ext }),
                        b';' if digits > 0 => Some(Chunked::Size { value, digits, in_ext: true }),
                        _ => match (c as char).to_digit(16) {
                            // At most 15 hex digits: no overflow, and anything larger is not a body we follow.
                            Some(h) if digits < 15 => Some(Chunked::Size { value: value * 16 + h as usize, digits: digits + 1, in_ext }),
                            _ => None,
                        },
                    }
                }
                Chunked::Data(left) => {
                    let n = (data.len() - i).min(left);
                    self.body_bytes(direction, &data[i..i + n], scratch);
                    i += n;
                    if left == n {
                        Some(Chunked::DataEnd(2))
                    } else {
                        Some(Chunked::Data(left - n))
                    }
                }
                Chunked::DataEnd(left) => {
                    let c = data[i];
                    i += 1;
                    match (left, c) {
                        (2, b'\r') => Some(Chunked::DataEnd(1)),
                        (_, b'\n') => Some(Chunked::Size { value: 0, digits: 0, in_ext: false }),
                        _ => None,
                    }
                }
                Chunked::Trailers { line } => {
                    let c = data[i];
                    i += 1;
                    match c {
                        b'\n' if line == 0 => {
                            // The message is complete.
                            self.http[d].body = None;
                            return i;
                        }
                        b'\n' => Some(Chunked::Trailers { line: 0 }),
                        b'\r' => Some(Chunked::Trailers { line }),
                        _ if line < MAX_HEAD => Some(Chunked::Trailers { line: line + 1 }),
                        _ => None,
                    }
                }
            };
            match next {
                Some(n) => self.http[d].chunked = Some(n),
                None => {
                    self.http[d].off = true;
                    self.http[d].body = None;
                    return data.len();
                }
            }
        }
        i
    }

    /// Fires every rule whose conditions now hold; returns Block if one of them blocks.
    fn evaluate(&mut self, direction: Direction) -> Verdict {
        let set = self.set.clone();
        let mut verdict = Verdict::Continue;
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &ri in &touched {
            let i = ri as usize;
            let Some(rule) = set.rules.get(i) else {
                continue;
            };
            if self.fired[i] || !set.active[i] {
                continue;
            }
            let dir_ok = match rule.flow {
                Some(FlowDir::ToServer) => direction == Direction::ToServer,
                Some(FlowDir::ToClient) => direction == Direction::ToClient,
                None => true,
            };
            if !dir_ok || !port_matches(&rule.dport, self.server_port) {
                continue;
            }
            if !self.satisfied(i as u32, rule) {
                continue;
            }
            self.fired[i] = true;
            let blocked = set.blocks(i);
            self.hits.push(Hit {
                sid: rule.sid,
                rev: rule.rev,
                msg: rule.msg.clone(),
                classtype: rule.classtype.clone(),
                priority: rule.priority,
                blocked,
                direction,
                http: self.last_http.clone(),
                dlp: None,
            });
            if blocked && verdict == Verdict::Continue {
                verdict = Verdict::Block(format!("ips: sid {} ({})", rule.sid, rule.msg));
            }
        }
        verdict
    }

    fn satisfied(&self, ri: u32, rule: &Rule) -> bool {
        // Contents, in order, each after the previous as its modifiers say.
        let mut prev_end: Option<(Buffer, u64)> = None;
        for (ci, c) in rule.contents.iter().enumerate() {
            let found = self.matches.get(&(ri, false, ci as u16)).map(Vec::as_slice).unwrap_or(&[]);
            if c.negated {
                if !found.is_empty() {
                    return false;
                }
                continue;
            }
            let relative_to = prev_end.filter(|(b, _)| *b == c.buffer).map(|(_, e)| e);
            let ok = found.iter().find(|(from, to)| {
                if let Some(off) = c.offset {
                    if *from < u64::from(off) {
                        return false;
                    }
                }
                if let Some(depth) = c.depth {
                    if *to > u64::from(c.offset.unwrap_or(0)) + u64::from(depth) {
                        return false;
                    }
                }
                if let Some(p) = relative_to {
                    if c.distance.is_some() || c.within.is_some() {
                        let start = (p as i64 + i64::from(c.distance.unwrap_or(0))).max(0) as u64;
                        if *from < start {
                            return false;
                        }
                        if let Some(w) = c.within {
                            if *to > start + u64::from(w) {
                                return false;
                            }
                        }
                    }
                }
                true
            });
            match ok {
                Some((_, to)) => prev_end = Some((c.buffer, *to)),
                None => return false,
            }
        }
        rule.pcres.iter().enumerate().all(|(pi, p)| {
            let hit = self.matches.get(&(ri, true, pi as u16)).is_some_and(|v| !v.is_empty());
            hit != p.negated
        })
    }
}

fn looks_like_http(head: &[u8], direction: Direction) -> bool {
    match direction {
        Direction::ToServer => {
            let methods: [&[u8]; 9] = [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];
            methods.iter().any(|m| head.starts_with(m) || m.starts_with(head))
        }
        Direction::ToClient => head.starts_with(b"HTTP/") || b"HTTP/".starts_with(head),
    }
}

/// Parses a complete head: (body framing, request fields). `None` framing: not HTTP we follow.
fn parse_head(head: &[u8], direction: Direction) -> (Option<Framing>, Option<HttpInfo>) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let header_value = |headers: &[httparse::Header<'_>], name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    // Transfer-Encoding wins over Content-Length (RFC 9112 6.3); only a final `chunked` is a
    // framing we follow.
    // Without either, a request has no body and a response runs to the end of the connection.
    let framing = |hs: &[httparse::Header<'_>]| match header_value(hs, "transfer-encoding") {
        Some(te) => te.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")).then_some(Framing::Chunked),
        None => match header_value(hs, "content-length") {
            Some(v) => v.trim().parse().ok().map(Framing::Length),
            None if direction == Direction::ToServer => Some(Framing::Length(0)),
            None => Some(Framing::Length(usize::MAX)),
        },
    };
    match direction {
        Direction::ToServer => {
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(head) {
                Ok(httparse::Status::Complete(_)) => {}
                _ => return (None, None),
            }
            let hs = &*req.headers;
            let info = HttpInfo {
                method: req.method.unwrap_or("").to_string(),
                uri: req.path.unwrap_or("").to_string(),
                host: header_value(hs, "host").unwrap_or_default(),
                user_agent: header_value(hs, "user-agent").unwrap_or_default(),
                h2_stream: None,
            };
            (framing(hs), Some(info))
        }
        Direction::ToClient => {
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(head) {
                Ok(httparse::Status::Complete(_)) => {}
                _ => return (None, None),
            }
            let hs = &*resp.headers;
            // 1xx, 204 and 304 have no body whatever the headers say.
            if matches!(resp.code, Some(100..=199 | 204 | 304)) {
                return (Some(Framing::Length(0)), None);
            }
            (framing(hs), None)
        }
    }
}

/// Decodes `%XX` escapes once; anything else stays as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `any`, `443`, `[80,443]`, `1024:65535`, `!22` (negations are not matched: any).
fn port_matches(spec: &str, port: u16) -> bool {
    let spec = spec.trim();
    if spec == "any" || spec.starts_with('$') || spec.starts_with('!') {
        return true;
    }
    let list = spec.trim_start_matches('[').trim_end_matches(']');
    list.split(',').any(|p| match p.split_once(':') {
        Some((a, b)) => {
            let lo = a.trim().parse().unwrap_or(0);
            let hi = b.trim().parse().unwrap_or(u16::MAX);
            (lo..=hi).contains(&port)
        }
        None => p.trim().parse::<u16>().is_ok_and(|x| x == port),
    })
}

/// The HTML of the block page (HTTP/1.1 and HTTP/2).
pub fn block_page_body(sid: u32, msg: &str) -> String {
    format!(
        "<html><head><title>403 Forbidden</title></head><body><h1>Blocked by tls-inspect</h1>\
         <p>This request matched IPS rule sid {sid}: {}</p></body></html>\n",
        msg.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    )
}

/// Scan throughput (MB/s on this thread) of the bundled rules or of `generated` synthetic rules
/// (half stream contents, half http.uri contents with modifiers), over `megabytes` of HTTP/1.1
/// requests and responses fed in 16 KiB reads, in streaming mode.
pub fn bench(generated: Option<usize>, megabytes: usize) -> Result<(f64, String)> {
    let text = match generated {
        None => crate::control::rules::DEFAULT_RULES.to_string(),
        Some(n) => (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    format!("alert tcp any any -> any any (msg:\"gen {i}\"; content:\"zq{i:06}xv\"; sid:{};)\n", 100_000 + i)
                } else {
                    format!("alert http any any -> any any (msg:\"gen {i}\"; http.uri; content:\"/gz{i:06}/\"; nocase; content:\"k{i}=\"; distance:0; within:40; sid:{};)\n", 100_000 + i)
                }
            })
            .collect(),
    };
    let (rules, errors) = super::rules::parse_rules(&text);
    if !errors.is_empty() {
        return Err(anyhow!("{} generated rules refused: {}", errors.len(), errors[0]));
    }
    let n = rules.len();
    let (set, _) = Ruleset::compile(rules, IpsMode::Monitor, Level::Strict, 1 << 20)?;
    let set = Arc::new(set);
    let mut scratch = set.scratch()?;
    // Realistic traffic: requests with headers and small bodies, responses with HTML.
    let mut req = Vec::new();
    let mut resp = Vec::new();
    for i in 0..64 {
        req.extend_from_slice(format!("GET /app/items/{i}?page=3&sort=name HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html\r\nCookie: session=abcdef0123456789\r\n\r\n").as_bytes());
        let body = "<html><body>".to_string() + &"<p>lorem ipsum dolor sit amet, consectetur adipiscing elit</p>".repeat(40) + "</body></html>";
        resp.extend_from_slice(format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    }
    let target = megabytes * 1_000_000;
    let start = std::time::Instant::now();
    let mut scanned = 0;
    let mut f = FlowIps::new(set.clone(), 443);
    while scanned < target {
        for chunk in req.chunks(16 * 1024) {
            f.inspect(Direction::ToServer, chunk, &mut scratch);
            scanned += chunk.len();
        }
        for chunk in resp.chunks(16 * 1024) {
            f.inspect(Direction::ToClient, chunk, &mut scratch);
            scanned += chunk.len();
        }
        if f.hits.len() > 1000 {
            f = FlowIps::new(set.clone(), 443);
        }
    }
    let mbps = scanned as f64 / 1e6 / start.elapsed().as_secs_f64();
    let label = match generated {
        None => format!("bundled ({n} rules)"),
        Some(_) => format!("{n} generated rules"),
    };
    Ok((mbps, label))
}

/// The page a blocked HTTP client gets inside the decrypted channel.
pub fn block_page(sid: u32, msg: &str) -> Vec<u8> {
    let body = block_page_body(sid, msg);
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\nX-Tls-Inspect-Sid: {sid}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests;
