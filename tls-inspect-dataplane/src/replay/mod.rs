//! Offline replay (`tls-inspect ips replay`): the TCP streams of a cleartext capture go through
//! the same HTTP followers and IPS engine as decrypted traffic does, and the same EVE records
//! come out, as `suricata -r` does, so that rules can be tested on captured traffic.
//!
//! - [`pcap`]: classic libpcap files; [`decode`]: a frame to an IPv4 TCP segment;
//!   [`reassembly`]: each connection's two byte streams in order.
//! - Here: a flow per connection with its `FlowIps`; each direction's bytes are inspected in the
//!   order the capture put them in order; alerts and HTTP transactions are written as they
//!   come, the flow record when the flow ends (FIN both ways, RST, or the end of the file).
//!
//! What it does not do: IPv6, IP fragments and UDP are counted and skipped; TLS is not
//! decrypted (its bytes are the stream buffer; the ClientHello's SNI feeds `tls.sni`); a
//! blocking rule (block mode) stops the flow's inspection, as the appliance would stop the
//! flow; thresholds count in wall-clock time, not the capture's.

pub mod decode;
pub mod pcap;
pub mod reassembly;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use hyperscan::Scratch;
use serde_json::json;

use crate::control::config::ConfigFile;
use crate::control::rules::RulesControl;
use crate::inspect::h2::PREFACE;
use crate::inspect::ips::{FlowIps, FlowTuple, Level, Ruleset};
use crate::inspect::settings::IpsSettings;
use crate::inspect::{Direction, HelloFields, Verdict};
use crate::log::{self, AlertLog, FlowLog, HttpLog, Outcome, Reason};
use crate::tls::clienthello::{sniff, ClientHello, Sniff};
use decode::{Segment, Skip, SYN};
use pcap::PcapReader;
use reassembly::{Budget, Connection};

/// Connections followed at once, at most; segments of new ones beyond are counted and skipped.
pub const MAX_FLOWS: usize = 100_000;

/// The client's first bytes kept to read a ClientHello from, at most.
const MAX_HELLO: usize = 16 * 1024;

/// What `ips replay` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    pub pcap: PathBuf,
    /// Rule files; none: the configuration's `[ips]` rules, else the bundled ones.
    pub rules: Vec<PathBuf>,
    pub config: Option<PathBuf>,
    /// Where EVE lines go; none: standard output.
    pub eve: Option<PathBuf>,
    /// Which rules are active, over the settings' level.
    pub level: Option<Level>,
}

/// What a replay saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub packets: u64,
    pub flows: u64,
    pub alerts: u64,
    pub http: u64,
    /// Frames skipped: IPv6, IPv4 fragments, not TCP (or not IP), malformed.
    pub ipv6: u64,
    pub fragments: u64,
    pub not_tcp: u64,
    pub malformed: u64,
    /// Holes in streams that were skipped.
    pub gaps: u64,
    /// Segments of connections not followed: more than [`MAX_FLOWS`] were open.
    pub over_flow_cap: u64,
    /// The file ended inside a record (what came before it was replayed), as a capture that
    /// was cut off does: where.
    pub truncated: Option<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} packets, {} flows, {} alerts, {} http transactions", self.packets, self.flows, self.alerts, self.http)?;
        let skipped = [("ipv6", self.ipv6), ("ip fragments", self.fragments), ("not tcp", self.not_tcp), ("malformed", self.malformed)];
        let skipped: Vec<String> = skipped.iter().filter(|(_, n)| *n > 0).map(|(what, n)| format!("{n} {what}")).collect();
        if !skipped.is_empty() {
            write!(f, "; skipped {}", skipped.join(", "))?;
        }
        if self.gaps > 0 {
            write!(f, "; {} stream gaps", self.gaps)?;
        }
        if self.over_flow_cap > 0 {
            write!(f, "; {} segments of flows beyond the limit of {MAX_FLOWS} open flows not followed", self.over_flow_cap)?;
        }
        if let Some(t) = &self.truncated {
            write!(f, "; the file is {t}")?;
        }
        Ok(())
    }
}

/// `tls-inspect ips replay`: rules from the options, the capture from its file, EVE to the file
/// or standard output.
pub fn run(opts: &ReplayOptions) -> Result<Summary> {
    let set = ruleset(&opts.rules, opts.config.as_deref(), opts.level)?;
    let file = std::fs::File::open(&opts.pcap).with_context(|| format!("{}: opening", opts.pcap.display()))?;
    let input = std::io::BufReader::new(file);
    let summary = match &opts.eve {
        Some(path) => {
            let out = std::fs::File::create(path).with_context(|| format!("{}: creating", path.display()))?;
            let mut out = std::io::BufWriter::new(out);
            let s = replay(input, set, &mut out);
            out.flush().with_context(|| format!("{}: writing", path.display()))?;
            s
        }
        None => replay(input, set, &mut std::io::stdout().lock()),
    };
    summary.with_context(|| format!("{}", opts.pcap.display()))
}

/// The rule set a replay uses: the given files, else the configuration's `[ips]` rules, else
/// the bundled ones; refused rules are warnings, as at `run`'s start.
pub fn ruleset(files: &[PathBuf], config: Option<&Path>, level: Option<Level>) -> Result<Arc<Ruleset>> {
    let mut settings = match config {
        Some(path) => ConfigFile::read(path)?.ips,
        None => IpsSettings::default(),
    };
    if !files.is_empty() {
        settings.default_rules = false;
        settings.rules = files.iter().map(|p| p.display().to_string()).collect();
    }
    if let Some(level) = level {
        settings.level = level;
    }
    Ok(RulesControl::start(&settings)?.shared.load_full())
}

/// Replays a capture with a rule set, writing EVE lines to `out`.
pub fn replay(input: impl Read, set: Arc<Ruleset>, out: &mut dyn Write) -> Result<Summary> {
    let mut reader = PcapReader::new(input)?;
    let mut r = Replay { scratch: set.scratch()?, set, out, flows: HashMap::new(), budget: Budget::default(), summary: Summary::default(), next_id: 1 };
    let result = r.all(&mut reader);
    // What the file held up to an error is still reported.
    let ended = r.end_all();
    r.summary.packets = reader.packets();
    result.and(ended)?;
    Ok(r.summary)
}

/// The canonical key of a connection: its two endpoints, lower first.
type Key = ((Ipv4Addr, u16), (Ipv4Addr, u16));

fn key(s: &Segment<'_>) -> Key {
    if s.src <= s.dst {
        (s.src, s.dst)
    } else {
        (s.dst, s.src)
    }
}

/// One followed connection.
struct Flow {
    id: u64,
    conn: Connection,
    /// None: the rule set's whitelist exempts it.
    ips: Option<FlowIps>,
    start: SystemTime,
    last: SystemTime,
    /// The client's first bytes until the protocol is known.
    first: Vec<u8>,
    app_proto: Option<&'static str>,
    sni: Option<String>,
    ja3: Option<(String, String)>,
    ja4: Option<String>,
    /// What stopped the flow (a blocking rule in block mode).
    blocked: Option<crate::inspect::BlockCause>,
}

struct Replay<'a> {
    set: Arc<Ruleset>,
    scratch: Scratch,
    out: &'a mut dyn Write,
    flows: HashMap<Key, Flow>,
    budget: Budget,
    summary: Summary,
    next_id: u64,
}

impl Replay<'_> {
    fn all<R: Read>(&mut self, reader: &mut PcapReader<R>) -> Result<()> {
        let link = reader.link;
        loop {
            let rec = match reader.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => return Ok(()),
                Err(e @ pcap::PcapError::Truncated { .. }) => {
                    self.summary.truncated = Some(e.to_string());
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            match decode::segment(link, &rec.data) {
                Ok(seg) => self.segment(&seg, rec.time)?,
                Err(Skip::Ipv6) => self.summary.ipv6 += 1,
                Err(Skip::Fragment) => self.summary.fragments += 1,
                Err(Skip::NotTcp | Skip::NotIp) => self.summary.not_tcp += 1,
                Err(Skip::Malformed) => self.summary.malformed += 1,
            }
        }
    }

    fn segment(&mut self, seg: &Segment<'_>, time: SystemTime) -> Result<()> {
        let k = key(seg);
        if self.flows.get(&k).is_some_and(|f| f.conn.reopened_by(seg)) {
            self.end(k)?;
        }
        if !self.flows.contains_key(&k) {
            // A flow starts with a SYN or with data; a lone ACK or FIN after a flow ended
            // starts none.
            if seg.payload.is_empty() && seg.flags & SYN == 0 {
                return Ok(());
            }
            if self.flows.len() >= MAX_FLOWS {
                self.summary.over_flow_cap += 1;
                return Ok(());
            }
            self.start(k, seg, time);
        }
        let mut chunks = Vec::new();
        let Some(flow) = self.flows.get_mut(&k) else {
            return Ok(());
        };
        flow.last = time;
        flow.conn.segment(seg, &mut self.budget, &mut chunks);
        for (d, bytes) in chunks {
            self.inspect(k, d, &bytes, time)?;
        }
        if self.flows.get(&k).is_some_and(|f| f.conn.closed()) {
            self.end(k)?;
        }
        Ok(())
    }

    fn start(&mut self, k: Key, seg: &Segment<'_>, time: SystemTime) {
        let conn = Connection::new(seg);
        let ips = (!self.set.whitelisted(conn.client.0, conn.server.0)).then(|| FlowIps::new(self.set.clone(), FlowTuple { client: conn.client, server: conn.server }));
        self.flows.insert(k, Flow { id: self.next_id, conn, ips, start: time, last: time, first: Vec::new(), app_proto: None, sni: None, ja3: None, ja4: None, blocked: None });
        self.next_id += 1;
        self.summary.flows += 1;
    }

    /// A direction's next bytes in order: the protocol (from the client's first bytes), the
    /// IPS, and the records of what it found.
    fn inspect(&mut self, k: Key, d: Direction, bytes: &[u8], time: SystemTime) -> Result<()> {
        let Some(flow) = self.flows.get_mut(&k) else {
            return Ok(());
        };
        if d == Direction::ToServer && flow.app_proto.is_none() && flow.first.len() < MAX_HELLO {
            let room = MAX_HELLO - flow.first.len();
            flow.first.extend_from_slice(&bytes[..bytes.len().min(room)]);
            detect(flow, &mut self.scratch);
        }
        if flow.blocked.is_none() {
            if let Some(ips) = flow.ips.as_mut() {
                if let Verdict::Block(cause) = ips.inspect(d, bytes, &mut self.scratch) {
                    flow.blocked = Some(cause);
                }
            }
        }
        self.report(k, time, false)
    }

    /// Writes the flow's new alerts and HTTP transactions (all of them, with `flush`).
    fn report(&mut self, k: Key, time: SystemTime, flush: bool) -> Result<()> {
        let Some(flow) = self.flows.get_mut(&k) else {
            return Ok(());
        };
        let Some(ips) = flow.ips.as_mut() else {
            return Ok(());
        };
        let hits = ips.take_hits();
        let txs = ips.take_transactions(flush);
        if txs.iter().any(|t| t.protocol.starts_with("HTTP/1") || t.protocol.is_empty()) && flow.app_proto.is_none() {
            flow.app_proto = Some("http");
        }
        let record = flow_log(flow, time);
        let app_proto = flow.app_proto;
        for hit in hits {
            self.summary.alerts += u64::from(hit.dlp.is_none());
            let v = AlertLog { flow: record.clone(), hit }.to_json();
            write_eve(self.out, v, time, app_proto)?;
        }
        for tx in txs {
            self.summary.http += 1;
            let v = HttpLog { flow: record.clone(), tx }.to_json();
            write_eve(self.out, v, time, app_proto)?;
        }
        Ok(())
    }

    /// The flow ends: what waits is inspected, the rest of its transactions and its flow
    /// record are written.
    fn end(&mut self, k: Key) -> Result<()> {
        let Some(flow) = self.flows.get_mut(&k) else {
            return Ok(());
        };
        let mut chunks = Vec::new();
        flow.conn.flush(&mut self.budget, &mut chunks);
        let time = flow.last;
        for (d, bytes) in chunks {
            self.inspect(k, d, &bytes, time)?;
        }
        self.report(k, time, true)?;
        let Some(flow) = self.flows.remove(&k) else {
            return Ok(());
        };
        self.summary.gaps += flow.conn.gaps();
        let alerted = flow.ips.as_ref().is_some_and(|i| i.alerted());
        let record = flow_log(&flow, time);
        // A flow that began with a ClientHello has its `tls` record (SNI, JA3, JA4).
        if flow.ja4.is_some() {
            write_eve(self.out, record.to_json(), time, flow.app_proto)?;
        }
        let v = record.flow_event(alerted);
        write_eve(self.out, v, time, flow.app_proto)
    }

    /// The end of the file: every flow still open ends, in the order they started.
    fn end_all(&mut self) -> Result<()> {
        let mut open: Vec<(u64, Key)> = self.flows.iter().map(|(k, f)| (f.id, *k)).collect();
        open.sort_unstable();
        for (_, k) in open {
            self.end(k)?;
        }
        Ok(())
    }
}

/// The application protocol from the client's first bytes; a ClientHello's SNI goes to the
/// IPS (`tls.sni`).
fn detect(flow: &mut Flow, scratch: &mut Scratch) {
    let first = &flow.first;
    if first.len() >= PREFACE.len() && first.starts_with(PREFACE) {
        flow.app_proto = Some("http2");
        return;
    }
    if PREFACE.starts_with(first) {
        return;
    }
    match sniff(first) {
        Sniff::Hello(hello) => {
            flow.app_proto = Some("tls");
            let ja3_string = hello.ja3_string();
            let ja3_hash = ClientHello::ja3_hash(&ja3_string);
            let ja4 = hello.ja4();
            if let Some(ips) = flow.ips.as_mut() {
                let fields = HelloFields { sni: hello.sni.as_deref(), version: hello.legacy_version, ja3_string: &ja3_string, ja3_hash: &ja3_hash, ja4: &ja4 };
                if let Verdict::Block(cause) = ips.scan_client_hello(&fields, scratch) {
                    flow.blocked = Some(cause);
                }
            }
            flow.ja3 = Some((ja3_hash, ja3_string));
            flow.ja4 = Some(ja4);
            flow.sni = hello.sni;
        }
        Sniff::NeedMore(_) if first.len() < MAX_HELLO => {}
        Sniff::NeedMore(_) | Sniff::Malformed(_) => flow.app_proto = Some("tls"),
        Sniff::NotTls(_) => {
            // An HTTP/1 request line starts with a method token and a space.
            let token = first.iter().take_while(|b| b.is_ascii_alphabetic()).count();
            flow.app_proto = Some(if token > 0 && first.get(token) == Some(&b' ') { "http" } else { "failed" });
        }
    }
}

fn flow_log(flow: &Flow, end: SystemTime) -> FlowLog {
    let c = &flow.conn;
    FlowLog {
        flow_id: flow.id,
        src_ip: Some(c.client.0),
        src_port: c.client.1,
        dest_ip: Some(c.server.0),
        dest_port: c.server.1,
        start: Some(flow.start),
        end: Some(end),
        bytes_toserver: c.streams[0].wire_bytes,
        bytes_toclient: c.streams[1].wire_bytes,
        pkts_toserver: c.streams[0].packets,
        pkts_toclient: c.streams[1].packets,
        decision: if flow.blocked.is_some() { Outcome::Blocked } else { Outcome::Inspected },
        reason: flow.blocked.clone().map_or(Reason::None, Reason::Inspector),
        sni: flow.sni.clone(),
        ja3: flow.ja3.clone(),
        ja4: flow.ja4.clone(),
        alerted: flow.ips.as_ref().is_some_and(|i| i.alerted()),
        ..FlowLog::default()
    }
}

/// One EVE line, with the capture's time and the flow's application protocol (the records are
/// the appliance's, which logs TLS flows at the time they happen).
fn write_eve(out: &mut dyn Write, mut v: serde_json::Value, time: SystemTime, app_proto: Option<&str>) -> Result<()> {
    if let Some(m) = v.as_object_mut() {
        m.insert("timestamp".into(), json!(log::rfc3339(time)));
        match app_proto {
            Some(p) => m.insert("app_proto".into(), json!(p)),
            None => m.remove("app_proto"),
        };
    }
    serde_json::to_writer(&mut *out, &v).context("writing EVE")?;
    out.write_all(b"\n").context("writing EVE")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests;
