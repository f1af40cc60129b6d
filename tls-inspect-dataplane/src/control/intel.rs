//! Threat intelligence: a list of IPv4 addresses and CIDRs whose traffic the XDP program drops
//! (block mode) or counts (monitor mode), in both directions, before anything else. Loaded like
//! the scopes: written into the idle generation, then switched with one write of `TI_CONFIG`.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues};
use serde::{Deserialize, Serialize};
use tls_inspect_common::{
    intel_index, AddrKey, Config, CONFIG_INTEL_ACTIVE, CONFIG_INTEL_BLOCK, CONFIG_INTEL_GENERATION, MAP_CONFIG,
    MAP_INTEL, MAP_INTEL_COUNTERS,
};

use super::maps::Paths;
use crate::addr::Ipv4Cidr;
use super::state::Lock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IntelMode {
    /// Drop matching traffic.
    Block,
    /// Count it and let it through.
    Monitor,
}

/// What `intel list` shows, kept in /run/<instance>/intel.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntelState {
    pub mode: IntelMode,
    pub source: String,
    pub entries: Vec<Ipv4Cidr>,
}

/// Parses an intelligence list: one IPv4 address or CIDR per line, `#` comments, blank lines.
/// Every bad line is an error naming its number; duplicates are merged.
pub fn parse(text: &str) -> Result<Vec<Ipv4Cidr>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let cidr: Ipv4Cidr = entry.parse().map_err(|e| anyhow!("line {}: '{entry}': {e}", i + 1))?;
        out.push(cidr);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn state_path(paths: &Paths) -> std::path::PathBuf {
    paths.run_dir.join("intel.json")
}

pub fn read_state(paths: &Paths) -> Option<IntelState> {
    serde_json::from_slice(&fs::read(state_path(paths)).ok()?).ok()
}

fn open(paths: &Paths, name: &str) -> Result<Map> {
    let data = MapData::from_pin(paths.pin(name))
        .map_err(|e| anyhow!("cannot open {}: {e} (is `tls-inspect run` running?)", paths.pin(name).display()))?;
    Ok(Map::from_map_data(data)?)
}

struct IntelMaps {
    config: Array<MapData, Config>,
    trie: LpmTrie<MapData, AddrKey, u32>,
    counters: PerCpuArray<MapData, u64>,
    half: u32,
}

impl IntelMaps {
    fn open(paths: &Paths) -> Result<Self> {
        let trie_map = open(paths, MAP_INTEL)?;
        let capacity = match &trie_map {
            Map::LpmTrie(d) => d.info()?.max_entries(),
            _ => bail!("{MAP_INTEL} is not an LPM trie"),
        };
        Ok(Self {
            config: open(paths, MAP_CONFIG)?.try_into()?,
            trie: trie_map.try_into()?,
            counters: open(paths, MAP_INTEL_COUNTERS)?.try_into()?,
            half: capacity / 2,
        })
    }
}

/// Replaces the list, atomically; nothing changes if any line is bad or the list is too long.
pub fn load(paths: &Paths, entries: &[Ipv4Cidr], mode: IntelMode, source: &str) -> Result<()> {
    let _lock = Lock::changes(paths)?;
    let mut m = IntelMaps::open(paths)?;
    if entries.len() as u32 > m.half {
        bail!(
            "{} entries do not fit the intelligence table ({} per generation; raise appliance.intel_table_size)",
            entries.len(),
            m.half
        );
    }
    let mut config = m.config.get(&0, 0)?;
    let live = u32::from(config.flags & CONFIG_INTEL_GENERATION != 0);
    let target = live ^ 1;
    let stale: Vec<Key<AddrKey>> = m
        .trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.data().generation == target.to_be_bytes())
        .collect();
    for k in stale {
        m.trie.remove(&k)?;
    }
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
    for (i, cidr) in entries.iter().enumerate() {
        let index = intel_index(target, m.half, i as u32);
        m.counters.set(index, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        let key = Key::new(AddrKey::GENERATION_BITS + u32::from(cidr.len), AddrKey::new(target, cidr.addr.octets()));
        m.trie.insert(&key, index, 0)?;
    }
    let state = IntelState {
        mode,
        source: source.to_string(),
        entries: entries.to_vec(),
    };
    let tmp = state_path(paths).with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
    fs::rename(&tmp, state_path(paths))?;
    config.flags &= !(CONFIG_INTEL_ACTIVE | CONFIG_INTEL_BLOCK | CONFIG_INTEL_GENERATION);
    config.flags |= CONFIG_INTEL_ACTIVE;
    if mode == IntelMode::Block {
        config.flags |= CONFIG_INTEL_BLOCK;
    }
    if target == 1 {
        config.flags |= CONFIG_INTEL_GENERATION;
    }
    m.config.set(0, config, 0).context("switching the intelligence list")?;
    Ok(())
}

pub fn load_file(paths: &Paths, file: &Path, mode: IntelMode) -> Result<usize> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let entries = parse(&text).with_context(|| format!("in {}", file.display()))?;
    load(paths, &entries, mode, &file.display().to_string())?;
    Ok(entries.len())
}

/// Stops using the list (its entries stay until the next load).
pub fn clear(paths: &Paths) -> Result<()> {
    let _lock = Lock::changes(paths)?;
    let mut m = IntelMaps::open(paths)?;
    let mut config = m.config.get(&0, 0)?;
    config.flags &= !(CONFIG_INTEL_ACTIVE | CONFIG_INTEL_BLOCK);
    m.config.set(0, config, 0)?;
    let _ = fs::remove_file(state_path(paths));
    Ok(())
}

/// Each live entry with the frames it has matched.
pub type IntelRows = Vec<(Ipv4Cidr, u64)>;

/// The live entries with the frames each has matched.
pub fn list(paths: &Paths) -> Result<(Option<IntelState>, IntelRows)> {
    let Some(state) = read_state(paths) else {
        return Ok((None, Vec::new()));
    };
    let m = IntelMaps::open(paths)?;
    let config = m.config.get(&0, 0)?;
    let live = u32::from(config.flags & CONFIG_INTEL_GENERATION != 0);
    let rows = state
        .entries
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let hits = m
                .counters
                .get(&intel_index(live, m.half, i as u32), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0);
            (*c, hits)
        })
        .collect();
    Ok((Some(state), rows))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn lists_with_comments_and_errors_by_line() {
        let l = parse("# feed\n198.18.5.5\n\n198.19.0.0/16  # a network\n198.18.5.5\n").unwrap();
        assert_eq!(l.len(), 2);
        let e = parse("198.18.0.1\nnot-an-ip\n").unwrap_err().to_string();
        assert!(e.starts_with("line 2: 'not-an-ip'"), "{e}");
        let e = parse("198.18.0.1/24\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("198.18.0.0/24"), "{e}");
        assert!(parse("").unwrap().is_empty());
    }
}
