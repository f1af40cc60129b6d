//! The running appliance's maps, opened from their pins: the same code serves the `run` process
//! and every control command of a second process.
//!
//! Scope changes are staged into the generation the XDP program is not reading and made live by
//! one write of `TI_CONFIG.generation`, so no packet ever sees a half-written table.
#![allow(unsafe_code, reason = "the mmapped port tables (BPF_F_MMAPABLE): each use has its SAFETY line")]

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, XskMap};
use tls_inspect_common::{
    counter, port_index, slot_index, AddrKey, Config, FlowKey, FlowValue, GlobalCounters,
    ScopeBitmap, ScopeCounters, SlotOwner, ALL_MAPS, GENERATIONS, MAP_CONFIG, MAP_COUNTERS,
    MAP_DST_ADDR, MAP_DST_PORT, MAP_FLOWS, MAP_SCOPE_COUNTERS, MAP_SLOTS, MAP_SRC_ADDR,
    MAP_SRC_PORT, MAP_XSKS, PORTS,
};

use super::scopes::ScopeSet;
use crate::addr::Ipv4Cidr;

/// Where one appliance instance keeps its pins and its state.
#[derive(Debug, Clone)]
pub struct Paths {
    pub instance: String,
    /// bpffs directory of the pinned maps.
    pub pin_dir: PathBuf,
    /// Directory of the state file and locks.
    pub run_dir: PathBuf,
}

impl Paths {
    pub const BPFFS: &'static str = "/sys/fs/bpf";

    pub fn new(instance: &str) -> Result<Self> {
        let ok = !instance.is_empty()
            && instance.len() <= 64
            && instance.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            bail!("instance: '{instance}': 1 to 64 letters, digits, '-' or '_'");
        }
        Ok(Self {
            instance: instance.to_string(),
            pin_dir: Path::new(Self::BPFFS).join(instance),
            run_dir: Path::new("/run").join(instance),
        })
    }

    pub fn pin(&self, map: &str) -> PathBuf {
        self.pin_dir.join(map)
    }
}

/// A `BPF_F_MMAPABLE` array of bitmaps, mapped into this process.
struct MappedTable {
    ptr: *mut ScopeBitmap,
    entries: usize,
}

impl MappedTable {
    fn new(map: &MapData, entries: usize) -> Result<Self> {
        let len = entries * std::mem::size_of::<ScopeBitmap>();
        // SAFETY: mapping a BPF array map's fd with its exact value area size; the kernel checks
        // the flags and size and fails the call otherwise.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd()),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of a port table");
        }
        Ok(Self {
            ptr: ptr.cast(),
            entries,
        })
    }

    /// The 65,536 bitmaps of one generation.
    fn generation_mut(&mut self, generation: u32) -> &mut [ScopeBitmap] {
        let start = port_index(generation, 0) as usize;
        assert!(start + PORTS as usize <= self.entries);
        // SAFETY: in bounds (asserted); ScopeBitmap is plain integers; the XDP program only
        // reads this memory, and only the generation that is live, which is never this one.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), PORTS as usize) }
    }
}

impl Drop for MappedTable {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.entries * std::mem::size_of::<ScopeBitmap>());
        }
    }
}

/// The pinned maps of a running appliance.
pub struct Maps {
    config: Array<MapData, Config>,
    src_addr: LpmTrie<MapData, AddrKey, ScopeBitmap>,
    dst_addr: LpmTrie<MapData, AddrKey, ScopeBitmap>,
    prefix_capacity: u32,
    src_port: MappedTable,
    dst_port: MappedTable,
    slots: Array<MapData, SlotOwner>,
    counters: PerCpuArray<MapData, GlobalCounters>,
    scope_counters: PerCpuHashMap<MapData, u32, ScopeCounters>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    flow_capacity: u32,
}

fn open(paths: &Paths, name: &str) -> Result<Map> {
    let path = paths.pin(name);
    let data = MapData::from_pin(&path).map_err(|e| {
        anyhow!(
            "cannot open {}: {e} (is `tls-inspect run` running for instance '{}'?)",
            path.display(),
            paths.instance
        )
    })?;
    Map::from_map_data(data).with_context(|| format!("map {name}"))
}

impl Maps {
    pub fn open(paths: &Paths) -> Result<Self> {
        for name in ALL_MAPS {
            if !paths.pin(name).exists() {
                bail!(
                    "no running appliance for instance '{}' ({} is missing)",
                    paths.instance,
                    paths.pin(name).display()
                );
            }
        }
        let table = |name| -> Result<MappedTable> {
            let map = open(paths, name)?;
            let Map::Array(data) = map else {
                bail!("map {name} is not an array");
            };
            let info = data.info()?;
            let entries = (GENERATIONS * PORTS) as usize;
            if info.max_entries() as usize != entries || info.value_size() as usize != 128 {
                bail!("map {name} has an unexpected layout (built by another version?)");
            }
            MappedTable::new(&data, entries)
        };
        let src_addr: LpmTrie<MapData, AddrKey, ScopeBitmap> = open(paths, MAP_SRC_ADDR)?.try_into()?;
        let prefix_capacity = match open(paths, MAP_SRC_ADDR)? {
            Map::LpmTrie(data) => data.info()?.max_entries(),
            _ => bail!("map {MAP_SRC_ADDR} is not an LPM trie"),
        };
        let flow_capacity = match open(paths, MAP_FLOWS)? {
            Map::LruHashMap(data) => data.info()?.max_entries(),
            _ => bail!("map {MAP_FLOWS} is not an LRU hash"),
        };
        Ok(Self {
            config: open(paths, MAP_CONFIG)?.try_into()?,
            src_addr,
            dst_addr: open(paths, MAP_DST_ADDR)?.try_into()?,
            prefix_capacity,
            src_port: table(MAP_SRC_PORT)?,
            dst_port: table(MAP_DST_PORT)?,
            slots: open(paths, MAP_SLOTS)?.try_into()?,
            counters: open(paths, MAP_COUNTERS)?.try_into()?,
            scope_counters: open(paths, MAP_SCOPE_COUNTERS)?.try_into()?,
            flows: open(paths, MAP_FLOWS)?.try_into()?,
            flow_capacity,
        })
    }

    pub fn config(&self) -> Result<Config> {
        Ok(self.config.get(&0, 0)?)
    }

    pub fn set_config(&mut self, config: Config) -> Result<()> {
        Ok(self.config.set(0, config, 0)?)
    }

    /// Writes `set` into the generation that is not live and returns the staged change; nothing
    /// the XDP program reads has changed until [`Staged::commit`].
    pub fn stage(&mut self, set: &ScopeSet) -> Result<Staged<'_>> {
        let tables = set.compile();
        let per_generation = self.prefix_capacity / GENERATIONS;
        for (what, n) in [("source", tables.src.len()), ("destination", tables.dst.len())] {
            if n as u32 > per_generation {
                bail!(
                    "{what} addresses: {n} distinct prefixes do not fit the address table \
                     (appliance.prefix_table_size = {} holds {per_generation} per generation)",
                    self.prefix_capacity
                );
            }
        }
        let live = self.config()?.generation & 1;
        let target = live ^ 1;
        write_prefixes(&mut self.src_addr, target, &tables.src).context("writing source prefixes")?;
        write_prefixes(&mut self.dst_addr, target, &tables.dst).context("writing destination prefixes")?;
        tables.sport.fill(self.src_port.generation_mut(target));
        tables.dport.fill(self.dst_port.generation_mut(target));
        for (slot, owner) in tables.slots.iter().enumerate() {
            self.slots.set(slot_index(target, slot as u32), owner, 0)?;
        }
        // Counter entries exist before any packet can match the scope.
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        for id in set.scopes.keys() {
            if self.scope_counters.get(id, 0).is_err() {
                let zeros = PerCpuValues::try_from(vec![ScopeCounters::default(); cpus])?;
                self.scope_counters.insert(id, zeros, 0)?;
            }
        }
        Ok(Staged {
            maps: self,
            target,
            keep: set.scopes.keys().copied().collect(),
        })
    }

    /// Global counters, summed over CPUs.
    pub fn counters(&self) -> Result<[u64; counter::COUNT]> {
        let per_cpu = self.counters.get(&0, 0)?;
        let mut sum = [0u64; counter::COUNT];
        for c in per_cpu.iter() {
            for (s, v) in sum.iter_mut().zip(c.values.iter()) {
                *s += v;
            }
        }
        Ok(sum)
    }

    /// Counters of one scope, summed over CPUs (zeros if it has none yet).
    pub fn scope_counters(&self, scope_id: u32) -> ScopeCounters {
        let mut sum = ScopeCounters::default();
        if let Ok(per_cpu) = self.scope_counters.get(&scope_id, 0) {
            for c in per_cpu.iter() {
                sum.accumulate(c);
            }
        }
        sum
    }

    /// Entries in the flow table, and its capacity.
    pub fn flow_count(&self) -> (usize, u32) {
        (self.flows.keys().filter(Result::is_ok).count(), self.flow_capacity)
    }

    pub fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        self.flows.iter().filter_map(Result::ok).collect()
    }
}

/// A scope set written into the idle generation, waiting to go live.
pub struct Staged<'a> {
    maps: &'a mut Maps,
    target: u32,
    keep: BTreeSet<u32>,
}

impl Staged<'_> {
    /// Makes the staged generation live (one map write), then drops counters of scopes that no
    /// longer exist.
    pub fn commit(self) -> Result<()> {
        let mut config = self.maps.config()?;
        config.generation = self.target;
        self.maps.set_config(config).context("switching the live generation")?;
        let stale: Vec<u32> = self
            .maps
            .scope_counters
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !self.keep.contains(id))
            .collect();
        for id in stale {
            let _ = self.maps.scope_counters.remove(&id);
        }
        Ok(())
    }
}

fn write_prefixes(
    trie: &mut LpmTrie<MapData, AddrKey, ScopeBitmap>,
    generation: u32,
    table: &[(Ipv4Cidr, ScopeBitmap)],
) -> Result<()> {
    let stale: Vec<Key<AddrKey>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.data().generation == generation.to_be_bytes())
        .collect();
    for key in stale {
        trie.remove(&key)?;
    }
    for (cidr, bits) in table {
        let key = Key::new(
            AddrKey::GENERATION_BITS + u32::from(cidr.len),
            AddrKey::new(generation, cidr.addr.octets()),
        );
        trie.insert(&key, bits, 0)?;
    }
    Ok(())
}

/// Registers and unregisters AF_XDP sockets in `TI_XSKS`.
pub struct Sockets {
    map: XskMap<MapData>,
}

impl Sockets {
    pub fn open(paths: &Paths) -> Result<Self> {
        Ok(Self {
            map: open(paths, MAP_XSKS)?.try_into()?,
        })
    }

    pub fn register(&mut self, index: u32, fd: impl std::os::fd::AsRawFd) -> Result<()> {
        Ok(self.map.set(index, fd, 0)?)
    }

    pub fn unregister(&mut self, index: u32) -> Result<()> {
        Ok(self.map.unset(index)?)
    }
}
