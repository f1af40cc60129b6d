//! What to do with a flow once its first bytes are known: inspect, pass (splice it unchanged) or
//! block. Do-Not-Inspect lists come first, as Cloudflare advises, then the automatic exclusion
//! cache, then what the ClientHello says (ECH, legacy versions).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Deserialize;

use super::clienthello::{ClientHello, TLS1_2};
use super::intercept::UntrustedUpstream;
use crate::control::scopes::Ipv4Cidr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PassOrBlock {
    Pass,
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
    pub untrusted_upstream: UntrustedUpstream,
    pub legacy_tls: PassOrBlock,
    pub ech: PassOrBlock,
    pub do_not_inspect_hosts: Vec<String>,
    pub do_not_inspect_src: Vec<String>,
    pub do_not_inspect_dst: Vec<String>,
    pub do_not_inspect_groups: Vec<String>,
    pub group: BTreeMap<String, GroupDef>,
    /// Seconds a (server, SNI) stays in the exclusion cache after mTLS or pinning.
    pub exclusion_ttl: u64,
    /// Forged certificates kept per worker.
    pub cert_cache: usize,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            inspect: false,
            ca_dir: super::ca::DEFAULT_DIR.to_string(),
            extra_roots: Vec::new(),
            untrusted_upstream: UntrustedUpstream::Block,
            legacy_tls: PassOrBlock::Pass,
            ech: PassOrBlock::Pass,
            do_not_inspect_hosts: Vec::new(),
            do_not_inspect_src: Vec::new(),
            do_not_inspect_dst: Vec::new(),
            do_not_inspect_groups: Vec::new(),
            group: BTreeMap::new(),
            exclusion_ttl: 12 * 3600,
            cert_cache: 4096,
        }
    }
}

/// The decision for one flow, with the reason the log gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Inspect,
    Pass(&'static str),
    Block(&'static str),
}

/// The parsed, validated policy the workers use.
#[derive(Debug)]
pub struct TlsPolicy {
    hosts: Vec<HostPattern>,
    src: Vec<Ipv4Cidr>,
    dst: Vec<Ipv4Cidr>,
    pub legacy_tls: PassOrBlock,
    pub ech: PassOrBlock,
    pub exclusion_ttl: Duration,
    exclusions: Mutex<HashMap<(Ipv4Addr, String), Instant>>,
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
        Ok(Self {
            hosts,
            src,
            dst,
            legacy_tls: s.legacy_tls,
            ech: s.ech,
            exclusion_ttl: Duration::from_secs(s.exclusion_ttl),
            exclusions: Mutex::new(HashMap::new()),
        })
    }

    fn in_cidrs(list: &[Ipv4Cidr], ip: Ipv4Addr) -> bool {
        list.iter().any(|c| u32::from(ip) & Ipv4Cidr::mask(c.len) == u32::from(c.addr))
    }

    pub fn decide(&self, hello: &ClientHello, client: Ipv4Addr, server: Ipv4Addr) -> Decision {
        if Self::in_cidrs(&self.src, client) {
            return Decision::Pass("do_not_inspect_source");
        }
        if Self::in_cidrs(&self.dst, server) {
            return Decision::Pass("do_not_inspect_destination");
        }
        if let Some(sni) = &hello.sni {
            if self.hosts.iter().any(|p| p.matches(sni)) {
                return Decision::Pass("do_not_inspect_host");
            }
        }
        if self.is_excluded(server, hello.sni.as_deref().unwrap_or("")) {
            return Decision::Pass("exclusion_cache");
        }
        if hello.ech {
            return match self.ech {
                PassOrBlock::Pass => Decision::Pass("ech"),
                PassOrBlock::Block => Decision::Block("ech"),
            };
        }
        if hello.max_version() < TLS1_2 {
            return match self.legacy_tls {
                PassOrBlock::Pass => Decision::Pass("legacy_tls"),
                PassOrBlock::Block => Decision::Block("legacy_tls"),
            };
        }
        Decision::Inspect
    }

    /// Adds (server, SNI) to the exclusion cache for the TTL.
    pub fn exclude(&self, server: Ipv4Addr, sni: &str) {
        if let Ok(mut m) = self.exclusions.lock() {
            m.insert((server, sni.to_string()), Instant::now() + self.exclusion_ttl);
        }
    }

    pub fn is_excluded(&self, server: Ipv4Addr, sni: &str) -> bool {
        let Ok(mut m) = self.exclusions.lock() else {
            return false;
        };
        match m.get(&(server, sni.to_string())) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                m.remove(&(server, sni.to_string()));
                false
            }
            None => false,
        }
    }

    /// The live exclusions with their remaining time.
    pub fn exclusions(&self) -> Vec<(Ipv4Addr, String, Duration)> {
        let now = Instant::now();
        self.exclusions
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, until)| **until > now)
                    .map(|((ip, sni), until)| (*ip, sni.clone(), *until - now))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn clear_exclusions(&self) -> usize {
        self.exclusions.lock().map(|mut m| std::mem::take(&mut *m).len()).unwrap_or(0)
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
    const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

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
        assert_eq!(p.decide(&hello(Some("www.bank.example"), &[TLS1_3], false), C, S), Decision::Pass("do_not_inspect_host"));
        assert_eq!(p.decide(&hello(Some("clinic.example"), &[TLS1_3], false), C, S), Decision::Pass("do_not_inspect_host"));
        assert_eq!(p.decide(&hello(Some("x.test"), &[TLS1_3], false), Ipv4Addr::new(198, 18, 0, 200), S), Decision::Pass("do_not_inspect_source"));
        assert_eq!(p.decide(&hello(Some("x.test"), &[TLS1_3], false), C, Ipv4Addr::new(198, 19, 3, 4)), Decision::Pass("do_not_inspect_destination"));
        // Do-Not-Inspect comes before everything else, ECH and legacy included.
        assert_eq!(p.decide(&hello(Some("www.bank.example"), &[TLS1_0], true), C, S), Decision::Pass("do_not_inspect_host"));
        assert_eq!(p.decide(&hello(None, &[TLS1_3], true), C, S), Decision::Pass("ech"));
        assert_eq!(p.decide(&hello(None, &[TLS1_0], false), C, S), Decision::Pass("legacy_tls"));
        let strict = policy(|s| {
            s.ech = PassOrBlock::Block;
            s.legacy_tls = PassOrBlock::Block;
        });
        assert_eq!(strict.decide(&hello(None, &[TLS1_3], true), C, S), Decision::Block("ech"));
        assert_eq!(strict.decide(&hello(None, &[TLS1_0], false), C, S), Decision::Block("legacy_tls"));
    }

    #[test]
    fn exclusion_cache() {
        let p = policy(|_| {});
        let h = hello(Some("mtls.test"), &[TLS1_3], false);
        assert_eq!(p.decide(&h, C, S), Decision::Inspect);
        p.exclude(S, "mtls.test");
        assert_eq!(p.decide(&h, C, S), Decision::Pass("exclusion_cache"));
        assert_eq!(p.decide(&h, C, Ipv4Addr::new(198, 18, 0, 3)), Decision::Inspect, "per server");
        assert_eq!(p.exclusions().len(), 1);
        assert_eq!(p.clear_exclusions(), 1);
        assert_eq!(p.decide(&h, C, S), Decision::Inspect);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let s = TlsSettings { do_not_inspect_src: vec!["198.18.0.1/24".into()], ..TlsSettings::default() };
        assert!(TlsPolicy::from_settings(&s).unwrap_err().to_string().contains("tls.do_not_inspect_src"));
        let s = TlsSettings { do_not_inspect_groups: vec!["nope".into()], ..TlsSettings::default() };
        assert!(TlsPolicy::from_settings(&s).unwrap_err().to_string().contains("nope"));
    }
}
