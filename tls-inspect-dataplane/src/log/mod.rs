//! EVE-style JSON flow logs: one line per flow when it closes, with field names from Suricata's
//! EVE where one exists. Workers hand records to a logger thread over a channel; the thread owns
//! the file and stdout, so no worker ever blocks on I/O, and polls the channel every
//! [`LOG_TICK`], so no worker makes a system call to log.

pub mod console;
pub mod pcap;

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use serde_json::json;

use crate::inspect::BlockCause;
use crate::tls::policy::PolicyReason;

/// How a flow ended, as Suricata's `flow` record says it (`state`, `reason`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowEnd {
    /// Both sides closed, or one reset it (`closed`, `shutdown`).
    #[default]
    Closed,
    /// Idle past the timeout: the appliance reset both sides (`established`, `timeout`).
    Timeout,
    /// Passed after its first flight and handed to the XDP program, which bridges the rest
    /// (`bypassed`, with Suricata's `bypass: capture`); the record is written at the hand-off
    /// and counts what the worker saw.
    Bypassed,
}

impl FlowEnd {
    /// Suricata's `flow.state` and `flow.reason`.
    pub fn state_and_reason(self) -> (&'static str, &'static str) {
        match self {
            FlowEnd::Closed => ("closed", "shutdown"),
            FlowEnd::Timeout => ("established", "timeout"),
            FlowEnd::Bypassed => ("bypassed", "shutdown"),
        }
    }
}

/// What the appliance did with a flow, as the log says it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided yet (never logged: a flow that closes undecided is `Closed`).
    #[default]
    Pending,
    /// Decrypted, inspected and re-encrypted.
    Inspected,
    /// Relayed unchanged.
    Passed,
    /// Stopped by the appliance.
    Blocked,
    /// Inspection failed (a peer's TLS error).
    Failed,
    /// Closed before its first bytes.
    Closed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Inspected => "inspected",
            Outcome::Passed => "passed",
            Outcome::Blocked => "blocked",
            Outcome::Failed => "failed",
            Outcome::Closed => "closed",
        }
    }
}

/// Why a flow got its [`Outcome`]; written in the log as `reason`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reason {
    /// Nothing to say (an inspected flow).
    #[default]
    None,
    /// The TLS policy's answer to the ClientHello.
    Policy(PolicyReason),
    /// The client's first bytes are not TLS.
    NotTls,
    /// The server spoke first and the client's bytes are not TLS.
    ServerFirst,
    /// TLS inspection is off.
    InspectionOff,
    /// Decided on the outer ClientHello of an ECH (GREASE or real) hello.
    EchOuter,
    /// The flow closed before the client sent anything.
    BeforeAnyData,
    /// A `tls.sni` rule blocked the ClientHello.
    IpsSni,
    /// A first flight that began as a TLS handshake but is no ClientHello the appliance reads.
    MalformedClientHello(&'static str),
    /// The server's certificate does not validate.
    UpstreamInvalid(String),
    /// The server asked for a client certificate.
    ClientAuthRequested,
    /// The client refused the forged certificate (the alert it sent).
    ClientRejectedCertificate(String),
    /// The server's side of TLS failed.
    Upstream(String),
    /// The client's side of TLS failed.
    Client(String),
    /// An inspector (IPS rule, DLP detector) stopped the flow.
    Inspector(BlockCause),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::None => Ok(()),
            Reason::Policy(r) => f.write_str(r.as_str()),
            Reason::NotTls => f.write_str("not_tls"),
            Reason::ServerFirst => f.write_str("server_first"),
            Reason::InspectionOff => f.write_str("inspection_off"),
            Reason::EchOuter => f.write_str("ech_outer"),
            Reason::BeforeAnyData => f.write_str("before_any_data"),
            Reason::IpsSni => f.write_str("ips_sni"),
            Reason::MalformedClientHello(why) => write!(f, "malformed_client_hello: {why}"),
            Reason::UpstreamInvalid(why) => write!(f, "upstream_invalid: {why}"),
            Reason::ClientAuthRequested => f.write_str("client_auth_requested"),
            Reason::ClientRejectedCertificate(alert) => write!(f, "client_rejected_certificate: {alert}"),
            Reason::Upstream(e) => write!(f, "upstream: {e}"),
            Reason::Client(e) => write!(f, "client: {e}"),
            Reason::Inspector(cause) => write!(f, "{cause}"),
        }
    }
}

/// `[log]`: where flow records go.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// EVE-style JSON lines, one per flow, appended to this file.
    pub eve: Option<String>,
    /// The same lines on standard output.
    pub stdout: bool,
    /// An `http` record per decrypted HTTP request (with or without the IPS).
    pub http: bool,
    /// Both legs' TLS secrets, in the NSS key log format, for Wireshark (opt-in).
    pub keylog: Option<String>,
    /// The decrypted plaintext of inspected flows as pcap files (opt-in).
    pub pcap: Option<pcap::PcapSettings>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { eve: None, stdout: false, http: true, keylog: None, pcap: None }
    }
}

impl LogSettings {
    /// Records are written somewhere.
    pub fn any(&self) -> bool {
        self.eve.is_some() || self.stdout
    }
}

/// What the log says about one flow.
#[derive(Clone, Debug, Default)]
pub struct FlowLog {
    pub flow_id: u64,
    pub src_ip: Option<Ipv4Addr>,
    pub src_port: u16,
    pub dest_ip: Option<Ipv4Addr>,
    pub dest_port: u16,
    pub policy_id: u32,
    pub scope_id: u32,
    pub start: Option<SystemTime>,
    pub end: Option<SystemTime>,
    pub bytes_toserver: u64,
    pub bytes_toclient: u64,
    /// Packets the appliance received from each side.
    pub pkts_toserver: u64,
    pub pkts_toclient: u64,
    pub decision: Outcome,
    pub reason: Reason,
    /// How it ended.
    pub end_reason: FlowEnd,
    pub sni: Option<String>,
    pub ja4: Option<String>,
    /// The ClientHello's JA3 fingerprint: (MD5 hex, string).
    pub ja3: Option<(String, String)>,
    /// The ClientHello's own version field (what `tls.version` tests in data to the server).
    pub hello_version: Option<u16>,
    pub client_versions: Vec<String>,
    pub client_alpn: Vec<String>,
    pub alpn: Option<String>,
    pub client_version: Option<String>,
    pub client_cipher: Option<String>,
    pub upstream_version: Option<String>,
    pub upstream_cipher: Option<String>,
    pub client_kx_group: Option<String>,
    pub upstream_kx_group: Option<String>,
    /// The real server's certificate (inspected flows).
    pub server_cert: Option<crate::inspect::cert::CertSummary>,
    /// Each leg's grade (inspected flows), and where the appliance gave the client less than it
    /// asked for (an error).
    pub grades: Option<(crate::tls::grade::Graded, crate::tls::grade::Graded)>,
    pub weakened: Vec<&'static str>,
    /// Each leg resumed a session: (client, upstream).
    pub resumed: (bool, bool),
    /// An alert fired on the flow.
    pub alerted: bool,
    /// Per direction (to the server, to the client): body bytes past the IPS's body depth that
    /// it did not scan.
    pub ips_unscanned: [u64; 2],
}

pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos() as i128).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+0000",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.microsecond()
    )
}

impl FlowLog {
    /// The flow's `tls` record: Suricata's `tls` and `flow` objects, and what only the appliance
    /// knows under `tls_inspect`.
    pub fn to_json(&self) -> serde_json::Value {
        let end = self.end.unwrap_or_else(SystemTime::now);
        let start = self.start.unwrap_or(end);
        let mut tls = json!({
            "sni": self.sni,
            "version": self.client_version,
            "ja4": self.ja4,
            "ja3": self.ja3.as_ref().map(|(hash, string)| json!({"hash": hash, "string": string})),
            "client_alpns": self.client_alpn,
        });
        if let (Some(c), Some(t)) = (&self.server_cert, tls.as_object_mut()) {
            t.insert("subject".into(), json!(c.subject));
            t.insert("issuerdn".into(), json!(c.issuer));
            t.insert("serial".into(), json!(c.serial));
            t.insert("fingerprint".into(), json!(c.fingerprint));
            t.insert("notbefore".into(), json!(c.not_before));
            t.insert("notafter".into(), json!(c.not_after));
        }
        if self.resumed.0 {
            // As Suricata writes it: only when the client's session was resumed.
            tls["session_resumed"] = json!(true);
        }
        strip_nulls(&mut tls);
        let mut ours = self.ours();
        ours["alpn"] = json!(self.alpn);
        ours["client"] = json!({
            "versions": self.client_versions,
            "version": self.client_version,
            "cipher_suite": self.client_cipher,
            "kx_group": self.client_kx_group,
            "resumed": self.resumed.0,
        });
        ours["upstream"] = json!({
            "version": self.upstream_version,
            "cipher_suite": self.upstream_cipher,
            "kx_group": self.upstream_kx_group,
            "resumed": self.resumed.1,
        });
        if let Some((client, upstream)) = &self.grades {
            ours["client"]["grade"] = json!(client.grade);
            ours["client"]["grade_reasons"] = json!(client.reasons);
            ours["upstream"]["grade"] = json!(upstream.grade);
            ours["upstream"]["grade_reasons"] = json!(upstream.reasons);
            ours["weakened"] = json!(self.weakened);
        }
        self.eve(end, "tls", json!({ "tls": tls, "flow": self.flow_counts(start, end), "tls_inspect": ours }))
    }

    /// Suricata's `flow` object: packets and bytes each way, start, end and age (integer
    /// seconds, as Suricata writes it).
    fn flow_counts(&self, start: SystemTime, end: SystemTime) -> serde_json::Value {
        json!({
            "pkts_toserver": self.pkts_toserver,
            "pkts_toclient": self.pkts_toclient,
            "bytes_toserver": self.bytes_toserver,
            "bytes_toclient": self.bytes_toclient,
            "start": rfc3339(start),
            "end": rfc3339(end),
            "age": end.duration_since(start).unwrap_or(Duration::ZERO).as_secs(),
        })
    }

    /// The flow's `flow` record, as Suricata writes one when a flow ends.
    pub fn flow_event(&self, alerted: bool) -> serde_json::Value {
        let end = self.end.unwrap_or_else(SystemTime::now);
        let start = self.start.unwrap_or(end);
        let mut flow = self.flow_counts(start, end);
        let (state, reason) = self.end_reason.state_and_reason();
        flow["state"] = json!(state);
        flow["reason"] = json!(reason);
        flow["alerted"] = json!(alerted);
        if self.end_reason == FlowEnd::Bypassed {
            flow["bypass"] = json!("capture");
        }
        self.eve(end, "flow", json!({ "flow": flow, "tls_inspect": self.ours() }))
    }

    /// What every record of this flow says under `tls_inspect`: the decision and the policy
    /// and scope the XDP program matched.
    fn ours(&self) -> serde_json::Value {
        let mut v = json!({
            "decision": self.decision.as_str(),
            "reason": self.reason.to_string(),
            "policy_id": self.policy_id,
            "scope_id": self.scope_id,
        });
        // Only where the IPS left body bytes past its depth unscanned.
        if self.ips_unscanned != [0, 0] {
            v["ips_unscanned_bytes"] = json!({ "toserver": self.ips_unscanned[0], "toclient": self.ips_unscanned[1] });
        }
        v
    }

    /// The fields every EVE record of this flow starts with, then `rest`'s.
    fn eve(&self, timestamp: SystemTime, event_type: &str, rest: serde_json::Value) -> serde_json::Value {
        let mut v = json!({
            "timestamp": rfc3339(timestamp),
            "flow_id": self.flow_id,
            "event_type": event_type,
            "src_ip": self.src_ip.map(|i| i.to_string()),
            "src_port": self.src_port,
            "dest_ip": self.dest_ip.map(|i| i.to_string()),
            "dest_port": self.dest_port,
            "proto": "TCP",
            "app_proto": "tls",
        });
        if let (Some(src), Some(dst), Some(m)) = (self.src_ip, self.dest_ip, v.as_object_mut()) {
            m.insert("community_id".into(), json!(community_id((src, self.src_port), (dst, self.dest_port))));
        }
        if let (Some(m), serde_json::Value::Object(rest)) = (v.as_object_mut(), rest) {
            m.extend(rest);
        }
        v
    }
}

/// The Community ID of a TCP flow (version 1, seed 0), as Suricata's `community_id` writes it:
/// `1:` and the base64 of the SHA-1 of seed, the two addresses, protocol, a pad byte and the two
/// ports, the smaller endpoint first.
pub fn community_id(a: (Ipv4Addr, u16), b: (Ipv4Addr, u16)) -> String {
    use sha1::Digest;
    let (first, second) = if (u32::from(a.0), a.1) <= (u32::from(b.0), b.1) { (a, b) } else { (b, a) };
    let mut h = sha1::Sha1::new();
    h.update(0u16.to_be_bytes());
    h.update(first.0.octets());
    h.update(second.0.octets());
    h.update([6u8, 0]);
    h.update(first.1.to_be_bytes());
    h.update(second.1.to_be_bytes());
    format!("1:{}", base64(&h.finalize()))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Drops `null` members (Suricata leaves out what it does not know).
fn strip_nulls(v: &mut serde_json::Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
}

/// A rule's `metadata` as Suricata's EVE has it: each key with the list of its values.
fn metadata_json(pairs: &[(String, String)]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        if let serde_json::Value::Array(list) = m.entry(k.clone()).or_insert_with(|| serde_json::Value::Array(Vec::new())) {
            list.push(serde_json::Value::String(v.clone()));
        }
    }
    serde_json::Value::Object(m)
}

/// An IPS alert, with the flow it fired on.
#[derive(Clone, Debug)]
pub struct AlertLog {
    pub flow: FlowLog,
    pub hit: crate::inspect::ips::Hit,
}

impl AlertLog {
    /// An `alert` record, or a `dlp` record for a data leak detector's finding.
    pub fn to_json(&self) -> serde_json::Value {
        let f = &self.flow;
        let h = &self.hit;
        let action = if h.blocked { "blocked" } else { "allowed" };
        let direction = match h.direction {
            crate::inspect::Direction::ToServer => "to_server",
            crate::inspect::Direction::ToClient => "to_client",
        };
        let mut v = match &h.dlp {
            Some(d) => {
                let mut ours = f.ours();
                ours["dlp"] = json!({ "detector": d.detector, "count": d.count, "sample": d.sample, "action": action });
                f.eve(SystemTime::now(), "dlp", json!({ "direction": direction, "tls_inspect": ours }))
            }
            None => f.eve(SystemTime::now(), "alert", json!({
                "direction": direction,
                "alert": {
                    "action": action,
                    "gid": 1,
                    "signature_id": h.sid,
                    "rev": h.rev,
                    "signature": h.msg,
                    // Suricata writes "" for a rule without a (known) classtype.
                    "category": h.category.as_deref().unwrap_or(""),
                    "severity": h.severity,
                    "metadata": metadata_json(&h.metadata),
                },
                "tls_inspect": f.ours(),
            })),
        };
        if !h.references.is_empty() && h.dlp.is_none() {
            v["alert"]["references"] = json!(h.references);
        }
        if let Some(sni) = &f.sni {
            v["tls"] = json!({ "sni": sni });
        }
        if let Some(http) = &h.http {
            v["http"] = json!({ "hostname": http.host, "url": http.uri, "http_method": http.method, "http_user_agent": http.user_agent });
        }
        v
    }
}

/// One decrypted HTTP transaction, on the flow it crossed.
#[derive(Clone, Debug)]
pub struct HttpLog {
    pub flow: FlowLog,
    pub tx: crate::inspect::HttpTx,
}

impl HttpLog {
    /// An `http` record, with Suricata's field names.
    pub fn to_json(&self) -> serde_json::Value {
        let (f, t) = (&self.flow, &self.tx);
        let mut http = json!({
            "hostname": t.hostname,
            "url": t.url,
            "http_method": t.method,
            "http_user_agent": t.user_agent,
            "http_refer": t.referer,
            "http_content_type": t.content_type,
            "protocol": t.protocol,
            "status": t.status,
            "length": t.length,
        });
        strip_nulls(&mut http);
        let mut v = f.eve(SystemTime::now(), "http", json!({ "http": http, "tls_inspect": f.ours() }));
        if let Some(sni) = &f.sni {
            v["tls"] = json!({ "sni": sni });
        }
        v
    }
}

/// What the logger writes.
#[derive(Clone, Debug)]
pub enum Record {
    Flow(Box<FlowLog>),
    Alert(Box<AlertLog>),
    Exclusion(Box<ExclusionLog>),
    Http(Box<HttpLog>),
}

impl Record {
    /// The EVE lines of a record: a flow that ends gives its `tls` record and its `flow` record.
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        match self {
            Record::Flow(f) => vec![f.to_json(), f.flow_event(f.alerted)],
            Record::Alert(a) => vec![a.to_json()],
            Record::Exclusion(e) => vec![e.to_json()],
            Record::Http(h) => vec![h.to_json()],
        }
    }
}

/// An entry added to the TLS exclusion cache, on the flow that caused it: who is excluded from
/// inspecting what, why, for how long, and the entry that was evicted to make room, if any.
#[derive(Clone, Debug)]
pub struct ExclusionLog {
    pub flow: FlowLog,
    pub client: Option<Ipv4Addr>,
    pub reason: crate::tls::policy::ExclusionReason,
    pub ttl: Duration,
    pub evicted: Option<crate::tls::policy::Exclusion>,
}

impl ExclusionLog {
    pub fn to_json(&self) -> serde_json::Value {
        let f = &self.flow;
        let mut ours = f.ours();
        ours["exclusion"] = json!({
            "server": f.dest_ip.map(|i| format!("{i}:{}", f.dest_port)),
            "sni": f.sni.clone().unwrap_or_default(),
            "clients": self.client.map_or_else(|| "all".to_string(), |c| c.to_string()),
            "reason": self.reason.as_str(),
            "ttl": self.ttl.as_secs(),
            "evicted": self.evicted.as_ref().map(|e| json!({
                "server": e.server.to_string(),
                "sni": e.sni,
                "clients": e.client.map_or_else(|| "all".to_string(), |c| c.to_string()),
                "reason": e.reason.as_str(),
            })),
        });
        let mut v = f.eve(SystemTime::now(), "tls_exclusion", json!({ "tls_inspect": ours }));
        if let Some(sni) = &f.sni {
            v["tls"] = json!({ "sni": sni });
        }
        v
    }
}

/// Where flow logs go.
#[derive(Clone, Debug, Default)]
pub struct LogTargets {
    pub file: Option<PathBuf>,
    pub stdout: bool,
    /// `http` records are written (else dropped).
    pub http: bool,
}

/// Alerts counted by rule and action (for the metrics endpoint): (sid, action) -> count.
pub type AlertCounts = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<(u32, &'static str), u64>>>;

/// How often the logger thread writes what the workers sent.
const LOG_TICK: Duration = Duration::from_millis(20);

pub struct Logger {
    pub sender: Sender<Record>,
    pub alert_counts: AlertCounts,
    /// Asks the thread to reopen the EVE file (SIGHUP, after logrotate moved it).
    reopen: Sender<()>,
    thread: JoinHandle<()>,
}

/// Opens (creating it, and its directory, if need be) the EVE file for appending.
fn open_eve(path: &std::path::Path) -> Result<BufWriter<std::fs::File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening the flow log {}", path.display()))?;
    Ok(BufWriter::new(f))
}

impl Logger {
    pub fn start(targets: LogTargets) -> Result<Self> {
        let mut file = targets.file.as_deref().map(open_eve).transpose()?;
        let (sender, receiver): (Sender<Record>, Receiver<Record>) = crossbeam_channel::bounded(65_536);
        let (reopen, reopen_rx) = crossbeam_channel::bounded::<()>(1);
        let (stdout, http) = (targets.stdout, targets.http);
        let alert_counts: AlertCounts = Default::default();
        let counts = alert_counts.clone();
        let path = targets.file.clone();
        // The thread polls rather than sleeping on the channel: a sender then never has a
        // sleeper to wake, so a worker logs a record with no system call (a blocking receive
        // cost each record a futex wake-up, several per inspected connection). A record waits
        // a tick at most, and the writing of those before it.
        let thread = std::thread::Builder::new().name("flow-log".into()).spawn(move || loop {
            // A reopen asked for before this pass comes after the records already sent: they go
            // to the old file, what follows to the new one. A pass takes only what was there at
            // its start, so that a steady stream of records cannot put a reopen off.
            let reopen = reopen_rx.try_recv().is_ok();
            let mut wrote = false;
            let mut ended = false;
            for _ in 0..receiver.len().max(1) {
                let record = match receiver.try_recv() {
                    Ok(record) => record,
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        ended = true;
                        break;
                    }
                };
                if matches!(record, Record::Http(_)) && !http {
                    continue;
                }
                if let Record::Alert(a) = &record {
                    let action = if a.hit.blocked { "blocked" } else { "allowed" };
                    if let Ok(mut c) = counts.lock() {
                        *c.entry((a.hit.sid, action)).or_default() += 1;
                    }
                }
                for value in record.to_json() {
                    let line = value.to_string();
                    if let Some(f) = file.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    if stdout {
                        println!("{line}");
                    }
                }
                wrote = true;
            }
            if wrote {
                if let Some(f) = file.as_mut() {
                    let _ = f.flush();
                }
            }
            if ended {
                break;
            }
            if reopen {
                if let (Some(f), Some(path)) = (file.as_mut(), path.as_deref()) {
                    let _ = f.flush();
                    match open_eve(path) {
                        Ok(fresh) => {
                            file = Some(fresh);
                            tracing::info!(path = %path.display(), "reopened the flow log");
                        }
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "reopening the flow log failed; writing on to the old file"),
                    }
                }
            }
            // Behind (a pass takes only what was there at its start): on at once.
            if receiver.is_empty() {
                std::thread::sleep(LOG_TICK);
            }
        })?;
        Ok(Self { sender, alert_counts, reopen, thread })
    }

    /// Reopens the EVE file by its name (records already sent go to the old one).
    pub fn reopen(&self) {
        // One request pending is enough.
        let _ = self.reopen.try_send(());
    }

    /// Flushes what was sent and stops (once every sender is gone).
    pub fn stop(self) {
        drop(self.sender);
        drop(self.reopen);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    /// Suricata's schema, with the one object it does not know: ours.
    pub(crate) fn eve_validator() -> jsonschema::Validator {
        let mut schema: serde_json::Value = serde_json::from_str(include_str!("../../tests/fixtures/suricata-eve-schema.json")).unwrap();
        schema["properties"]["tls_inspect"] = json!({ "type": "object" });
        jsonschema::validator_for(&schema).unwrap()
    }

    fn check(v: &serde_json::Value) {
        let validator = eve_validator();
        let errors: Vec<String> = validator.iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{v}\n{errors:#?}");
    }

    #[test]
    fn http_records_are_dropped_when_the_http_log_is_off() {
        let dir = std::env::temp_dir().join(format!("tls-inspect-log-test-{}", std::process::id()));
        for http in [true, false] {
            let path = dir.join(format!("eve-{http}.json"));
            let logger = Logger::start(LogTargets { file: Some(path.clone()), stdout: false, http }).unwrap();
            let tx = crate::inspect::HttpTx { url: "/x".into(), ..crate::inspect::HttpTx::default() };
            logger.sender.send(Record::Http(Box::new(HttpLog { flow: flow(), tx }))).unwrap();
            logger.sender.send(Record::Flow(Box::new(flow()))).unwrap();
            logger.stop();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.contains("\"event_type\":\"http\""), http, "{text}");
            assert!(text.contains("\"event_type\":\"flow\""), "{text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopen_moves_later_records_to_a_new_file_of_the_same_name() {
        let dir = std::env::temp_dir().join(format!("tls-inspect-log-reopen-{}", std::process::id()));
        let path = dir.join("eve.json");
        let logger = Logger::start(LogTargets { file: Some(path.clone()), stdout: false, http: true }).unwrap();
        let lines = |p: &std::path::Path| std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0);
        logger.sender.send(Record::Flow(Box::new(flow()))).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lines(&path) < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // As logrotate does: the file is renamed, then the logger is told.
        let rotated = dir.join("eve.json.1");
        std::fs::rename(&path, &rotated).unwrap();
        logger.reopen();
        while !path.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        logger.sender.send(Record::Flow(Box::new(flow()))).unwrap();
        logger.stop();
        assert_eq!((lines(&rotated), lines(&path)), (2, 2), "a tls and a flow record in each");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn flow() -> FlowLog {
        FlowLog {
            flow_id: 7,
            src_ip: Some(Ipv4Addr::new(198, 18, 0, 1)),
            src_port: 40000,
            dest_ip: Some(Ipv4Addr::new(198, 18, 0, 2)),
            dest_port: 443,
            policy_id: 1,
            scope_id: 2,
            start: Some(SystemTime::now() - Duration::from_secs(3)),
            end: Some(SystemTime::now()),
            bytes_toserver: 100,
            bytes_toclient: 2000,
            pkts_toserver: 5,
            pkts_toclient: 6,
            decision: Outcome::Inspected,
            reason: Reason::EchOuter,
            end_reason: FlowEnd::Timeout,
            sni: Some("server.test".into()),
            ja4: Some("t13d1516h2_8daaf6152771_02713d6af862".into()),
            ja3: Some(("0e870cb29dd59424064948532781a7f6".into(), "771,4866-255,0-11-10-35-13-22-23-43-45-40,29-23-25-24,0-1-2".into())),
            hello_version: Some(0x0303),
            client_versions: vec!["TLS 1.3".into(), "TLS 1.2".into()],
            client_alpn: vec!["h2".into()],
            alpn: Some("h2".into()),
            client_version: Some("TLS 1.3".into()),
            client_cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
            upstream_version: Some("TLS 1.3".into()),
            upstream_cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
            client_kx_group: Some("X25519MLKEM768".into()),
            upstream_kx_group: Some("X25519".into()),
            server_cert: Some(crate::inspect::cert::CertSummary {
                subject: "CN=server.test".into(),
                issuer: "CN=Test Root".into(),
                serial: "0A:1B".into(),
                fingerprint: "aa:bb".into(),
                not_before: "2026-01-01T00:00:00".into(),
                not_after: "2027-01-01T00:00:00".into(),
            }),
            grades: Some((
                crate::tls::grade::Graded { grade: crate::tls::grade::Grade::A, reasons: vec![] },
                crate::tls::grade::Graded { grade: crate::tls::grade::Grade::B, reasons: vec!["classical key exchange where the client offered post-quantum"] },
            )),
            weakened: vec![],
            resumed: (true, false),
            alerted: true,
            ips_unscanned: [0, 1_500_000],
        }
    }

    #[test]
    fn community_id_matches_the_specifications_example() {
        // The TCP example of the Community ID specification (corelight/community-id-spec).
        let (a, b) = ((Ipv4Addr::new(128, 232, 110, 120), 34855), (Ipv4Addr::new(66, 35, 250, 204), 80));
        assert_eq!(community_id(a, b), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        assert_eq!(community_id(b, a), community_id(a, b), "either direction, one id");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn every_record_is_valid_under_suricatas_eve_schema() {
        let f = flow();
        let tls = f.to_json();
        check(&tls);
        assert_eq!(tls["tls"]["version"], "TLS 1.3");
        assert_eq!(tls["tls"]["issuerdn"], "CN=Test Root");
        assert_eq!(tls["flow"]["age"], 3);
        assert_eq!(tls["tls_inspect"]["policy_id"], 1);
        assert_eq!((&tls["tls_inspect"]["client"]["grade"], &tls["tls_inspect"]["upstream"]["grade"]), (&json!("A"), &json!("B")));
        assert_eq!(tls["tls_inspect"]["weakened"], json!([]));
        // Resumption as Suricata writes it (the client's session), and per leg.
        assert_eq!(tls["tls"]["session_resumed"], true);
        assert_eq!((&tls["tls_inspect"]["client"]["resumed"], &tls["tls_inspect"]["upstream"]["resumed"]), (&json!(true), &json!(false)));
        let flow_event = f.flow_event(true);
        check(&flow_event);
        assert_eq!((flow_event["event_type"].as_str(), flow_event["flow"]["alerted"].as_bool()), (Some("flow"), Some(true)));
        assert_eq!(flow_event["tls_inspect"]["ips_unscanned_bytes"], json!({ "toserver": 0, "toclient": 1_500_000 }));
        let scanned = FlowLog { ips_unscanned: [0, 0], ..flow() };
        assert!(scanned.flow_event(false)["tls_inspect"].get("ips_unscanned_bytes").is_none(), "only where bytes went unscanned");
        let hit = crate::inspect::ips::Hit {
            sid: 9000001,
            rev: 1,
            msg: "Log4Shell".into(),
            classtype: Some("attempted-admin".into()),
            category: Some("Attempted Administrator Privilege Gain".into()),
            severity: 1,
            action: crate::inspect::rules::Action::Reject,
            blocked: true,
            direction: crate::inspect::Direction::ToServer,
            http: Some(crate::inspect::HttpInfo { method: "GET".into(), uri: "/?x".into(), host: "server.test".into(), user_agent: "curl".into(), h2_stream: None }),
            metadata: vec![("confidence".into(), "high".into()), ("cve".into(), "2021-44228".into())],
            references: vec!["https://cve.mitre.org/cgi-bin/cvename.cgi?name=2021-44228".into()],
            dlp: None,
        };
        let alert = AlertLog { flow: f.clone(), hit: hit.clone() }.to_json();
        check(&alert);
        assert_eq!(alert["alert"]["metadata"]["cve"][0], "2021-44228");
        assert_eq!(alert["alert"]["references"][0], "https://cve.mitre.org/cgi-bin/cvename.cgi?name=2021-44228");
        let dlp = crate::inspect::dlp::Finding { detector: crate::inspect::dlp::Detector::PaymentCard, count: 1, sample: "4111********1111".into(), block: false };
        check(&AlertLog { flow: f.clone(), hit: crate::inspect::ips::Hit { dlp: Some(dlp), ..hit } }.to_json());
        let tx = crate::inspect::HttpTx {
            hostname: "server.test".into(),
            url: "/a?b".into(),
            method: "GET".into(),
            user_agent: Some("curl/8".into()),
            referer: None,
            content_type: Some("text/html".into()),
            protocol: "HTTP/1.1".into(),
            status: Some(200),
            length: 12,
        };
        let http = HttpLog { flow: f.clone(), tx }.to_json();
        check(&http);
        assert_eq!((http["http"]["status"].as_u64(), http["http"]["url"].as_str()), (Some(200), Some("/a?b")));
        let exclusion = ExclusionLog { flow: f, client: None, reason: crate::tls::policy::ExclusionReason::ClientAuthRequested, ttl: Duration::from_secs(60), evicted: None };
        check(&exclusion.to_json());
        // The validator is not a pushover: what Suricata would not write is refused.
        let mut bad = tls.clone();
        bad["policy_id"] = json!(1);
        assert!(!eve_validator().is_valid(&bad), "an unknown root field");
        let mut bad = tls;
        bad["flow"]["age"] = json!(0.5);
        assert!(!eve_validator().is_valid(&bad), "a float age");
    }
}
