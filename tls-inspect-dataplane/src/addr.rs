//! Addresses and networks as the operator writes them, shared by every layer that matches on
//! them (scopes, threat intelligence, Do-Not-Inspect lists, the IPS whitelist).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 address or CIDR in standard form: no host bits set (`10.0.0.0/8`, not `10.1.2.3/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Cidr {
    pub fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// `other` lies inside this network.
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.len >= self.len && self.contains_addr(other.addr)
    }

    /// `ip` lies inside this network.
    pub fn contains_addr(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == u32::from(self.addr)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => {
                if l.is_empty() || !l.bytes().all(|c| c.is_ascii_digit()) || l.len() > 2 {
                    return Err(format!("'{l}' is not a prefix length"));
                }
                let len: u8 = l.parse().map_err(|_| format!("'{l}' is not a prefix length"))?;
                if len > 32 {
                    return Err(format!("prefix length {len} is over 32"));
                }
                (a, len)
            }
            None => (s, 32),
        };
        // std's parser accepts only the dotted-quad form with no leading zeros.
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an IPv4 address in dotted-quad form"))?;
        if u32::from(addr) & !Self::mask(len) != 0 {
            let net = Ipv4Addr::from(u32::from(addr) & Self::mask(len));
            return Err(format!("host bits are set; the network is {net}/{len}"));
        }
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 32 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `true` when `ip` lies in one of `list`.
pub fn in_any(list: &[Ipv4Cidr], ip: Ipv4Addr) -> bool {
    list.iter().any(|c| c.contains_addr(ip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn membership_follows_the_prefix() {
        let net: Ipv4Cidr = "198.18.0.0/15".parse().unwrap();
        assert!(net.contains_addr("198.19.255.255".parse().unwrap()));
        assert!(!net.contains_addr("198.20.0.0".parse().unwrap()));
        assert!(net.contains(&"198.18.4.0/24".parse().unwrap()));
        assert!(!net.contains(&"198.0.0.0/8".parse().unwrap()));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains_addr("203.0.113.9".parse().unwrap()));
        assert!(in_any(&[net, "10.0.0.0/8".parse().unwrap()], "10.1.2.3".parse().unwrap()));
        assert!(!in_any(&[], "10.1.2.3".parse().unwrap()));
    }
}
