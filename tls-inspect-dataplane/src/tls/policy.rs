//! What to do with a flow once its first bytes are known: inspect, pass (splice it unchanged) or
//! block. Do-Not-Inspect lists come first, as Cloudflare advises, then the automatic exclusion
//! cache, then what the ClientHello says (ECH, legacy versions).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Deserialize;

use super::clienthello::{ClientHello, TLS1_2};
use super::intercept::UntrustedUpstream;
use crate::addr::Ipv4Cidr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassOrBlock {
    Pass,
    Block,
}

/// What to do with a ClientHello that carries an Encrypted Client Hello extension (0xfe0d).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EchPolicy {
    /// Decide on the outer hello like any other, as the ECH specification expects of a
    /// TLS-terminating middlebox: the forged certificate is for the outer SNI and no retry
    /// configurations are offered, so a real ECH client sees ECH "securely disabled" and retries
    /// without it; a GREASE extension (what browsers send on every connection) changes nothing.
    Inspect,
    /// Splice the flow unchanged (the inner hello stays hidden, and so is everything in it).
    Pass,
    /// Refuse it with an `access_denied` alert.
    Block,
}

/// A host name pattern: `example.com` (that name) or `*.example.com` (any name under it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    suffix: String,
    wildcard: bool,
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower.clone()),
        };
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        if !ok {
            bail!("'{s}': not a host name or *.suffix pattern");
        }
        Ok(Self { suffix: name, wildcard })
    }

    pub fn matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.suffix.len() + 1 && host.ends_with(&self.suffix) && host.as_bytes()[host.len() - self.suffix.len() - 1] == b'.'
        } else {
            host == self.suffix
        }
    }
}

/// `[tls.group.NAME]`: a named list the operator refers to from `do_not_inspect_groups`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupDef {
    pub hosts: Vec<String>,
    pub src: Vec<String>,
    pub dst: Vec<String>,
}

/// `[tls]` in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// Inspect TLS (needs a CA in `ca_dir`); off means every steered flow is spliced.
    pub inspect: bool,
    pub ca_dir: String,
    /// PEM files of roots trusted upstream besides the system's.
    pub extra_roots: Vec<String>,
    /// Certificate revocation lists (PEM or DER files) checked upstream.
    pub crls: Vec<String>,
    pub untrusted_upstream: UntrustedUpstream,
    pub legacy_tls: PassOrBlock,
    pub ech: EchPolicy,
    /// First bytes that are not TLS at all (no handshake record): pass (the default: SSH, SMTP
    /// and other protocols keep working on a scoped port) or block.
    pub non_tls: PassOrBlock,
    pub do_not_inspect_hosts: Vec<String>,
    pub do_not_inspect_src: Vec<String>,
    pub do_not_inspect_dst: Vec<String>,
    pub do_not_inspect_groups: Vec<String>,
    pub group: BTreeMap<String, GroupDef>,
    /// Seconds a (server, SNI) stays in the exclusion cache after mTLS or pinning.
    pub exclusion_ttl: u64,
    /// Entries the exclusion cache holds at most (the least recently used goes first).
    pub exclusion_max: usize,
    /// Forged certificates kept per worker.
    pub cert_cache: usize,
    /// Session resumption on both legs: tickets for clients, kept sessions towards servers.
    pub resumption: bool,
    /// Upstream sessions each worker keeps at most (server address x offer x name).
    pub upstream_sessions: usize,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            inspect: false,
            ca_dir: super::ca::DEFAULT_DIR.to_string(),
            extra_roots: Vec::new(),
            crls: Vec::new(),
            untrusted_upstream: UntrustedUpstream::Block,
            legacy_tls: PassOrBlock::Pass,
            ech: EchPolicy::Inspect,
            non_tls: PassOrBlock::Pass,
            do_not_inspect_hosts: Vec::new(),
            do_not_inspect_src: Vec::new(),
            do_not_inspect_dst: Vec::new(),
            do_not_inspect_groups: Vec::new(),
            group: BTreeMap::new(),
            exclusion_ttl: 12 * 3600,
            exclusion_max: 100_000,
            cert_cache: 4096,
            resumption: true,
            upstream_sessions: crate::tls::intercept::DEFAULT_UPSTREAM_SESSIONS,
        }
    }
}

/// Why the policy passes or blocks a ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyReason {
    /// The client is in `do_not_inspect_src`.
    DoNotInspectSource,
    /// The server is in `do_not_inspect_dst`.
    DoNotInspectDestination,
    /// The SNI matches `do_not_inspect_hosts`.
    DoNotInspectHost,
    /// The server (with this SNI, for this client or all) is in the exclusion cache.
    ExclusionCache,
    /// The hello offers ECH and `ech` says pass or block.
    Ech,
    /// The hello offers nothing newer than TLS 1.1.
    LegacyTls,
}

impl PolicyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyReason::DoNotInspectSource => "do_not_inspect_source",
            PolicyReason::DoNotInspectDestination => "do_not_inspect_destination",
            PolicyReason::DoNotInspectHost => "do_not_inspect_host",
            PolicyReason::ExclusionCache => "exclusion_cache",
            PolicyReason::Ech => "ech",
            PolicyReason::LegacyTls => "legacy_tls",
        }
    }
}

/// The decision for one flow, with the reason the log gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Inspect,
    Pass(PolicyReason),
    Block(PolicyReason),
}

/// The parsed, validated policy the workers use.
#[derive(Debug)]
pub struct TlsPolicy {
    hosts: Vec<HostPattern>,
    src: Vec<Ipv4Cidr>,
    dst: Vec<Ipv4Cidr>,
    pub legacy_tls: PassOrBlock,
    pub ech: EchPolicy,
    pub non_tls: PassOrBlock,
    pub exclusion_ttl: Duration,
    exclusions: Mutex<ExclusionCache>,
}

fn cidrs(field: &str, items: &[String]) -> Result<Vec<Ipv4Cidr>> {
    items
        .iter()
        .map(|s| s.parse::<Ipv4Cidr>().map_err(|e| anyhow::anyhow!("{field}: '{s}': {e}")))
        .collect()
}

impl TlsPolicy {
    pub fn from_settings(s: &TlsSettings) -> Result<Self> {
        let mut hosts: Vec<HostPattern> = s
            .do_not_inspect_hosts
            .iter()
            .map(|h| HostPattern::parse(h).map_err(|e| anyhow::anyhow!("tls.do_not_inspect_hosts: {e}")))
            .collect::<Result<_>>()?;
        let mut src = cidrs("tls.do_not_inspect_src", &s.do_not_inspect_src)?;
        let mut dst = cidrs("tls.do_not_inspect_dst", &s.do_not_inspect_dst)?;
        for name in &s.do_not_inspect_groups {
            let Some(g) = s.group.get(name) else {
                bail!("tls.do_not_inspect_groups: '{name}': no [tls.group.{name}] table");
            };
            for h in &g.hosts {
                hosts.push(HostPattern::parse(h).map_err(|e| anyhow::anyhow!("tls.group.{name}.hosts: {e}"))?);
            }
            src.extend(cidrs(&format!("tls.group.{name}.src"), &g.src)?);
            dst.extend(cidrs(&format!("tls.group.{name}.dst"), &g.dst)?);
        }
        if s.exclusion_ttl == 0 {
            bail!("tls.exclusion_ttl: must be at least 1 second");
        }
        if !(1..=10_000_000).contains(&s.exclusion_max) {
            bail!("tls.exclusion_max: '{}': 1 to 10000000 entries", s.exclusion_max);
        }
        Ok(Self {
            hosts,
            src,
            dst,
            legacy_tls: s.legacy_tls,
            ech: s.ech,
            non_tls: s.non_tls,
            exclusion_ttl: Duration::from_secs(s.exclusion_ttl),
            exclusions: Mutex::new(ExclusionCache::new(s.exclusion_max)),
        })
    }

    pub fn decide(&self, hello: &ClientHello, client: Ipv4Addr, server: SocketAddrV4) -> Decision {
        if crate::addr::in_any(&self.src, client) {
            return Decision::Pass(PolicyReason::DoNotInspectSource);
        }
        if crate::addr::in_any(&self.dst, *server.ip()) {
            return Decision::Pass(PolicyReason::DoNotInspectDestination);
        }
        if let Some(sni) = &hello.sni {
            if self.hosts.iter().any(|p| p.matches(sni)) {
                return Decision::Pass(PolicyReason::DoNotInspectHost);
            }
        }
        if self.is_excluded(client, server, hello.sni.as_deref().unwrap_or("")) {
            return Decision::Pass(PolicyReason::ExclusionCache);
        }
        if hello.ech {
            match self.ech {
                EchPolicy::Inspect => {}
                EchPolicy::Pass => return Decision::Pass(PolicyReason::Ech),
                EchPolicy::Block => return Decision::Block(PolicyReason::Ech),
            }
        }
        if hello.max_version() < TLS1_2 {
            return match self.legacy_tls {
                PassOrBlock::Pass => Decision::Pass(PolicyReason::LegacyTls),
                PassOrBlock::Block => Decision::Block(PolicyReason::LegacyTls),
            };
        }
        Decision::Inspect
    }

    /// Adds an exclusion of (server address and port, SNI) for the TTL: for every client
    /// (`client` None: a server-side reason) or for one client. Returns the entry evicted to make
    /// room, if the cache was full.
    pub fn exclude(&self, server: SocketAddrV4, sni: &str, client: Option<Ipv4Addr>, reason: ExclusionReason) -> Option<Exclusion> {
        let key = ExclusionKey { server, sni: sni.to_string(), client };
        let until = Instant::now() + self.exclusion_ttl;
        self.exclusions.lock().ok().and_then(|mut c| c.insert(key, until, reason))
    }

    /// Whether (server, SNI) is excluded for every client, or for this one.
    pub fn is_excluded(&self, client: Ipv4Addr, server: SocketAddrV4, sni: &str) -> bool {
        let Ok(mut c) = self.exclusions.lock() else {
            return false;
        };
        let now = Instant::now();
        let mut key = ExclusionKey { server, sni: sni.to_string(), client: None };
        if c.hit(&key, now) {
            return true;
        }
        key.client = Some(client);
        c.hit(&key, now)
    }

    /// Removes expired exclusions; returns how many.
    pub fn sweep(&self) -> usize {
        self.exclusions.lock().map(|mut c| c.sweep(Instant::now())).unwrap_or(0)
    }

    /// The live exclusions, least recently used first.
    pub fn exclusions(&self) -> Vec<Exclusion> {
        let now = Instant::now();
        self.exclusions.lock().map(|c| c.list(now)).unwrap_or_default()
    }

    /// Entries evicted because the cache was full, since start.
    pub fn exclusions_evicted(&self) -> u64 {
        self.exclusions.lock().map(|c| c.evicted).unwrap_or(0)
    }

    pub fn clear_exclusions(&self) -> usize {
        self.exclusions.lock().map(|mut c| c.clear()).unwrap_or(0)
    }
}

/// Why (server, SNI) is passed without inspection for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExclusionReason {
    /// A server with a valid certificate asked for a client certificate (mTLS): whatever the
    /// client would send, inspection would strip it, so every client is excluded.
    ClientAuthRequested,
    /// This client refused the forged certificate (pinning, or the CA is not installed on this
    /// host): only this client is excluded, so one client cannot switch inspection off for all.
    ClientRejected,
}

impl ExclusionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientAuthRequested => "client_auth_requested",
            Self::ClientRejected => "client_rejected_certificate",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ExclusionKey {
    server: SocketAddrV4,
    sni: String,
    /// None: every client.
    client: Option<Ipv4Addr>,
}

/// One exclusion, as `bypass list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exclusion {
    pub server: SocketAddrV4,
    pub sni: String,
    pub client: Option<Ipv4Addr>,
    pub reason: ExclusionReason,
    pub expires_in: Duration,
}

/// The exclusion cache: at most `max` entries; when full, the least recently used one goes.
/// Lookups, insertions and evictions are O(log n); a sweep (on the supervisor's timer) drops the
/// expired ones.
#[derive(Debug)]
struct ExclusionCache {
    entries: HashMap<ExclusionKey, Entry>,
    /// Entries by last use.
    order: BTreeMap<u64, ExclusionKey>,
    stamp: u64,
    max: usize,
    evicted: u64,
}

#[derive(Debug)]
struct Entry {
    until: Instant,
    reason: ExclusionReason,
    used: u64,
}

impl ExclusionCache {
    fn new(max: usize) -> Self {
        Self { entries: HashMap::new(), order: BTreeMap::new(), stamp: 0, max: max.max(1), evicted: 0 }
    }

    fn touch(&mut self, key: &ExclusionKey) {
        self.stamp += 1;
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.used);
            e.used = self.stamp;
            self.order.insert(self.stamp, key.clone());
        }
    }

    fn insert(&mut self, key: ExclusionKey, until: Instant, reason: ExclusionReason) -> Option<Exclusion> {
        if let Some(e) = self.entries.get_mut(&key) {
            e.until = until;
            e.reason = reason;
            self.touch(&key);
            return None;
        }
        let mut evicted = None;
        if self.entries.len() >= self.max {
            if let Some((_, oldest)) = self.order.pop_first() {
                if let Some(e) = self.entries.remove(&oldest) {
                    self.evicted += 1;
                    let expires_in = e.until.saturating_duration_since(Instant::now());
                    evicted = Some(Exclusion { server: oldest.server, sni: oldest.sni, client: oldest.client, reason: e.reason, expires_in });
                }
            }
        }
        self.stamp += 1;
        self.order.insert(self.stamp, key.clone());
        self.entries.insert(key, Entry { until, reason, used: self.stamp });
        evicted
    }

    fn hit(&mut self, key: &ExclusionKey, now: Instant) -> bool {
        match self.entries.get(key) {
            Some(e) if e.until > now => {
                self.touch(key);
                true
            }
            Some(_) => {
                self.remove(key);
                false
            }
            None => false,
        }
    }

    fn remove(&mut self, key: &ExclusionKey) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.used);
        }
    }

    fn sweep(&mut self, now: Instant) -> usize {
        let expired: Vec<ExclusionKey> = self.entries.iter().filter(|(_, e)| e.until <= now).map(|(k, _)| k.clone()).collect();
        for k in &expired {
            self.remove(k);
        }
        expired.len()
    }

    fn list(&self, now: Instant) -> Vec<Exclusion> {
        self.order
            .values()
            .filter_map(|k| self.entries.get(k).map(|e| (k, e)))
            .filter(|(_, e)| e.until > now)
            .map(|(k, e)| Exclusion { server: k.server, sni: k.sni.clone(), client: k.client, reason: e.reason, expires_in: e.until - now })
            .collect()
    }

    fn clear(&mut self) -> usize {
        self.order.clear();
        std::mem::take(&mut self.entries).len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::tls::clienthello::{TLS1_0, TLS1_3};

    fn hello(sni: Option<&str>, versions: &[u16], ech: bool) -> ClientHello {
        ClientHello {
            legacy_version: TLS1_2,
            versions: versions.to_vec(),
            sni: sni.map(String::from),
            ech,
            ..ClientHello::default()
        }
    }

    fn policy(f: impl FnOnce(&mut TlsSettings)) -> TlsPolicy {
        let mut s = TlsSettings::default();
        f(&mut s);
        TlsPolicy::from_settings(&s).unwrap()
    }

    const C: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const S: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 443);

    #[test]
    fn patterns() {
        let p = HostPattern::parse("*.Bank.example").unwrap();
        assert!(p.matches("www.bank.example") && p.matches("a.b.bank.example"));
        assert!(!p.matches("bank.example") && !p.matches("evilbank.example"));
        let p = HostPattern::parse("bank.example").unwrap();
        assert!(p.matches("bank.example") && !p.matches("www.bank.example"));
        for bad in ["", "*.", "a..b", "ex ample.com", "*"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn order_of_decisions() {
        let p = policy(|s| {
            s.do_not_inspect_hosts = vec!["*.bank.example".into()];
            s.do_not_inspect_src = vec!["198.18.0.128/25".into()];
            s.group.insert("health".into(), GroupDef { hosts: vec!["clinic.example".into()], dst: vec!["198.19.0.0/16".into()], ..GroupDef::default() });
            s.do_not_inspect_groups = vec!["health".into()];
        });
        assert_eq!(p.decide(&hello(Some("x.test"), &[TLS1_3], false), C, S), Decision::Inspect);
        assert_eq!(p.decide(&hello(Some("www.bank.example"), &[TLS1_3], false), C, S), Decision::Pass(PolicyReason::DoNotInspectHost));
        assert_eq!(p.decide(&hello(Some("clinic.example"), &[TLS1_3], false), C, S), Decision::Pass(PolicyReason::DoNotInspectHost));
        assert_eq!(p.decide(&hello(Some("x.test"), &[TLS1_3], false), Ipv4Addr::new(198, 18, 0, 200), S), Decision::Pass(PolicyReason::DoNotInspectSource));
        assert_eq!(p.decide(&hello(Some("x.test"), &[TLS1_3], false), C, SocketAddrV4::new(Ipv4Addr::new(198, 19, 3, 4), 443)), Decision::Pass(PolicyReason::DoNotInspectDestination));
        // Do-Not-Inspect comes before everything else, ECH and legacy included.
        assert_eq!(p.decide(&hello(Some("www.bank.example"), &[TLS1_0], true), C, S), Decision::Pass(PolicyReason::DoNotInspectHost));
        // An ECH extension (GREASE or real) is decided on the outer hello by default.
        assert_eq!(p.decide(&hello(Some("x.test"), &[TLS1_3], true), C, S), Decision::Inspect);
        assert_eq!(p.decide(&hello(Some("x.test"), &[TLS1_0], true), C, S), Decision::Pass(PolicyReason::LegacyTls));
        assert_eq!(policy(|s| s.ech = EchPolicy::Pass).decide(&hello(None, &[TLS1_3], true), C, S), Decision::Pass(PolicyReason::Ech));
        assert_eq!(p.decide(&hello(None, &[TLS1_0], false), C, S), Decision::Pass(PolicyReason::LegacyTls));
        let strict = policy(|s| {
            s.ech = EchPolicy::Block;
            s.legacy_tls = PassOrBlock::Block;
        });
        assert_eq!(strict.decide(&hello(None, &[TLS1_3], true), C, S), Decision::Block(PolicyReason::Ech));
        assert_eq!(strict.decide(&hello(None, &[TLS1_0], false), C, S), Decision::Block(PolicyReason::LegacyTls));
    }

    #[test]
    fn exclusion_cache() {
        let p = policy(|_| {});
        let h = hello(Some("mtls.test"), &[TLS1_3], false);
        let other_client = Ipv4Addr::new(198, 18, 0, 9);
        assert_eq!(p.decide(&h, C, S), Decision::Inspect);
        // A server-side reason: every client.
        assert_eq!(p.exclude(S, "mtls.test", None, ExclusionReason::ClientAuthRequested), None);
        assert_eq!(p.decide(&h, C, S), Decision::Pass(PolicyReason::ExclusionCache));
        assert_eq!(p.decide(&h, other_client, S), Decision::Pass(PolicyReason::ExclusionCache));
        assert_eq!(p.decide(&h, C, SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 3), 443)), Decision::Inspect, "per server");
        assert_eq!(p.decide(&h, C, SocketAddrV4::new(*S.ip(), 8443)), Decision::Inspect, "per server port");
        assert_eq!(p.exclusions().len(), 1);
        assert_eq!(p.clear_exclusions(), 1);
        assert_eq!(p.decide(&h, C, S), Decision::Inspect);
        // A client's rejection: that client only.
        p.exclude(S, "mtls.test", Some(C), ExclusionReason::ClientRejected);
        assert_eq!(p.decide(&h, C, S), Decision::Pass(PolicyReason::ExclusionCache));
        assert_eq!(p.decide(&h, other_client, S), Decision::Inspect, "another client is still inspected");
        let list = p.exclusions();
        assert_eq!((list[0].client, list[0].reason), (Some(C), ExclusionReason::ClientRejected));
    }

    #[test]
    fn the_exclusion_cache_is_bounded_lru_and_swept() {
        let p = policy(|s| s.exclusion_max = 1000);
        let mut evicted = 0;
        // 50,000 distinct SNIs from one client: the cache never holds more than its limit.
        for i in 0..50_000 {
            if p.exclude(S, &format!("h{i}.test"), Some(C), ExclusionReason::ClientRejected).is_some() {
                evicted += 1;
            }
        }
        assert_eq!(p.exclusions().len(), 1000);
        assert_eq!((evicted, p.exclusions_evicted()), (49_000, 49_000));
        // The oldest went first; using an entry keeps it.
        assert!(p.is_excluded(C, S, "h49000.test") && !p.is_excluded(C, S, "h48999.test"));
        p.exclude(S, "new.test", Some(C), ExclusionReason::ClientRejected);
        assert!(p.is_excluded(C, S, "h49000.test"), "recently used, not evicted");
        assert!(!p.is_excluded(C, S, "h49001.test"), "the least recently used was evicted");
        // Expired entries are swept.
        let short = policy(|s| s.exclusion_ttl = 1);
        short.exclude(S, "a.test", None, ExclusionReason::ClientAuthRequested);
        assert_eq!(short.sweep(), 0);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(short.sweep(), 1);
        assert!(short.exclusions().is_empty());
        assert!(TlsPolicy::from_settings(&TlsSettings { exclusion_max: 0, ..TlsSettings::default() }).unwrap_err().to_string().contains("tls.exclusion_max"));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let s = TlsSettings { do_not_inspect_src: vec!["198.18.0.1/24".into()], ..TlsSettings::default() };
        assert!(TlsPolicy::from_settings(&s).unwrap_err().to_string().contains("tls.do_not_inspect_src"));
        let s = TlsSettings { do_not_inspect_groups: vec!["nope".into()], ..TlsSettings::default() };
        assert!(TlsPolicy::from_settings(&s).unwrap_err().to_string().contains("nope"));
    }
}
