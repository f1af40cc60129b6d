//! The IPS state of one flow: a Hyperscan stream per direction for the stream buffer, the
//! HTTP followers' fields and bodies scanned as they come, what each rule has matched so far,
//! and the rules that fired. Each match has a start and an end (a literal's start is its end
//! less its length; a pcre's is tracked when an `R` flag needs it); a rule fires when its contents match in order and within their offset,
//! depth, distance and within, its pcres match, and its negated contents (on sticky buffers) do
//! not.

use std::collections::HashMap;
use std::sync::Arc;

use foreign_types::ForeignType;
use hyperscan::prelude::*;
use hyperscan::Scratch;

use super::compile::{stream_kind, BitOp, Chain, Eval, FieldKey, PatternRef, ThresholdKey};
use super::{Hit, PastBodyDepth, Ruleset};
use crate::inspect::rules::Action;
use crate::inspect::dlp::DlpState;
use crate::inspect::fields::Head;
use crate::inspect::h2::{H2Dir, H2Event};
use crate::inspect::http1::{Answers, Http1Dir, Http1Event};
use crate::inspect::payload::{self, Outcome, MAX_VARS};
use crate::inspect::rules::{step_buffer, Buffer, Content, FlowDir, Rule, Step, Track, Transforms};
use crate::inspect::{BlockCause, Direction, HelloFields, HttpInfo, HttpTx, Verdict};

/// HTTP transactions a flow keeps waiting for their responses, at most.
const MAX_PENDING_TX: usize = 64;

/// A Hyperscan stream closed when dropped (the crate's own drop leaks it).
pub(super) struct OwnedStream(Option<Stream>);

#[allow(unsafe_code, reason = "hs_close_stream: the crate offers no safe close")]
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


/// (rule, is_pcre, item) -> matches (start, end), a few per item.
type Matches = rustc_hash::FxHashMap<(u32, bool, u16), Vec<(u64, u64)>>;

/// A flow's addresses and ports, as rule headers match them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTuple {
    pub client: (std::net::Ipv4Addr, u16),
    pub server: (std::net::Ipv4Addr, u16),
}

impl FlowTuple {
    /// A tuple for tests and tools that care only about the server port.
    pub fn to_port(port: u16) -> Self {
        Self { client: (std::net::Ipv4Addr::new(198, 18, 0, 1), 40_000), server: (std::net::Ipv4Addr::new(198, 18, 0, 2), port) }
    }
}

/// Per flow: the streams, what each rule has matched so far, what has fired.
pub struct FlowIps {
    set: Arc<Ruleset>,
    /// An HTTP/1 request head could not be followed (an anomaly): the client is HTTP/1 and
    /// gets the block page.
    request_unfollowable: bool,
    stream: [Option<OwnedStream>; 2],
    http: [Http1Dir; 2],
    /// The body stream of each direction's current HTTP/1 message, and its bytes so far.
    body: [Option<OwnedStream>; 2],
    body_seen: [usize; 2],
    /// Per direction: body bytes past `body_depth` that no database scanned, the stream's
    /// included ([`FlowIps::unscanned`]).
    unscanned: [u64; 2],
    /// Reused per read: the body spans of a read past the depth, and its data unit when they
    /// cut it in several pieces.
    spans: Vec<(usize, usize)>,
    unit_buf: Vec<u8>,
    /// The client has sent bytes (an HTTP/2 client follower that starts after some of them may
    /// not be at a frame boundary: its spans are not trusted).
    client_spoke: bool,
    /// HTTP/2: per direction, whether the follower saw every byte of it; and the streams that
    /// are tunnels (`CONNECT`, extended CONNECT), whose DATA is never skipped (more than
    /// [`MAX_H2_TUNNELS`]: none of the flow's is).
    h2_whole: [bool; 2],
    h2_tunnels: Vec<u32>,
    /// What the server sent before the client's first bytes (its HTTP/2 preface, usually), at
    /// most [`EARLY_SERVER`] bytes, to start a server side follower at the server's first
    /// byte; `None` once the client spoke or the server sent more.
    early_server: Option<Vec<u8>>,
    /// (rule, is_pcre, item) -> matches (start, end), a few per item.
    /// Per direction: matches of a direction's data combine only with each other, as in
    /// Suricata, where a request and its response are inspected apart.
    matches: [Matches; 2],
    /// Per direction: the length of each field buffer's current value, as each transform
    /// chain makes it (`endswith`, `bsize`).
    field_len: [rustc_hash::FxHashMap<FieldKey, u64>; 2],
    /// Per direction: the bytes of the field buffers that payload keywords and rules evaluated on
    /// their fields' bytes read (the current message's, when `field_len` has the buffer; each
    /// buffer reused from message to message).
    field_bytes: [rustc_hash::FxHashMap<Buffer, Vec<u8>>; 2],
    /// Per direction: the stream offset where the current data unit starts, and the stream
    /// matches of rules evaluated per data unit (forgotten once the unit is evaluated).
    unit_start: [u64; 2],
    stream_seen: [u64; 2],
    unit_keys: [Vec<(u32, bool, u16)>; 2],
    fired: Fired,
    /// Per direction: the per-message rules that fired on the current message (they may fire
    /// again on the next one).
    fired_in_message: [Vec<u32>; 2],
    /// Alerts not yet taken (`take_hits`); the first blocking one, and whether any alert fired,
    /// are kept for the flow's life.
    pub hits: Vec<Hit>,
    block_hit: Option<Hit>,
    alerted: bool,
    pub last_http: Option<HttpInfo>,
    tuple: FlowTuple,
    /// Per direction, per header class of the set: whether the flow's data that way matches it
    /// (0: not yet known, 1: yes, 2: no), learnt when a rule of the class first matches (a set
    /// has thousands of classes, and a flow meets a few).
    header_ok: [Vec<std::cell::Cell<u8>>; 2],
    /// A `pass` rule matched: nothing more is matched on this flow.
    passed: bool,
    /// `tls.version` per direction: the hello's version, the version the server chose.
    tls_version: [Option<u16>; 2],
    /// The flow's flowbits, numbered by the rule set.
    bits: Vec<bool>,
    /// A block from a message that ended inside the current read.
    early: Option<Verdict>,
    /// Per direction: the message under way ended in the current read.
    message_done: [bool; 2],
    /// Per direction: a message head has been seen and its message not yet evaluated.
    in_message: [bool; 2],
    /// HTTP transactions: requests waiting for their response (HTTP/1, in order; HTTP/2, by
    /// stream), the response under way, and those complete.
    tx_pending: std::collections::VecDeque<HttpTx>,
    tx_h2: HashMap<u32, HttpTx>,
    tx_response: Option<HttpTx>,
    tx_done: Vec<HttpTx>,
    /// HTTP/2 followers (client side, server side), once the client preface was seen.
    h2: Option<[H2Dir; 2]>,
    /// Open body streams of HTTP/2 streams, per direction.
    h2_bodies: [HashMap<u32, (OwnedStream, usize)>; 2],
    dlp: DlpState,
    /// Rules with a new match since the last evaluation: only these can start to hold, so the
    /// cost of an evaluation follows the matches, not the size of the rule set.
    touched: Vec<u32>,
}

const MATCHES_PER_ITEM: usize = 16;

/// The non-empty pieces of `0..len` between `spans` (sorted, apart, within it).
fn gaps(spans: &[(usize, usize)], len: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let starts = std::iter::once(0).chain(spans.iter().map(|&(_, end)| end));
    let ends = spans.iter().map(|&(start, _)| start).chain(std::iter::once(len));
    starts.zip(ends).filter(|(start, end)| start < end)
}

/// The most server bytes before the client's first that a flow keeps (see `early_server`).
const EARLY_SERVER: usize = 1024;

/// The most body spans of a read a flow keeps room for between reads.
const SPANS_KEPT: usize = 64;

/// The most HTTP/2 tunnel streams a flow tells apart (past that, no DATA of it is skipped).
const MAX_H2_TUNNELS: usize = 64;

/// The largest pieced-together data unit buffer a flow keeps between reads.
const UNIT_BUF_KEPT: usize = 64 * 1024;

/// The rules that fired on a flow: a sorted list, since a flow fires a few rules of thousands
/// (a flag per rule would cost every flow a byte per rule of the set).
#[derive(Default)]
struct Fired(Vec<u32>);

impl Fired {
    fn contains(&self, rule: u32) -> bool {
        self.0.binary_search(&rule).is_ok()
    }
    fn insert(&mut self, rule: u32) {
        if let Err(at) = self.0.binary_search(&rule) {
            self.0.insert(at, rule);
        }
    }
    fn remove(&mut self, rule: u32) {
        if let Ok(at) = self.0.binary_search(&rule) {
            self.0.remove(at);
        }
    }
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

impl FlowIps {
    pub fn new(set: Arc<Ruleset>, tuple: FlowTuple) -> Self {
        let open = |db: &Option<StreamingDatabase>| db.as_ref().and_then(|d| d.open_stream().ok()).map(|s| OwnedStream(Some(s)));
        let stream = [open(&set.stream[0]), open(&set.stream[1])];
        let nbits = set.testers.len();
        let classes = set.header_classes.len();
        let header_ok = [vec![std::cell::Cell::new(0); classes], vec![std::cell::Cell::new(0); classes]];
        Self {
            set,
            stream,
            http: [Http1Dir::default(), Http1Dir::default()],
            body: [None, None],
            body_seen: [0, 0],
            unscanned: [0, 0],
            spans: Vec::new(),
            unit_buf: Vec::new(),
            client_spoke: false,
            h2_whole: [false, false],
            h2_tunnels: Vec::new(),
            early_server: Some(Vec::new()),
            matches: [Matches::default(), Matches::default()],
            field_len: Default::default(),
            field_bytes: Default::default(),
            unit_start: [0, 0],
            stream_seen: [0, 0],
            unit_keys: [Vec::new(), Vec::new()],
            fired: Fired::default(),
            fired_in_message: [Vec::new(), Vec::new()],
            hits: Vec::new(),
            block_hit: None,
            alerted: false,
            last_http: None,
            tuple,
            header_ok,
            passed: false,
            request_unfollowable: false,
            tls_version: [None, None],
            bits: vec![false; nbits],
            early: None,
            message_done: [false, false],
            in_message: [false, false],
            tx_pending: std::collections::VecDeque::new(),
            tx_h2: HashMap::new(),
            tx_response: None,
            tx_done: Vec::new(),
            h2: None,
            h2_bodies: [HashMap::new(), HashMap::new()],
            dlp: DlpState::default(),
            touched: Vec::new(),
        }
    }

    /// The HTTP transactions complete since the last call; with `flush`, the unanswered ones
    /// too (the flow ended).
    pub fn take_transactions(&mut self, flush: bool) -> Vec<HttpTx> {
        if flush {
            let rest: Vec<HttpTx> = self.tx_response.take().into_iter().chain(self.tx_pending.drain(..)).chain(self.tx_h2.drain().map(|(_, t)| t)).collect();
            self.tx_done.extend(rest);
        }
        std::mem::take(&mut self.tx_done)
    }

    /// A request head: its transaction waits for the response (a bounded number of them).
    fn tx_request(&mut self, head: &Head<'_>, h2_stream: Option<u32>) {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let host = Some(head.authority).filter(|a| !a.is_empty()).map(text).or_else(|| head.header("host").map(|h| text(&h))).unwrap_or_default();
        let url = text(head.uri);
        let tx = HttpTx {
            hostname: normalized_host(&url, &host),
            url,
            method: text(head.method),
            user_agent: head.header("user-agent").map(|v| text(&v)),
            referer: head.header("referer").map(|v| text(&v)),
            content_type: None,
            protocol: text(head.protocol),
            status: None,
            length: 0,
        };
        match h2_stream {
            Some(s) if self.tx_h2.len() < MAX_PENDING_TX => {
                self.tx_h2.insert(s, tx);
            }
            None if self.tx_pending.len() < MAX_PENDING_TX => self.tx_pending.push_back(tx),
            // Too many unanswered: logged now, without their responses.
            _ => self.tx_done.push(tx),
        }
    }

    /// A response head: it answers the oldest request (HTTP/1) or its stream's (HTTP/2).
    fn tx_response_head(&mut self, head: &Head<'_>, h2_stream: Option<u32>) -> Option<HttpTx> {
        let mut tx = match h2_stream {
            Some(s) => self.tx_h2.remove(&s),
            None => self.tx_pending.pop_front(),
        }
        .unwrap_or_else(|| HttpTx { protocol: String::from_utf8_lossy(head.protocol).into_owned(), ..HttpTx::default() });
        tx.status = std::str::from_utf8(head.status).ok().and_then(|s| s.trim().parse().ok());
        tx.content_type = head.header("content-type").map(|v| String::from_utf8_lossy(&v).into_owned());
        Some(tx)
    }

    /// The rule set this flow started with.
    pub fn ruleset(&self) -> &Ruleset {
        &self.set
    }

    /// A rule can fire on data of direction `d` of this flow, whatever the data: it is active,
    /// its `flow` direction is `d`'s and its header takes the flow's addresses and ports that
    /// way. A match of any other rule is not kept (the flow would hold it for nothing).
    fn can_fire(&self, rule: u32, d: usize) -> bool {
        let i = rule as usize;
        let Some(r) = self.set.rules.get(i) else {
            return false;
        };
        let dir_ok = match r.flow {
            Some(FlowDir::ToServer) => d == 0,
            Some(FlowDir::ToClient) => d == 1,
            None => true,
        };
        dir_ok && self.set.active.get(i).copied().unwrap_or(false) && self.header_matches(i, d)
    }

    /// The flow's data in direction `d` matches rule `i`'s header.
    fn header_matches(&self, i: usize, d: usize) -> bool {
        let Some(c) = self.set.header_of.get(i).map(|c| *c as usize) else { return false };
        let Some(known) = self.header_ok.get(d).and_then(|v| v.get(c)) else { return false };
        match known.get() {
            1 => true,
            2 => false,
            _ => {
                let (from, to) = if d == 0 { (self.tuple.client, self.tuple.server) } else { (self.tuple.server, self.tuple.client) };
                let ok = self.set.header_classes.get(c).is_some_and(|h| h.matches(from, to));
                known.set(if ok { 1 } else { 2 });
                ok
            }
        }
    }

    /// Matches the flow holds, both directions (tests).
    #[cfg(test)]
    pub(super) fn kept_matches(&self) -> usize {
        self.matches.iter().map(|m| m.values().map(Vec::len).sum::<usize>()).sum()
    }

    /// Keeps a match of a rule's item. A flow keeps at most `MATCHES_PER_ITEM` per item. A
    /// plain rule's matches are kept as they chain (`Chain`): a match of an item placed after
    /// another is kept only if it follows a kept match of that one as the rule says, and an
    /// item's matches are its first and its newest, less those too far back for the next item
    /// to reach; the rule holds when every item has one. Matches arrive in the order of their
    /// ends, so what an item follows is always there before it. So no number of other matches,
    /// before or after the ones that complete the rule, hides it. Other rules keep their first
    /// matches and are evaluated on them.
    fn record(&mut self, d: usize, id: u32, from: u64, to: u64) {
        let Some(&r) = self.set.refs.get(id as usize) else { return };
        if !self.can_fire(r.rule, d) {
            return;
        }
        // A literal's start is its end less its length (no start-of-match tracking); a pcre
        // compiled behind its content starts that content's length after the report's start.
        let from = if r.is_pcre { from.saturating_add(u64::from(r.len)) } else { to.saturating_sub(u64::from(r.len)) };
        let key = (r.rule, r.is_pcre, r.item);
        if r.prefilter {
            // Reported once per value: the rule is evaluated on this value's bytes.
            let v = self.matches[d].entry(key).or_default();
            if v.is_empty() {
                v.push((0, 0));
            }
            self.touched.push(r.rule);
            return;
        }
        let set = &*self.set;
        if let (Some(Some(chain)), Some(rule)) = (set.chains.get(r.rule as usize), set.rules.get(r.rule as usize)) {
            // Compiled behind a content with no report of its own: the report places this match
            // after one of that content, which it stands for too.
            let follows = match r.implies {
                Some(a) => {
                    let implied = self.matches[d].entry((r.rule, false, a)).or_default();
                    if implied.is_empty() {
                        implied.push((from, from));
                    }
                    true
                }
                None => self.chains_on(d, rule, chain, r, (from, to)),
            };
            if follows {
                let link = if r.is_pcre { chain.pcres[r.item as usize] } else { chain.contents[r.item as usize] };
                let v = self.matches[d].entry(key).or_default();
                if let Some(reach) = link.reach {
                    v.retain(|&(_, end)| end.saturating_add(reach) >= to);
                }
                if v.len() >= MATCHES_PER_ITEM {
                    v.remove(1);
                }
                // The rule can start to hold only when an item has its first match.
                if v.is_empty() {
                    self.touched.push(r.rule);
                }
                v.push((from, to));
            }
            return;
        }
        let v = self.matches[d].entry(key).or_default();
        if v.len() < MATCHES_PER_ITEM {
            v.push((from, to));
            self.touched.push(r.rule);
            if set.eval.get(r.rule as usize) == Some(&Eval::DataUnit) {
                if let Some(rule) = set.rules.get(r.rule as usize) {
                    let step = if r.is_pcre { Step::Pcre(r.item) } else { Step::Content(r.item) };
                    if step_buffer(rule, step) == Buffer::Stream {
                        self.unit_keys[d].push(key);
                    }
                }
            }
        }
    }

    /// The match `m` of item `r` of a chained rule follows what it must: its own modifiers, and
    /// a kept match of the item before it when it is placed after that one.
    fn chains_on(&self, d: usize, rule: &Rule, chain: &Chain, r: PatternRef, (from, to): (u64, u64)) -> bool {
        let fits_after = |ptr: u64| -> bool {
            if r.is_pcre {
                let Some(p) = rule.pcres.get(r.item as usize) else { return false };
                !p.relative || if p.anchored { from == ptr } else { from >= ptr }
            } else {
                let Some(c) = rule.contents.get(r.item as usize) else { return false };
                // Only a field buffer has a length (`endswith`).
                let len = if stream_kind(c.buffer) == 2 { self.field_len[d].get(&(c.buffer, c.transforms)).copied() } else { None };
                content_fits(c, (from, to), ptr, &[0; MAX_VARS], len)
            }
        };
        let link = if r.is_pcre { chain.pcres.get(r.item as usize) } else { chain.contents.get(r.item as usize) };
        let Some(link) = link else { return false };
        match link.prev {
            _ if !link.relative => fits_after(0),
            None => fits_after(0),
            // Compiled behind the content it follows: the report holds that content's match, which
            // needs only its own modifiers when it is not placed after anything itself.
            Some((false, ci)) if r.is_pcre && r.len > 0 && chain.contents.get(usize::from(ci)).is_some_and(|l| !l.relative) => {
                let Some(c) = rule.contents.get(usize::from(ci)) else { return false };
                let len = self.field_len[d].get(&(c.buffer, c.transforms)).copied();
                content_fits(c, (from.saturating_sub(u64::from(r.len)), from), 0, &[0; MAX_VARS], len)
            }
            Some((is_pcre, item)) => self.matches[d].get(&(r.rule, is_pcre, item)).is_some_and(|v| v.iter().any(|&(_, end)| fits_after(end))),
        }
    }

    /// The data unit of direction `d` is evaluated: the stream matches of rules evaluated per
    /// unit go.
    fn end_unit(&mut self, d: usize) {
        let mut keys = std::mem::take(&mut self.unit_keys[d]);
        for k in keys.drain(..) {
            self.matches[d].remove(&k);
        }
        self.unit_keys[d] = keys;
    }

    fn scan_stream(&mut self, which: usize, data: &[u8], scratch: &mut Scratch) {
        if let (Some(start), Some(seen)) = (self.unit_start.get_mut(which), self.stream_seen.get_mut(which)) {
            *start = *seen;
            *seen = seen.saturating_add(data.len() as u64);
        }
        let mut found: Vec<(u32, u64, u64)> = Vec::new();
        if let Some(Some(s)) = self.stream.get(which).map(|s| s.as_ref().and_then(|o| o.0.as_ref())) {
            let _ = s.scan(data, scratch, |id, from, to, _| {
                found.push((id, from, to));
                Matching::Continue
            });
        }
        for (id, from, to) in found {
            self.record(which, id, from, to);
        }
    }

    /// Scans a field buffer's value into each of its databases (the value itself, and what
    /// each transform chain rules name makes of it).
    fn scan_field(&mut self, d: usize, buffer: Buffer, value: &[u8], scratch: &mut Scratch) {
        let set = self.set.clone();
        if !set.field_buffers.contains(&buffer) {
            return;
        }
        self.field_len[d].insert((buffer, Transforms::default()), value.len() as u64);
        if set.kept.contains(&buffer) {
            // Bounded by what the followers hold (a head is at most MAX_HEAD).
            let kept = self.field_bytes[d].entry(buffer).or_default();
            kept.clear();
            kept.extend_from_slice(value);
        }
        let Some(chains) = set.field_transforms.get(&buffer) else {
            return;
        };
        for &xf in chains {
            let v = xf.apply(value);
            self.scan_field_as(d, (buffer, xf), &v, scratch);
        }
    }

    fn scan_field_as(&mut self, d: usize, key: FieldKey, value: &[u8], scratch: &mut Scratch) {
        let (buffer, xf) = key;
        let Some(db) = self.set.fields.get(&key) else {
            return;
        };
        self.field_len[d].insert(key, value.len() as u64);
        let mut found: Vec<(u32, u64, u64)> = Vec::new();
        let _ = db.scan(value, scratch, |id, from, to, _| {
            found.push((id, from, to));
            Matching::Continue
        });
        let mut prefiltered: Vec<u32> = Vec::new();
        for (id, from, to) in found {
            self.record(d, id, from, to);
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
                let p = &set.rules[ri as usize].pcres[pi];
                if p.buffer != buffer || p.transforms != xf {
                    continue;
                }
                // A regex that runs out of its backtrack budget does not match.
                if let Ok(Some(m)) = re.find(&text) {
                    let v = self.matches[d].entry((ri, true, pi as u16)).or_default();
                    if v.len() < MATCHES_PER_ITEM {
                        v.push((m.start() as u64, m.end() as u64));
                        self.touched.push(ri);
                    }
                }
            }
        }
    }

    /// The alerts since the last call (the caller logs them): a flow keeps no list of every
    /// alert it raised, whatever a peer sends.
    pub fn take_hits(&mut self) -> Vec<Hit> {
        let hits = std::mem::take(&mut self.hits);
        self.alerted |= hits.iter().any(|h| h.dlp.is_none());
        if self.block_hit.is_none() {
            self.block_hit = hits.iter().find(|h| h.blocked).cloned();
        }
        hits
    }

    /// The alert that blocked the flow, if one did (taken or not).
    /// A request head could not be followed (the client speaks HTTP/1, though no head was seen).
    pub fn request_unfollowable(&self) -> bool {
        self.request_unfollowable
    }

    pub fn block_hit(&self) -> Option<&Hit> {
        self.block_hit.as_ref().or_else(|| self.hits.iter().find(|h| h.blocked))
    }

    /// A rule alerted on this flow (taken or not; DLP findings aside).
    pub fn alerted(&self) -> bool {
        self.alerted || self.hits.iter().any(|h| h.dlp.is_none())
    }

    /// A `pass` rule matched this flow: it is no longer scanned.
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// The real server's certificates (leaf first): `tls.certs` on each, the leaf's subject,
    /// issuer, serial and fingerprint, formatted as Suricata formats them; matched as data from
    /// the server.
    pub fn scan_certificates(&mut self, chain: &[&[u8]], version: Option<u16>, scratch: &mut Scratch) -> Verdict {
        if self.passed {
            return Verdict::Continue;
        }
        self.tls_version[1] = version;
        let d = dir_index(Direction::ToClient);
        if let Some(c) = chain.first().and_then(|leaf| crate::inspect::cert::CertSummary::of(leaf)) {
            self.scan_field(d, Buffer::TlsCertSubject, c.subject.as_bytes(), scratch);
            self.scan_field(d, Buffer::TlsCertIssuer, c.issuer.as_bytes(), scratch);
            self.scan_field(d, Buffer::TlsCertSerial, c.serial.as_bytes(), scratch);
            self.scan_field(d, Buffer::TlsCertFingerprint, c.fingerprint.as_bytes(), scratch);
        }
        // Each certificate is a buffer of its own (Suricata's multi-buffer `tls.certs`): a rule
        // evaluated on its fields' bytes is evaluated on each.
        let mut verdict = Verdict::Continue;
        for der in chain {
            self.scan_field(d, Buffer::TlsCerts, der, scratch);
            let v = self.evaluate(Direction::ToClient, None);
            if verdict == Verdict::Continue {
                verdict = v;
            }
            if self.passed {
                break;
            }
        }
        let v = self.evaluate(Direction::ToClient, None);
        if verdict == Verdict::Continue {
            verdict = v;
        }
        verdict
    }

    /// The ClientHello (before any decryption): `tls.sni`, `ja3.hash`, `ja3.string`,
    /// `ja4.hash` and the version `tls.version` tests in data to the server.
    pub fn scan_client_hello(&mut self, hello: &HelloFields<'_>, scratch: &mut Scratch) -> Verdict {
        if self.passed {
            return Verdict::Continue;
        }
        self.tls_version[0] = Some(hello.version);
        if let Some(sni) = hello.sni {
            self.scan_field(0, Buffer::TlsSni, sni.as_bytes(), scratch);
            if self.set.field_buffers.contains(&Buffer::TlsSniDot) {
                self.scan_field(0, Buffer::TlsSniDot, format!(".{sni}").as_bytes(), scratch);
            }
        }
        self.scan_field(0, Buffer::Ja3Hash, hello.ja3_hash.as_bytes(), scratch);
        self.scan_field(0, Buffer::Ja3String, hello.ja3_string.as_bytes(), scratch);
        self.scan_field(0, Buffer::Ja4Hash, hello.ja4.as_bytes(), scratch);
        self.evaluate(Direction::ToServer, None)
    }

    /// The next plaintext bytes of one direction.
    pub fn inspect(&mut self, direction: Direction, data: &[u8], scratch: &mut Scratch) -> Verdict {
        if self.passed {
            return Verdict::Continue;
        }
        let d = dir_index(direction);
        // The data unit: what the stream database scans and rules evaluated per unit read.
        let mut buf = std::mem::take(&mut self.unit_buf);
        let unit = self.data_unit(d, data, &mut buf);
        self.scan_stream(d, unit, scratch);
        // HTTP/2: the client's preface, at the connection's start (prior knowledge) or after an
        // HTTP/1 exchange (an `Upgrade: h2c`); its follower then trusts only what it saw whole.
        if self.h2.is_none() && direction == Direction::ToServer && self.http[0].awaiting_head() && data.starts_with(b"PRI ") {
            let mut server = H2Dir::new(false);
            // The server's preface may have come first: the server side's follower starts from
            // the server's first byte (what those bytes said is not followed further).
            let early = self.early_server.take();
            if let Some(bytes) = early.as_deref() {
                let _ = server.feed(bytes);
            }
            // The server side saw every server byte while `early` holds them all.
            self.h2_whole = [!self.client_spoke, early.is_some()];
            self.h2 = Some([H2Dir::new(true), server]);
            self.http[0].turn_off();
            self.http[1].turn_off();
        }
        if let Some(early) = self.early_server.as_mut() {
            if direction == Direction::ToServer || early.len() + data.len() > EARLY_SERVER {
                self.early_server = None;
            } else {
                early.extend_from_slice(data);
            }
        }
        if self.h2.is_some() {
            self.follow_h2(direction, data, unit, scratch);
        } else {
            self.follow_http(direction, data, unit, scratch);
        }
        let anomaly = match self.h2.as_mut() {
            Some(dirs) => dirs[d].take_anomaly(),
            None => self.http[d].take_anomaly(),
        };
        let mut verdict = self.evaluate(direction, Some(unit));
        if let Some(a) = anomaly {
            let blocks = self.anomaly(a, direction);
            if verdict == Verdict::Continue {
                verdict = blocks;
            }
        }
        self.end_unit(d);
        if let Some(early) = self.early.take() {
            if verdict == Verdict::Continue {
                verdict = early;
            }
        }
        if std::mem::take(&mut self.message_done[d]) {
            self.new_message(d);
            self.in_message[d] = false;
        }
        // A unit pieced together gives its buffer back, unless it grew past a large read.
        if buf.capacity() <= UNIT_BUF_KEPT {
            buf.clear();
            self.unit_buf = buf;
        }
        if self.spans.capacity() > SPANS_KEPT {
            self.spans = Vec::new();
        }
        self.client_spoke |= direction == Direction::ToServer && !data.is_empty();
        if direction == Direction::ToServer && !self.set.dlp.is_empty() && !self.passed {
            let set = self.set.clone();
            for finding in self.dlp.scan(data, &set.dlp) {
                if finding.block && verdict == Verdict::Continue {
                    verdict = Verdict::Block(BlockCause::Dlp(finding.detector));
                }
                self.hits.push(Hit {
                    sid: 0,
                    rev: 0,
                    msg: format!("DLP: {:?} x{} (sample {})", finding.detector, finding.count, finding.sample),
                    classtype: Some("data-leak".into()),
                    category: Some("Sensitive Data Leaving the Network".into()),
                    severity: 1,
                    action: if finding.block { Action::Reject } else { Action::Alert },
                    blocked: finding.block,
                    direction,
                    http: self.last_http.clone(),
                    metadata: Vec::new(),
                    references: Vec::new(),
                    dlp: Some(finding),
                });
            }
        }
        verdict
    }

    /// The bytes at the end of what `direction` fed that are an HTTP/1 head not yet complete,
    /// which the relay holds back until the head is judged ([`Http1Dir::unfinished_head`]).
    pub fn unfinished_head(&self, direction: Direction) -> usize {
        if self.passed || self.h2.is_some() {
            return 0;
        }
        self.http[dir_index(direction)].unfinished_head(direction)
    }

    /// HTTP/2 only: everything the server sent so far ended on a frame boundary, so frames of
    /// our own can follow it.
    pub fn h2_server_at_frame_boundary(&self) -> bool {
        self.h2.as_ref().is_some_and(|dirs| dirs[1].at_frame_boundary())
    }

    /// A new message head in direction `d`: what the previous message of that direction matched
    /// in its fields and body is forgotten (a rule's contents combine within one message, as
    /// in Suricata's per-transaction inspection); the stream and the ClientHello's SNI stay.
    fn new_message(&mut self, d: usize) {
        let set = self.set.clone();
        let keep = |b: Buffer| b == Buffer::Stream || b.of_handshake();
        self.matches[d].retain(|&(rule, is_pcre, item), _| {
            let r = &set.rules[rule as usize];
            keep(if is_pcre { r.pcres[item as usize].buffer } else { r.contents[item as usize].buffer })
        });
        self.field_len[d].retain(|(b, _), _| keep(*b));
        // A rule of HTTP buffers fires once per message (Suricata's per-transaction alerts).
        for i in self.fired_in_message[d].drain(..) {
            self.fired.remove(i);
        }
        // An idle connection keeps no table sized for the busiest message it saw.
        if self.matches[d].capacity() > 4 * self.matches[d].len().max(16) {
            self.matches[d].shrink_to_fit();
        }
    }

    /// The message under way in `direction` is over: its rules are evaluated (a block is kept
    /// for `inspect` to return), then what it matched is forgotten.
    fn end_message(&mut self, direction: Direction, unit: &[u8]) {
        let v = self.evaluate(direction, Some(unit));
        if matches!(v, Verdict::Block(_)) && self.early.is_none() {
            self.early = Some(v);
        }
        self.new_message(dir_index(direction));
    }

    /// Scans the field buffers of a message head (those the rule set has databases for).
    fn scan_head(&mut self, head: &Head<'_>, unit: &[u8], scratch: &mut Scratch) {
        let d = dir_index(head.direction);
        // The previous message of this direction is evaluated first, if there is one.
        if std::mem::replace(&mut self.in_message[d], true) {
            self.end_message(head.direction, unit);
        } else {
            self.new_message(d);
        }
        let set = self.set.clone();
        let host_header = Some(std::borrow::Cow::Borrowed(head.authority)).filter(|a| !a.is_empty()).or_else(|| head.header("host"));
        let uri = String::from_utf8_lossy(head.uri);
        let host = String::from_utf8_lossy(host_header.as_deref().unwrap_or(b""));
        for &buffer in &set.field_buffers {
            let value: Option<std::borrow::Cow<'_, [u8]>> = match buffer {
                b if b.of_handshake() => None,
                // Suricata's http.uri: the normalised URI (path and query; percent-decoded).
                Buffer::HttpUri if head.direction == Direction::ToServer && !head.uri.is_empty() => {
                    Some(percent_decode(origin_form(head.uri)).into())
                }
                Buffer::HttpHost | Buffer::HttpHostRaw | Buffer::HttpHostDot if head.direction == Direction::ToServer => {
                    let v = match buffer {
                        Buffer::HttpHost => normalized_host(&uri, &host),
                        Buffer::HttpHostDot => format!(".{}", normalized_host(&uri, &host)),
                        _ => raw_host(&uri, &host),
                    };
                    Some(v.into_bytes().into()).filter(|v: &std::borrow::Cow<'_, [u8]>| v.len() > usize::from(buffer == Buffer::HttpHostDot))
                }
                other => head.buffer(other),
            };
            if let Some(v) = value {
                self.scan_field(d, buffer, &v, scratch);
            }
        }
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
                if b == body || b == Buffer::FileData {
                    self.record(dir_index(direction), id, from, to);
                }
            }
        }
    }

    /// HTTP that cannot be followed further: an alert with Suricata's sid for the event, and a
    /// block in block mode unless `[ips] unfollowable = "alert"`.
    fn anomaly(&mut self, a: crate::inspect::Anomaly, direction: Direction) -> Verdict {
        let (sid, msg) = a.rule(direction);
        let blocked = self.set.mode == super::IpsMode::Block && self.set.unfollowable == super::Unfollowable::Block;
        self.request_unfollowable |= direction == Direction::ToServer && self.h2.is_none();
        self.hits.push(Hit {
            sid,
            rev: 1,
            msg: msg.to_string(),
            classtype: Some("protocol-command-decode".into()),
            category: Some("Generic Protocol Command Decode".into()),
            severity: 3,
            action: if blocked { Action::Reject } else { Action::Alert },
            blocked,
            direction,
            http: self.last_http.clone(),
            metadata: Vec::new(),
            references: Vec::new(),
            dlp: None,
        });
        if blocked {
            Verdict::Block(BlockCause::Rule { sid, msg: msg.to_string() })
        } else {
            Verdict::Continue
        }
    }

    /// `data` of HTTP/2 in `direction`; `unit` is what of it the stream scanned.
    fn follow_h2(&mut self, direction: Direction, data: &[u8], unit: &[u8], scratch: &mut Scratch) {
        let d = dir_index(direction);
        let events = match self.h2.as_mut() {
            Some(dirs) => dirs[d].feed(data),
            None => return,
        };
        for event in events {
            match event {
                H2Event::Headers(stream, headers) if direction == Direction::ToServer => {
                    let head = Head::http2(&headers, direction);
                    self.scan_head(&head, unit, scratch);
                    self.tx_request(&head, Some(stream));
                    let f = crate::inspect::h2::fields(&headers);
                    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
                    if get("method") == "CONNECT" && !self.h2_tunnels.contains(&stream) && self.h2_tunnels.len() <= MAX_H2_TUNNELS {
                        self.h2_tunnels.push(stream);
                    }
                    let info = HttpInfo {
                        method: get("method"),
                        uri: get("uri"),
                        host: get("host"),
                        user_agent: get("user_agent"),
                        h2_stream: Some(stream),
                    };
                    self.last_http = Some(info);
                }
                H2Event::Headers(stream, headers) => {
                    let head = Head::http2(&headers, direction);
                    self.scan_head(&head, unit, scratch);
                    // The response waits for its DATA (or the flow's end) under its stream.
                    if let Some(tx) = self.tx_response_head(&head, Some(stream)) {
                        if self.tx_h2.len() < MAX_PENDING_TX {
                            self.tx_h2.insert(stream, tx);
                        } else {
                            self.tx_done.push(tx);
                        }
                    }
                }
                H2Event::Data(stream, bytes, end) => {
                    if direction == Direction::ToClient {
                        if let Some(tx) = self.tx_h2.get_mut(&stream) {
                            tx.length += bytes.len() as u64;
                        }
                        if end {
                            self.tx_done.extend(self.tx_h2.remove(&stream));
                        }
                    }
                    // Each stream's body bytes are counted whether or not a database scans
                    // bodies (the depth applies to the stream database too).
                    let mut entry = self.h2_bodies[d].remove(&stream).unwrap_or_else(|| {
                        (OwnedStream(self.set.bodies[d].as_ref().and_then(|db| db.open_stream().ok())), 0)
                    });
                    let (body, seen) = &mut entry;
                    let room = self.set.body_depth.saturating_sub(*seen);
                    let n = bytes.len().min(room);
                    if n > 0 && body.0.is_some() {
                        self.scan_body(direction, body, &bytes[..n], scratch);
                    }
                    *seen += bytes.len();
                    if let (e, false) = (entry, end) {
                        // A bounded number of concurrent bodies per connection.
                        if self.h2_bodies[d].len() < 256 {
                            self.h2_bodies[d].insert(stream, e);
                        }
                    }
                }
            }
        }
    }

    /// `data` of HTTP/1 in `direction`; `unit` is what of it the stream scanned (its end).
    fn follow_http(&mut self, direction: Direction, data: &[u8], unit: &[u8], scratch: &mut Scratch) {
        let d = dir_index(direction);
        // The follower is lent out while its events are handled.
        let mut follower = std::mem::take(&mut self.http[d]);
        follower.feed(direction, data, &mut |event| match event {
            Http1Event::Head { info, raw } => {
                // Each request's response is framed knowing what it answers (HEAD, CONNECT).
                if let (Direction::ToServer, Some(info)) = (direction, info.as_ref()) {
                    self.http[1].expect(Answers::of(&info.method));
                }
                if let Some(head) = Head::http1(raw, direction) {
                    self.scan_head(&head, unit, scratch);
                    match direction {
                        Direction::ToServer => self.tx_request(&head, None),
                        Direction::ToClient => {
                            if let Some(done) = self.tx_response.take() {
                                self.tx_done.push(done);
                            }
                            self.tx_response = self.tx_response_head(&head, None);
                        }
                    }
                }
                if let Some(info) = info {
                    self.last_http = Some(info);
                }
                self.body_seen[d] = 0;
                self.body[d] = self.set.bodies[d].as_ref().and_then(|db| db.open_stream().ok()).map(|s| OwnedStream(Some(s)));
            }
            Http1Event::Body(bytes) => {
                if direction == Direction::ToClient {
                    if let Some(tx) = self.tx_response.as_mut() {
                        tx.length += bytes.len() as u64;
                    }
                }
                self.body_bytes(direction, bytes, scratch)
            }
            Http1Event::BodyEnd => {
                self.body[d] = None;
                if direction == Direction::ToClient {
                    self.tx_done.extend(self.tx_response.take());
                }
                // The message is complete: once evaluated, what its fields and body matched goes
                // (see `inspect`).
                self.message_done[d] = true;
            }
        });
        self.http[d] = follower;
        // A tunnel or another protocol (WebSocket) after the response: the client's bytes are
        // no longer HTTP either; only the stream rules see them, and they are no anomaly.
        if self.http[1].tunnelled() && !self.http[0].is_off() {
            self.http[0].turn_off();
        }
    }

    /// What of `data`, fed in direction `d`, the stream database scans and rules evaluated per
    /// data unit read: all of it, but with `[ips] past_body_depth = "skip"`, the body bytes of
    /// a message once `body_depth` of its body was scanned are left out and counted, as its peer
    /// frames them: for HTTP/1 its `Content-Length`, each chunk's data, a response that runs to
    /// the end; for HTTP/2 the payloads of its stream's DATA frames. The framing around them and
    /// the next message are scanned whole. When the body bytes cut the rest in several pieces
    /// (chunks, frames), the unit is those pieces joined in `buf`.
    fn data_unit<'a>(&mut self, d: usize, data: &'a [u8], buf: &'a mut Vec<u8>) -> &'a [u8] {
        if self.set.past_body_depth != PastBodyDepth::Skip {
            return data;
        }
        let depth = self.set.body_depth;
        match &self.h2 {
            Some(dirs) if self.h2_whole[d] && self.h2_tunnels.len() <= MAX_H2_TUNNELS => {
                let (bodies, tunnels) = (&self.h2_bodies[d], &self.h2_tunnels);
                let past = |stream| bodies.get(&stream).is_some_and(|(_, seen)| *seen >= depth) && !tunnels.contains(&stream);
                dirs[d].data_spans(data, past, &mut self.spans);
            }
            Some(_) => return data,
            // A response is framed by its request: only while the requests' framing is sure.
            None if self.body_seen[d] >= depth && self.http[0].framing_sure() => self.http[d].body_spans(data, &mut self.spans),
            None => return data,
        }
        if self.spans.is_empty() {
            return data;
        }
        self.unscanned[d] += self.spans.iter().map(|&(start, end)| (end - start) as u64).sum::<u64>();
        let mut pieces = gaps(&self.spans, data.len());
        match (pieces.next(), pieces.next()) {
            (None, _) => &data[..0],
            (Some((start, end)), None) => &data[start..end],
            _ => {
                buf.clear();
                for (start, end) in gaps(&self.spans, data.len()) {
                    buf.extend_from_slice(&data[start..end]);
                }
                buf
            }
        }
    }

    /// Per direction (to the server, to the client): body bytes past `body_depth` that no
    /// database scanned.
    pub fn unscanned(&self) -> [u64; 2] {
        self.unscanned
    }

    /// Body bytes of the current message: scanned up to the body depth.
    fn body_bytes(&mut self, direction: Direction, bytes: &[u8], scratch: &mut Scratch) {
        let d = dir_index(direction);
        let room = self.set.body_depth.saturating_sub(self.body_seen[d]);
        let scan = &bytes[..bytes.len().min(room)];
        if !scan.is_empty() {
            if let Some(body) = self.body[d].take() {
                self.scan_body(direction, &body, scan, scratch);
                self.body[d] = Some(body);
            }
        }
        self.body_seen[d] += bytes.len();
    }

    /// Fires every rule whose conditions now hold; returns Block if one of them blocks. As in
    /// Suricata's action order, a `pass` rule that holds wins: the others do not fire, and the
    /// flow is matched no more. Rules that set flowbits go before rules that test them, and a
    /// bit that changes brings the rules that test it back for another round.
    fn evaluate(&mut self, direction: Direction, unit: Option<&[u8]>) -> Verdict {
        let set = self.set.clone();
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        let d = dir_index(direction);
        let (from, to) = match direction {
            Direction::ToServer => (self.tuple.client, self.tuple.server),
            Direction::ToClient => (self.tuple.server, self.tuple.client),
        };
        let mut verdict = Verdict::Continue;
        for _round in 0..4 {
            let mut holding: Vec<usize> = Vec::new();
            for &ri in &touched {
                let i = ri as usize;
                let Some(rule) = set.rules.get(i) else {
                    continue;
                };
                if self.fired.contains(i as u32) || !set.active[i] {
                    continue;
                }
                let dir_ok = match rule.flow {
                    Some(FlowDir::ToServer) => direction == Direction::ToServer,
                    Some(FlowDir::ToClient) => direction == Direction::ToClient,
                    None => true,
                };
                // `http1` and `http2` rules see only their version's flows.
            let proto_ok = match rule.proto {
                crate::inspect::rules::Proto::Http1 => self.h2.is_none(),
                crate::inspect::rules::Proto::Http2 => self.h2.is_some(),
                _ => true,
            };
            let version_ok = rule.tls_version.is_none() || rule.tls_version == self.tls_version[d];
            if !dir_ok || !proto_ok || !version_ok || !self.header_matches(i, d) || !self.bits_hold(&set.bits[i]) || !self.holds(ri, rule, d, unit) {
                    continue;
                }
                holding.push(i);
            }
            if holding.iter().any(|&i| set.action(i) == Action::Pass) {
                self.passed = true;
                touched.clear();
                self.touched = touched;
                return Verdict::Continue;
            }
            let tests = |i: usize| set.bits[i].iter().any(|op| matches!(op, BitOp::IsSet(..) | BitOp::IsNotSet(..)));
            holding.sort_by_key(|&i| tests(i));
            let mut changed: Vec<usize> = Vec::new();
            for i in holding {
                // A tester must still hold after this round's setters.
                if tests(i) && !self.bits_hold(&set.bits[i]) {
                    continue;
                }
                let rule = &set.rules[i];
                let (matches, alerts) = match &rule.threshold {
                    Some(t) => {
                        let key = match t.track {
                            Track::BySrc => ThresholdKey::Addr(from.0),
                            Track::ByDst => ThresholdKey::Addr(to.0),
                            Track::ByBoth => ThresholdKey::Pair(from.0, to.0),
                            Track::ByRule => ThresholdKey::Rule,
                        };
                        set.thresholds.admit(i as u32, key, t, std::time::Instant::now())
                    }
                    None => (true, true),
                };
                if !matches {
                    continue;
                }
                self.fired.insert(i as u32);
                if rule.per_message() {
                    self.fired_in_message[d].push(i as u32);
                }
                changed.extend(self.apply_bits(&set.bits[i]));
                let blocked = set.blocks(i);
                // A block is always logged; otherwise noalert and thresholds decide.
                if blocked || (alerts && !rule.noalert) {
                    self.hits.push(Hit {
                        sid: rule.sid,
                        rev: rule.rev,
                        msg: rule.msg.clone(),
                        classtype: rule.classtype.clone(),
                        category: set.meta[i].category.clone(),
                        severity: set.meta[i].severity,
                        action: set.action(i),
                        blocked,
                        direction,
                        http: self.last_http.clone(),
                        metadata: rule.metadata.clone(),
                        references: set.meta[i].references.clone(),
                        dlp: None,
                    });
                }
                if blocked && verdict == Verdict::Continue {
                    verdict = Verdict::Block(BlockCause::Rule { sid: rule.sid, msg: rule.msg.clone() });
                }
            }
            if changed.is_empty() {
                break;
            }
            touched.clear();
            for bit in changed {
                touched.extend(set.testers[bit].iter().copied().filter(|&r| !self.fired.contains(r)));
            }
            touched.sort_unstable();
            touched.dedup();
        }
        touched.clear();
        self.touched = touched;
        verdict
    }

    /// The rule's flowbit conditions hold on this flow.
    fn bits_hold(&self, ops: &[BitOp]) -> bool {
        let is = |b: usize| self.bits.get(b).copied().unwrap_or(false);
        ops.iter().all(|op| match op {
            BitOp::IsSet(b, true) => b.iter().all(|&x| is(x)),
            BitOp::IsSet(b, false) => b.iter().any(|&x| is(x)),
            BitOp::IsNotSet(b, true) => b.iter().all(|&x| !is(x)),
            BitOp::IsNotSet(b, false) => b.iter().any(|&x| !is(x)),
            _ => true,
        })
    }

    /// Applies a firing rule's flowbit actions; returns the bits that changed.
    fn apply_bits(&mut self, ops: &[BitOp]) -> Vec<usize> {
        let mut changed = Vec::new();
        for op in ops {
            let (bits, to): (&[usize], Option<bool>) = match op {
                BitOp::Set(b) => (b, Some(true)),
                BitOp::Unset(b) => (b, Some(false)),
                BitOp::Toggle(b) => (b, None),
                _ => continue,
            };
            for &b in bits {
                if let Some(slot) = self.bits.get_mut(b) {
                    let new = to.unwrap_or(!*slot);
                    if *slot != new {
                        *slot = new;
                        changed.push(b);
                    }
                }
            }
        }
        changed
    }

    /// The rule's contents, pcres, sizes and payload keywords hold for direction `d` (`unit`: the
    /// data unit being inspected, if any).
    fn holds(&self, ri: u32, rule: &Rule, d: usize, unit: Option<&[u8]>) -> bool {
        match self.set.eval.get(ri as usize) {
            Some(Eval::Fields) => {
                let reported = |&(is_pcre, item): &(bool, u16)| self.matches[d].get(&(ri, is_pcre, item)).is_some_and(|v| !v.is_empty());
                if !self.set.prefilters.get(ri as usize).is_some_and(|items| items.iter().all(reported)) {
                    return false;
                }
                // Body items are kept as they chain, when they can be, as in any plain rule.
                if self.set.chains.get(ri as usize).is_some_and(Option::is_some) {
                    self.chained_where(ri, rule, d, |b| stream_kind(b) != 2) && self.satisfied_where(ri, rule, d, None, |b| stream_kind(b) == 2)
                } else {
                    self.satisfied_in_order(ri, rule, d, None)
                }
            }
            Some(Eval::Plain) if self.set.chains.get(ri as usize).is_some_and(Option::is_some) => self.chained(ri, rule, d),
            Some(Eval::Plain | Eval::Payload) | None => self.satisfied_in_order(ri, rule, d, None),
            Some(Eval::DataUnit) => match unit {
                Some(u) if rule.dsize.is_none_or(|s| s.holds(u.len() as u64)) => self.satisfied_in_order(ri, rule, d, Some(u)),
                _ => false,
            },
        }
    }

    /// A chained rule holds when each of its items has a kept match (each kept only if it
    /// follows a kept match of the item before it) and its sizes hold.
    fn chained(&self, ri: u32, rule: &Rule, d: usize) -> bool {
        self.chained_where(ri, rule, d, |_| true)
    }

    /// `chained`, for the items on the buffers `on` takes.
    fn chained_where(&self, ri: u32, rule: &Rule, d: usize, on: impl Fn(Buffer) -> bool) -> bool {
        let len = |b: Buffer| self.field_len[d].get(&(b, Transforms::default())).copied();
        let has = |is_pcre: bool, i: usize| self.matches[d].get(&(ri, is_pcre, i as u16)).is_some_and(|v| !v.is_empty());
        rule.sizes.iter().all(|&(b, check)| len(b).is_some_and(|l| check.holds(l)))
            && rule.contents.iter().enumerate().all(|(i, c)| !on(c.buffer) || has(false, i))
            && rule.pcres.iter().enumerate().all(|(i, p)| !on(p.buffer) || has(true, i))
    }

    /// Suricata's content inspection: per buffer, its contents, pcres and payload keywords in
    /// the order written, each from the detection pointer the one before it left, trying every
    /// match of a content or pcre until the rest holds (at most `INSPECTION_BUDGET` steps, as
    /// Suricata's recursion limit). `unit`: the stream's bytes are this data unit, and stream
    /// positions count from its start.
    fn satisfied_in_order(&self, ri: u32, rule: &Rule, d: usize, unit: Option<&[u8]>) -> bool {
        self.satisfied_where(ri, rule, d, unit, |_| true)
    }

    /// `satisfied_in_order`, for the buffers `on` takes.
    fn satisfied_where(&self, ri: u32, rule: &Rule, d: usize, unit: Option<&[u8]>, on: impl Fn(Buffer) -> bool) -> bool {
        let len = |b: Buffer| self.field_len[d].get(&(b, Transforms::default())).copied();
        if !rule.sizes.iter().all(|&(b, check)| len(b).is_some_and(|l| check.holds(l))) {
            return false;
        }
        let mut vars = [0u64; MAX_VARS];
        let mut budget = INSPECTION_BUDGET;
        let mut done: Vec<Buffer> = Vec::new();
        for &first in &rule.order {
            let buffer = step_buffer(rule, first);
            if done.contains(&buffer) || !on(buffer) {
                continue;
            }
            done.push(buffer);
            let steps: Vec<Step> = rule.order.iter().copied().filter(|s| step_buffer(rule, *s) == buffer).collect();
            let view = match (buffer, unit) {
                (Buffer::Stream, Some(u)) => View { bytes: Some(u), len: Some(u.len() as u64), start: self.unit_start[d] },
                (Buffer::Stream, None) => View { bytes: None, len: None, start: 0 },
                (b, _) => {
                    let l = len(b);
                    View { bytes: l.and_then(|_| self.field_bytes[d].get(&b)).map(Vec::as_slice), len: l, start: 0 }
                }
            };
            // Walked on the bytes: a buffer this message does not have holds nothing, as in
            // Suricata (an absent buffer is not inspected).
            let on_fields = self.set.eval.get(ri as usize) == Some(&Eval::Fields) && stream_kind(buffer) == 2;
            if on_fields && view.bytes.is_none() {
                return false;
            }
            let walk = Walk { ri, rule, d, view, unit: buffer == Buffer::Stream && unit.is_some() };
            if !self.walk(&walk, &steps, 0, &mut vars, &mut budget) {
                return false;
            }
        }
        true
    }

    /// The matches of a content or pcre in the walk's buffer, as positions in it.
    fn found<'a>(&'a self, w: &'a Walk<'_>, is_pcre: bool, item: u16) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.found_in(w, self.matches[w.d].get(&(w.ri, is_pcre, item)).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// `all` (kept matches) as positions in the walk's buffer.
    fn found_in<'a>(&'a self, w: &'a Walk<'_>, all: &'a [(u64, u64)]) -> impl Iterator<Item = (u64, u64)> + 'a {
        let (start, end) = (w.view.start, w.view.start.saturating_add(w.view.len.unwrap_or(0)));
        all.iter().filter_map(move |&(from, to)| {
            if !w.unit {
                Some((from, to))
            } else if from >= start && to <= end {
                Some((from - start, to - start))
            } else {
                None
            }
        })
    }

    fn walk(&self, w: &Walk<'_>, steps: &[Step], ptr: u64, vars: &mut [u64; MAX_VARS], budget: &mut u32) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        let Some((&step, rest)) = steps.split_first() else {
            return true;
        };
        match step {
            Step::Content(ci) => {
                let Some(c) = w.rule.contents.get(usize::from(ci)) else {
                    return false;
                };
                // A transformed buffer has its own length.
                let len = if w.unit || c.transforms == Transforms::default() { w.view.len } else { self.field_len[w.d].get(&(c.buffer, c.transforms)).copied() };
                // A rule walked on its fields' bytes searches each content there (what Hyperscan
                // reported of it only brought the rule here).
                let on_fields = self.set.eval.get(w.ri as usize) == Some(&Eval::Fields) && stream_kind(c.buffer) == 2;
                let searched = on_fields || (w.unit && self.set.searched.get(w.ri as usize).and_then(|v| v.get(usize::from(ci))).copied().unwrap_or(false));
                // A searched content has no Hyperscan matches, a reported one nothing searched
                // (an empty Vec allocates nothing).
                let searched = if searched { search_from(c, w.view.bytes.unwrap_or(&[]), ptr, vars) } else { Vec::new() };
                let reported = if on_fields { &[][..] } else { self.matches[w.d].get(&(w.ri, false, ci)).map(Vec::as_slice).unwrap_or(&[]) };
                let matches = || searched.iter().copied().chain(self.found_in(w, reported));
                if c.negated {
                    if matches().any(|m| content_fits(c, m, ptr, vars, len)) {
                        return false;
                    }
                    return self.walk(w, rest, ptr, vars, budget);
                }
                let saved = *vars;
                for m in matches() {
                    if content_fits(c, m, ptr, vars, len) {
                        if self.walk(w, rest, m.1, vars, budget) {
                            return true;
                        }
                        *vars = saved;
                    }
                }
                false
            }
            Step::Pcre(pi) => {
                let Some(p) = w.rule.pcres.get(usize::from(pi)) else {
                    return false;
                };
                if let Some(re) = self.set.at_pointer.get(w.ri as usize).and_then(|v| v.get(usize::from(pi))).and_then(Option::as_ref) {
                    // Anchored at the detection pointer, on the unit's bytes.
                    let at = w.view.bytes.and_then(|b| usize::try_from(ptr).ok().and_then(|p| b.get(p..)));
                    // (`^` of a multi-line pcre also matches after a newline: only a match at the pointer counts.)
                    let end = at.and_then(|rest| re.find(rest)).filter(|m| m.start() == 0).map(|m| ptr.saturating_add(m.end() as u64));
                    return match (end, p.negated) {
                        (Some(_), true) => false,
                        (None, true) => self.walk(w, rest, ptr, vars, budget),
                        (Some(e), false) => self.walk(w, rest, e, vars, budget),
                        (None, false) => false,
                    };
                }
                if let Some(re) = self.set.field_pcres.get(w.ri as usize).and_then(|v| v.get(usize::from(pi))).and_then(Option::as_ref) {
                    // Walked on the field's bytes: the first match from the pointer (an `R` pcre)
                    // or from the buffer's start, as Suricata runs a pcre.
                    let bytes = w.view.bytes.unwrap_or(&[]);
                    let Ok(at) = usize::try_from(if p.relative { ptr } else { 0 }) else { return false };
                    let end = if p.anchored {
                        bytes.get(at..).and_then(|rest| re.find(rest)).filter(|m| m.start() == 0).map(|m| at + m.end())
                    } else if at <= bytes.len() {
                        re.find_at(bytes, at).map(|m| m.end())
                    } else {
                        None
                    };
                    return match (end, p.negated) {
                        (Some(_), true) => false,
                        (None, true) => self.walk(w, rest, ptr, vars, budget),
                        (Some(e), false) => self.walk(w, rest, e as u64, vars, budget),
                        (None, false) => false,
                    };
                }
                let fits = |(from, _): (u64, u64)| !p.relative || if p.anchored { from == ptr } else { from >= ptr };
                if p.negated {
                    if self.found(w, true, pi).any(fits) {
                        return false;
                    }
                    return self.walk(w, rest, ptr, vars, budget);
                }
                let saved = *vars;
                for m in self.found(w, true, pi).filter(|m| fits(*m)) {
                    if self.walk(w, rest, m.1, vars, budget) {
                        return true;
                    }
                    *vars = saved;
                }
                false
            }
            Step::Check(k) => {
                let (Some(check), Some(bytes)) = (w.rule.checks.get(usize::from(k)), w.view.bytes) else {
                    return false;
                };
                let saved = *vars;
                match payload::eval(&check.check, bytes, ptr, vars) {
                    Outcome::Holds { ptr } => {
                        if self.walk(w, rest, ptr, vars, budget) {
                            return true;
                        }
                        *vars = saved;
                        false
                    }
                    Outcome::Fails => false,
                }
            }
        }
    }
}

/// Steps of content inspection a rule may take per evaluation (Suricata's default recursion
/// limit): past it, the rule does not match.
const INSPECTION_BUDGET: u32 = 3000;

/// The buffer a walk inspects: its bytes and length, if known, and (for a data unit) the stream
/// offset where it starts.
struct View<'a> {
    bytes: Option<&'a [u8]>,
    len: Option<u64>,
    start: u64,
}

/// One buffer of one rule being inspected.
struct Walk<'a> {
    ri: u32,
    rule: &'a Rule,
    d: usize,
    view: View<'a>,
    /// Positions are the data unit's (matches outside it do not count).
    unit: bool,
}

/// The occurrences of a relative content in a data unit's `bytes` from where its `distance`
/// (from the pointer) puts its start up to where its `within` ends (`Compiled::searched`).
fn search_from(c: &Content, bytes: &[u8], ptr: u64, vars: &[u64; MAX_VARS]) -> Vec<(u64, u64)> {
    let var = |v: Option<payload::VarId>| v.and_then(|v| vars.get(usize::from(v.0)).copied());
    let distance = var(c.vars.distance).map(|v| i64::from(v as u32 as i32)).or(c.distance.map(i64::from)).unwrap_or(0);
    let within = var(c.vars.within).map(|v| u64::from(v as u32)).or(c.within.map(u64::from));
    let n = c.pattern.len();
    let relative = c.distance.is_some() || c.within.is_some() || c.vars.distance.is_some() || c.vars.within.is_some();
    // A content not placed after anything is looked for from the buffer's start (`offset` and
    // `depth` are then checked by `content_fits`).
    let from = if relative { i128::from(ptr) + i128::from(distance) } else { 0 };
    let Ok(start) = usize::try_from(from.max(0)) else { return Vec::new() };
    let end = within.filter(|_| relative).and_then(|w| usize::try_from(w).ok()).map_or(bytes.len(), |w| start.saturating_add(w).min(bytes.len()));
    if n == 0 || start >= end || end - start < n {
        return Vec::new();
    }
    let hay = &bytes[start..end];
    let at = |i: usize| ((start + i) as u64, (start + i + n) as u64);
    if !c.nocase {
        return memchr::memmem::find_iter(hay, &c.pattern).map(at).collect();
    }
    let first = c.pattern[0];
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), hay)
        .filter(|&i| hay.get(i..i + n).is_some_and(|w| w.eq_ignore_ascii_case(&c.pattern)))
        .map(at)
        .collect()
}

/// A content's match `(from, to)` fits its modifiers with the detection pointer at `ptr`:
/// `offset` and `depth` from the buffer's start, `distance` and `within` from the pointer (the
/// buffer's start when nothing came before it); variables from byte_extract, cast as Suricata
/// casts them.
fn content_fits(c: &Content, (from, to): (u64, u64), ptr: u64, vars: &[u64; MAX_VARS], len: Option<u64>) -> bool {
    let var = |v: Option<payload::VarId>| v.and_then(|v| vars.get(usize::from(v.0)).copied());
    let offset = var(c.vars.offset).map(|v| u64::from(v as u32)).or(c.offset.map(u64::from));
    let depth = var(c.vars.depth).map(|v| u64::from(v as u32)).or(c.depth.map(u64::from));
    let distance = var(c.vars.distance).map(|v| i64::from(v as u32 as i32)).or(c.distance.map(i64::from));
    let within = var(c.vars.within).map(|v| u64::from(v as u32)).or(c.within.map(u64::from));
    if c.startswith && from != 0 {
        return false;
    }
    if c.endswith && Some(to) != len {
        return false;
    }
    if offset.is_some_and(|o| from < o) {
        return false;
    }
    if depth.is_some_and(|dp| to > offset.unwrap_or(0).saturating_add(dp)) {
        return false;
    }
    if distance.is_some() || within.is_some() {
        let start = u64::try_from((i128::from(ptr) + i128::from(distance.unwrap_or(0))).max(0)).unwrap_or(u64::MAX);
        if from < start {
            return false;
        }
        if within.is_some_and(|w| to > start.saturating_add(w)) {
            return false;
        }
    }
    true
}

/// The path and query of a request-target: an absolute-form URI loses its scheme and authority,
/// as Suricata's normalised `http.uri` does.
fn origin_form(uri: &[u8]) -> &[u8] {
    let lower = uri.to_ascii_lowercase();
    for scheme in [&b"http://"[..], b"https://"] {
        if lower.starts_with(scheme) {
            let rest = &uri[scheme.len()..];
            return rest.iter().position(|&b| b == b'/' || b == b'?').map_or(&b"/"[..], |i| &rest[i..]);
        }
    }
    uri
}

/// The host of an absolute-form request URI (`http://Host:port/...`), as libhtp normalises it:
/// lowercase, without userinfo, port or trailing dots.
fn uri_host(uri: &str) -> Option<String> {
    let lower = uri.to_ascii_lowercase();
    let rest = ["http://", "https://"].iter().find_map(|scheme| lower.strip_prefix(scheme))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    Some(strip_port(authority).trim_end_matches('.').to_string())
}

fn strip_port(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        // An IPv6 literal keeps its brackets.
        Some(v6) => v6.find(']').map_or(authority, |end| &authority[..end + 2]),
        None => authority.split(':').next().unwrap_or(""),
    }
}

/// Suricata's `http.host`: the absolute-form URI's host if the request has one, else the Host
/// header's (or HTTP/2's `:authority`) without its port; lowercase.
pub(crate) fn normalized_host(uri: &str, host_header: &str) -> String {
    uri_host(uri).unwrap_or_else(|| strip_port(host_header.trim()).to_ascii_lowercase())
}

/// Suricata's `http.host.raw`: the Host header as sent, unless the request has an absolute-form
/// URI (then its host, normalised).
pub(crate) fn raw_host(uri: &str, host_header: &str) -> String {
    uri_host(uri).unwrap_or_else(|| host_header.trim().to_string())
}

/// Decodes `%XX` escapes once; anything else stays as it is.
pub(crate) fn percent_decode(s: &[u8]) -> Vec<u8> {
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

