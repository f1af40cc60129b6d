//! A rule header's addresses and ports, matched for real: Suricata's syntax (`any`, `$VAR`,
//! `[a,b]` groups, `!` negation at any depth, CIDRs, port ranges `a:b`, `a:`, `:b`) resolved
//! against `[ips.vars]` over Suricata's default address and port groups.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::addr::Ipv4Cidr;

/// Suricata's default address groups (suricata.yaml).
const DEFAULT_ADDRESS_VARS: &[(&str, &str)] = &[
    ("HOME_NET", "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]"),
    ("EXTERNAL_NET", "!$HOME_NET"),
    ("HTTP_SERVERS", "$HOME_NET"),
    ("SMTP_SERVERS", "$HOME_NET"),
    ("SQL_SERVERS", "$HOME_NET"),
    ("DNS_SERVERS", "$HOME_NET"),
    ("TELNET_SERVERS", "$HOME_NET"),
    ("AIM_SERVERS", "$EXTERNAL_NET"),
    ("DC_SERVERS", "$HOME_NET"),
    ("DNP3_SERVER", "$HOME_NET"),
    ("DNP3_CLIENT", "$HOME_NET"),
    ("MODBUS_CLIENT", "$HOME_NET"),
    ("MODBUS_SERVER", "$HOME_NET"),
    ("ENIP_CLIENT", "$HOME_NET"),
    ("ENIP_SERVER", "$HOME_NET"),
];

/// Suricata's default port groups, except `HTTP_PORTS`: decrypted HTTPS is HTTP on 443, so the
/// appliance's default adds 443 to Suricata's 80 (an ET rule on `$HTTP_PORTS` would otherwise
/// never see the traffic this appliance exists to decrypt).
const DEFAULT_PORT_VARS: &[(&str, &str)] = &[
    ("HTTP_PORTS", "[80,443]"),
    ("SHELLCODE_PORTS", "!80"),
    ("ORACLE_PORTS", "1521"),
    ("SSH_PORTS", "22"),
    ("DNP3_PORTS", "20000"),
    ("MODBUS_PORTS", "502"),
    ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
    ("FTP_PORTS", "21"),
    ("GENEVE_PORTS", "6081"),
    ("VXLAN_PORTS", "4789"),
    ("TEREDO_PORTS", "3544"),
];

/// The variables rules may name: Suricata's defaults with the operator's `[ips.vars]` on top.
#[derive(Clone, Debug)]
pub struct Vars {
    address: BTreeMap<String, String>,
    port: BTreeMap<String, String>,
}

impl Default for Vars {
    fn default() -> Self {
        let map = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self { address: map(DEFAULT_ADDRESS_VARS), port: map(DEFAULT_PORT_VARS) }
    }
}

impl Vars {
    /// The defaults with `overrides` (NAME -> value, NAME without `$`) replacing or adding
    /// variables: a name that ends in `_PORTS` or is a default port group is a port group, any
    /// other an address group. Every value is checked here, so a bad one fails at start.
    pub fn with(overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut vars = Self::default();
        for (name, value) in overrides {
            let name = name.trim_start_matches('$').to_string();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("ips.vars: '{name}': a variable name is letters, digits and _"));
            }
            if name.ends_with("_PORTS") || vars.port.contains_key(&name) {
                vars.port.insert(name, value.clone());
            } else {
                vars.address.insert(name, value.clone());
            }
        }
        for name in vars.address.keys() {
            vars.addresses(&format!("${name}")).map_err(|e| format!("ips.vars: {name}: {e}"))?;
        }
        for name in vars.port.keys() {
            vars.ports(&format!("${name}")).map_err(|e| format!("ips.vars: {name}: {e}"))?;
        }
        Ok(vars)
    }

    /// An address spec of a rule header.
    pub fn addresses(&self, spec: &str) -> Result<AddrSet, String> {
        let mut seen = Vec::new();
        parse_set(spec, &|name| self.address.get(name).cloned(), &parse_cidr, &mut seen).map(AddrSet)
    }

    /// A port spec of a rule header.
    pub fn ports(&self, spec: &str) -> Result<PortSet, String> {
        let mut seen = Vec::new();
        parse_set(spec, &|name| self.port.get(name).cloned(), &parse_port_range, &mut seen).map(PortSet)
    }
}

/// A set of items with negation, as a tree: matches when an included item matches and no
/// excluded one does (`[a,!b]`), or everything but its inside (`!x`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Set<T> {
    Any,
    Item(T),
    Not(Box<Set<T>>),
    /// Matches when one of the non-negated members does (or there are none) and no negated
    /// member excludes the value.
    Group(Vec<Set<T>>),
}

impl<T> Set<T> {
    fn matches(&self, f: &impl Fn(&T) -> bool) -> bool {
        match self {
            Set::Any => true,
            Set::Item(t) => f(t),
            Set::Not(inner) => !inner.matches(f),
            Set::Group(members) => {
                // (Without allocating: it runs for every pattern match a flow records.)
                let (mut has_pos, mut pos_hit) = (false, false);
                for m in members {
                    if matches!(m, Set::Not(_)) {
                        if !m.matches(f) {
                            return false;
                        }
                    } else {
                        has_pos = true;
                        pos_hit = pos_hit || m.matches(f);
                    }
                }
                !has_pos || pos_hit
            }
        }
    }
}

/// The addresses a rule header names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrSet(Set<Ipv4Cidr>);

impl AddrSet {
    pub fn any() -> Self {
        Self(Set::Any)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.matches(&|c: &Ipv4Cidr| c.contains_addr(ip))
    }
}

/// The ports a rule header names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet(Set<(u16, u16)>);

impl PortSet {
    pub fn any() -> Self {
        Self(Set::Any)
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0.matches(&|&(lo, hi): &(u16, u16)| (lo..=hi).contains(&port))
    }
}

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    // Suricata accepts host bits in a CIDR (`10.1.2.3/8` is 10.0.0.0/8).
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok().filter(|l| *l <= 32).ok_or_else(|| format!("'{s}': not a prefix length"))?),
        None => (s, 32),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("'{s}': not an IPv4 address or network"))?;
    Ok(Ipv4Cidr { addr: Ipv4Addr::from(u32::from(addr) & Ipv4Cidr::mask(len)), len })
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("'{s}': not a port or range"));
    let (lo, hi) = match s.split_once(':') {
        Some(("", hi)) => (0, port(hi)?),
        Some((lo, "")) => (port(lo)?, u16::MAX),
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(s)?, port(s)?),
    };
    if lo > hi {
        return Err(format!("'{s}': the range runs backwards"));
    }
    Ok((lo, hi))
}

/// Parses `spec` (`any`, an item, `$VAR`, `!x`, `[x,y,...]`); `seen` catches variables that
/// name themselves.
fn parse_set<T>(
    spec: &str,
    var: &dyn Fn(&str) -> Option<String>,
    item: &dyn Fn(&str) -> Result<T, String>,
    seen: &mut Vec<String>,
) -> Result<Set<T>, String> {
    let s = spec.trim();
    if s.is_empty() {
        return Err("an empty address or port".into());
    }
    if s == "any" {
        return Ok(Set::Any);
    }
    if let Some(rest) = s.strip_prefix('!') {
        return Ok(Set::Not(Box::new(parse_set(rest, var, item, seen)?)));
    }
    if let Some(name) = s.strip_prefix('$') {
        if seen.iter().any(|n| n == name) || seen.len() > 16 {
            return Err(format!("${name} refers to itself"));
        }
        let value = var(name).ok_or_else(|| format!("${name} is not defined (set it in [ips.vars])"))?;
        seen.push(name.to_string());
        let set = parse_set(&value, var, item, seen);
        seen.pop();
        return set;
    }
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| format!("'{s}': a group without its ']'"))?;
        let mut members = Vec::new();
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in inner.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.checked_sub(1).ok_or_else(|| format!("'{s}': unbalanced brackets"))?,
                ',' if depth == 0 => {
                    members.push(parse_set(&inner[start..i], var, item, seen)?);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if depth != 0 {
            return Err(format!("'{s}': unbalanced brackets"));
        }
        members.push(parse_set(&inner[start..], var, item, seen)?);
        return Ok(Set::Group(members));
    }
    item(s).map(Set::Item)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn variables_groups_and_negation_match_as_in_suricata() {
        let vars = Vars::default();
        let home = vars.addresses("$HOME_NET").unwrap();
        let external = vars.addresses("$EXTERNAL_NET").unwrap();
        assert!(home.contains(ip("10.1.2.3")) && home.contains(ip("192.168.7.7")));
        assert!(!home.contains(ip("198.18.0.2")));
        assert!(external.contains(ip("198.18.0.2")) && !external.contains(ip("172.16.0.1")));
        let mixed = vars.addresses("[10.0.0.0/8,!10.1.0.0/16,192.0.2.1]").unwrap();
        assert!(mixed.contains(ip("10.2.0.1")) && !mixed.contains(ip("10.1.0.1")) && mixed.contains(ip("192.0.2.1")));
        assert!(!mixed.contains(ip("192.0.2.2")));
        let only_not = vars.addresses("[!10.0.0.0/8]").unwrap();
        assert!(only_not.contains(ip("11.0.0.1")) && !only_not.contains(ip("10.0.0.1")));
        let nested = vars.addresses("![10.0.0.0/8,![10.5.0.0/16]]").unwrap();
        assert!(!nested.contains(ip("10.1.0.1")) && nested.contains(ip("11.0.0.1")));
        assert!(vars.addresses("10.9.9.9/8").unwrap().contains(ip("10.200.0.1")), "host bits are masked");
        assert!(vars.addresses("$NOPE").unwrap_err().contains("not defined"));
        assert!(vars.addresses("[10.0.0.0/8").is_err());
        assert!(vars.addresses("10.0.0.300").is_err());
    }

    #[test]
    fn ports_ranges_and_groups() {
        let vars = Vars::default();
        let http = vars.ports("$HTTP_PORTS").unwrap();
        assert!(http.contains(80) && http.contains(443) && !http.contains(8080));
        let p = vars.ports("[1024:,!8080,22]").unwrap();
        assert!(p.contains(22) && p.contains(65535) && p.contains(1024) && !p.contains(8080) && !p.contains(1023));
        assert!(vars.ports(":1023").unwrap().contains(0) && !vars.ports(":1023").unwrap().contains(1024));
        assert!(vars.ports("!80").unwrap().contains(443));
        assert!(vars.ports("$FILE_DATA_PORTS").unwrap().contains(143));
        assert!(vars.ports("90:80").is_err() && vars.ports("http").is_err() && vars.ports("70000").is_err());
    }

    #[test]
    fn the_operators_vars_replace_the_defaults_and_are_checked() {
        let mut o = BTreeMap::new();
        o.insert("HOME_NET".to_string(), "[198.18.0.0/24]".to_string());
        o.insert("HTTP_PORTS".to_string(), "[80,443,8443]".to_string());
        let v = Vars::with(&o).unwrap();
        assert!(v.addresses("$HOME_NET").unwrap().contains(ip("198.18.0.1")));
        assert!(!v.addresses("$EXTERNAL_NET").unwrap().contains(ip("198.18.0.1")), "EXTERNAL_NET follows HOME_NET");
        assert!(v.ports("$HTTP_PORTS").unwrap().contains(8443));
        o.insert("LOOP".to_string(), "$LOOP".to_string());
        assert!(Vars::with(&o).unwrap_err().contains("refers to itself"));
        let mut bad = BTreeMap::new();
        bad.insert("WEB_PORTS".to_string(), "[80,x]".to_string());
        assert!(Vars::with(&bad).unwrap_err().contains("WEB_PORTS"));
    }
}
