//! The XDP program's life: loading the object, pinning its maps, program and links, attaching
//! it to both interfaces, and detaching it. The pins outlive the process that made them, so a
//! stopped (or crashed) appliance keeps bridging.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use aya::maps::{DevMapHash, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode};
use aya::EbpfLoader;
use tls_inspect_common::{Config, ALL_MAPS, MAP_DST_ADDR, MAP_FLOWS, MAP_PEERS, MAP_SRC_ADDR, PROGRAM_NAME};
use tracing::warn;

use super::config::{ConfigFile, XdpModeSetting};
use super::maps::{Maps, Paths};
use super::scopes::ScopeSet;
use super::state;

/// The XDP object, built by build.rs from `tls-inspect-ebpf`.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tls-inspect-xdp"));

pub fn mode(setting: XdpModeSetting) -> XdpMode {
    match setting {
        XdpModeSetting::Native => XdpMode::Driver,
        XdpModeSetting::Generic => XdpMode::Skb,
    }
}

/// Removes the pin directory (links included, so the program detaches) when dropped armed: on
/// every error path of `run` before the appliance is up.
pub struct PinDir {
    path: PathBuf,
    armed: bool,
}

impl PinDir {
    pub fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(dir = %self.path.display(), error = %e, "could not remove pins");
            }
        }
    }
}

/// Both links of an instance are pinned: a program is attached (by this run or an earlier one).
pub fn is_attached(paths: &Paths) -> bool {
    paths.pin(LINK_INSIDE).exists() && paths.pin(LINK_OUTSIDE).exists()
}

/// Pinned links: the XDP program stays attached when the process is gone.
const LINK_INSIDE: &str = "link_inside";
const LINK_OUTSIDE: &str = "link_outside";
/// The program itself, for `tls-inspect-bench prog-run`.
pub const PROGRAM_PIN: &str = "program";

/// Loads the object, pins its maps, writes the config and scopes, attaches to both interfaces
/// and pins the links.
pub fn attach(
    paths: &Paths,
    file: &ConfigFile,
    set: &ScopeSet,
    inside: (&str, u32),
    outside: (&str, u32),
    mode: XdpMode,
) -> Result<aya::Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_FLOWS, file.appliance.flow_table_size)
        .map_max_entries(tls_inspect_common::MAP_HANDSHAKES, file.appliance.flow_table_size)
        .map_max_entries(MAP_SRC_ADDR, file.appliance.prefix_table_size)
        .map_max_entries(MAP_DST_ADDR, file.appliance.prefix_table_size)
        .map_max_entries(tls_inspect_common::MAP_INTEL, file.appliance.intel_table_size)
        .map_max_entries(tls_inspect_common::MAP_INTEL_COUNTERS, file.appliance.intel_table_size)
        .load(XDP_OBJECT)
        .context("loading the XDP object")?;

    fs::create_dir_all(&paths.pin_dir)
        .with_context(|| format!("creating {}", paths.pin_dir.display()))?;
    for name in ALL_MAPS {
        let map = ebpf.map(name).with_context(|| format!("map {name} is missing from the object"))?;
        map.pin(paths.pin(name)).with_context(|| format!("pinning {name}"))?;
    }

    let mut peers: DevMapHash<MapData> = DevMapHash::try_from(
        ebpf.take_map(MAP_PEERS).context("map TI_PEERS")?,
    )?;
    peers.insert(inside.1, outside.1, None, 0)?;
    peers.insert(outside.1, inside.1, None, 0)?;

    let mut maps = Maps::open(paths)?;
    maps.set_config(Config {
        generation: 0,
        inside_ifindex: inside.1,
        outside_ifindex: outside.1,
        flags: if cfg!(target_arch = "x86_64") { tls_inspect_common::CONFIG_FLOW_CACHE } else { 0 },
    })?;
    maps.stage(set)?.commit()?;
    state::write(paths, set)?;

    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .context("the XDP program is missing from the object")?
        .try_into()?;
    program.load().context("loading the XDP program (verifier)")?;
    program.pin(paths.pin(PROGRAM_PIN)).context("pinning the XDP program")?;
    for ((name, index), pin) in [(inside, LINK_INSIDE), (outside, LINK_OUTSIDE)] {
        let id = program.attach_to_if_index(index, mode).with_context(|| {
            format!(
                "attaching XDP to {name} in {mode:?} mode (use --xdp-mode generic for a NIC \
                 without native XDP)"
            )
        })?;
        let link: FdLink = program.take_link(id)?.try_into().context("an XDP link without a bpf_link")?;
        link.pin(paths.pin(pin)).with_context(|| format!("pinning the link on {name}"))?;
    }
    Ok(ebpf)
}

/// `tls-inspect detach`: removes the program from both interfaces, its pins and its state.
pub fn detach(paths: &Paths) -> Result<()> {
    for pin in [LINK_INSIDE, LINK_OUTSIDE] {
        let path = paths.pin(pin);
        if path.exists() {
            let link = PinnedLink::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
            drop(link.unpin()?); // the last reference: the program detaches
        }
    }
    if paths.pin_dir.exists() {
        fs::remove_dir_all(&paths.pin_dir)?;
    }
    if paths.run_dir.exists() {
        fs::remove_dir_all(&paths.run_dir)?;
    }
    Ok(())
}

/// What a graceful stop leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnExit {
    /// Keep the XDP program attached: everything is bridged (an inline box that stops must not
    /// cut the network).
    Bridge,
    /// Detach the program and remove the pins and state.
    Detach,
}
