//! The appliance's TOML configuration file: interfaces, table sizes, scope limits, policies and
//! their scopes. `scope load` reads the same format and applies only the policies.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::scopes::{ClientAuthMode, Limits, Policy, QuicMode, Scope, ScopeSet, ScopeSpec};
use crate::net::leg::LegConfig;
use crate::net::{EngineConfig, WhenFull};

/// The documented example configuration (tested to parse).
#[cfg(test)]
pub const EXAMPLE: &str = include_str!("../../../docs/example-config.toml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub appliance: Appliance,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub dataplane: DataplaneSettings,
    #[serde(default)]
    pub tls: crate::tls::policy::TlsSettings,
    #[serde(default)]
    pub log: crate::log::LogSettings,
    #[serde(default)]
    pub intel: IntelSettings,
    #[serde(default)]
    pub ips: crate::inspect::settings::IpsSettings,
    #[serde(default)]
    pub policy: Vec<PolicyDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Appliance {
    pub inside: Option<String>,
    pub outside: Option<String>,
    /// `native` (driver mode, the default) or `generic` (skb mode, slower; for NICs without XDP).
    pub xdp_mode: XdpModeSetting,
    /// Entries in the flow table (LRU: the oldest flow is evicted when full).
    pub flow_table_size: u32,
    /// Entries in each address trie, both generations together.
    pub prefix_table_size: u32,
    /// Entries of the threat-intelligence list, both generations together.
    pub intel_table_size: u32,
}

impl Default for Appliance {
    fn default() -> Self {
        Self {
            inside: None,
            outside: None,
            xdp_mode: XdpModeSetting::Native,
            flow_table_size: 262_144,
            prefix_table_size: 131_072,
            intel_table_size: 262_144,
        }
    }
}

/// `[intel]`: a threat-intelligence list loaded at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntelSettings {
    pub file: Option<String>,
    pub mode: Option<super::intel::IntelMode>,
}

/// The workers that carry steered flows.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataplaneSettings {
    /// Worker threads, one per receive queue; 0 means one per queue of the inside interface.
    pub workers: usize,
    /// Flows one worker holds at most.
    pub max_flows: usize,
    /// What a new flow gets when a worker's table is full.
    pub when_full: WhenFull,
    /// Seconds the server may take to accept a connection.
    pub connect_timeout: u64,
    /// Seconds without a packet after which a flow is reset on both sides.
    pub idle_timeout: u64,
    /// Bytes of each socket buffer (receive and send, on each leg of a flow).
    pub socket_buffer: usize,
}

impl Default for DataplaneSettings {
    fn default() -> Self {
        Self {
            workers: 0,
            max_flows: 65_536,
            when_full: WhenFull::FailOpen,
            connect_timeout: 75,
            idle_timeout: 3600,
            socket_buffer: 64 * 1024,
        }
    }
}

impl DataplaneSettings {
    pub fn validate(&self) -> Result<()> {
        if self.max_flows == 0 {
            bail!("dataplane.max_flows: must be at least 1");
        }
        if !(1..=86_400).contains(&self.connect_timeout) {
            bail!("dataplane.connect_timeout: '{}': 1 to 86400 seconds", self.connect_timeout);
        }
        if self.idle_timeout == 0 {
            bail!("dataplane.idle_timeout: must be at least 1 second");
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.socket_buffer) {
            bail!("dataplane.socket_buffer: '{}': 4096 to 16777216 bytes", self.socket_buffer);
        }
        if self.workers > tls_inspect_common::MAX_QUEUES as usize {
            bail!("dataplane.workers: '{}': at most {}", self.workers, tls_inspect_common::MAX_QUEUES);
        }
        Ok(())
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            max_flows: self.max_flows,
            mtu: 1500,
            leg: LegConfig {
                rx_buffer: self.socket_buffer,
                tx_buffer: self.socket_buffer,
            },
            connect_timeout: crate::net::secs(self.connect_timeout),
            idle_timeout: crate::net::secs(self.idle_timeout),
            when_full: self.when_full,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    Native,
    Generic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDef {
    pub id: u32,
    #[serde(default)]
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// UDP to the policy's scopes (QUIC): "block" or "pass"; unset: block while TLS is
    /// inspected, pass otherwise.
    #[serde(default)]
    pub quic: Option<QuicMode>,
    /// A server that asks for a client certificate: "exclude" (default) or "block".
    #[serde(default)]
    pub client_auth: ClientAuthMode,
    /// While no worker serves the scopes: "open" (bridged, default) or "closed" (dropped).
    #[serde(default)]
    pub on_failure: crate::control::scopes::OnFailure,
    #[serde(default)]
    pub scope: Vec<ScopeDef>,
}

fn yes() -> bool {
    true
}

/// A scope as written in the file: entries stay text until [`ScopeSpec::from_lists`] parses
/// them, so that an error names its field and value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeDef {
    /// Assigned (after the highest ID in the file) when omitted.
    pub id: Option<u32>,
    pub src: Vec<String>,
    pub sport: Vec<String>,
    pub dst: Vec<String>,
    pub dport: Vec<String>,
    #[serde(default)]
    pub description: String,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let file: Self = toml::from_str(text)?;
        if file.appliance.flow_table_size == 0 {
            bail!("appliance.flow_table_size: must be at least 1");
        }
        if file.appliance.intel_table_size < 2 {
            bail!("appliance.intel_table_size: must be at least 2");
        }
        if let Some(path) = &file.intel.file {
            let text = std::fs::read_to_string(path).with_context(|| format!("intel.file: reading {path}"))?;
            super::intel::parse(&text).with_context(|| format!("intel.file: {path}"))?;
        }
        if file.appliance.prefix_table_size < 2 {
            bail!("appliance.prefix_table_size: must be at least 2");
        }
        file.dataplane.validate()?;
        crate::tls::policy::TlsPolicy::from_settings(&file.tls)?;
        Ok(file)
    }

    /// The policies and scopes of the file, validated against `limits`.
    pub fn scope_set(&self, limits: Limits) -> Result<(BTreeMap<u32, Policy>, BTreeMap<u32, Scope>)> {
        let mut policies = BTreeMap::new();
        let mut scopes = BTreeMap::new();
        let mut next_id = self
            .policy
            .iter()
            .flat_map(|p| p.scope.iter().filter_map(|s| s.id))
            .max()
            .unwrap_or(0);
        for p in &self.policy {
            let policy = Policy {
                id: p.id,
                name: p.name.clone(),
                enabled: p.enabled,
                quic: p.quic,
                client_auth: p.client_auth,
                on_failure: p.on_failure,
            };
            if policies.insert(p.id, policy).is_some() {
                bail!("policy id: '{}': defined twice", p.id);
            }
            for s in &p.scope {
                let id = match s.id {
                    Some(id) => id,
                    None => {
                        next_id = next_id.checked_add(1).context("scope id: IDs are exhausted")?;
                        next_id
                    }
                };
                let spec = ScopeSpec::from_lists(&s.src, &s.sport, &s.dst, &s.dport, &s.description)
                    .map_err(|e| anyhow::anyhow!("policy {} scope {id}: {e}", p.id))?;
                let scope = Scope {
                    id,
                    policy: p.id,
                    spec,
                };
                if scopes.insert(id, scope).is_some() {
                    bail!("scope id: '{id}': defined twice");
                }
            }
        }
        // Validate the set as a whole (limits, counts) before anyone applies it.
        let mut set = ScopeSet::new(limits);
        set.replace_with(policies.clone(), scopes.clone())?;
        Ok((policies, scopes))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn example_parses() {
        let c = ConfigFile::parse(EXAMPLE).unwrap();
        let (p, s) = c.scope_set(c.limits).unwrap();
        assert!(!p.is_empty() && !s.is_empty());
    }

    #[test]
    fn ids_are_assigned_after_the_highest() {
        let c = ConfigFile::parse(
            r#"
            [[policy]]
            id = 1
            [[policy.scope]]
            src = ["198.18.0.0/24"]
            sport = ["0/65535"]
            dst = ["0.0.0.0/0"]
            dport = ["443/443"]
            [[policy.scope]]
            id = 7
            src = ["198.18.0.1"]
            sport = ["0/65535"]
            dst = ["0.0.0.0/0"]
            dport = ["80/80"]
            "#,
        )
        .unwrap();
        let (_, s) = c.scope_set(c.limits).unwrap();
        assert_eq!(s.keys().copied().collect::<Vec<_>>(), vec![7, 8]);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            ("[[policy]]\nid = 1\nbogus = 2\n", "bogus"),
            ("[appliance]\nflow_table_size = 0\n", "flow_table_size"),
            ("[appliance]\nxdp_mode = \"turbo\"\n", "turbo"),
            ("[[policy]]\nid = 1\n[[policy.scope]]\nsrc = [\"198.18.0.1/24\"]\nsport = [\"0/65535\"]\ndst = [\"0.0.0.0/0\"]\ndport = [\"443/443\"]\n", "198.18.0.0/24"),
            ("[[policy]]\nid = 1\n[[policy.scope]]\nsrc = [\"198.18.0.1\"]\nsport = [\"0-65535\"]\ndst = [\"0.0.0.0/0\"]\ndport = [\"443/443\"]\n", "start/end"),
            ("[[policy]]\nid = 1\n[[policy]]\nid = 1\n", "defined twice"),
            ("[limits]\nquota_per_scope = 1\n[[policy]]\nid = 1\n[[policy.scope]]\nsrc = [\"198.18.0.1\", \"198.18.0.2\"]\nsport = [\"0/65535\"]\ndst = [\"0.0.0.0/0\"]\ndport = [\"443/443\"]\n", "quota"),
        ];
        for (text, needle) in cases {
            let err = ConfigFile::parse(text).and_then(|c| c.scope_set(c.limits).map(|_| ()));
            let msg = format!("{:#}", err.unwrap_err());
            assert!(msg.contains(needle), "{text}\n=> {msg}");
        }
    }
}
