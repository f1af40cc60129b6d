//! Inspection scopes: the model (policies owning scopes of source addresses x source port ranges
//! x destination CIDRs x destination port ranges), its validation against configurable limits,
//! and the compilation of a whole scope set into the tables the XDP program reads.
//!
//! Everything here is pure: it never touches a map. `control::maps` writes what [`Tables`] holds.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tls_inspect_common::{ScopeBitmap, SlotOwner, MAX_SCOPES, SLOT_CLIENT_AUTH_BLOCK, SLOT_FAIL_CLOSED, SLOT_QUIC_BLOCK};

pub use crate::addr::Ipv4Cidr;

/// A rejected input: which field, which value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl ScopeError {
    pub fn new(field: impl Into<String>, value: impl fmt::Display, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: '{}': {}", self.field, self.value, self.reason)
    }
}

impl std::error::Error for ScopeError {}

/// An inclusive port range, written `start/end` (`443/443`, `0/65535` for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once('/')
            .ok_or_else(|| "a port range is written start/end, e.g. 443/443 or 0/65535".to_string())?;
        let port = |p: &str| -> Result<u16, String> {
            if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(format!("'{p}' is not a port number"));
            }
            p.parse::<u32>()
                .ok()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| format!("port {p} is out of range 0..65535"))
        };
        let (start, end) = (port(a)?, port(b)?);
        if start > end {
            return Err(format!("start {start} is greater than end {end}"));
        }
        Ok(Self { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.start, self.end)
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(PortRange);

/// Limits on what one scope and one policy may hold. The defaults are Alibaba Cloud Firewall's;
/// an operator raises them in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Source addresses (IPs or CIDRs) per scope.
    pub src_per_scope: usize,
    /// Entries per other field (source port ranges, destinations, destination port ranges).
    pub entries_per_field: usize,
    pub scopes_per_policy: usize,
    /// src x sport x dst x dport entries per scope.
    pub quota_per_scope: u64,
    /// Length of a scope's description.
    pub description_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            src_per_scope: 1000,
            entries_per_field: 100,
            scopes_per_policy: 10,
            quota_per_scope: 20_000,
            description_len: 256,
        }
    }
}

/// One scope's match, before it belongs to a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSpec {
    pub src: Vec<Ipv4Cidr>,
    pub sport: Vec<PortRange>,
    pub dst: Vec<Ipv4Cidr>,
    pub dport: Vec<PortRange>,
    #[serde(default)]
    pub description: String,
}

impl ScopeSpec {
    /// Items the scope covers: entries of each field multiplied.
    pub fn quota(&self) -> u64 {
        [self.src.len(), self.sport.len(), self.dst.len(), self.dport.len()]
            .iter()
            .map(|n| *n as u64)
            .product()
    }

    /// Parses the four fields from comma-separated text (the CLI's form).
    pub fn parse(
        src: &str,
        sport: &str,
        dst: &str,
        dport: &str,
        description: &str,
    ) -> Result<Self, ScopeError> {
        let split = |text: &str| text.split(',').map(str::to_string).collect::<Vec<_>>();
        Self::from_lists(&split(src), &split(sport), &split(dst), &split(dport), description)
    }

    /// Parses the four fields from lists of entries (the config file's form).
    pub fn from_lists(
        src: &[String],
        sport: &[String],
        dst: &[String],
        dport: &[String],
        description: &str,
    ) -> Result<Self, ScopeError> {
        Ok(Self {
            src: parse_list("src", src)?,
            sport: parse_list("sport", sport)?,
            dst: parse_list("dst", dst)?,
            dport: parse_list("dport", dport)?,
            description: description.to_string(),
        })
    }

    pub fn validate(&self, limits: &Limits) -> Result<(), ScopeError> {
        check_field("src", &self.src, limits.src_per_scope)?;
        check_field("sport", &self.sport, limits.entries_per_field)?;
        check_field("dst", &self.dst, limits.entries_per_field)?;
        check_field("dport", &self.dport, limits.entries_per_field)?;
        let quota = self.quota();
        if quota > limits.quota_per_scope {
            return Err(ScopeError::new(
                "quota",
                format!(
                    "{} x {} x {} x {} = {quota}",
                    self.src.len(),
                    self.sport.len(),
                    self.dst.len(),
                    self.dport.len()
                ),
                format!("over the limit of {} per scope", limits.quota_per_scope),
            ));
        }
        if self.description.chars().count() > limits.description_len {
            return Err(ScopeError::new(
                "description",
                truncate(&self.description, 40),
                format!("longer than {} characters", limits.description_len),
            ));
        }
        if self.description.chars().any(char::is_control) {
            return Err(ScopeError::new(
                "description",
                self.description.escape_debug(),
                "contains control characters",
            ));
        }
        Ok(())
    }
}

fn truncate(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    if t.len() < s.len() {
        format!("{t}...")
    } else {
        t
    }
}

fn parse_list<T: FromStr<Err = String>>(field: &str, items: &[String]) -> Result<Vec<T>, ScopeError> {
    items
        .iter()
        .map(|item| {
            let item = item.trim();
            if item.is_empty() {
                return Err(ScopeError::new(field, items.join(","), "empty entry in the list"));
            }
            item.parse().map_err(|reason| ScopeError::new(field, item, reason))
        })
        .collect()
}

fn check_field<T: fmt::Display + Ord>(field: &str, items: &[T], max: usize) -> Result<(), ScopeError> {
    if items.is_empty() {
        return Err(ScopeError::new(field, "", "at least one entry is required"));
    }
    if items.len() > max {
        return Err(ScopeError::new(
            field,
            format!("{} entries", items.len()),
            format!("over the limit of {max} per scope"),
        ));
    }
    let mut seen: Vec<&T> = items.iter().collect();
    seen.sort();
    if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
        return Err(ScopeError::new(field, w[0], "listed twice"));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: u32,
    #[serde(default)]
    pub name: String,
    pub enabled: bool,
    /// UDP to the policy's scopes (QUIC); None: the appliance's default ([`ScopeSet::quic_default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic: Option<QuicMode>,
    /// A server that asks for a client certificate.
    #[serde(default)]
    pub client_auth: ClientAuthMode,
    /// The scopes' traffic while no worker serves it.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// `on_failure` in a `[[policy]]`: what XDP does with a scope's flows while no worker serves
/// them (the appliance restarting, crashed or stopped with its program left attached).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Bridged uninspected (counted as fail-open): the network stays up.
    #[default]
    Open,
    /// Dropped (counted as dropped): nothing the scope covers leaves uninspected.
    Closed,
}

/// `quic` in a `[[policy]]`: what happens to UDP from a scope's sources to its destinations and
/// destination ports (QUIC, HTTP/3), which the appliance cannot inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuicMode {
    /// Dropped in XDP and counted: browsers fall back to TCP, where the scope inspects them.
    Block,
    /// Bridged and counted.
    #[default]
    Pass,
}

/// `client_auth` in a `[[policy]]`: what happens when a server with a valid certificate asks for
/// a client certificate, which an interceptor cannot forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// The (server, SNI) enters the exclusion cache and is passed untouched from then on.
    #[default]
    Exclude,
    /// The flow is blocked: no server can opt itself out of inspection by asking.
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub id: u32,
    pub policy: u32,
    #[serde(flatten)]
    pub spec: ScopeSpec,
}

/// Every policy and scope of an appliance: what the state file holds and the tables are built
/// from. Changes go through methods that validate first and change nothing on error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSet {
    pub limits: Limits,
    pub policies: BTreeMap<u32, Policy>,
    pub scopes: BTreeMap<u32, Scope>,
    /// Scope IDs are never reused, so logs stay unambiguous.
    pub next_scope_id: u32,
    /// `quic` of a policy that does not say: block while TLS is inspected, pass otherwise (set
    /// by `run` from the configuration).
    #[serde(default)]
    pub quic_default: QuicMode,
}

impl ScopeSet {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            policies: BTreeMap::new(),
            scopes: BTreeMap::new(),
            next_scope_id: 1,
            quic_default: QuicMode::Pass,
        }
    }

    /// Validates a whole set (as loaded from a file): limits per scope and policy, unique IDs,
    /// scopes that name existing policies, and the appliance-wide scope count.
    pub fn validate(&self) -> Result<(), ScopeError> {
        let mut per_policy: HashMap<u32, usize> = HashMap::new();
        for scope in self.scopes.values() {
            if scope.id == 0 {
                return Err(ScopeError::new("scope id", 0, "scope IDs start at 1"));
            }
            if !self.policies.contains_key(&scope.policy) {
                return Err(ScopeError::new(
                    "policy",
                    scope.policy,
                    format!("scope {} names a policy that does not exist", scope.id),
                ));
            }
            scope.spec.validate(&self.limits).map_err(|mut e| {
                e.field = format!("scope {}: {}", scope.id, e.field);
                e
            })?;
            let n = per_policy.entry(scope.policy).or_default();
            *n += 1;
            if *n > self.limits.scopes_per_policy {
                return Err(ScopeError::new(
                    "policy",
                    scope.policy,
                    format!("over the limit of {} scopes per policy", self.limits.scopes_per_policy),
                ));
            }
        }
        for policy in self.policies.values() {
            if policy.id == 0 {
                return Err(ScopeError::new("policy id", 0, "policy IDs start at 1"));
            }
            if policy.name.chars().any(char::is_control) || policy.name.len() > 128 {
                return Err(ScopeError::new(
                    "policy name",
                    policy.name.escape_debug(),
                    "at most 128 bytes, no control characters",
                ));
            }
        }
        if self.scopes.len() > MAX_SCOPES as usize {
            return Err(ScopeError::new(
                "scopes",
                self.scopes.len(),
                format!("an appliance holds at most {MAX_SCOPES} scopes"),
            ));
        }
        if let Some(max) = self.scopes.keys().next_back() {
            if self.next_scope_id <= *max {
                return Err(ScopeError::new("next_scope_id", self.next_scope_id, "not above every scope ID"));
            }
        }
        Ok(())
    }

    /// Adds a scope to an existing policy; returns its new ID.
    pub fn add_scope(&mut self, policy: u32, spec: ScopeSpec) -> Result<u32, ScopeError> {
        let mut next = self.clone();
        let id = next.next_scope_id;
        next.next_scope_id = id
            .checked_add(1)
            .ok_or_else(|| ScopeError::new("scope id", id, "scope IDs are exhausted"))?;
        if !next.policies.contains_key(&policy) {
            return Err(ScopeError::new(
                "policy",
                policy,
                "no such policy (create it with `tls-inspect policy add`)",
            ));
        }
        next.scopes.insert(id, Scope { id, policy, spec });
        next.validate()?;
        *self = next;
        Ok(id)
    }

    pub fn remove_scope(&mut self, id: u32) -> Result<Scope, ScopeError> {
        self.scopes
            .remove(&id)
            .ok_or_else(|| ScopeError::new("scope id", id, "no such scope"))
    }

    pub fn add_policy(&mut self, id: u32, name: &str, enabled: bool) -> Result<(), ScopeError> {
        if self.policies.contains_key(&id) {
            return Err(ScopeError::new("policy id", id, "a policy with this ID exists"));
        }
        let mut next = self.clone();
        next.policies.insert(
            id,
            Policy {
                id,
                name: name.to_string(),
                enabled,
                quic: None,
                client_auth: ClientAuthMode::default(),
                on_failure: OnFailure::default(),
            },
        );
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Removes a policy that has no scopes left.
    pub fn remove_policy(&mut self, id: u32) -> Result<(), ScopeError> {
        if !self.policies.contains_key(&id) {
            return Err(ScopeError::new("policy id", id, "no such policy"));
        }
        if let Some(s) = self.scopes.values().find(|s| s.policy == id) {
            return Err(ScopeError::new(
                "policy id",
                id,
                format!("the policy still has scope {} (delete its scopes first)", s.id),
            ));
        }
        self.policies.remove(&id);
        Ok(())
    }

    pub fn set_enabled(&mut self, id: u32, enabled: bool) -> Result<(), ScopeError> {
        let policy = self
            .policies
            .get_mut(&id)
            .ok_or_else(|| ScopeError::new("policy id", id, "no such policy"))?;
        policy.enabled = enabled;
        Ok(())
    }

    /// Replaces policies and scopes with another set's (as `scope load` does), keeping this
    /// appliance's limits and never reusing a scope ID.
    pub fn replace_with(&mut self, policies: BTreeMap<u32, Policy>, scopes: BTreeMap<u32, Scope>) -> Result<(), ScopeError> {
        let max_id = scopes.keys().next_back().copied().unwrap_or(0);
        let next = ScopeSet {
            limits: self.limits,
            policies,
            scopes,
            next_scope_id: self.next_scope_id.max(max_id.saturating_add(1)),
            quic_default: self.quic_default,
        };
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Compiles the scopes of enabled policies into lookup tables. Slots are handed out in
    /// (policy ID, scope ID) order, so a lower policy ID, then a lower scope ID, wins a tie.
    pub fn compile(&self) -> Tables {
        let mut active: Vec<&Scope> = self
            .scopes
            .values()
            .filter(|s| self.policies.get(&s.policy).is_some_and(|p| p.enabled))
            .collect();
        active.sort_by_key(|s| (s.policy, s.id));

        let mut slots = Vec::with_capacity(active.len());
        let mut src: BTreeMap<Ipv4Cidr, ScopeBitmap> = BTreeMap::new();
        let mut dst: BTreeMap<Ipv4Cidr, ScopeBitmap> = BTreeMap::new();
        let mut sport = Vec::new();
        let mut dport = Vec::new();
        for (slot, scope) in active.iter().enumerate() {
            let slot = slot as u32;
            let mut flags = 0;
            if let Some(p) = self.policies.get(&scope.policy) {
                if p.quic.unwrap_or(self.quic_default) == QuicMode::Block {
                    flags |= SLOT_QUIC_BLOCK;
                }
                if p.client_auth == ClientAuthMode::Block {
                    flags |= SLOT_CLIENT_AUTH_BLOCK;
                }
                if p.on_failure == OnFailure::Closed {
                    flags |= SLOT_FAIL_CLOSED;
                }
            }
            slots.push(SlotOwner {
                policy_id: scope.policy,
                scope_id: scope.id,
                flags,
                // Given at staging, from `TI_SCOPE_IDX`.
                counter: 0,
            });
            for c in &scope.spec.src {
                src.entry(*c).or_insert(ScopeBitmap::EMPTY).set(slot);
            }
            for c in &scope.spec.dst {
                dst.entry(*c).or_insert(ScopeBitmap::EMPTY).set(slot);
            }
            sport.extend(scope.spec.sport.iter().map(|r| (*r, slot)));
            dport.extend(scope.spec.dport.iter().map(|r| (*r, slot)));
        }
        Tables {
            slots,
            src: fold_prefixes(src),
            dst: fold_prefixes(dst),
            sport: PortTable::build(&sport),
            dport: PortTable::build(&dport),
        }
    }
}

/// What the XDP program reads, for one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// Slot -> owner.
    pub slots: Vec<SlotOwner>,
    /// Prefix -> scopes that accept every address in it. The LPM trie returns the longest
    /// matching prefix only, so each prefix carries the bits of every prefix that contains it.
    pub src: Vec<(Ipv4Cidr, ScopeBitmap)>,
    pub dst: Vec<(Ipv4Cidr, ScopeBitmap)>,
    pub sport: PortTable,
    pub dport: PortTable,
}

impl Tables {
    /// Classifies like the XDP program does (a model to test the compiled tables against).
    #[cfg(test)]
    pub fn classify(&self, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Option<SlotOwner> {
        let lpm = |table: &[(Ipv4Cidr, ScopeBitmap)], a: Ipv4Addr| {
            table
                .iter()
                .filter(|(c, _)| c.contains(&Ipv4Cidr { addr: a, len: 32 }))
                .max_by_key(|(c, _)| c.len)
                .map(|(_, b)| *b)
        };
        let s = lpm(&self.src, src)?;
        let d = lpm(&self.dst, dst)?;
        let slot = tls_inspect_common::first_common_bit(&s, &self.sport.get(sport), &d, &self.dport.get(dport))?;
        self.slots.get(slot as usize).copied()
    }
}

fn fold_prefixes(table: BTreeMap<Ipv4Cidr, ScopeBitmap>) -> Vec<(Ipv4Cidr, ScopeBitmap)> {
    table
        .iter()
        .map(|(cidr, bits)| {
            let mut bits = *bits;
            // Every shorter prefix that contains this one: at most 32 look-ups.
            for len in 0..cidr.len {
                let parent = Ipv4Cidr {
                    addr: Ipv4Addr::from(u32::from(cidr.addr) & Ipv4Cidr::mask(len)),
                    len,
                };
                if let Some(b) = table.get(&parent) {
                    bits.union_with(b);
                }
            }
            (*cidr, bits)
        })
        .collect()
}

/// Port -> scopes, as runs of equal bitmaps (`runs[i]` covers ports from its start to the next
/// run's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTable {
    pub runs: Vec<(u16, ScopeBitmap)>,
}

impl PortTable {
    /// Sweeps range boundaries once: O(ranges log ranges), whatever the ranges' widths.
    fn build(ranges: &[(PortRange, u32)]) -> Self {
        // (port, slot, +1 at start / -1 after end)
        let mut events: Vec<(u32, u32, i32)> = Vec::with_capacity(ranges.len() * 2);
        for (r, slot) in ranges {
            events.push((u32::from(r.start), *slot, 1));
            events.push((u32::from(r.end) + 1, *slot, -1));
        }
        events.sort_unstable();
        let mut cover: HashMap<u32, i32> = HashMap::new();
        let mut current = ScopeBitmap::EMPTY;
        let mut runs = vec![(0u16, ScopeBitmap::EMPTY)];
        let mut i = 0;
        while i < events.len() {
            let port = events[i].0;
            while i < events.len() && events[i].0 == port {
                let (_, slot, delta) = events[i];
                let n = cover.entry(slot).or_default();
                *n += delta;
                let w = &mut current.words[(slot / 64) as usize];
                if *n > 0 {
                    *w |= 1 << (slot % 64);
                } else {
                    *w &= !(1 << (slot % 64));
                }
                i += 1;
            }
            if port > 65535 {
                break;
            }
            let port = port as u16;
            match runs.last_mut() {
                Some(last) if last.0 == port => last.1 = current,
                Some(last) if last.1 == current => {}
                _ => runs.push((port, current)),
            }
        }
        Self { runs }
    }

    #[cfg(test)]
    pub fn get(&self, port: u16) -> ScopeBitmap {
        let i = self.runs.partition_point(|(start, _)| *start <= port);
        self.runs[i.saturating_sub(1)].1
    }

    /// Writes the bitmap of every port into `out` (65,536 entries).
    pub fn fill(&self, out: &mut [ScopeBitmap]) {
        for (i, (start, bits)) in self.runs.iter().enumerate() {
            let end = self.runs.get(i + 1).map_or(out.len(), |(s, _)| usize::from(*s));
            out[usize::from(*start)..end].fill(*bits);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn spec(src: &str, sport: &str, dst: &str, dport: &str) -> ScopeSpec {
        ScopeSpec::parse(src, sport, dst, dport, "").unwrap()
    }

    fn set_with(scopes: &[(u32, ScopeSpec)]) -> ScopeSet {
        let mut set = ScopeSet::new(Limits::default());
        for (policy, s) in scopes {
            if !set.policies.contains_key(policy) {
                set.add_policy(*policy, "", true).unwrap();
            }
            set.add_scope(*policy, s.clone()).unwrap();
        }
        set
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn port_ranges() {
        assert_eq!("443/443".parse::<PortRange>(), Ok(PortRange { start: 443, end: 443 }));
        assert_eq!("0/65535".parse::<PortRange>(), Ok(PortRange { start: 0, end: 65535 }));
        for bad in ["443", "443-443", "/443", "443/", "-1/5", "5/70000", "10/5", "a/b", "1/2/3", " 1/2", "+1/2"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            "198.18.0.0/15".parse::<Ipv4Cidr>(),
            Ok(Ipv4Cidr { addr: ip("198.18.0.0"), len: 15 })
        );
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().len, 0);
        assert_eq!("198.18.0.1".parse::<Ipv4Cidr>().unwrap().len, 32);
        let err = "198.18.0.1/24".parse::<Ipv4Cidr>().unwrap_err();
        assert!(err.contains("198.18.0.0/24"), "{err}");
        for bad in ["198.18.0.0/33", "198.18.0/24", "198.018.0.0/16", "::1", "1.2.3.4/", "1.2.3.4/a", "1.2.3.4/024", "host"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_field_and_value() {
        let e = ScopeSpec::parse("198.18.0.1", "1024/65535", "198.18.1.0/24", "443/70000", "").unwrap_err();
        assert_eq!(e.field, "dport");
        assert_eq!(e.value, "443/70000");
        let e = ScopeSpec::parse("198.18.0.1,,198.18.0.2", "0/65535", "0.0.0.0/0", "443/443", "").unwrap_err();
        assert_eq!(e.field, "src");
        let e = ScopeSpec::parse("198.18.0.1", "0/65535", "10.0.0.1/8", "443/443", "").unwrap_err();
        assert_eq!((e.field.as_str(), e.value.as_str()), ("dst", "10.0.0.1/8"));
    }

    #[test]
    fn limits_and_quota() {
        let limits = Limits::default();
        let srcs: Vec<String> = (0..1001).map(|i| format!("198.18.{}.{}", i / 256, i % 256)).collect();
        let s = ScopeSpec::parse(&srcs.join(","), "0/65535", "0.0.0.0/0", "443/443", "").unwrap();
        assert_eq!(s.validate(&limits).unwrap_err().field, "src");
        let s = ScopeSpec::parse(&srcs[..1000].join(","), "0/65535", "0.0.0.0/0", "443/443", "").unwrap();
        assert!(s.validate(&limits).is_ok());
        // 1000 x 1 x 1 x 21 = 21,000 > 20,000
        let dports: Vec<String> = (0..21).map(|p| format!("{p}/{p}")).collect();
        let s = ScopeSpec::parse(&srcs[..1000].join(","), "0/65535", "0.0.0.0/0", &dports.join(","), "").unwrap();
        assert_eq!(s.quota(), 21_000);
        assert_eq!(s.validate(&limits).unwrap_err().field, "quota");
        // Raised limits accept it: limits are configuration, not walls.
        let raised = Limits { quota_per_scope: 100_000, ..limits };
        assert!(s.validate(&raised).is_ok());
        let s = spec("198.18.0.1,198.18.0.1", "0/65535", "0.0.0.0/0", "443/443");
        assert_eq!(s.validate(&limits).unwrap_err().reason, "listed twice");
    }

    #[test]
    fn scopes_per_policy_and_atomic_add() {
        let mut set = set_with(&[]);
        set.add_policy(1, "p", true).unwrap();
        for _ in 0..10 {
            set.add_scope(1, spec("198.18.0.1", "0/65535", "0.0.0.0/0", "443/443")).unwrap();
        }
        let before = set.clone();
        let e = set.add_scope(1, spec("198.18.0.1", "0/65535", "0.0.0.0/0", "443/443")).unwrap_err();
        assert_eq!(e.field, "policy");
        assert_eq!(set, before, "a rejected add changes nothing");
        assert!(set.add_scope(9, spec("198.18.0.1", "0/65535", "0.0.0.0/0", "443/443")).is_err());
        assert_eq!(set, before);
    }

    #[test]
    fn ids_are_not_reused() {
        let mut set = set_with(&[(1, spec("198.18.0.1", "0/65535", "0.0.0.0/0", "443/443"))]);
        set.remove_scope(1).unwrap();
        assert_eq!(set.add_scope(1, spec("198.18.0.1", "0/65535", "0.0.0.0/0", "443/443")), Ok(2));
        assert!(set.remove_scope(1).is_err());
        assert!(set.remove_policy(1).is_err(), "policy still has scope 2");
        set.remove_scope(2).unwrap();
        set.remove_policy(1).unwrap();
    }

    #[test]
    fn classification_matches_all_four_dimensions() {
        let set = set_with(&[
            (1, spec("198.18.0.0/24", "1024/65535", "198.18.1.0/24", "443/443,8443/8443")),
            (2, spec("198.18.0.7", "0/65535", "0.0.0.0/0", "0/65535")),
        ]);
        let t = set.compile();
        let c = |s: &str, sp, d: &str, dp| t.classify(ip(s), sp, ip(d), dp).map(|o| (o.policy_id, o.scope_id));
        assert_eq!(c("198.18.0.5", 40000, "198.18.1.2", 443), Some((1, 1)));
        assert_eq!(c("198.18.0.5", 40000, "198.18.1.2", 8443), Some((1, 1)));
        assert_eq!(c("198.18.0.5", 40000, "198.18.1.2", 80), None);
        assert_eq!(c("198.18.0.5", 1000, "198.18.1.2", 443), None);
        assert_eq!(c("198.18.0.5", 40000, "198.18.2.2", 443), None);
        assert_eq!(c("198.18.3.5", 40000, "198.18.1.2", 443), None);
        // 198.18.0.7 is in both; policy 1 wins where both match, policy 2 elsewhere.
        assert_eq!(c("198.18.0.7", 40000, "198.18.1.2", 443), Some((1, 1)));
        assert_eq!(c("198.18.0.7", 40000, "198.18.1.2", 80), Some((2, 2)));
        assert_eq!(c("198.18.0.7", 5, "198.19.0.1", 22), Some((2, 2)));
    }

    #[test]
    fn disabled_policies_are_left_out() {
        let mut set = set_with(&[
            (1, spec("198.18.0.0/24", "0/65535", "0.0.0.0/0", "443/443")),
            (2, spec("198.18.0.0/24", "0/65535", "0.0.0.0/0", "443/443")),
        ]);
        set.set_enabled(1, false).unwrap();
        let t = set.compile();
        assert_eq!(t.slots.len(), 1);
        assert_eq!(t.classify(ip("198.18.0.1"), 1, ip("198.19.1.1"), 443).map(|o| o.policy_id), Some(2));
        set.set_enabled(2, false).unwrap();
        assert_eq!(set.compile().classify(ip("198.18.0.1"), 1, ip("198.19.1.1"), 443), None);
    }

    #[test]
    fn nested_prefixes_carry_their_parents_bits() {
        let set = set_with(&[
            (1, spec("198.18.0.0/16", "0/65535", "0.0.0.0/0", "443/443")),
            (2, spec("198.18.5.0/24", "0/65535", "198.18.9.9", "22/22")),
        ]);
        let t = set.compile();
        // The /24 is the longest match for 198.18.5.1 but scope 1 (the /16) must still match.
        assert_eq!(t.classify(ip("198.18.5.1"), 1, ip("198.18.9.9"), 443).map(|o| o.scope_id), Some(1));
        assert_eq!(t.classify(ip("198.18.5.1"), 1, ip("198.18.9.9"), 22).map(|o| o.scope_id), Some(2));
        assert_eq!(t.classify(ip("198.18.6.1"), 1, ip("198.18.9.9"), 22), None);
    }

    #[test]
    fn port_table_runs() {
        let r = |s: &str| s.parse::<PortRange>().unwrap();
        let t = PortTable::build(&[(r("10/20"), 0), (r("15/30"), 1), (r("20/20"), 2), (r("65535/65535"), 3), (r("0/0"), 4)]);
        let bits = |p| (0..5).filter(|s| t.get(p).contains(*s)).collect::<Vec<_>>();
        assert_eq!(bits(0), vec![4]);
        assert_eq!(bits(9), Vec::<u32>::new());
        assert_eq!(bits(10), vec![0]);
        assert_eq!(bits(15), vec![0, 1]);
        assert_eq!(bits(20), vec![0, 1, 2]);
        assert_eq!(bits(21), vec![1]);
        assert_eq!(bits(31), Vec::<u32>::new());
        assert_eq!(bits(65535), vec![3]);
        let mut full = vec![ScopeBitmap::EMPTY; 65536];
        t.fill(&mut full);
        for p in [0u16, 9, 10, 15, 20, 21, 30, 31, 65534, 65535] {
            assert_eq!(full[p as usize], t.get(p), "port {p}");
        }
        // Overlapping ranges of one scope: the bit stays until the last one ends.
        let t = PortTable::build(&[(r("1/100"), 0), (r("50/60"), 0)]);
        assert!(t.get(61).contains(0) && t.get(100).contains(0) && !t.get(101).contains(0));
    }

    #[test]
    fn compile_cost_follows_entries_not_the_space_they_cover() {
        // 1,000 sources x 100 destination ports in one scope: compile cost is per entry, never
        // per port or address covered.
        let srcs: Vec<String> = (0..1000).map(|i| format!("198.18.{}.{}", i / 256, i % 256)).collect();
        let dports: Vec<String> = (0..100).map(|p| format!("{}/{}", p * 100, p * 100 + 50)).collect();
        let mut set = ScopeSet::new(Limits { quota_per_scope: 1_000_000, ..Limits::default() });
        set.add_policy(1, "", true).unwrap();
        set.add_scope(1, ScopeSpec::parse(&srcs.join(","), "0/65535", "0.0.0.0/0", &dports.join(","), "").unwrap()).unwrap();
        let t = set.compile();
        // One trie entry per source written (not per address) and one destination entry for
        // 0.0.0.0/0, whatever it covers.
        assert_eq!(t.src.len(), 1000);
        assert_eq!(t.dst.len(), 1);
        assert!(t.classify(ip("198.18.3.231"), 1, ip("198.19.0.1"), 9925).is_some());
        assert!(t.classify(ip("198.18.3.231"), 1, ip("198.19.0.1"), 9951).is_none());
        assert!(t.classify(ip("198.18.3.232"), 1, ip("198.19.0.1"), 9925).is_none(), "source 1000 was never added");
    }
}
