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
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues, XskMap};
use tls_inspect_common::{
    counter, port_index, slot_index, AddrKey, Config, FlowKey, FlowValue, GlobalCounters,
    ScopeBitmap, ScopeCell, ScopeCounters, SlotOwner, ALL_MAPS, GENERATIONS, MAP_CONFIG, MAP_COUNTERS,
    MAP_DST_ADDR, MAP_DST_PORT, MAP_FLOWS, MAP_FLOW_EPOCH, MAP_SCOPE_COUNTERS, MAP_SCOPE_INDEX, MAP_SLOTS, MAP_SRC_ADDR,
    MAP_SRC_PORT, MAP_XSKS, PORTS, SCOPE_CELLS,
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

/// Maps the first `len` bytes of a `BPF_F_MMAPABLE` array's values into this process, shared
/// with the XDP program (the kernel checks the flag and the size, rounded up to a page).
fn map_values(map: &MapData, len: usize) -> std::io::Result<*mut libc::c_void> {
    // SAFETY: a new shared mapping of the map's fd; the kernel fails the call for a map that is
    // not mmap-able or a length past its values. The caller unmaps it with the same length.
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
        return Err(std::io::Error::last_os_error());
    }
    Ok(ptr)
}

impl MappedTable {
    fn new(map: &MapData, entries: usize) -> Result<Self> {
        let ptr = map_values(map, entries * std::mem::size_of::<ScopeBitmap>()).context("mmap of a port table")?;
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
    scope_counters: PerCpuArray<MapData, ScopeCell>,
    scope_index: HashMap<MapData, u32, u32>,
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
        let missing: Vec<&str> = ALL_MAPS.into_iter().filter(|name| !paths.pin(name).exists()).collect();
        if missing.len() == ALL_MAPS.len() {
            bail!("no running appliance for instance '{}' (nothing pinned under {})", paths.instance, paths.pin_dir.display());
        }
        if let Some(name) = missing.first() {
            bail!(
                "the appliance of instance '{}' was attached by another version ({} is missing): \
                 `tls-inspect detach` it, then `run` again",
                paths.instance,
                paths.pin(name).display()
            );
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
            scope_index: open(paths, MAP_SCOPE_INDEX)?.try_into()?,
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
        // Counter elements exist, zeroed and tagged, before any packet can match the scope.
        let index = self.give_counters(set).context("giving scopes their counters")?;
        write_prefixes(&mut self.src_addr, target, &tables.src).context("writing source prefixes")?;
        write_prefixes(&mut self.dst_addr, target, &tables.dst).context("writing destination prefixes")?;
        tables.sport.fill(self.src_port.generation_mut(target));
        tables.dport.fill(self.dst_port.generation_mut(target));
        for (slot, owner) in tables.slots.iter().enumerate() {
            let counter = *index.get(&owner.scope_id).context("a slot's scope has no counters")?;
            self.slots.set(slot_index(target, slot as u32), SlotOwner { counter, ..*owner }, 0)?;
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

    /// Gives every scope of `set` an element of `TI_SCOPE_CNT` (`TI_SCOPE_IDX` keeps which):
    /// the one it has, or the lowest free one, zeroed and tagged with its ID before the
    /// index is recorded. Returns scope ID -> element.
    fn give_counters(&mut self, set: &ScopeSet) -> Result<std::collections::BTreeMap<u32, u32>> {
        let mut index: std::collections::BTreeMap<u32, u32> =
            self.scope_index.iter().filter_map(Result::ok).collect();
        let mut used: BTreeSet<u32> = index.values().copied().collect();
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        for &id in set.scopes.keys() {
            if index.contains_key(&id) {
                continue;
            }
            // At most MAX_SCOPES live and MAX_SCOPES staged: a free element always exists.
            let cell = (0..SCOPE_CELLS).find(|c| !used.contains(c)).context("no free scope counters")?;
            let zeros = ScopeCell { scope_id: id, ..ScopeCell::default() };
            self.scope_counters.set(cell, PerCpuValues::try_from(vec![zeros; cpus])?, 0)?;
            self.scope_index.insert(id, cell, 0)?;
            used.insert(cell);
            index.insert(id, cell);
        }
        Ok(index)
    }

    /// Counters of one scope, summed over CPUs (zeros if it has none yet).
    pub fn scope_counters(&self, scope_id: u32) -> ScopeCounters {
        let mut sum = ScopeCounters::default();
        let Ok(cell) = self.scope_index.get(&scope_id, 0) else {
            return sum;
        };
        if let Ok(per_cpu) = self.scope_counters.get(&cell, 0) {
            for c in per_cpu.iter().filter(|c| c.scope_id == scope_id) {
                sum.accumulate(&c.counters);
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
    /// Makes the staged generation live (one map write), then frees the counters of scopes that
    /// no longer exist (their elements keep their tags until given to another scope).
    pub fn commit(self) -> Result<()> {
        let mut config = self.maps.config()?;
        config.generation = self.target;
        self.maps.set_config(config).context("switching the live generation")?;
        let stale: Vec<u32> = self
            .maps
            .scope_index
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !self.keep.contains(id))
            .collect();
        for id in stale {
            let _ = self.maps.scope_index.remove(&id);
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

/// `TI_FLOWS` as the workers (and the benchmarks) change it: every batch of changes ends with
/// [`FlowTable::publish`], which moves `TI_FLOW_EPOCH` on so that no CPU of the XDP program
/// keeps using its copy of a flow from before the batch.
pub struct FlowTable {
    map: HashMap<MapData, FlowKey, FlowValue>,
    /// `TI_FLOW_EPOCH`'s one element, mapped into this process.
    epoch: *mut u64,
    changed: bool,
}

// SAFETY: the mapping is process-wide shared memory, only ever accessed atomically.
unsafe impl Send for FlowTable {}

impl FlowTable {
    pub fn open(paths: &Paths) -> Result<Self> {
        let map: HashMap<MapData, FlowKey, FlowValue> = open(paths, MAP_FLOWS)?.try_into()?;
        let Map::Array(data) = open(paths, MAP_FLOW_EPOCH)? else {
            bail!("map {MAP_FLOW_EPOCH} is not an array");
        };
        let info = data.info()?;
        if info.max_entries() != 1 || info.value_size() as usize != std::mem::size_of::<u64>() {
            bail!("map {MAP_FLOW_EPOCH} has an unexpected layout (built by another version?)");
        }
        let ptr = map_values(&data, std::mem::size_of::<u64>()).context("mmap of the flow epoch")?;
        Ok(Self { map, epoch: ptr.cast(), changed: false })
    }

    pub fn get(&self, key: &FlowKey) -> Option<FlowValue> {
        self.map.get(key, 0).ok()
    }

    /// Marks a flow bypass (with `entry`, the entry it has, as bypass: one write; otherwise read
    /// first); false if it has no entry (none is made).
    pub fn set_bypass(&mut self, key: &FlowKey, entry: Option<FlowValue>) -> bool {
        let value = match entry {
            Some(v) => v,
            None => match self.map.get(key, 0) {
                Ok(v) => FlowValue { action: tls_inspect_common::FLOW_BYPASS, ..v },
                Err(_) => return false,
            },
        };
        // BPF_EXIST: an entry removed in the meantime is not made again. An LRU update takes a
        // free node (evicting another flow if need be) before it checks that, so even a failed
        // one counts as a change.
        self.changed = true;
        self.map.insert(key, value, 2).is_ok()
    }

    pub fn remove(&mut self, key: &FlowKey) -> bool {
        self.changed = true;
        self.map.remove(key).is_ok()
    }

    /// Ends a batch of changes: the XDP program's per-CPU copies of flows are stale from here.
    pub fn publish(&mut self) {
        if std::mem::take(&mut self.changed) {
            // SAFETY: the mapped element, 8-aligned (page start), accessed only atomically here
            // and in the program.
            unsafe { std::sync::atomic::AtomicU64::from_ptr(self.epoch) }.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for FlowTable {
    fn drop(&mut self) {
        self.publish();
        // SAFETY: unmapping exactly what `open` mapped.
        unsafe {
            libc::munmap(self.epoch.cast(), std::mem::size_of::<u64>());
        }
    }
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
