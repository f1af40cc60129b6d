//! `tls-inspect run`: loads the XDP program, pins its maps, loads the configured scopes, attaches
//! to both interfaces and holds them until SIGINT or SIGTERM, then detaches and removes its pins.

use std::ffi::CString;
use std::fs;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{DevMapHash, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode};
use aya::EbpfLoader;
use tls_inspect_common::{Config, ALL_MAPS, MAP_DST_ADDR, MAP_FLOWS, MAP_PEERS, MAP_SRC_ADDR, PROGRAM_NAME};
use tracing::{info, warn};

use super::config::{ConfigFile, XdpModeSetting};
use super::maps::{Maps, Paths};
use super::scopes::{QuicMode, ScopeSet};
use super::state::{self, Lock};
use super::supervisor::{Plan, Supervisor, TlsPlan};
use std::sync::Arc;

/// The XDP object, built by build.rs from `tls-inspect-ebpf`.
pub(crate) static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tls-inspect-xdp"));

pub struct RunOptions {
    pub paths: Paths,
    pub config: Option<PathBuf>,
    pub inside: Option<String>,
    pub outside: Option<String>,
    pub xdp_mode: Option<XdpModeSetting>,
    /// Worker threads; None: the config's (one per queue by default).
    pub workers: Option<usize>,
    pub no_workers: bool,
    pub on_exit: OnExit,
    pub metrics: Option<std::net::SocketAddr>,
}

pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this command loads and changes BPF programs and maps: run it as root");
    }
    Ok(())
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there yet.
pub fn ensure_bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(Paths::BPFFS) && l.contains(" bpf ")) {
        return Ok(());
    }
    fs::create_dir_all(Paths::BPFFS)?;
    let c = |s: &str| CString::new(s).map_err(|e| anyhow!("{e}"));
    let (src, target, fstype) = (c("bpf")?, c(Paths::BPFFS)?, c("bpf")?);
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("mounting bpffs at /sys/fs/bpf");
    }
    Ok(())
}

pub(crate) fn xdp_mode(setting: XdpModeSetting) -> XdpMode {
    match setting {
        XdpModeSetting::Native => XdpMode::Driver,
        XdpModeSetting::Generic => XdpMode::Skb,
    }
}

pub(crate) fn ifindex(field: &str, name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| anyhow!("{field}: '{name}': not an interface name"))?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("{field}: '{name}': no such interface in this network namespace");
    }
    Ok(index)
}

/// Removes the pin directory (links included, so the program detaches) when dropped armed: on
/// every error path of `run` before the appliance is up.
struct PinDir {
    path: PathBuf,
    armed: bool,
}

impl PinDir {
    fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    fn disarm(&mut self) {
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

pub fn run(opts: RunOptions) -> Result<()> {
    require_root()?;
    // From here on SIGINT/SIGTERM wait for `sigwait`, so every exit path cleans up.
    let signals = block_termination_signals()?;
    // Everything the operator wrote is checked before the kernel is touched.
    let file = match &opts.config {
        Some(path) => ConfigFile::read(path)?,
        None => ConfigFile::default(),
    };
    let inside = opts.inside.or(file.appliance.inside.clone()).context(
        "inside: no inside interface (give --inside or appliance.inside in the config)",
    )?;
    let outside = opts.outside.or(file.appliance.outside.clone()).context(
        "outside: no outside interface (give --outside or appliance.outside in the config)",
    )?;
    if inside == outside {
        bail!("inside and outside: both are '{inside}'; the appliance needs two interfaces");
    }
    let inside_ifindex = ifindex("inside", &inside)?;
    let outside_ifindex = ifindex("outside", &outside)?;
    let (policies, scopes) = file.scope_set(file.limits)?;
    let mut set = ScopeSet::new(file.limits);
    // QUIC is blocked by default where TLS is inspected: browsers then use TCP, which is.
    set.quic_default = if file.tls.inspect { QuicMode::Block } else { QuicMode::Pass };
    set.replace_with(policies, scopes)?;
    let tls = tls_plan(&file)?;
    let ips = ips_plan(&file)?;
    let mode = xdp_mode(opts.xdp_mode.unwrap_or(file.appliance.xdp_mode));

    ensure_bpffs()?;
    let paths = opts.paths;
    let daemon_lock = Lock::daemon(&paths)?;

    // A program left attached by an earlier run (crashed, or stopped with --on-exit bridge) is
    // adopted: traffic has kept flowing through it, and its tables stay as they are.
    let adopt = paths.pin(LINK_INSIDE).exists() && paths.pin(LINK_OUTSIDE).exists();
    let mut pins = PinDir::new(paths.pin_dir.clone());
    let _ebpf = if adopt {
        let maps = Maps::open(&paths)?;
        let config = maps.config()?;
        if (config.inside_ifindex, config.outside_ifindex) != (inside_ifindex, outside_ifindex) {
            pins.disarm();
            bail!(
                "instance '{}' is attached to other interfaces (ifindex {} and {}): run \
                 `tls-inspect detach` first",
                paths.instance,
                config.inside_ifindex,
                config.outside_ifindex
            );
        }
        match state::read(&paths) {
            Err(_) => {
                warn!("no state file: loading the configured scopes");
                Maps::open(&paths)?.stage(&set)?.commit()?;
                state::write(&paths, &set)?;
            }
            // The QUIC default follows this run's configuration (TLS inspection on or off).
            Ok(mut kept) if kept.quic_default != set.quic_default => {
                kept.quic_default = set.quic_default;
                Maps::open(&paths)?.stage(&kept)?.commit()?;
                state::write(&paths, &kept)?;
            }
            Ok(_) => {}
        }
        info!(
            instance = %paths.instance, %inside, %outside,
            "adopted the attached XDP program and its maps; policies and scopes are kept as \
             they are (`tls-inspect scope load` changes them)"
        );
        None
    } else {
        if paths.pin_dir.exists() {
            warn!(dir = %paths.pin_dir.display(), "removing pins left by an earlier run");
            fs::remove_dir_all(&paths.pin_dir)?;
        }
        Some(attach(&paths, &file, &set, (&inside, inside_ifindex), (&outside, outside_ifindex), mode)?)
    };
    if let Some(path) = &file.intel.file {
        let mode = file.intel.mode.unwrap_or(super::intel::IntelMode::Block);
        let n = super::intel::load_file(&paths, std::path::Path::new(path), mode)?;
        info!(entries = n, ?mode, "threat intelligence loaded");
    }
    let set = state::read(&paths)?;
    info!(
        instance = %paths.instance, %inside, %outside, ?mode,
        policies = set.policies.len(), scopes = set.scopes.len(),
        "attached; bridging, and steering matching TCP flows"
    );
    let logger = if file.log.eve.is_some() || file.log.stdout {
        Some(crate::log::Logger::start(crate::log::LogTargets {
            file: file.log.eve.as_ref().map(PathBuf::from),
            stdout: file.log.stdout,
        })?)
    } else {
        None
    };
    let supervisor = if opts.no_workers {
        None
    } else {
        Some(Supervisor::start(
            &paths,
            Plan {
                inside: inside.clone(),
                outside: outside.clone(),
                workers: opts.workers.unwrap_or(file.dataplane.workers),
                engine: file.dataplane.engine(),
                metrics: opts.metrics,
                tls: tls.clone(),
                ips: ips.as_ref().map(|r| r.shared.clone()),
                log: logger.as_ref().map(|l| l.sender.clone()),
                alert_counts: logger.as_ref().map(|l| l.alert_counts.clone()),
            },
        )?)
    };
    let control = super::socket::ControlSocket::start(&paths, tls.as_ref().map(|t| t.policy.clone()), ips)?;
    // Running: from here on the pins outlive this process unless the operator says otherwise.
    pins.disarm();
    // A line a supervisor or test can wait for.
    println!("tls-inspect: running (instance {})", paths.instance);

    let signal = wait_for(&signals)?;
    info!(signal, "stopping the workers");
    if let Some(s) = supervisor {
        s.stop();
    }
    if let Some(l) = logger {
        l.stop();
    }
    control.stop();
    drop(daemon_lock);
    match opts.on_exit {
        OnExit::Bridge => info!(
            "the XDP program stays attached and bridges everything (`tls-inspect detach` removes it)"
        ),
        OnExit::Detach => {
            detach(&paths)?;
            info!("detached; pins and state removed");
        }
    }
    Ok(())
}

/// Compiles the IPS rules when `[ips] enabled` is on.
fn ips_plan(file: &ConfigFile) -> Result<Option<super::rules::RulesControl>> {
    if !file.ips.enabled {
        return Ok(None);
    }
    if !file.tls.inspect {
        bail!("ips.enabled: the IPS scans decrypted traffic: it needs [tls] inspect = true");
    }
    Ok(Some(super::rules::RulesControl::start(&file.ips)?))
}

/// Loads the CA and the roots trusted upstream when `[tls] inspect` is on.
fn tls_plan(file: &ConfigFile) -> Result<Option<TlsPlan>> {
    let settings = &file.tls;
    if !settings.inspect {
        return Ok(None);
    }
    let dir = PathBuf::from(&settings.ca_dir);
    let ca = crate::tls::ca::load(&dir).context("tls.ca_dir")?;
    if let Ok(info) = crate::tls::ca::show(&dir) {
        for w in info.warnings() {
            warn!("{w}");
            eprintln!("tls-inspect: warning: {w}");
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    for path in &settings.extra_roots {
        let text = fs::read_to_string(path).with_context(|| format!("tls.extra_roots: reading {path}"))?;
        let blocks = pem::parse_many(&text).map_err(|e| anyhow!("tls.extra_roots: {path}: {e}"))?;
        let mut n = 0;
        for b in blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
            roots
                .add(rustls::pki_types::CertificateDer::from(b.into_contents()))
                .map_err(|e| anyhow!("tls.extra_roots: {path}: {e}"))?;
            n += 1;
        }
        if n == 0 {
            bail!("tls.extra_roots: {path}: no certificate");
        }
    }
    let mut crls = Vec::new();
    for path in &settings.crls {
        let bytes = fs::read(path).with_context(|| format!("tls.crls: reading {path}"))?;
        let before = crls.len();
        match pem::parse_many(&bytes) {
            Ok(blocks) if !blocks.is_empty() => {
                crls.extend(blocks.into_iter().filter(|b| b.tag() == "X509 CRL").map(|b| rustls::pki_types::CertificateRevocationListDer::from(b.into_contents())));
            }
            // Not PEM: one DER CRL.
            _ => crls.push(rustls::pki_types::CertificateRevocationListDer::from(bytes)),
        }
        if crls.len() == before {
            bail!("tls.crls: {path}: no X509 CRL block");
        }
    }
    let config = crate::tls::intercept::TlsConfig::new(roots, crls, settings.untrusted_upstream).map_err(|e| {
        // webpki checks the CRLs when the verifier is built: a bad one names its file set.
        anyhow!("tls.crls: {e}")
    })?;
    info!(system_roots = added, extra = settings.extra_roots.len(), crl_files = settings.crls.len(), "TLS inspection on");
    Ok(Some(TlsPlan {
        config: Arc::new(config),
        policy: Arc::new(crate::tls::policy::TlsPolicy::from_settings(settings)?),
        ca: Arc::new(ca),
        cert_cache: settings.cert_cache,
    }))
}

/// Pinned links: the XDP program stays attached when the process is gone.
const LINK_INSIDE: &str = "link_inside";
const LINK_OUTSIDE: &str = "link_outside";
/// The program itself, for `tls-inspect debug prog-run`.
pub(crate) const PROGRAM_PIN: &str = "program";

/// Loads the object, pins its maps, writes the config and scopes, attaches to both interfaces
/// and pins the links.
fn attach(
    paths: &Paths,
    file: &ConfigFile,
    set: &ScopeSet,
    inside: (&str, u32),
    outside: (&str, u32),
    mode: XdpMode,
) -> Result<aya::Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_FLOWS, file.appliance.flow_table_size)
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
        flags: 0,
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

/// Blocks SIGINT and SIGTERM for this thread (and the threads it starts later).
pub(crate) fn block_termination_signals() -> Result<libc::sigset_t> {
    // SAFETY: plain signal-set manipulation on a zeroed sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("blocking signals failed");
        }
        Ok(set)
    }
}

/// Waits for one of the blocked signals in `set`.
pub(crate) fn wait_for(set: &libc::sigset_t) -> Result<i32> {
    let mut sig = 0;
    // SAFETY: `set` was initialised by block_termination_signals.
    if unsafe { libc::sigwait(set, &mut sig) } != 0 {
        bail!("sigwait failed");
    }
    Ok(sig)
}
