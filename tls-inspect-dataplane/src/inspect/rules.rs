//! The rule language: a Suricata-compatible subset, so operators reuse what they know.
//!
//! ```text
//! alert http any any -> any any (msg:"Log4Shell JNDI lookup"; flow:to_server; http.uri;
//!     content:"${jndi:"; nocase; classtype:attempted-admin; priority:1; sid:1000001; rev:1;
//!     metadata: confidence high;)
//! ```
//!
//! Anything outside the subset is refused with the rule's line number and the keyword; one bad
//! rule does not stop the others from loading (it is listed).

use std::fmt;

use crate::inspect::payload::{self, Check, VarId};
pub use crate::inspect::transform::Transforms;
use crate::inspect::transform::Transform;

/// A rule's action, with Suricata's meaning: `alert` only alerts; `drop` ends the connection
/// (in block mode; an alert in monitor mode); `reject` ends it with the block page (HTTP) or a
/// reset; `pass` stops matching for the flow, and wins over the others when both match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pass,
    Drop,
    Reject,
    Alert,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Reject => "reject",
            Action::Alert => "alert",
        }
    }

    /// Stops the flow (in block mode).
    pub fn blocks(self) -> bool {
        matches!(self, Action::Drop | Action::Reject)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Tls,
    /// HTTP/1 and HTTP/2.
    Http,
    /// HTTP/1.x only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum FlowDir {
    ToServer,
    ToClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Buffer {
    /// The stream itself (no sticky buffer).
    Stream,
    HttpMethod,
    HttpUri,
    /// The request's host name, normalised: lowercase, without a port.
    HttpHost,
    /// The Host header as sent.
    HttpHostRaw,
    HttpUserAgent,
    HttpRequestBody,
    HttpResponseBody,
    TlsSni,
    FileData,
    /// The request-target as sent.
    HttpUriRaw,
    /// Every header but the cookie, `Name: value\r\n` each.
    HttpHeader,
    /// The header lines as sent.
    HttpHeaderRaw,
    HttpHeaderNames,
    HttpCookie,
    HttpContentType,
    HttpContentLen,
    HttpReferer,
    HttpAccept,
    HttpAcceptEnc,
    HttpAcceptLang,
    HttpConnection,
    HttpServer,
    HttpLocation,
    HttpStatCode,
    HttpStatMsg,
    HttpRequestLine,
    HttpResponseLine,
    /// The start line and the headers.
    HttpStart,
    HttpProtocol,
    /// `tls.sni; dotprefix;`: the SNI with a `.` in front.
    TlsSniDot,
    /// The real server's certificates (DER), each a buffer of its own.
    TlsCerts,
    /// The server certificate's subject and issuer (`C=.., O=.., CN=..`), serial
    /// (`0A:1B:..`) and SHA-1 fingerprint (`aa:bb:..`).
    TlsCertSubject,
    TlsCertIssuer,
    TlsCertSerial,
    TlsCertFingerprint,
    /// `http.host; dotprefix;`.
    HttpHostDot,
    /// The ClientHello's JA3 fingerprint (MD5, hex), its JA3 string and its JA4 fingerprint.
    Ja3Hash,
    Ja3String,
    Ja4Hash,
}

impl Buffer {
    /// A buffer of the TLS handshake (the ClientHello or the server's certificate): it keeps
    /// its value for the whole flow, while HTTP buffers change per message.
    pub fn of_handshake(self) -> bool {
        matches!(
            self,
            Self::TlsSni
                | Self::TlsSniDot
                | Self::TlsCerts
                | Self::TlsCertSubject
                | Self::TlsCertIssuer
                | Self::TlsCertSerial
                | Self::TlsCertFingerprint
                | Self::Ja3Hash
                | Self::Ja3String
                | Self::Ja4Hash
        )
    }

    /// A sticky buffer keyword: the contents after it are in this buffer. (`tls_sni` and
    /// `file_data` are Suricata's older names of the same sticky buffers.)
    fn sticky(keyword: &str) -> Option<Self> {
        Some(match keyword {
            "http.method" => Self::HttpMethod,
            "http.uri" => Self::HttpUri,
            "http.uri.raw" => Self::HttpUriRaw,
            "http.host" => Self::HttpHost,
            "http.host.raw" => Self::HttpHostRaw,
            "http.user_agent" => Self::HttpUserAgent,
            "http.request_body" => Self::HttpRequestBody,
            "http.response_body" => Self::HttpResponseBody,
            "http.header" => Self::HttpHeader,
            "http.header.raw" => Self::HttpHeaderRaw,
            "http.cookie" => Self::HttpCookie,
            "http.server" => Self::HttpServer,
            "http.location" => Self::HttpLocation,
            "http.stat_code" => Self::HttpStatCode,
            "http.stat_msg" => Self::HttpStatMsg,
            // Suricata's sticky buffers whose old names are aliases, not modifiers.
            "http.header_names" | "http_header_names" => Self::HttpHeaderNames,
            "http.content_type" | "http_content_type" => Self::HttpContentType,
            "http.content_len" | "http_content_len" => Self::HttpContentLen,
            "http.referer" | "http_referer" => Self::HttpReferer,
            "http.accept" | "http_accept" => Self::HttpAccept,
            "http.accept_enc" | "http_accept_enc" => Self::HttpAcceptEnc,
            "http.accept_lang" | "http_accept_lang" => Self::HttpAcceptLang,
            "http.connection" | "http_connection" => Self::HttpConnection,
            "http.request_line" | "http_request_line" => Self::HttpRequestLine,
            "http.response_line" | "http_response_line" => Self::HttpResponseLine,
            "http.start" | "http_start" => Self::HttpStart,
            "http.protocol" | "http_protocol" => Self::HttpProtocol,
            "tls.sni" | "tls_sni" => Self::TlsSni,
            "tls.certs" => Self::TlsCerts,
            "tls.cert_subject" | "tls_cert_subject" => Self::TlsCertSubject,
            "tls.cert_issuer" | "tls_cert_issuer" => Self::TlsCertIssuer,
            "tls.cert_serial" | "tls_cert_serial" => Self::TlsCertSerial,
            "tls.cert_fingerprint" | "tls_cert_fingerprint" => Self::TlsCertFingerprint,
            "ja3.hash" | "ja3_hash" => Self::Ja3Hash,
            "ja3.string" | "ja3_string" => Self::Ja3String,
            "ja4.hash" => Self::Ja4Hash,
            "file.data" | "file_data" => Self::FileData,
            _ => return None,
        })
    }

    /// An old-style content modifier: it puts the content before it in this buffer.
    fn modifier(keyword: &str) -> Option<Self> {
        Some(match keyword {
            "http_method" => Self::HttpMethod,
            "http_uri" => Self::HttpUri,
            "http_raw_uri" => Self::HttpUriRaw,
            "http_host" => Self::HttpHost,
            "http_raw_host" => Self::HttpHostRaw,
            "http_user_agent" => Self::HttpUserAgent,
            "http_client_body" => Self::HttpRequestBody,
            "http_server_body" => Self::HttpResponseBody,
            "http_header" => Self::HttpHeader,
            "http_raw_header" => Self::HttpHeaderRaw,
            "http_cookie" => Self::HttpCookie,
            "http_stat_code" => Self::HttpStatCode,
            "http_stat_msg" => Self::HttpStatMsg,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// ET's `signature_severity` metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Minor,
    Major,
    Critical,
}

/// One `content` with its modifiers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Content {
    pub buffer: Buffer,
    pub pattern: Vec<u8>,
    pub negated: bool,
    pub nocase: bool,
    pub depth: Option<u32>,
    pub offset: Option<u32>,
    pub distance: Option<i32>,
    pub within: Option<u32>,
    /// The match starts the buffer.
    pub startswith: bool,
    /// The match ends the buffer.
    pub endswith: bool,
    /// The buffer's transforms (`url_decode`, `to_lowercase`, ...): the content matches their
    /// output.
    pub transforms: Transforms,
    /// `offset`, `depth`, `distance`, `within` given as byte_extract variables.
    pub vars: ContentVars,
    /// `fast_pattern`: the content the rule's author chose for the prefilter (Suricata's
    /// multi-pattern matcher), rare in traffic.
    pub fast_pattern: bool,
}

/// A content's modifiers that name a byte_extract variable instead of a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ContentVars {
    pub offset: Option<VarId>,
    pub depth: Option<VarId>,
    pub distance: Option<VarId>,
    pub within: Option<VarId>,
}

impl ContentVars {
    pub fn any(&self) -> bool {
        self.offset.is_some() || self.depth.is_some() || self.distance.is_some() || self.within.is_some()
    }
}

/// A payload keyword (`isdataat`, `byte_test`, `byte_jump`, `byte_extract`) and the buffer it
/// reads, as Suricata places it: the sticky buffer, else (with `relative`) the buffer of the
/// keyword before it, else the stream.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PayloadCheck {
    pub buffer: Buffer,
    pub check: Check,
}

/// A rule's buffer keywords in the order written: what `relative` and `distance` follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Step {
    Content(u16),
    Pcre(u16),
    Check(u16),
}

/// A `flowbits` condition or action.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Flowbit {
    /// Holds when one of the names is set (`isset,a|b`) or all are (`isset,a&b`).
    IsSet { names: Vec<String>, all: bool },
    IsNotSet { names: Vec<String>, all: bool },
    Set(Vec<String>),
    Unset(Vec<String>),
    Toggle(Vec<String>),
}

/// `threshold` and `detection_filter`: how often a rule's matches become alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Threshold {
    pub kind: ThresholdKind,
    pub track: Track,
    pub count: u32,
    pub seconds: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdKind {
    /// At most `count` alerts per `seconds`.
    Limit,
    /// An alert at every `count`th match within `seconds`.
    Threshold,
    /// One alert per `seconds`, once there were `count` matches.
    Both,
    /// `detection_filter`: the rule matches only from the `count`th match within `seconds` on.
    DetectionFilter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    BySrc,
    ByDst,
    ByBoth,
    ByRule,
}

impl Threshold {
    fn parse(v: &str, detection_filter: bool) -> Result<Self, String> {
        let (mut kind, mut track, mut count, mut seconds) = (if detection_filter { Some(ThresholdKind::DetectionFilter) } else { None }, None, None, None);
        for part in v.split(',') {
            let mut kv = part.split_whitespace();
            let (k, val) = (kv.next().unwrap_or(""), kv.next().unwrap_or(""));
            match k {
                "type" if !detection_filter => {
                    kind = Some(match val {
                        "limit" => ThresholdKind::Limit,
                        "threshold" => ThresholdKind::Threshold,
                        "both" => ThresholdKind::Both,
                        other => return Err(format!("type '{other}' (limit, threshold, both)")),
                    })
                }
                "track" => {
                    track = Some(match val {
                        "by_src" => Track::BySrc,
                        "by_dst" => Track::ByDst,
                        "by_both" => Track::ByBoth,
                        "by_rule" => Track::ByRule,
                        other => return Err(format!("track '{other}' (by_src, by_dst, by_both, by_rule)")),
                    })
                }
                "count" => count = Some(val.parse::<u32>().ok().filter(|c| *c > 0).ok_or_else(|| format!("count '{val}'"))?),
                "seconds" => seconds = Some(val.parse::<u32>().ok().filter(|c| *c > 0).ok_or_else(|| format!("seconds '{val}'"))?),
                other => return Err(format!("'{other}' (type, track, count, seconds)")),
            }
        }
        match (kind, track, count, seconds) {
            (Some(kind), Some(track), Some(count), Some(seconds)) => Ok(Self { kind, track, count, seconds }),
            _ => Err("needs type (threshold only), track, count and seconds".into()),
        }
    }
}

/// A length test on a buffer (`bsize`, `urilen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SizeCheck {
    Eq(u64),
    Lt(u64),
    Le(u64),
    Gt(u64),
    Ge(u64),
    /// `a<>b`: strictly between.
    Between(u64, u64),
    /// `!N`.
    Ne(u64),
}

impl SizeCheck {
    pub fn holds(self, len: u64) -> bool {
        match self {
            SizeCheck::Eq(n) => len == n,
            SizeCheck::Lt(n) => len < n,
            SizeCheck::Le(n) => len <= n,
            SizeCheck::Gt(n) => len > n,
            SizeCheck::Ge(n) => len >= n,
            SizeCheck::Between(a, b) => a < len && len < b,
            SizeCheck::Ne(n) => len != n,
        }
    }

    /// The largest number written.
    fn max_bound(self) -> u64 {
        match self {
            SizeCheck::Eq(n) | SizeCheck::Lt(n) | SizeCheck::Le(n) | SizeCheck::Gt(n) | SizeCheck::Ge(n) | SizeCheck::Ne(n) => n,
            SizeCheck::Between(_, b) => b,
        }
    }

    fn parse(v: &str) -> Result<Self, String> {
        let v = v.trim();
        let n = |s: &str| s.trim().parse::<u64>().map_err(|_| format!("'{v}' is not a size (N, !N, <N, <=N, >N, >=N, A<>B)"));
        Ok(if let Some((a, b)) = v.split_once("<>") {
            let (a, b) = (n(a)?, n(b)?);
            if a >= b {
                return Err(format!("'{v}': the range is empty"));
            }
            SizeCheck::Between(a, b)
        } else if let Some(r) = v.strip_prefix("!=").or_else(|| v.strip_prefix('!')) {
            SizeCheck::Ne(n(r)?)
        } else if let Some(r) = v.strip_prefix("<=") {
            SizeCheck::Le(n(r)?)
        } else if let Some(r) = v.strip_prefix(">=") {
            SizeCheck::Ge(n(r)?)
        } else if let Some(r) = v.strip_prefix('<') {
            SizeCheck::Lt(n(r)?)
        } else if let Some(r) = v.strip_prefix('>') {
            SizeCheck::Gt(n(r)?)
        } else {
            SizeCheck::Eq(n(v.strip_prefix('=').unwrap_or(v))?)
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Pcre {
    pub buffer: Buffer,
    pub pattern: String,
    /// The Perl flags that change matching (i, s, m, x); Suricata's buffer and other flags are
    /// read into the other fields.
    pub flags: String,
    pub negated: bool,
    /// `R`: the match starts after the end of the content before it (`after`).
    pub relative: bool,
    /// `R` with a leading `^` (kept out of `pattern`): the match starts right there.
    pub anchored: bool,
    /// The index of the last content written before this pcre, if any.
    pub after: Option<usize>,
    /// The buffer's transforms.
    pub transforms: Transforms,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    pub line: usize,
    pub action: Action,
    pub proto: Proto,
    /// Addresses and ports as written (`any`, `$HOME_NET`, lists); matched by the engine.
    pub src: String,
    pub sport: String,
    pub dst: String,
    pub dport: String,
    pub bidirectional: bool,
    pub msg: String,
    pub flow: Option<FlowDir>,
    pub contents: Vec<Content>,
    pub pcres: Vec<Pcre>,
    /// Length tests on buffers (`bsize` on a sticky buffer, `urilen` on the URI).
    pub sizes: Vec<(Buffer, SizeCheck)>,
    /// Payload keywords, and the order of contents, pcres and payload keywords.
    pub checks: Vec<PayloadCheck>,
    pub order: Vec<Step>,
    /// byte_extract variables, by name, numbered in order.
    pub vars: Vec<String>,
    /// `dsize`: the size of the data unit inspected (a TCP segment's payload in replay, a
    /// decrypted read through the appliance).
    pub dsize: Option<SizeCheck>,
    pub flowbits: Vec<Flowbit>,
    /// `flowbits:noalert` (or `noalert`): the rule sets its bits but raises no alert.
    pub noalert: bool,
    pub threshold: Option<Threshold>,
    pub classtype: Option<String>,
    /// `priority:` as written (the classtype's priority applies without it).
    pub priority: Option<u8>,
    pub sid: u32,
    pub rev: u32,
    /// `metadata: confidence` (Medium when the rule does not say).
    pub confidence: Confidence,
    /// `metadata: signature_severity`, when the rule says.
    pub severity: Option<Severity>,
    /// Every `metadata` key and value, in order.
    pub metadata: Vec<(String, String)>,
    /// `reference:system,id` pairs, in order.
    pub references: Vec<(String, String)>,
    /// `tls.version`: the version the client's hello names (data to the server) or the one the
    /// server chose (data to the client).
    pub tls_version: Option<u16>,
}

impl Rule {
    /// Every content and pcre of the rule is in a buffer of one HTTP message: the rule is
    /// matched per transaction, as in Suricata, and can fire again on the next message.
    pub fn per_message(&self) -> bool {
        let of_message = |b: Buffer| b != Buffer::Stream && !b.of_handshake();
        self.contents.iter().all(|c| of_message(c.buffer)) && self.pcres.iter().all(|p| of_message(p.buffer))
    }
}

/// A rule that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub line: usize,
    pub keyword: String,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.keyword, self.message)
    }
}

fn err(line: usize, keyword: &str, message: impl Into<String>) -> RuleError {
    RuleError {
        line,
        keyword: keyword.to_string(),
        message: message.into(),
    }
}

/// Parses a rule file: the rules that load, and the errors of those that do not. Comments
/// (`#`), blank lines and `\` line continuations are handled; duplicate SIDs are errors.
pub fn parse_rules(text: &str) -> (Vec<Rule>, Vec<RuleError>) {
    let mut rules: Vec<Rule> = Vec::new();
    let mut errors = Vec::new();
    let mut pending = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if pending.is_empty() {
            start = i + 1;
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let text = std::mem::take(&mut pending);
        match parse_rule(text.trim(), start) {
            Ok(rule) => {
                if rules.iter().any(|r| r.sid == rule.sid) {
                    errors.push(err(start, "sid", format!("{} is used by another rule", rule.sid)));
                } else {
                    rules.push(rule);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if !pending.is_empty() {
        errors.push(err(start, "\\", "the file ends inside a continued line"));
    }
    (rules, errors)
}

/// Splits the options at `;` outside quotes, honouring `\;` and `\"` escapes.
fn split_options(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => {
                let t = cur.trim().to_string();
                if !t.is_empty() {
                    out.push(t);
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err("an unterminated quoted string".into());
    }
    if !cur.trim().is_empty() {
        return Err(format!("'{}' is not terminated by ';'", cur.trim()));
    }
    Ok(out)
}

fn unquote(v: &str) -> Option<String> {
    let v = v.trim();
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // Suricata escapes only these three; any other backslash belongs to the value
            // (a pcre's `\.`).
            match chars.next()? {
                n @ ('"' | ';' | '\\') => out.push(n),
                n => {
                    out.push('\\');
                    out.push(n);
                }
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A content string: text with `|41 42|` hex runs.
fn content_bytes(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut parts = s.split('|');
    let mut hex = false;
    let mut seen = 0;
    for part in parts.by_ref() {
        seen += 1;
        if hex {
            // Pairs of hex digits, with or without spaces between them (`|0d 0a|`, `|0d0a|`).
            let digits: Vec<char> = part.chars().filter(|c| !c.is_whitespace()).collect();
            if !digits.len().is_multiple_of(2) || part.split_whitespace().any(|w| !w.len().is_multiple_of(2)) {
                return Err(format!("'{}' is not a run of hex bytes", part.trim()));
            }
            if let Some(c) = digits.iter().find(|c| !c.is_ascii_hexdigit()) {
                return Err(format!("'{c}' is not a hex digit"));
            }
            for pair in digits.chunks(2) {
                let h: String = pair.iter().collect();
                out.push(u8::from_str_radix(&h, 16).map_err(|_| format!("'{h}' is not a hex byte"))?);
            }
        } else {
            out.extend_from_slice(part.as_bytes());
        }
        hex = !hex;
    }
    if seen % 2 == 0 {
        return Err("an unterminated |hex| run".into());
    }
    if out.is_empty() {
        return Err("empty content".into());
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(line: usize, keyword: &str, v: &str) -> Result<T, RuleError> {
    v.trim().parse().map_err(|_| err(line, keyword, format!("'{}' is not a valid number", v.trim())))
}

/// A content modifier's value that names a byte_extract variable (a name, not a number).
fn variable(line: usize, keyword: &str, rule: &Rule, v: &str) -> Result<Option<VarId>, RuleError> {
    let v = v.trim();
    if !v.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Ok(None);
    }
    match rule.vars.iter().position(|n| n == v) {
        Some(i) => Ok(Some(VarId(i as u8))),
        None => Err(err(line, keyword, format!("'{v}' is not a byte_extract variable defined before it"))),
    }
}

/// The buffer a payload keyword reads, as Suricata's setup functions place it: the sticky
/// buffer; else, with `relative`, the buffer of the keyword written before it; else the stream.
fn check_buffer(rule: &Rule, sticky: Buffer, relative: bool) -> Buffer {
    if sticky != Buffer::Stream || !relative {
        return sticky;
    }
    match rule.order.last() {
        Some(Step::Content(i)) => rule.contents[usize::from(*i)].buffer,
        Some(Step::Pcre(i)) => rule.pcres[usize::from(*i)].buffer,
        Some(Step::Check(i)) => rule.checks[usize::from(*i)].buffer,
        None => Buffer::Stream,
    }
}

/// The buffer of a step.
pub fn step_buffer(rule: &Rule, step: Step) -> Buffer {
    match step {
        Step::Content(i) => rule.contents[usize::from(i)].buffer,
        Step::Pcre(i) => rule.pcres[usize::from(i)].buffer,
        Step::Check(i) => rule.checks[usize::from(i)].buffer,
    }
}

fn parse_rule(text: &str, line: usize) -> Result<Rule, RuleError> {
    let open = text.find('(').ok_or_else(|| err(line, "(", "no options in parentheses"))?;
    if !text.ends_with(')') {
        return Err(err(line, ")", "the options must end with ')'"));
    }
    let header: Vec<&str> = text[..open].split_whitespace().collect();
    if header.len() != 7 {
        return Err(err(line, "header", "expected: action proto src sport -> dst dport"));
    }
    let action = match header[0] {
        "alert" => Action::Alert,
        "drop" => Action::Drop,
        "reject" | "rejectsrc" | "rejectdst" | "rejectboth" => Action::Reject,
        "pass" => Action::Pass,
        other => return Err(err(line, other, "unsupported action (alert, drop, reject, pass)")),
    };
    let proto = match header[1] {
        "tcp" => Proto::Tcp,
        "tls" => Proto::Tls,
        "http" => Proto::Http,
        "http1" => Proto::Http1,
        "http2" => Proto::Http2,
        other => return Err(err(line, other, "unsupported protocol (tcp, tls, http, http1, http2)")),
    };
    let bidirectional = match header[4] {
        "->" => false,
        "<>" => true,
        other => return Err(err(line, other, "expected -> or <>")),
    };
    let mut rule = Rule {
        line,
        action,
        proto,
        src: header[2].into(),
        sport: header[3].into(),
        dst: header[5].into(),
        dport: header[6].into(),
        bidirectional,
        msg: String::new(),
        flow: None,
        contents: Vec::new(),
        pcres: Vec::new(),
        sizes: Vec::new(),
        checks: Vec::new(),
        order: Vec::new(),
        vars: Vec::new(),
        dsize: None,
        flowbits: Vec::new(),
        noalert: false,
        threshold: None,
        classtype: None,
        priority: None,
        sid: 0,
        rev: 1,
        confidence: Confidence::Medium,
        severity: None,
        metadata: Vec::new(),
        tls_version: None,
        references: Vec::new(),
    };
    let options = split_options(&text[open + 1..text.len() - 1]).map_err(|m| err(line, "options", m))?;
    let mut buffer = Buffer::Stream;
    // The current sticky buffer's transforms, and whether a content or pcre used it already
    // (transforms come right after their buffer, as in Suricata).
    let mut transforms = Transforms::default();
    let mut buffer_used = false;
    for opt in options {
        let (key, value) = match opt.split_once(':') {
            Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
            None => (opt.trim().to_string(), None),
        };
        let need = |v: &Option<String>| v.clone().ok_or_else(|| err(line, &key, "needs a value"));
        let last = |rule: &mut Rule| -> Result<usize, RuleError> {
            if rule.contents.is_empty() {
                Err(err(line, &key, "modifies a content, but there is none before it"))
            } else {
                Ok(rule.contents.len() - 1)
            }
        };
        match key.as_str() {
            "msg" => rule.msg = unquote(&need(&value)?).ok_or_else(|| err(line, "msg", "expects a quoted string"))?,
            "sid" => rule.sid = number(line, "sid", &need(&value)?)?,
            "rev" => rule.rev = number(line, "rev", &need(&value)?)?,
            "priority" => {
                let p: u8 = number(line, "priority", &need(&value)?)?;
                if !(1..=255).contains(&p) {
                    return Err(err(line, "priority", "1 to 255"));
                }
                rule.priority = Some(p);
            }
            "classtype" => rule.classtype = Some(need(&value)?),
            "flow" => {
                for part in need(&value)?.split(',').map(str::trim) {
                    match part {
                        "to_server" | "from_client" => rule.flow = Some(FlowDir::ToServer),
                        "to_client" | "from_server" => rule.flow = Some(FlowDir::ToClient),
                        "established" | "stateless" => {}
                        other => return Err(err(line, "flow", format!("unsupported flow option '{other}'"))),
                    }
                }
            }
            // `uricontent` is Snort's and Suricata's old `content` + `http_uri`.
            "content" | "uricontent" => {
                let uri = key.as_str() == "uricontent";
                let v = need(&value)?;
                let (negated, v) = match v.strip_prefix('!') {
                    Some(rest) => (true, rest.trim().to_string()),
                    None => (false, v),
                };
                let s = unquote(&v).ok_or_else(|| err(line, "content", "expects a quoted string"))?;
                let pattern = content_bytes(&s).map_err(|m| err(line, "content", m))?;
                buffer_used |= !uri;
                rule.contents.push(Content {
                    buffer: if uri { Buffer::HttpUri } else { buffer },
                    transforms: if uri { Transforms::default() } else { transforms },
                    pattern,
                    negated,
                    nocase: false,
                    depth: None,
                    offset: None,
                    distance: None,
                    within: None,
                    startswith: false,
                    endswith: false,
                    vars: ContentVars::default(),
                    fast_pattern: false,
                });
                rule.order.push(Step::Content((rule.contents.len() - 1) as u16));
            }
            "nocase" => {
                let i = last(&mut rule)?;
                rule.contents[i].nocase = true;
            }
            "depth" | "offset" | "distance" | "within" => {
                let i = last(&mut rule)?;
                let v = need(&value)?;
                let var = variable(line, &key, &rule, &v)?;
                let c = &mut rule.contents[i];
                match (key.as_str(), var) {
                    ("depth", Some(var)) => c.vars.depth = Some(var),
                    ("offset", Some(var)) => c.vars.offset = Some(var),
                    ("distance", Some(var)) => c.vars.distance = Some(var),
                    ("within", Some(var)) => c.vars.within = Some(var),
                    ("depth", None) => c.depth = Some(number(line, "depth", &v)?),
                    ("offset", None) => c.offset = Some(number(line, "offset", &v)?),
                    ("distance", None) => c.distance = Some(number(line, "distance", &v)?),
                    _ => c.within = Some(number(line, "within", &v)?),
                }
            }
            "isdataat" | "byte_test" | "byte_jump" | "byte_extract" => {
                let v = need(&value)?;
                let (check, name) = match key.as_str() {
                    "isdataat" => (payload::parse_isdataat(&v, &rule.vars), None),
                    "byte_test" => (payload::parse_byte_test(&v, &rule.vars), None),
                    "byte_jump" => (payload::parse_byte_jump(&v, &rule.vars), None),
                    _ => match payload::parse_byte_extract(&v, &rule.vars) {
                        Ok((c, n)) => (Ok(c), Some(n)),
                        Err(e) => (Err(e), None),
                    },
                };
                let check = check.map_err(|m| err(line, &key, m))?;
                let check_buffer = check_buffer(&rule, buffer, check.relative());
                if let Some(name) = name {
                    rule.vars.push(name);
                }
                rule.checks.push(PayloadCheck { buffer: check_buffer, check });
                rule.order.push(Step::Check((rule.checks.len() - 1) as u16));
            }
            "dsize" => {
                if rule.dsize.is_some() {
                    return Err(err(line, "dsize", "a rule has one dsize"));
                }
                let check = SizeCheck::parse(&need(&value)?).map_err(|m| err(line, "dsize", m))?;
                if check.max_bound() > u64::from(u16::MAX) {
                    return Err(err(line, "dsize", "an unsigned 16-bit integer (0 to 65535)"));
                }
                rule.dsize = Some(check);
            }
            "pcre" => {
                let v = need(&value)?;
                let (negated, v) = match v.strip_prefix('!') {
                    Some(rest) => (true, rest.trim().to_string()),
                    None => (false, v),
                };
                let s = unquote(&v).ok_or_else(|| err(line, "pcre", "expects a quoted /regex/flags"))?;
                let body = s.strip_prefix('/').ok_or_else(|| err(line, "pcre", "must start with /"))?;
                let end = body.rfind('/').ok_or_else(|| err(line, "pcre", "must end with /flags"))?;
                let (pattern, flags) = (&body[..end], &body[end + 1..]);
                let mut perl = String::new();
                let mut relative = false;
                let mut pcre_buffer = buffer;
                for f in flags.chars() {
                    // Suricata's buffer flags, as in its detect-pcre.c.
                    let named = match f {
                        'i' | 's' | 'm' | 'x' => {
                            perl.push(f);
                            None
                        }
                        'R' => {
                            relative = true;
                            None
                        }
                        // Ungreedy, dollar-end-only, the match limit and raw bytes do not
                        // change whether a regex matches here.
                        'G' | 'E' | 'O' | 'B' => None,
                        'U' => Some(Buffer::HttpUri),
                        'I' => Some(Buffer::HttpUriRaw),
                        'H' => Some(Buffer::HttpHeader),
                        'D' => Some(Buffer::HttpHeaderRaw),
                        'M' => Some(Buffer::HttpMethod),
                        'C' => Some(Buffer::HttpCookie),
                        'P' => Some(Buffer::HttpRequestBody),
                        'Q' => Some(Buffer::FileData),
                        'Y' => Some(Buffer::HttpStatMsg),
                        'S' => Some(Buffer::HttpStatCode),
                        'V' => Some(Buffer::HttpUserAgent),
                        'W' => Some(Buffer::HttpHost),
                        'Z' => Some(Buffer::HttpHostRaw),
                        other => return Err(err(line, "pcre", format!("unsupported flag '{other}'"))),
                    };
                    if let Some(b) = named {
                        if pcre_buffer != Buffer::Stream {
                            return Err(err(line, "pcre", format!("flag '{f}' names a buffer, but the pcre already has one")));
                        }
                        pcre_buffer = b;
                    }
                }
                // With R, `^` means where the previous content ended (Suricata's semantics), which
                // the matcher checks: the pattern itself loses it.
                let anchored = relative && pattern.starts_with('^') && !rule.contents.is_empty();
                let pattern = if anchored { &pattern[1..] } else { pattern };
                if pattern.is_empty() {
                    return Err(err(line, "pcre", "empty pattern"));
                }
                buffer_used |= pcre_buffer == buffer;
                rule.pcres.push(Pcre {
                    transforms: if pcre_buffer == buffer { transforms } else { Transforms::default() },
                    buffer: pcre_buffer,
                    pattern: pattern.to_string(),
                    flags: perl,
                    negated,
                    relative,
                    anchored,
                    after: rule.contents.len().checked_sub(1),
                });
                rule.order.push(Step::Pcre((rule.pcres.len() - 1) as u16));
            }
            "metadata" => {
                for pair in need(&value)?.split(',') {
                    if let Some((k, v)) = pair.trim().split_once(char::is_whitespace) {
                        rule.metadata.push((k.to_string(), v.trim().to_string()));
                    }
                    let mut kv = pair.split_whitespace();
                    match (kv.next(), kv.next()) {
                        (Some("confidence"), Some(v)) => {
                            rule.confidence = match v.to_ascii_lowercase().as_str() {
                                "low" => Confidence::Low,
                                "medium" => Confidence::Medium,
                                "high" => Confidence::High,
                                other => return Err(err(line, "metadata", format!("confidence '{other}' (low, medium, high)"))),
                            };
                        }
                        (Some("signature_severity"), Some(v)) => {
                            rule.severity = Some(match v.to_ascii_lowercase().as_str() {
                                "informational" => Severity::Informational,
                                "minor" => Severity::Minor,
                                "major" => Severity::Major,
                                "critical" => Severity::Critical,
                                other => {
                                    return Err(err(line, "metadata", format!("signature_severity '{other}' (Informational, Minor, Major, Critical)")))
                                }
                            });
                        }
                        _ => {}
                    }
                }
            }
            "flowbits" => {
                let v = need(&value)?;
                let (cmd, names) = v.split_once(',').map_or((v.trim(), ""), |(c, n)| (c.trim(), n.trim()));
                let all = names.contains('&');
                let list: Vec<String> = names.split(['|', '&']).map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
                if cmd != "noalert" && list.is_empty() {
                    return Err(err(line, "flowbits", format!("{cmd} needs a name")));
                }
                if list.iter().any(|n| !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))) {
                    return Err(err(line, "flowbits", format!("'{names}' is not a list of names")));
                }
                let single = |what: &str| -> Result<Vec<String>, RuleError> {
                    if names.contains('|') || names.contains('&') {
                        Err(err(line, "flowbits", format!("{what} takes names joined by '|' only in isset and isnotset")))
                    } else {
                        Ok(list.clone())
                    }
                };
                rule.flowbits.push(match cmd {
                    "isset" => Flowbit::IsSet { names: list, all },
                    "isnotset" => Flowbit::IsNotSet { names: list, all },
                    "set" => Flowbit::Set(single("set")?),
                    "unset" => Flowbit::Unset(single("unset")?),
                    "toggle" => Flowbit::Toggle(single("toggle")?),
                    "noalert" => {
                        rule.noalert = true;
                        continue;
                    }
                    other => return Err(err(line, "flowbits", format!("'{other}' (set, isset, isnotset, unset, toggle, noalert)"))),
                });
            }
            "noalert" => rule.noalert = true,
            "threshold" | "detection_filter" => {
                if rule.threshold.is_some() {
                    return Err(err(line, &key, "a rule has one threshold or detection_filter"));
                }
                rule.threshold = Some(Threshold::parse(&need(&value)?, key == "detection_filter").map_err(|m| err(line, &key, m))?);
            }
            "startswith" => {
                let i = last(&mut rule)?;
                rule.contents[i].startswith = true;
            }
            "endswith" => {
                let i = last(&mut rule)?;
                rule.contents[i].endswith = true;
            }
            "bsize" => {
                if buffer == Buffer::Stream {
                    return Err(err(line, "bsize", "needs a sticky buffer before it"));
                }
                if !transforms.is_empty() {
                    return Err(err(line, "bsize", "after a transform: not supported (the size is the buffer's as received)"));
                }
                rule.sizes.push((buffer, SizeCheck::parse(&need(&value)?).map_err(|m| err(line, "bsize", m))?));
            }
            "tls.version" => {
                let v = need(&value)?;
                let v = v.trim().trim_matches('"');
                rule.tls_version = Some(match v {
                    "1.0" => 0x0301,
                    "1.1" => 0x0302,
                    "1.2" => 0x0303,
                    "1.3" => 0x0304,
                    hex if hex.len() == 6 && hex.starts_with("0x") => {
                        u16::from_str_radix(&hex[2..], 16).map_err(|_| err(line, "tls.version", format!("'{hex}' is not a version")))?
                    }
                    other => return Err(err(line, "tls.version", format!("'{other}' (1.0, 1.1, 1.2, 1.3 or 0xNNNN)"))),
                });
            }
            "urilen" => {
                let v = need(&value)?;
                let (size, which) = v.split_once(',').map_or((v.as_str(), "norm"), |(a, b)| (a, b.trim()));
                let b = match which {
                    "norm" => Buffer::HttpUri,
                    "raw" => Buffer::HttpUriRaw,
                    other => return Err(err(line, "urilen", format!("'{other}' (norm or raw)"))),
                };
                rule.sizes.push((b, SizeCheck::parse(size).map_err(|m| err(line, "urilen", m))?));
            }
            "dotprefix" => {
                buffer = match buffer {
                    Buffer::TlsSni => Buffer::TlsSniDot,
                    Buffer::HttpHost => Buffer::HttpHostDot,
                    _ => return Err(err(line, "dotprefix", "supported after tls.sni and http.host")),
                };
            }
            "fast_pattern" => {
                // Which content Suricata's prefilter uses; a hint here too (`Eval::Fields`):
                // it changes what is reported, never what matches (`only` and `chop` included).
                let i = last(&mut rule)?;
                rule.contents[i].fast_pattern = true;
            }
            "rawbytes" => {
                // Snort's "not normalised": the bytes here are the raw ones already.
                last(&mut rule)?;
            }
            "reference" => {
                // Suricata's form: `system,id` (quotes around the id allowed).
                let v = need(&value)?;
                let parsed = v.split_once(',').map(|(s, id)| (s.trim(), id.trim().trim_matches('"').trim()));
                match parsed {
                    Some((system, id)) if !system.is_empty() && system.chars().all(|c| c.is_ascii_alphanumeric()) && !id.is_empty() && !id.contains('"') => {
                        rule.references.push((system.to_string(), id.to_string()));
                    }
                    _ => return Err(err(line, "reference", format!("'{v}' (system,id)"))),
                }
            }
            "target" => {}
            other if Transform::keyword(other).is_some() => {
                let t = Transform::keyword(other).ok_or_else(|| err(line, other, "not a transform"))?;
                if matches!(buffer, Buffer::Stream | Buffer::HttpRequestBody | Buffer::HttpResponseBody | Buffer::FileData) {
                    return Err(err(line, other, "transforms are supported on sticky field buffers (http.uri, http.header, tls.sni, ...), not on the stream or bodies"));
                }
                if buffer_used {
                    return Err(err(line, other, "a transform must come right after its sticky buffer, before the buffer's contents"));
                }
                transforms.push(t).map_err(|m| err(line, other, m))?;
            }
            other => match (Buffer::sticky(other), Buffer::modifier(other)) {
                (Some(b), _) => {
                    buffer = b;
                    transforms = Transforms::default();
                    buffer_used = false;
                }
                (None, Some(b)) => {
                    // Suricata's old style: the modifier names the buffer of the content before it.
                    let i = last(&mut rule)?;
                    if rule.contents[i].buffer != Buffer::Stream {
                        return Err(err(line, other, "modifies a content that is already in a sticky buffer"));
                    }
                    rule.contents[i].buffer = b;
                }
                (None, None) => return Err(err(line, other, "keyword not supported")),
            },
        }
    }
    if rule.sid == 0 {
        return Err(err(line, "sid", "every rule needs a sid"));
    }
    if rule.contents.iter().any(|c| c.buffer == Buffer::HttpHost && c.nocase) {
        return Err(err(
            line,
            "http.host",
            "http.host keyword specified along with \"nocase\". The hostname buffer is normalized to lowercase, specifying nocase is redundant.",
        ));
    }
    if let Some(c) = rule.contents.iter().find(|c| c.buffer == Buffer::HttpHost && c.transforms.is_empty() && c.pattern.iter().any(u8::is_ascii_uppercase)) {
        // Suricata's own error: the buffer is lowercase, so such a content could never match.
        return Err(err(
            line,
            "http.host",
            format!(
                "'{}' has uppercase characters; the host name buffer is normalised to lowercase, please specify a lowercase pattern",
                String::from_utf8_lossy(&c.pattern)
            ),
        ));
    }
    if rule.proto == Proto::Tls && (rule.contents.iter().any(|c| c.buffer == Buffer::Stream) || rule.pcres.iter().any(|p| p.buffer == Buffer::Stream)) {
        // In Suricata such a content matches the TLS records as sent; here the stream buffer is
        // the decrypted data, so the rule would not mean what it says.
        return Err(err(line, "content", "a tls rule's content outside a sticky buffer matches the raw TLS records in Suricata; the appliance inspects the decrypted stream"));
    }
    for c in &rule.contents {
        c.transforms.check_content(&c.pattern, c.nocase).map_err(|m| err(line, "content", format!("'{}': {m}", String::from_utf8_lossy(&c.pattern))))?;
    }
    if rule.contents.iter().all(|c| c.negated) && rule.pcres.iter().all(|p| p.negated) {
        return Err(err(line, "content", "a rule needs at least one content or pcre that must match"));
    }
    Ok(rule)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    const GOOD: &str = r#"
# Log4Shell
alert http any any -> any any (msg:"Log4Shell JNDI lookup in URI"; flow:to_server,established; \
    http.uri; content:"${jndi:"; nocase; classtype:attempted-admin; priority:1; sid:1000001; rev:2; \
    metadata: confidence high;)
drop tcp $HOME_NET any -> $EXTERNAL_NET 443 (msg:"bytes"; content:"|00 01|AB|ff|"; offset:2; depth:10; content:"x"; distance:1; within:5; sid:2;)
alert tls any any -> any any (msg:"sni"; tls.sni; content:"evil.example"; pcre:"/^(www\.)?evil\.example$/i"; sid:3;)
"#;

    #[test]
    fn parses_the_subset() {
        let (rules, errors) = parse_rules(GOOD);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(rules.len(), 3);
        let r = &rules[0];
        assert_eq!((r.line, r.sid, r.rev, r.priority), (3, 1000001, 2, Some(1)));
        assert_eq!(r.action, Action::Alert);
        assert_eq!(r.flow, Some(FlowDir::ToServer));
        assert_eq!(r.confidence, Confidence::High);
        assert_eq!(r.contents[0].buffer, Buffer::HttpUri);
        assert_eq!(r.contents[0].pattern, b"${jndi:");
        assert!(r.contents[0].nocase);
        let r = &rules[1];
        assert_eq!(r.contents[0].pattern, [0, 1, b'A', b'B', 0xff]);
        assert_eq!((r.contents[0].offset, r.contents[0].depth), (Some(2), Some(10)));
        assert_eq!((r.contents[1].distance, r.contents[1].within), (Some(1), Some(5)));
        assert_eq!(r.contents[1].buffer, Buffer::Stream);
        let r = &rules[2];
        assert_eq!(r.pcres[0].pattern, r"^(www\.)?evil\.example$");
        assert_eq!(r.pcres[0].flags, "i");
        assert_eq!(r.pcres[0].buffer, Buffer::TlsSni);
    }

    #[test]
    fn every_error_names_the_line_and_the_keyword_and_the_rest_still_loads() {
        let text = "\
alert tcp any any -> any any (msg:\"ok\"; content:\"a\"; sid:1;)
alert udp any any -> any any (msg:\"x\"; content:\"a\"; sid:2;)
rejectx tcp any any -> any any (msg:\"x\"; content:\"a\"; sid:3;)
alert tcp any any -> any any (msg:\"x\"; content:\"a\"; xbits:set,a,track ip_src; sid:4;)
alert tcp any any -> any any (msg:\"x\"; nocase; sid:5;)
alert tcp any any -> any any (msg:\"x\"; content:\"a|4\"; sid:6;)
alert tcp any any -> any any (msg:\"x\"; content:\"a\"; depth:abc; sid:7;)
alert tcp any any -> any any (msg:\"x\"; pcre:\"/a/q\"; sid:8;)
alert tcp any any -> any any (msg:\"x\"; content:\"a\";)
alert tcp any any -> any any (msg:\"x\"; content:\"a\"; sid:1;)
alert tcp any any any any (msg:\"x\"; content:\"a\"; sid:11;)
alert tcp any any -> any any (msg:\"x\"; content:\"a; sid:12;)
alert tcp any any -> any any (content:\"a\"; sid:13;)
alert tcp any any -> any any (msg:\"x\"; content:!\"a\"; sid:14;)
alert tcp any any -> any any (msg:\"x\"; flow:sideways; content:\"a\"; sid:15;)
alert tcp any any -> any any (msg:\"ok too\"; content:\"b\"; sid:16;)
";
        let (rules, errors) = parse_rules(text);
        // A rule without msg loads, as in Suricata.
        assert_eq!(rules.iter().map(|r| r.sid).collect::<Vec<_>>(), vec![1, 13, 16]);
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.keyword.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (2, "udp"),
                (3, "rejectx"),
                (4, "xbits"),
                (5, "nocase"),
                (6, "content"),
                (7, "depth"),
                (8, "pcre"),
                (9, "sid"),
                (10, "sid"),
                (11, "header"),
                (12, "options"),
                (14, "content"),
                (15, "flow"),
            ]
        );
        assert!(errors[2].to_string().starts_with("line 4: xbits: keyword not supported"));
    }

    #[test]
    fn old_style_modifiers_apply_to_the_content_before_them() {
        let text = r#"alert http any any -> any any (msg:"old"; content:"GET"; http_method; content:"/admin"; http_uri; content:"raw"; sid:1;)
alert http any any -> any any (msg:"new"; http.uri; content:"/a"; content:"/b"; sid:2;)
alert http any any -> any any (msg:"mixed"; http.uri; content:"/a"; http_method; sid:3;)
alert http any any -> any any (msg:"first"; http_uri; content:"/a"; sid:4;)
"#;
        let (rules, errors) = parse_rules(text);
        let buffers = |r: &Rule| r.contents.iter().map(|c| c.buffer).collect::<Vec<_>>();
        assert_eq!(buffers(&rules[0]), [Buffer::HttpMethod, Buffer::HttpUri, Buffer::Stream], "the third content is back on the stream");
        assert_eq!(buffers(&rules[1]), [Buffer::HttpUri, Buffer::HttpUri], "a sticky buffer holds for what follows");
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.keyword.as_str())).collect();
        assert_eq!(got, [(3, "http_method"), (4, "http_uri")], "{errors:?}");
    }

    #[test]
    fn actions_metadata_hex_and_prefilter_hints_read_as_suricata_writes_them() {
        let text = r#"reject http any any -> any any (msg:"a"; content:"|0d0a|X|0D 0A|"; fast_pattern; sid:1; metadata: signature_severity Major, confidence Low;)
rejectboth tcp any any -> any any (msg:"b"; content:"a"; fast_pattern:only; sid:2;)
pass tcp any any -> any any (msg:"c"; content:"a"; fast_pattern:0,1; sid:3;)
alert http any any -> any any (msg:"d"; http.host; content:"Evil.Example"; sid:4;)
alert http any any -> any any (msg:"e"; http.host.raw; content:"Evil.Example:8080"; sid:5;)
alert tcp any any -> any any (msg:"f"; content:"|0d0|"; sid:6;)
"#;
        let (rules, errors) = parse_rules(text);
        assert_eq!(rules.iter().map(|r| (r.sid, r.action)).collect::<Vec<_>>(), [(1, Action::Reject), (2, Action::Reject), (3, Action::Pass), (5, Action::Alert)]);
        assert_eq!(rules[0].contents[0].pattern, b"\r\nX\r\n");
        assert_eq!((rules[0].severity, rules[0].confidence), (Some(Severity::Major), Confidence::Low));
        assert_eq!(rules[3].contents[0].buffer, Buffer::HttpHostRaw);
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.keyword.as_str())).collect();
        assert_eq!(got, [(4, "http.host"), (6, "content")], "{errors:?}");
        assert!(errors[0].message.contains("lowercase"), "{}", errors[0]);
    }

    #[test]
    fn garbage_gets_rules_that_hold_or_errors_that_point_at_a_line() {
        let mut rng = crate::testutil::Prng::new(7);
        let alphabet = b"alert tcp any -> ( ) ; : \" | \\ content msg sid 1 2 nocase depth pcre / ! $ [ ]\n";
        for _ in 0..2000 {
            let s: String = rng.bytes(80).iter().map(|b| alphabet[usize::from(*b) % alphabet.len()] as char).collect();
            let (rules, errors) = parse_rules(&s);
            let lines = s.lines().count().max(1);
            assert!(rules.iter().all(|r| r.sid != 0 && (1..=lines).contains(&r.line)), "{s:?}");
            assert!(errors.iter().all(|e| (1..=lines).contains(&e.line) && !e.keyword.is_empty()), "{s:?}: {errors:?}");
        }
    }
}
