//! Rules compiled into Hyperscan databases: the stream buffer (rules without a sticky buffer)
//! is one streaming database, bodies another, and each field buffer (http.uri, tls.sni, ...) a
//! block database. A pcre Hyperscan cannot take is confirmed with fancy-regex after its rule's
//! literal contents matched, or the rule is refused with the reason.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use hyperscan::prelude::*;
use hyperscan::{Block, CompileFlags, Scratch, Streaming};

use super::{IpsMode, Level};
use crate::inspect::classification::{Classifications, DEFAULT_SEVERITY};
use crate::inspect::header::{AddrSet, PortSet, Vars};
use crate::inspect::payload::Check;
use crate::inspect::reference::References;
use crate::inspect::rules::{Action, Buffer, Confidence, FlowDir, Flowbit, Rule, Severity, Step, Threshold, ThresholdKind, Transforms};

/// What the operator set for one rule (`rules action SID ...`, `drop.conf`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Override {
    /// The rule's own action.
    #[default]
    Own,
    /// This action instead.
    Set(Action),
}

/// How rules are compiled and act.
#[derive(Clone, Debug)]
pub struct Options {
    /// Monitor turns every block into an alert.
    pub mode: IpsMode,
    /// Which rules are active, by their metadata.
    pub level: Level,
    /// Bytes of each HTTP body scanned.
    pub body_depth: usize,
    /// HTTP that cannot be followed further: block (in block mode) or alert.
    pub unfollowable: super::Unfollowable,
    pub past_body_depth: super::PastBodyDepth,
    /// The address and port variables rule headers name.
    pub vars: Vars,
    /// Classtypes: category and severity of alerts.
    pub classifications: Classifications,
    /// Reference systems: the URLs of alerts' references.
    pub references: References,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: IpsMode::Monitor,
            level: Level::Medium,
            body_depth: 1 << 20,
            unfollowable: super::Unfollowable::Block,
            past_body_depth: super::PastBodyDepth::Skip,
            vars: Vars::default(),
            classifications: Classifications::default(),
            references: References::default(),
        }
    }
}

/// A rule's header, resolved: the addresses and ports of the direction its data goes in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub src: AddrSet,
    pub sport: PortSet,
    pub dst: AddrSet,
    pub dport: PortSet,
    pub bidirectional: bool,
}

impl Header {
    fn resolve(r: &Rule, vars: &Vars) -> Result<Self, String> {
        let ctx = |what: &'static str, spec: &str| {
            let spec = spec.to_string();
            move |e: String| format!("{what} '{spec}': {e}")
        };
        Ok(Self {
            src: vars.addresses(&r.src).map_err(ctx("source", &r.src))?,
            sport: vars.ports(&r.sport).map_err(ctx("source port", &r.sport))?,
            dst: vars.addresses(&r.dst).map_err(ctx("destination", &r.dst))?,
            dport: vars.ports(&r.dport).map_err(ctx("destination port", &r.dport))?,
            bidirectional: r.bidirectional,
        })
    }

    /// Data from `from` to `to` matches the header (either way round for `<>`).
    pub fn matches(&self, from: (std::net::Ipv4Addr, u16), to: (std::net::Ipv4Addr, u16)) -> bool {
        let one_way = |a: (std::net::Ipv4Addr, u16), b: (std::net::Ipv4Addr, u16)| {
            self.src.contains(a.0) && self.sport.contains(a.1) && self.dst.contains(b.0) && self.dport.contains(b.1)
        };
        one_way(from, to) || (self.bidirectional && one_way(to, from))
    }
}

/// What an alert of a rule says beside its message: its classtype's category text and its
/// severity (the rule's priority, else the classtype's, else 3).
#[derive(Clone, Debug)]
pub(super) struct Meta {
    pub category: Option<String>,
    pub severity: u8,
    /// The rule's references, resolved by `reference.config`.
    pub references: Vec<String>,
}

/// A rule is active at a level when its metadata says so (docs/ips.md has the table): `strict`
/// takes every rule; `medium` those of at least medium confidence that are not informational;
/// `loose` those of high confidence, and critical ones of medium confidence. A rule without
/// metadata counts as medium confidence.
pub fn active_at(level: Level, r: &Rule) -> bool {
    match level {
        Level::Strict => true,
        Level::Medium => r.confidence >= Confidence::Medium && r.severity != Some(Severity::Informational),
        Level::Loose => r.confidence == Confidence::High || (r.severity == Some(Severity::Critical) && r.confidence >= Confidence::Medium),
    }
}

/// Makes `scratch` (or a new one) big enough for `db`.
fn grow<T>(db: &hyperscan::Database<T>, scratch: &mut Option<Scratch>) -> Result<()> {
    match scratch.as_mut() {
        Some(s) => db.realloc_scratch(s).map(drop).map_err(|e| anyhow!("{e}")),
        None => {
            *scratch = Some(db.alloc_scratch().map_err(|e| anyhow!("{e}"))?);
            Ok(())
        }
    }
}

/// A field buffer as one of its databases sees it: the buffer and its transforms.
pub(super) type FieldKey = (Buffer, Transforms);

/// What a pattern id stands for.
#[derive(Clone, Copy, Debug)]
pub(super) struct PatternRef {
    pub(super) rule: u32,
    /// Index among the rule's contents, or `pcre_base + i` for its pcres.
    pub(super) item: u16,
    pub(super) is_pcre: bool,
    /// Only brings its rule to evaluation (a rule evaluated on its fields' bytes, `Eval::Fields`):
    /// the matcher keeps that it matched in the current value, not where.
    pub(super) prefilter: bool,
    /// Compiled behind the content before it, which has no report of its own (`implied_before`):
    /// the report stands for a match of that content too.
    pub(super) implies: Option<u16>,
    /// A literal's length: its match starts this far before its end (literals are compiled
    /// without start-of-match tracking, which costs Hyperscan dearly in streaming mode). For a
    /// pcre compiled behind the content it is anchored to (see `behind_content`), that content's
    /// length: the pcre's match starts this far after the reported start. 0 for other pcres.
    pub(super) len: u32,
}

/// How a plain rule's items follow each other in their buffers, for keeping its matches as they
/// chain (`FlowIps::record`): a flow keeps a few matches per item, and keeping every match as
/// found let padding (many matches of one item before or after the one that completes the
/// rule) fill them and hide the rule.
#[derive(Clone, Debug)]
pub(super) struct Chain {
    pub(super) contents: Vec<Link>,
    pub(super) pcres: Vec<Link>,
}

/// One item of a `Chain`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Link {
    /// The item placed after the end of the one before it in its buffer (`distance`, `within`,
    /// pcre `R`).
    pub(super) relative: bool,
    /// The step before it in its buffer (is_pcre, item), if any.
    pub(super) prev: Option<(bool, u16)>,
    /// The next item in the buffer is at most this far past this one's end (its distance plus
    /// within): a match of this item further back than that can no longer start a chain.
    pub(super) reach: Option<u64>,
}

impl Chain {
    /// The chain of a plain rule, or None when its matches cannot be kept as they chain: a
    /// negated item (it holds by the absence of matches), a negative distance (the item can end
    /// before the one it follows, so their matches come in either order), a pcre confirmed by
    /// fancy-regex (found after the value's other matches).
    fn of(r: &Rule, eval: Eval, fallbacks: &[Option<Arc<fancy_regex::Regex>>]) -> Option<Self> {
        if eval != Eval::Plain
            || r.contents.iter().any(|c| c.negated || c.distance.is_some_and(|d| d < 0))
            || r.pcres.iter().any(|p| p.negated)
            || fallbacks.iter().any(Option::is_some)
        {
            return None;
        }
        let mut chain = Chain { contents: Vec::new(), pcres: Vec::new() };
        for (k, &step) in r.order.iter().enumerate() {
            let buffer = crate::inspect::rules::step_buffer(r, step);
            let same = |s: &&Step| crate::inspect::rules::step_buffer(r, **s) == buffer;
            let key = |s: &Step| match *s {
                Step::Content(i) => Some((false, i)),
                Step::Pcre(i) => Some((true, i)),
                Step::Check(_) => None,
            };
            let prev = r.order[..k].iter().rev().find(same).and_then(key);
            let reach = match r.order[k + 1..].iter().find(same) {
                Some(Step::Content(n)) => r.contents.get(usize::from(*n)).and_then(|n| n.within.map(|w| u64::from(w) + n.distance.map_or(0, |d| d.max(0) as u64))),
                _ => None,
            };
            match step {
                Step::Content(i) => {
                    let c = r.contents.get(usize::from(i))?;
                    chain.contents.push(Link { relative: c.distance.is_some() || c.within.is_some(), prev, reach });
                }
                Step::Pcre(i) => chain.pcres.push(Link { relative: r.pcres.get(usize::from(i))?.relative, prev, reach }),
                Step::Check(_) => return None,
            }
        }
        (chain.contents.len() == r.contents.len() && chain.pcres.len() == r.pcres.len()).then_some(chain)
    }
}

/// How a rule is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Eval {
    /// Contents and pcres only: positions anywhere in their buffers, the stream's from its start.
    Plain,
    /// With payload keywords (or variables) on field buffers: the keywords in the order written,
    /// with backtracking over the matches of each content, on the field's bytes.
    Payload,
    /// With payload keywords, `dsize`, `endswith` or a negated content or pcre on the stream:
    /// as `Payload`, and the stream part is evaluated on each data unit alone (a TCP segment's
    /// payload, a decrypted read), positions counting from its start, as Suricata inspects a
    /// packet's payload (a unit has an end and a size; the stream has neither).
    DataUnit,
    /// Every item on field buffers whose whole value the flow keeps (the HTTP head's buffers,
    /// the ClientHello's and the certificate's), without transforms: walked on those bytes as
    /// Suricata inspects a buffer, every occurrence of each content tried and each pcre run from
    /// the detection pointer. Hyperscan only brings the rule to evaluation: its longest content
    /// and its pcres are reported once per value (`PatternRef::prefilter`), its other contents
    /// not at all. (`content:"GET"; http_method;` of two thousand ET rules was reported two
    /// thousand times per request, and `|06 03 55 04 03|` of the certificate rules at every
    /// name of every certificate.)
    Fields,
}

impl Eval {
    fn of(r: &Rule) -> Self {
        let on_stream = r.dsize.is_some()
            || r.checks.iter().any(|c| c.buffer == Buffer::Stream)
            || r.contents.iter().any(|c| c.buffer == Buffer::Stream && (c.endswith || c.negated))
            || r.pcres.iter().any(|p| p.buffer == Buffer::Stream && p.negated);
        if on_stream {
            Eval::DataUnit
        } else if !r.checks.is_empty() || r.contents.iter().any(|c| c.vars.any()) {
            Eval::Payload
        } else {
            Eval::Plain
        }
    }
}

/// The rules and their Hyperscan databases: built once, shared by every worker and flow.
pub struct Compiled {
    pub rules: Vec<Rule>,
    pub(super) refs: Vec<PatternRef>,
    /// The stream to the server, the stream to the client: each holds the patterns of the rules
    /// that can match in its direction (a rule with `flow:to_server` costs the downloads nothing).
    pub(super) stream: [Option<StreamingDatabase>; 2],
    /// Request bodies, response bodies (`file.data` included): each direction scans only its own.
    pub(super) bodies: [Option<StreamingDatabase>; 2],
    pub(super) fields: HashMap<FieldKey, BlockDatabase>,
    /// Per field buffer: the transform chains its databases are for (none first, if any).
    pub(super) field_transforms: HashMap<Buffer, Vec<Transforms>>,
    /// Per rule and pcre: the regex that confirms a pcre Hyperscan cannot compile.
    pub(super) fallbacks: Vec<Vec<Option<Arc<fancy_regex::Regex>>>>,
    /// Per rule and pcre: an anchored `R` pcre on the stream of a rule evaluated per data unit,
    /// run at the detection pointer on the unit's bytes instead of searched by Hyperscan (a
    /// class like `^(\x75|\x2d|...)` would otherwise report at nearly every byte).
    pub(super) at_pointer: Vec<Vec<Option<Arc<regex::bytes::Regex>>>>,
    /// Per rule and content: a relative content on the stream of a rule evaluated per data unit,
    /// searched for in the unit's bytes from the detection pointer, as Suricata looks for it,
    /// instead of reported by Hyperscan (`searched_at_pointer`).
    pub(super) searched: Vec<Vec<bool>>,
    /// Per rule: its resolved header and what its alerts say.
    /// Per rule: its header's index in `header_classes` (rules share a few distinct headers,
    /// which a flow tests once when it starts, not at every match).
    pub(super) header_of: Vec<u32>,
    pub(super) header_classes: Vec<Header>,
    pub(super) meta: Vec<Meta>,
    /// Per rule: its flowbits with the names numbered; and per bit, the rules that test it.
    pub(super) bits: Vec<Vec<BitOp>>,
    pub(super) testers: Vec<Vec<u32>>,
    /// Counts of thresholded rules, shared by every flow and worker.
    pub(super) thresholds: ThresholdTable,
    /// Per rule: how it is evaluated.
    pub(super) eval: Vec<Eval>,
    /// Per rule evaluated on its fields' bytes (`Eval::Fields`): the regex of each pcre, run on
    /// the bytes (empty for the other rules); and the items Hyperscan reports for it, all of
    /// which a value must have matched before the rule is walked.
    pub(super) field_pcres: Vec<Vec<Option<Arc<regex::bytes::Regex>>>>,
    pub(super) prefilters: Vec<Vec<(bool, u16)>>,
    /// Per rule evaluated plainly: how each item follows the one before it (`Chain`), when its
    /// matches are kept as they chain (None: its matches are kept as found).
    pub(super) chains: Vec<Option<Chain>>,
    /// Field buffers whose bytes a flow keeps for the current message (payload keywords read
    /// them), and every field buffer a message head is read for.
    pub(super) kept: Vec<Buffer>,
    pub(super) field_buffers: Vec<Buffer>,
}

/// A flowbit operation on numbered bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum BitOp {
    IsSet(Vec<usize>, bool),
    IsNotSet(Vec<usize>, bool),
    Set(Vec<usize>),
    Unset(Vec<usize>),
    Toggle(Vec<usize>),
}

/// Entries a threshold table holds at most: past it, expired windows are dropped, and a rule
/// whose key finds no room alerts (a full table never silences a rule).
const MAX_THRESHOLD_ENTRIES: usize = 65_536;

/// What `threshold` and `detection_filter` count: per rule and tracked address, the matches of
/// the current window.
#[derive(Default)]
pub(super) struct ThresholdTable(std::sync::Mutex<HashMap<(u32, ThresholdKey), Window>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum ThresholdKey {
    Addr(std::net::Ipv4Addr),
    Pair(std::net::Ipv4Addr, std::net::Ipv4Addr),
    Rule,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: std::time::Instant,
    count: u32,
    alerted: bool,
}

impl ThresholdTable {
    /// One more match of rule `rule` for `key` at `now`: (the rule matches, it alerts).
    pub(super) fn admit(&self, rule: u32, key: ThresholdKey, t: &Threshold, now: std::time::Instant) -> (bool, bool) {
        let Ok(mut table) = self.0.lock() else {
            return (true, true);
        };
        let window = std::time::Duration::from_secs(u64::from(t.seconds));
        if table.len() >= MAX_THRESHOLD_ENTRIES && !table.contains_key(&(rule, key)) {
            table.retain(|_, w| now.duration_since(w.start) < window);
            if table.len() >= MAX_THRESHOLD_ENTRIES {
                return (true, true);
            }
        }
        let w = table.entry((rule, key)).or_insert(Window { start: now, count: 0, alerted: false });
        if now.duration_since(w.start) >= window {
            *w = Window { start: now, count: 0, alerted: false };
        }
        w.count = w.count.saturating_add(1);
        match t.kind {
            ThresholdKind::Limit => (true, w.count <= t.count),
            ThresholdKind::Threshold => {
                let alert = w.count >= t.count;
                if alert {
                    w.count = 0;
                }
                (true, alert)
            }
            ThresholdKind::Both => {
                let alert = w.count >= t.count && !w.alerted;
                w.alerted |= alert;
                (true, alert)
            }
            ThresholdKind::DetectionFilter => {
                let on = w.count > t.count;
                (on, on)
            }
        }
    }
}

/// A rule set: the compiled databases and what the operator set on top of them (enabled rules,
/// actions). Cheap to clone: enabling a rule or changing its action swaps this, not the
/// databases.
#[derive(Clone)]
pub struct Ruleset {
    compiled: Arc<Compiled>,
    /// Rule active at this level and not disabled.
    pub(super) active: Vec<bool>,
    /// Per rule: what the operator set on top of the mode.
    overrides: Vec<Override>,
    pub mode: IpsMode,
    pub body_depth: usize,
    pub unfollowable: super::Unfollowable,
    pub past_body_depth: super::PastBodyDepth,
    /// Data leak detectors run on outbound plaintext.
    pub dlp: Vec<(crate::inspect::dlp::Detector, crate::inspect::dlp::DetectorSettings)>,
    /// Source or destination networks whose flows skip the IPS.
    pub whitelist: Vec<crate::addr::Ipv4Cidr>,
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

/// Which body database a body buffer's patterns go in: 0 requests, 1 responses.
pub(super) fn body_dir(b: Buffer) -> usize {
    usize::from(b != Buffer::HttpRequestBody)
}

pub(super) fn stream_kind(b: Buffer) -> u8 {
    match b {
        Buffer::Stream => 0,
        Buffer::HttpRequestBody | Buffer::HttpResponseBody | Buffer::FileData => 1,
        _ => 2,
    }
}

impl Ruleset {
    /// Compiles `rules`; a rule Hyperscan cannot compile (or that needs what this engine does
    /// not do) is returned with the reason, and the others still load.
    pub fn compile(rules: Vec<Rule>, opts: &Options) -> Result<(Self, Vec<(u32, String)>)> {
        let (mode, level, body_depth) = (opts.mode, opts.level, opts.body_depth);
        let mut refused = Vec::new();
        let mut kept = Vec::new();
        for r in rules {
            let checked = check_supported(&r)
                .and_then(|()| Header::resolve(&r, &opts.vars))
                .and_then(|h| meta(&r, &opts.classifications, &opts.references).map(|m| (h, m)));
            match checked {
                Ok((h, m)) => kept.push((r, h, m)),
                Err(why) => refused.push((r.sid, why)),
            }
        }
        let mut headers = Vec::new();
        let mut metas = Vec::new();
        // Try each pcre alone first, compiled as the real database will be, so that one pcre
        // Hyperscan cannot take costs one rule at most: it is confirmed with fancy-regex after the
        // rule's literal contents matched (field buffers), or the rule is refused.
        let mut ok_rules = Vec::new();
        let mut fallback_of: Vec<Vec<Option<Arc<fancy_regex::Regex>>>> = Vec::new();
        // Per pcre: compiled behind its content (`behind_content`).
        let mut behind_of: Vec<Vec<bool>> = Vec::new();
        let mut at_pointer_of: Vec<Vec<Option<Arc<regex::bytes::Regex>>>> = Vec::new();
        for (r, header, m) in kept {
            let mut bad = None;
            let mut fallbacks = Vec::new();
            let mut behinds = Vec::new();
            let at_pointer: Vec<Option<Arc<regex::bytes::Regex>>> = r.pcres.iter().map(|p| at_pointer_regex(&r, p).map(Arc::new)).collect();
            for (pi, p) in r.pcres.iter().enumerate() {
                if at_pointer[pi].is_some() {
                    fallbacks.push(None);
                    behinds.push(false);
                    continue;
                }
                let alone = |pat: Result<Pattern>| {
                    pat.and_then(|mut pat| {
                        if needs_som(&r, p) {
                            pat.flags |= CompileFlags::SOM_LEFTMOST;
                        }
                        if stream_kind(p.buffer) == 2 {
                            Patterns(vec![pat]).build::<Block>().map(drop).map_err(|e| anyhow!("{e}"))
                        } else {
                            Patterns(vec![pat]).build::<Streaming>().map(drop).map_err(|e| anyhow!("{e}"))
                        }
                    })
                };
                let behind = behind_content(&r, pi).is_some_and(|c| alone(behind_pattern(c, p)).is_ok());
                behinds.push(behind);
                let hs = if behind { Ok(()) } else { alone(pcre_pattern(p)) };
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
                    behind_of.push(behinds);
                    at_pointer_of.push(at_pointer);
                    headers.push(header);
                    metas.push(m);
                }
            }
        }
        let active = ok_rules.iter().map(|r| active_at(level, r)).collect();
        let mut refs = Vec::new();
        let mut db = Databases::default();
        // How each rule's items would be kept if it were not evaluated on its fields' bytes: a
        // rule that is keeps its body items so (`Chain`, `SINGLEMATCH`).
        let base_eval: Vec<Eval> = ok_rules.iter().map(Eval::of).collect();
        let mut eval = base_eval.clone();
        let mut field_pcres: Vec<Vec<Option<Arc<regex::bytes::Regex>>>> = Vec::with_capacity(ok_rules.len());
        let mut prefilters: Vec<Vec<(bool, u16)>> = Vec::with_capacity(ok_rules.len());
        for (ri, r) in ok_rules.iter().enumerate() {
            match on_fields(r, eval[ri], &fallback_of[ri]) {
                Some(OnFields { regexes, prefilters: items }) => {
                    eval[ri] = Eval::Fields;
                    field_pcres.push(regexes);
                    prefilters.push(items);
                }
                None => {
                    field_pcres.push(Vec::new());
                    prefilters.push(Vec::new());
                }
            }
        }
        let searched: Vec<Vec<bool>> = ok_rules.iter().enumerate().map(|(ri, r)| (0..r.contents.len()).map(|ci| searched_at_pointer(r, eval[ri], ci, &at_pointer_of[ri])).collect()).collect();
        let chains: Vec<Option<Chain>> = ok_rules.iter().enumerate().map(|(i, r)| Chain::of(r, base_eval[i], &fallback_of[i])).collect();
        for (ri, r) in ok_rules.iter().enumerate() {
            // (content, the content it implies, the pair's pattern)
            let implied: Vec<(usize, usize, Pattern)> = (0..r.contents.len())
                .filter_map(|ci| {
                    let (a, lo, hi) = implied_before(r, ci, chains[ri].as_ref())?;
                    Some((ci, a, pattern_behind(&r.contents[a], &r.contents[ci], lo, hi)?))
                })
                .collect();
            for (ci, c) in r.contents.iter().enumerate() {
                if eval[ri] == Eval::Fields && stream_kind(c.buffer) == 2 {
                    if prefilters[ri].contains(&(false, ci as u16)) {
                        let flags = if c.nocase { CompileFlags::CASELESS } else { CompileFlags::empty() };
                        let mut pat = Pattern::with_flags(hex_literal(&c.pattern), flags | CompileFlags::SINGLEMATCH)?;
                        if let Some(end) = latest_end(c) {
                            pat.ext.set_max_offset(end);
                        }
                        pat.id = Some(refs.len());
                        refs.push(PatternRef { rule: ri as u32, item: ci as u16, is_pcre: false, prefilter: true, implies: None, len: c.pattern.len() as u32 });
                        db.add(c.buffer, c.transforms, r.flow, pat);
                    }
                    continue;
                }
                if searched[ri][ci] {
                    continue;
                }
                let mut flags = if c.nocase { CompileFlags::CASELESS } else { CompileFlags::empty() };
                if position_free(r, base_eval[ri], false, ci) {
                    flags |= CompileFlags::SINGLEMATCH;
                }
                if implied.iter().any(|(_, a, _)| *a == ci) {
                    continue;
                }
                let implies = implied.iter().find(|(c, ..)| *c == ci).map(|(_, a, pat)| (*a as u16, pat.clone()));
                let behind = match &implies {
                    Some((_, pat)) => Some(pat.clone()),
                    None => content_behind(r, ci).and_then(|(a, lo, hi)| pattern_behind(a, c, lo, hi)),
                };
                let is_behind = behind.is_some();
                let mut pat = match behind {
                    Some(pat) => pat,
                    None => Pattern::with_flags(hex_literal(&c.pattern), flags)?,
                };
                let unit_positions = base_eval[ri] == Eval::DataUnit && c.buffer == Buffer::Stream;
                if let Some(end) = latest_end(c).filter(|_| !is_behind && !unit_positions) {
                    pat.ext.set_max_offset(end);
                }
                pat.id = Some(refs.len());
                refs.push(PatternRef { rule: ri as u32, item: ci as u16, is_pcre: false, prefilter: false, implies: implies.map(|(a, _)| a), len: c.pattern.len() as u32 });
                db.add(c.buffer, c.transforms, r.flow, pat);
            }
            for (pi, p) in r.pcres.iter().enumerate() {
                if fallback_of[ri][pi].is_some() || at_pointer_of[ri][pi].is_some() {
                    continue;
                }
                if eval[ri] == Eval::Fields && stream_kind(p.buffer) == 2 {
                    if prefilters[ri].contains(&(true, pi as u16)) {
                        let mut pat = pcre_pattern(p)?;
                        pat.flags |= CompileFlags::SINGLEMATCH;
                        pat.id = Some(refs.len());
                        refs.push(PatternRef { rule: ri as u32, item: pi as u16, is_pcre: true, prefilter: true, implies: None, len: 0 });
                        db.add(p.buffer, p.transforms, r.flow, pat);
                    }
                    continue;
                }
                let (mut pat, len) = match behind_content(r, pi).filter(|_| behind_of[ri].get(pi) == Some(&true)) {
                    Some(c) => (behind_pattern(c, p)?, c.pattern.len() as u32),
                    None => (pcre_pattern(p)?, 0),
                };
                if needs_som(r, p) {
                    pat.flags |= CompileFlags::SOM_LEFTMOST;
                } else if position_free(r, base_eval[ri], true, pi) {
                    pat.flags |= CompileFlags::SINGLEMATCH;
                }
                pat.id = Some(refs.len());
                refs.push(PatternRef { rule: ri as u32, item: pi as u16, is_pcre: true, prefilter: false, implies: None, len });
                db.add(p.buffer, p.transforms, r.flow, pat);
            }
        }
        let build_stream = |v: Vec<Pattern>| -> Result<Option<StreamingDatabase>> {
            if v.is_empty() {
                return Ok(None);
            }
            Ok(Some(build_ext::<Streaming>(&v).map_err(|e| anyhow!("compiling the rules: {e}"))?))
        };
        let Databases { stream, bodies, fields: field_groups } = db;
        let [to_server, to_client] = stream;
        let stream = [build_stream(to_server)?, build_stream(to_client)?];
        let [requests, responses] = bodies;
        let bodies = [build_stream(requests)?, build_stream(responses)?];
        let mut fields = HashMap::new();
        let mut field_transforms: HashMap<Buffer, Vec<Transforms>> = HashMap::new();
        for (key, v) in field_groups {
            fields.insert(key, build_ext::<Block>(&v).map_err(|e| anyhow!("compiling the rules: {e}"))?);
            field_transforms.entry(key.0).or_default().push(key.1);
        }
        for chains in field_transforms.values_mut() {
            chains.sort_unstable();
        }
        let n = ok_rules.len();

        let mut header_classes: Vec<Header> = Vec::new();
        let header_of: Vec<u32> = headers
            .into_iter()
            .map(|h| match header_classes.iter().position(|c| *c == h) {
                Some(i) => i as u32,
                None => {
                    header_classes.push(h);
                    (header_classes.len() - 1) as u32
                }
            })
            .collect();
        let mut kept: Vec<Buffer> = ok_rules.iter().flat_map(|r| r.checks.iter().map(|c| c.buffer)).filter(|b| *b != Buffer::Stream).collect();
        // A rule evaluated on its fields' bytes reads every buffer it names.
        for (ri, r) in ok_rules.iter().enumerate() {
            if eval[ri] == Eval::Fields {
                kept.extend(r.order.iter().map(|s| crate::inspect::rules::step_buffer(r, *s)).filter(|b| stream_kind(*b) == 2));
            }
        }
        kept.sort_unstable();
        kept.dedup();
        let mut field_buffers: Vec<Buffer> = fields.keys().map(|k| k.0).chain(kept.iter().copied()).collect();
        field_buffers.sort_unstable();
        field_buffers.dedup();
        // Flowbit names, numbered in order of appearance.
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut number = |list: &[String]| -> Vec<usize> {
            list.iter()
                .map(|name| {
                    let next = names.len();
                    *names.entry(name.clone()).or_insert(next)
                })
                .collect()
        };
        let bits: Vec<Vec<BitOp>> = ok_rules
            .iter()
            .map(|r| {
                r.flowbits
                    .iter()
                    .map(|f| match f {
                        Flowbit::IsSet { names, all } => BitOp::IsSet(number(names), *all),
                        Flowbit::IsNotSet { names, all } => BitOp::IsNotSet(number(names), *all),
                        Flowbit::Set(n) => BitOp::Set(number(n)),
                        Flowbit::Unset(n) => BitOp::Unset(number(n)),
                        Flowbit::Toggle(n) => BitOp::Toggle(number(n)),
                    })
                    .collect()
            })
            .collect();
        let mut testers: Vec<Vec<u32>> = vec![Vec::new(); names.len()];
        for (ri, ops) in bits.iter().enumerate() {
            for op in ops {
                if let BitOp::IsSet(b, _) | BitOp::IsNotSet(b, _) = op {
                    for &bit in b {
                        testers[bit].push(ri as u32);
                    }
                }
            }
        }
        Ok((
            Self {
                compiled: Arc::new(Compiled {
                    rules: ok_rules,
                    refs,
                    stream,
                    bodies,
                    fields,
                    field_transforms,
                    fallbacks: fallback_of,
                    at_pointer: at_pointer_of,
                    searched,
                    header_of,
                    header_classes,
                    meta: metas,
                    bits,
                    testers,
                    thresholds: ThresholdTable::default(),
                    eval,
                    field_pcres,
                    prefilters,
                    chains,
                    kept,
                    field_buffers,
                }),
                active,
                overrides: vec![Override::Own; n],
                mode,
                body_depth,
                unfollowable: opts.unfollowable,
                past_body_depth: opts.past_body_depth,
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
        for db in self.stream.iter().chain(&self.bodies).flatten() {
            grow(db, &mut scratch)?;
        }
        for db in self.fields.values() {
            grow(db, &mut scratch)?;
        }
        if scratch.is_none() {
            // No rules (the HTTP log without the IPS, or every rule disabled): Hyperscan makes no
            // scratch without a database, so one is made for a database that is never scanned.
            let placeholder: BlockDatabase = Patterns(vec![Pattern::new("placeholder")?]).build::<Block>().map_err(|e| anyhow!("{e}"))?;
            grow(&placeholder, &mut scratch)?;
        }
        scratch.ok_or_else(|| anyhow!("no scratch space"))
    }

    /// Some rule tests the ClientHello (`tls.sni`, `ja3.*`, `ja4.hash`): a passed flow's hello
    /// is scanned too.
    pub fn scans_hello(&self) -> bool {
        self.field_transforms.keys().any(|b| matches!(b, Buffer::TlsSni | Buffer::TlsSniDot | Buffer::Ja3Hash | Buffer::Ja3String | Buffer::Ja4Hash))
    }

    /// A flow between these addresses skips the IPS (protection whitelist).
    pub fn whitelisted(&self, client: std::net::Ipv4Addr, server: std::net::Ipv4Addr) -> bool {
        crate::addr::in_any(&self.whitelist, client) || crate::addr::in_any(&self.whitelist, server)
    }

    /// The action rule `rule` takes: the operator's override, or its own.
    pub(super) fn action(&self, rule: usize) -> Action {
        match self.overrides.get(rule).copied().unwrap_or_default() {
            Override::Set(a) => a,
            Override::Own => self.compiled.rules.get(rule).map_or(Action::Alert, |r| r.action),
        }
    }

    /// The rule stops its flow: its action blocks and the mode lets it.
    pub(super) fn blocks(&self, rule: usize) -> bool {
        self.mode == IpsMode::Block && self.action(rule).blocks()
    }

    /// The action `rules list` shows for a sid: the override's, or the rule's own.
    pub fn action_of(&self, sid: u32) -> Option<Action> {
        self.rules.iter().position(|r| r.sid == sid).map(|i| self.action(i))
    }

    /// Overrides one rule's action (`rules action SID alert|drop|reject|pass|default`); false: no
    /// such sid.
    pub fn set_override(&mut self, sid: u32, action: Override) -> bool {
        match self.rules.iter().position(|r| r.sid == sid) {
            Some(i) => {
                self.overrides[i] = action;
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

    /// The operator's override of a rule (`Own` for none, or no such sid).
    pub fn override_of(&self, sid: u32) -> Override {
        self.rules.iter().position(|r| r.sid == sid).map_or(Override::Own, |i| self.overrides[i])
    }
}

fn meta(r: &Rule, classes: &Classifications, references: &References) -> Result<Meta, String> {
    let class = match &r.classtype {
        Some(name) => Some(classes.get(name).ok_or_else(|| format!("classtype '{name}' is not in classification.config"))?),
        None => None,
    };
    Ok(Meta {
        category: class.map(|c| c.description.clone()),
        severity: r.priority.or(class.map(|c| c.priority)).unwrap_or(DEFAULT_SEVERITY),
        references: r.references.iter().map(|(system, id)| references.resolve(system, id)).collect(),
    })
}

/// A pcre's match start is tracked: `R` needs it, and so does a pcre on the stream of a rule
/// evaluated per data unit (its match must start inside the unit).
fn needs_som(r: &Rule, p: &crate::inspect::rules::Pcre) -> bool {
    p.relative || (p.buffer == Buffer::Stream && Eval::of(r) == Eval::DataUnit)
}

/// Payload keywords this engine cannot evaluate soundly.
fn check_payload(r: &Rule) -> Result<(), String> {
    for c in &r.checks {
        let kw = c.check.keyword();
        if stream_kind(c.buffer) == 1 {
            return Err(format!("{kw} on {:?}: bodies are scanned as streams and their bytes are not kept", c.buffer));
        }
        if c.buffer == Buffer::TlsCerts {
            return Err(format!("{kw} on tls.certs: each certificate is a buffer of its own, and their bytes are not kept"));
        }
    }
    // A variable is read in the buffer it was extracted from (Suricata looks it up in the same list).
    let defined_in = |v: crate::inspect::payload::VarId| {
        r.checks.iter().find_map(|c| match c.check {
            Check::ByteExtract { var, .. } if var == v => Some(c.buffer),
            _ => None,
        })
    };
    for c in &r.checks {
        if let Some(v) = c.check.uses().into_iter().find(|v| defined_in(*v) != Some(c.buffer)) {
            return Err(format!("{}: variable '{}' was extracted from another buffer", c.check.keyword(), r.vars.get(usize::from(v.0)).map_or("?", String::as_str)));
        }
    }
    for c in &r.contents {
        let used = [c.vars.offset, c.vars.depth, c.vars.distance, c.vars.within];
        if let Some(v) = used.into_iter().flatten().find(|v| defined_in(*v) != Some(c.buffer)) {
            return Err(format!("content: variable '{}' was extracted from another buffer", r.vars.get(usize::from(v.0)).map_or("?", String::as_str)));
        }
    }
    if r.dsize.is_some() && r.order.iter().any(|s| crate::inspect::rules::step_buffer(r, *s) != Buffer::Stream) {
        return Err("dsize is the size of a data unit of the stream; it cannot be combined with HTTP or TLS buffers (Suricata: not with app-layer keywords)".into());
    }
    if r.order.iter().any(|s| matches!(s, Step::Check(_))) && r.order.len() > 64 {
        return Err("more than 64 contents, pcres and payload keywords in a rule with payload keywords".into());
    }
    Ok(())
}

fn check_supported(r: &Rule) -> Result<(), String> {
    check_payload(r)?;
    let transformed = r.contents.iter().any(|c| !c.transforms.is_empty()) || r.pcres.iter().any(|p| !p.transforms.is_empty());
    if transformed && Eval::of(r) != Eval::Plain {
        return Err("a transform together with payload keywords, dsize or per-data-unit stream checks is not supported".into());
    }
    // Per data unit, the stream has an end and a size, as a field buffer has.
    let unit = Eval::of(r) == Eval::DataUnit;
    let bounded = |b: Buffer| stream_kind(b) == 2 || (unit && b == Buffer::Stream);
    if let Some(c) = r.contents.iter().find(|c| c.endswith && !bounded(c.buffer)) {
        return Err(format!("endswith on {:?}: supported on field buffers and on the stream's data units (a body has no end to match here)", c.buffer));
    }
    if let Some((b, _)) = r.sizes.iter().find(|(b, _)| stream_kind(*b) != 2) {
        return Err(format!("bsize on {b:?}: supported on sticky field buffers"));
    }
    if r.contents.iter().any(|c| c.negated && stream_kind(c.buffer) == 1) {
        return Err("negated contents on bodies are not supported".into());
    }
    Ok(())
}

/// Only whether an item of the stream or a body matched counts, never where (and so its first
/// match is all the matcher needs): a rule evaluated plainly, the item without position
/// modifiers, and no item placed relative to it. Hyperscan then reports it once per stream
/// (`SINGLEMATCH`) instead of at every occurrence: a short content such as `|0d 0a|` in a bulk
/// body otherwise costs a callback per line.
fn position_free(r: &Rule, eval: Eval, is_pcre: bool, i: usize) -> bool {
    if eval != Eval::Plain {
        return false;
    }
    if is_pcre {
        let Some(p) = r.pcres.get(i) else { return false };
        return !p.relative && !p.anchored && !p.negated && stream_kind(p.buffer) != 2;
    }
    let Some(c) = r.contents.get(i) else { return false };
    let placed = c.offset.is_some() || c.depth.is_some() || c.distance.is_some() || c.within.is_some() || c.startswith || c.endswith || c.negated || c.vars.any();
    // The next content of the same buffer is placed after this one's end, or a pcre with `R`.
    let next_relative = r.contents.iter().skip(i + 1).find(|n| n.buffer == c.buffer).is_some_and(|n| n.distance.is_some() || n.within.is_some());
    let pcre_after = r.pcres.iter().any(|p| p.relative && p.after == Some(i));
    !placed && !next_relative && !pcre_after && stream_kind(c.buffer) != 2
}

/// The regex of an anchored `R` pcre on the stream of a rule evaluated per data unit (whose
/// bytes the matcher has): it is tried at the detection pointer, as Suricata runs a relative
/// anchored pcre. None when the regex crate does not take the pattern (Hyperscan then searches
/// it as any pcre).
fn at_pointer_regex(r: &Rule, p: &crate::inspect::rules::Pcre) -> Option<regex::bytes::Regex> {
    if !(p.relative && p.anchored && p.buffer == Buffer::Stream && Eval::of(r) == Eval::DataUnit) {
        return None;
    }
    bytes_regex(p)
}

/// A pcre as the regex crate runs it on bytes, under its Perl flags; an anchored `R` pcre with
/// its `^` (the matcher runs it where the detection pointer is). None when the crate does not
/// take the pattern.
fn bytes_regex(p: &crate::inspect::rules::Pcre) -> Option<regex::bytes::Regex> {
    let pattern = if p.anchored { format!("^(?:{})", p.pattern) } else { p.pattern.clone() };
    regex::bytes::RegexBuilder::new(&pattern)
        .unicode(false)
        .case_insensitive(p.flags.contains('i'))
        .dot_matches_new_line(p.flags.contains('s'))
        .multi_line(p.flags.contains('m'))
        .ignore_whitespace(p.flags.contains('x'))
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// A content on the stream of a rule evaluated per data unit, whose bytes the matcher has, other
/// than the one its evaluation starts from: it is looked for in the unit's bytes from the
/// detection pointer, as Suricata does, not reported by Hyperscan wherever it occurs (ET 2012978's
/// `content:!"|0A|"; within:100;` after an `isdataat` was a one-byte literal Hyperscan reported
/// every 256 bytes of a download, and `content:"|00|"` of the GPL NETBIOS rules every 256). The
/// rule keeps one content or pcre Hyperscan reports, which is what brings it to evaluation.
fn searched_at_pointer(r: &Rule, eval: Eval, ci: usize, at_pointer: &[Option<Arc<regex::bytes::Regex>>]) -> bool {
    let relative_on_stream = |c: &crate::inspect::rules::Content| c.buffer == Buffer::Stream && (c.distance.is_some() || c.within.is_some());
    let Some(c) = r.contents.get(ci) else { return false };
    if eval != Eval::DataUnit || c.buffer != Buffer::Stream {
        return false;
    }
    // One content of the stream is reported, the longest the rule needs (Suricata's fast
    // pattern): the rule cannot hold in a unit without it, and the others are looked for in
    // that unit once it matched.
    let anchor = r.contents.iter().enumerate().filter(|(_, k)| k.buffer == Buffer::Stream && !k.negated).max_by_key(|(i, k)| (k.pattern.len(), std::cmp::Reverse(*i))).map(|(i, _)| i);
    if let Some(a) = anchor {
        return a != ci;
    }
    if !relative_on_stream(c) {
        return false;
    }
    let reported_content = r.contents.iter().any(|k| !k.negated && !relative_on_stream(k));
    let reported_pcre = r.pcres.iter().enumerate().any(|(pi, p)| !p.negated && at_pointer.get(pi).is_none_or(Option::is_none));
    reported_content || reported_pcre
}

/// How a rule is evaluated on its fields' bytes (`on_fields`).
struct OnFields {
    /// Per pcre: its regex, if it is on a field buffer.
    regexes: Vec<Option<Arc<regex::bytes::Regex>>>,
    /// The items Hyperscan reports of the rule's fields.
    prefilters: Vec<(bool, u16)>,
}

/// A rule whose field items can be evaluated on the fields' bytes (`Eval::Fields`): a plain
/// rule or one with payload keywords on field buffers, its field items untransformed, each field
/// pcre one the regex crate takes (and Hyperscan: no fancy-regex fallback). Returns the regex of
/// each field pcre and the field items Hyperscan reports: the fast pattern (the content the
/// author marked `fast_pattern`, else the longest not negated) when it is on a field buffer
/// that arrives last (a head's, if the rule has one), else nothing when it is on a body, else
/// the field pcres not negated.
fn on_fields(r: &Rule, eval: Eval, fallbacks: &[Option<Arc<fancy_regex::Regex>>]) -> Option<OnFields> {
    let field = |b: Buffer| stream_kind(b) == 2;
    // Other items on bodies and the stream are reported by Hyperscan and kept as in any rule.
    let ok = |b: Buffer, t: Transforms| stream_kind(b) != 2 || t == Transforms::default();
    if !matches!(eval, Eval::Plain | Eval::Payload)
        || !r.contents.iter().all(|c| ok(c.buffer, c.transforms))
        || !r.pcres.iter().all(|p| ok(p.buffer, p.transforms))
        || !r.checks.iter().all(|c| field(c.buffer))
        || !r.contents.iter().any(|c| field(c.buffer))
        || fallbacks.iter().any(Option::is_some)
    {
        return None;
    }
    let regexes = r.pcres.iter().map(|p| if field(p.buffer) { bytes_regex(p).map(|re| Some(Arc::new(re))) } else { Some(None) }).collect::<Option<Vec<_>>>()?;
    // What Hyperscan reports must come with the last of the rule's buffers to arrive: a
    // message head's, if the rule has any, after the handshake's (whose values stay for the
    // flow). The fast pattern: the longest content not negated there; else the pcres not
    // negated there.
    let head = |b: Buffer| field(b) && !b.of_handshake();
    let last = |b: Buffer| if r.order.iter().any(|s| head(crate::inspect::rules::step_buffer(r, *s))) { head(b) } else { field(b) };
    // A body content comes after the head, and Hyperscan reports it anyway: when it is the one
    // the author chose (`fast_pattern`), or the longest, nothing of the fields is reported.
    let candidate = |c: &crate::inspect::rules::Content| (last(c.buffer) || stream_kind(c.buffer) == 1) && !c.negated && !c.pattern.is_empty();
    let anchor = r.contents.iter().enumerate().filter(|(_, c)| candidate(c)).max_by_key(|(i, c)| (c.fast_pattern, c.pattern.len(), std::cmp::Reverse(*i)));
    let items: Vec<(bool, u16)> = match anchor {
        Some((_, c)) if stream_kind(c.buffer) == 1 => Vec::new(),
        Some((i, _)) => vec![(false, i as u16)],
        None => r.pcres.iter().enumerate().filter(|(_, p)| last(p.buffer) && !p.negated).map(|(i, _)| (true, i as u16)).collect(),
    };
    // Without a field item reported, the rule must be brought to evaluation by a body, which
    // comes after the head: the stream's matches outlive a message, and a head arriving after
    // them would bring nothing.
    let bodies = r.contents.iter().any(|c| stream_kind(c.buffer) == 1 && !c.negated) || r.pcres.iter().any(|p| stream_kind(p.buffer) == 1 && !p.negated);
    let stream = r.order.iter().any(|s| crate::inspect::rules::step_buffer(r, *s) == Buffer::Stream);
    (!items.is_empty() || (bodies && !stream)).then_some(OnFields { regexes, prefilters: items })
}

/// The patterns of each database, while a set compiles.
#[derive(Default)]
struct Databases {
    /// To the server, to the client: stream patterns of a rule with a direction go to that
    /// direction's database only.
    stream: [Vec<Pattern>; 2],
    /// Request bodies, response bodies.
    bodies: [Vec<Pattern>; 2],
    fields: HashMap<FieldKey, Vec<Pattern>>,
}

impl Databases {
    /// Puts the pattern of an item on `buffer` of a rule with direction `flow` where it is scanned.
    fn add(&mut self, buffer: Buffer, transforms: Transforms, flow: Option<FlowDir>, pat: Pattern) {
        match stream_kind(buffer) {
            0 => match flow {
                Some(FlowDir::ToServer) => self.stream[0].push(pat),
                Some(FlowDir::ToClient) => self.stream[1].push(pat),
                None => {
                    self.stream[0].push(pat.clone());
                    self.stream[1].push(pat);
                }
            },
            // file.data is either body (Suricata 7 and later): in both databases.
            1 if buffer == Buffer::FileData => {
                self.bodies[0].push(pat.clone());
                self.bodies[1].push(pat);
            }
            1 => self.bodies[body_dir(buffer)].push(pat),
            _ => self.fields.entry((buffer, transforms)).or_default().push(pat),
        }
    }
}

/// The content an anchored `R` pcre on the stream or a body starts right behind (the step
/// before it in its buffer), when the pcre can be compiled behind that content's literal. Alone,
/// `pcre:"/^[a-f0-9]{4}/R"` is a class Hyperscan reports, with its start tracked, wherever
/// four hex digits stand in a download (that one pcre halved the ET Open sample's bulk scan
/// rate); behind its content it reports only where the rule can match, and the content's
/// literal gives Hyperscan a cheap start. A field buffer's pcres are not concerned (its bytes
/// are scanned once, whole).
fn behind_content(r: &Rule, pi: usize) -> Option<&crate::inspect::rules::Content> {
    let p = r.pcres.get(pi)?;
    if !(p.relative && p.anchored) || stream_kind(p.buffer) == 2 || p.flags.contains('x') {
        return None;
    }
    let at = r.order.iter().position(|s| *s == Step::Pcre(pi as u16))?;
    let before = r.order[..at].iter().rev().find(|s| crate::inspect::rules::step_buffer(r, **s) == p.buffer)?;
    let Step::Content(ci) = before else { return None };
    let c = r.contents.get(usize::from(*ci))?;
    (!c.negated && c.transforms == p.transforms && !c.pattern.is_empty()).then_some(c)
}

/// A content's literal as a part of a larger expression (caseless if the content is `nocase`).
fn caseless_literal(c: &crate::inspect::rules::Content) -> String {
    let literal = hex_literal(&c.pattern);
    if c.nocase {
        format!("(?i:{literal})")
    } else {
        literal
    }
}

/// Compiles `patterns` into one database as `Patterns::build` does, with each pattern's extended
/// parameters (`max_offset`), which the crate's builder leaves out (it calls `hs_compile_multi`).
#[allow(unsafe_code, reason = "hs_compile_ext_multi: the crate's builder drops the patterns' extended parameters")]
fn build_ext<T: hyperscan::Mode>(patterns: &[Pattern]) -> Result<hyperscan::Database<T>> {
    use foreign_types::ForeignType;
    let expressions = patterns.iter().map(|p| std::ffi::CString::new(p.expression.as_str())).collect::<Result<Vec<_>, _>>()?;
    let pointers: Vec<*const std::ffi::c_char> = expressions.iter().map(|e| e.as_ptr()).collect();
    let flags: Vec<std::ffi::c_uint> = patterns.iter().map(|p| p.flags.bits()).collect();
    let ids: Vec<std::ffi::c_uint> = patterns.iter().enumerate().map(|(i, p)| p.id.unwrap_or(i) as std::ffi::c_uint).collect();
    let exts: Vec<hyperscan_sys::hs_expr_ext_t> = patterns.iter().map(|p| p.ext.into()).collect();
    let ext_pointers: Vec<*const hyperscan_sys::hs_expr_ext_t> = patterns.iter().zip(&exts).map(|(p, e)| if p.ext.is_empty() { std::ptr::null() } else { e as *const _ }).collect();
    let som = patterns.iter().any(|p| p.flags.contains(CompileFlags::SOM_LEFTMOST));
    let mode = T::ID | if T::is_streaming() && som { hyperscan_sys::HS_MODE_SOM_HORIZON_MEDIUM } else { 0 };
    let n = std::ffi::c_uint::try_from(patterns.len())?;
    let mut db: *mut hyperscan_sys::hs_database_t = std::ptr::null_mut();
    let mut err: *mut hyperscan_sys::hs_compile_error_t = std::ptr::null_mut();
    // SAFETY: every array has `n` elements and outlives the call; an extension pointer is null or
    // points into `exts`; Hyperscan writes either a database or an error, which is freed here.
    let rc = unsafe { hyperscan_sys::hs_compile_ext_multi(pointers.as_ptr(), flags.as_ptr(), ids.as_ptr(), ext_pointers.as_ptr(), n, mode, std::ptr::null(), &mut db, &mut err) };
    if rc != hyperscan_sys::HS_SUCCESS as hyperscan_sys::hs_error_t || db.is_null() {
        let message = if err.is_null() {
            format!("Hyperscan error {rc}")
        } else {
            // SAFETY: a compile error Hyperscan returned, read once and freed once.
            unsafe {
                let text = std::ffi::CStr::from_ptr((*err).message).to_string_lossy().into_owned();
                hyperscan_sys::hs_free_compile_error(err);
                text
            }
        };
        return Err(anyhow!(message));
    }
    // SAFETY: a database Hyperscan compiled, owned from here on.
    Ok(unsafe { hyperscan::Database::from_ptr(db) })
}

/// Where a content placed from the start of its buffer (`depth`, `startswith`) ends at the
/// latest: Hyperscan reports it nowhere after (`max_offset`). `content:"|16|"; depth:1;` on the
/// stream was otherwise reported at every 256th byte of a download, to be thrown away.
/// Positions of the stream count from its start, a body's from the body's, a field's from the
/// value's; not for a rule evaluated per data unit, whose stream positions count from the unit.
fn latest_end(c: &crate::inspect::rules::Content) -> Option<u64> {
    if c.distance.is_some() || c.within.is_some() || c.vars.any() {
        return None;
    }
    let len = c.pattern.len() as u64;
    let end = match (c.startswith, c.depth) {
        (true, _) => len,
        (false, Some(depth)) => u64::from(c.offset.unwrap_or(0)) + u64::from(depth),
        (false, None) => return None,
    };
    (end >= len && len > 0).then_some(end)
}

/// Items this short report so often in bulk data (`|3B|` every 256 random bytes) that they are
/// compiled behind the content they follow when they can be (`content_behind`).
const SHORT_ITEM: usize = 3;

/// A short content on the stream or a body placed after the content before it (`distance` >= 0,
/// `within`): it is compiled behind that content, with the gap the two modifiers allow
/// (`for\((?s:.{0,19});` for `content:"for("; content:";"; within:20;`; a gap of more than 255
/// bytes, or without `within`, is open-ended), so Hyperscan reports it only where it follows an
/// occurrence of that content as the rule says, not at every occurrence. The report still ends
/// where the content does, and the matcher still checks it against the kept matches of the
/// content before it: this only leaves out matches that follow no occurrence at all. Returns
/// that content and the gap's bounds.
fn content_behind(r: &Rule, ci: usize) -> Option<(&crate::inspect::rules::Content, u64, Option<u64>)> {
    let c = r.contents.get(ci)?;
    if c.pattern.len() > SHORT_ITEM || stream_kind(c.buffer) == 2 || c.vars.any() || (c.distance.is_none() && c.within.is_none()) {
        return None;
    }
    let lo = u64::try_from(c.distance.unwrap_or(0)).ok()?;
    let hi = match c.within {
        Some(w) => Some((lo + u64::from(w)).checked_sub(c.pattern.len() as u64)?).filter(|hi| *hi <= 255),
        None => None,
    };
    let at = r.order.iter().position(|s| *s == Step::Content(ci as u16))?;
    let before = r.order[..at].iter().rev().find(|s| crate::inspect::rules::step_buffer(r, **s) == c.buffer)?;
    let Step::Content(ai) = before else { return None };
    let a = r.contents.get(usize::from(*ai))?;
    (!a.negated && a.transforms == c.transforms && !a.pattern.is_empty() && !a.vars.any()).then_some((a, lo, hi))
}

/// Content `c` compiled behind content `a` with a gap of `lo` to `hi` bytes (open-ended without
/// `hi`), if Hyperscan takes it in streaming mode.
fn pattern_behind(a: &crate::inspect::rules::Content, c: &crate::inspect::rules::Content, lo: u64, hi: Option<u64>) -> Option<Pattern> {
    let gap = match hi {
        Some(hi) => format!("{{{lo},{hi}}}"),
        None => format!("{{{lo},}}"),
    };
    let expr = format!("{}(?s:.{gap}){}", caseless_literal(a), caseless_literal(c));
    let pat = Pattern::with_flags(expr, CompileFlags::empty()).ok()?;
    Patterns(vec![pat.clone()]).build::<Streaming>().ok().map(|_| pat)
}

/// A short content with no modifiers of its own, on the stream or a body of a chained rule, that
/// only the next content follows (`distance` >= 0, `within` or neither), and that one is longer:
/// the next content is compiled behind it with the exact gap the modifiers allow
/// (`Z(?s:.{0,21})\x6c\x69\x6c\x00` for `content:"Z"; content:"|6C 69 6C 00|"; within:25;`), and the
/// short one is not reported at all. Its position matters to nothing but the next content, which
/// the combined report already places, and a report of the pair stands for a match of both
/// (`PatternRef::implies`). ET's stream rules had single bytes such as `"Z"` or `"|05|"` reported
/// at every occurrence in a download. Returns the short content's index and the gap's bounds.
fn implied_before(r: &Rule, ci: usize, chain: Option<&Chain>) -> Option<(usize, u64, Option<u64>)> {
    let chain = chain?;
    let c = r.contents.get(ci)?;
    let own = |c: &crate::inspect::rules::Content| c.offset.is_some() || c.depth.is_some() || c.startswith || c.endswith || c.negated || c.vars.any();
    if stream_kind(c.buffer) == 2 || own(c) || (c.distance.is_none() && c.within.is_none()) {
        return None;
    }
    let Some((false, ai)) = chain.contents.get(ci)?.prev else { return None };
    let a = r.contents.get(usize::from(ai))?;
    if own(a) || a.distance.is_some() || a.within.is_some() || a.pattern.is_empty() || a.pattern.len() > SHORT_ITEM || a.pattern.len() >= c.pattern.len() || a.transforms != c.transforms {
        return None;
    }
    // Nothing else comes after it in the rule's chain (no other content, no pcre).
    let after_a = |l: &Link| l.prev == Some((false, ai));
    let others = chain.contents.iter().enumerate().filter(|(i, l)| *i != ci && after_a(l)).count() + chain.pcres.iter().filter(|l| after_a(l)).count();
    if others > 0 || r.pcres.iter().any(|p| p.after == Some(usize::from(ai))) {
        return None;
    }
    let lo = u64::try_from(c.distance.unwrap_or(0)).ok()?;
    let hi = match c.within {
        // A bounded gap of more than 255 bytes would be compiled open-ended, which is not exact.
        Some(w) => {
            let hi = (lo + u64::from(w)).checked_sub(c.pattern.len() as u64)?;
            if hi > 255 {
                return None;
            }
            Some(hi)
        }
        None => None,
    };
    Some((usize::from(ai), lo, hi))
}

/// The pcre of `behind_content` compiled behind its content: the literal (caseless if the
/// content is `nocase`), then the pcre under its own flags.
fn behind_pattern(c: &crate::inspect::rules::Content, p: &crate::inspect::rules::Pcre) -> Result<Pattern> {
    let literal = caseless_literal(c);
    let flags: String = p.flags.chars().filter(|f| matches!(f, 'i' | 's' | 'm')).collect();
    let expr = if flags.is_empty() { format!("{literal}(?:{})", p.pattern) } else { format!("{literal}(?{flags}:{})", p.pattern) };
    Ok(Pattern::with_flags(expr, CompileFlags::empty())?)
}

fn pcre_pattern(p: &crate::inspect::rules::Pcre) -> Result<Pattern> {
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
fn fallback_regex(rule: &Rule, p: &crate::inspect::rules::Pcre) -> Result<fancy_regex::Regex, String> {
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
