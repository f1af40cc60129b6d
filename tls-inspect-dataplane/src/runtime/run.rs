//! `tls-inspect run`, the composition root: checks the configuration, loads and attaches the
//! XDP program (or adopts the one left attached), loads the scopes, starts the logger, the
//! workers and the control socket, and holds them until SIGINT or SIGTERM; SIGHUP reopens the
//! log files; systemd hears when it is ready and, while the workers are well, its watchdog.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tracing::{error, info, warn};

use super::supervisor::{Plan, Supervisor};
use super::worker::TlsPlan;
use crate::control::config::{ConfigFile, XdpModeSetting};
use crate::control::maps::{Maps, Paths};
use crate::control::rules::RulesControl;
use crate::control::scopes::{QuicMode, ScopeSet};
use crate::control::state::{self, Lock};
use crate::control::xdp::{self, OnExit};
use super::service::{self, PidFile};
use crate::sys::{Signal, Signals};

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

pub fn run(opts: RunOptions) -> Result<()> {
    crate::sys::require_root()?;
    // From here on SIGINT/SIGTERM (and SIGHUP) wait for `Signals::wait`, so every exit path
    // cleans up, and a SIGHUP from logrotate never ends the process.
    let signals = Signals::block()?;
    // Everything the operator wrote is checked before the kernel is touched.
    let file = match &opts.config {
        Some(path) => ConfigFile::read(path)?,
        None => ConfigFile::default(),
    };
    let Prepared { inside, outside, inside_ifindex, outside_ifindex, set, mut tls, ips, intel } = prepare(&file, opts.inside, opts.outside)?;
    if let Some(t) = tls.as_mut() {
        open_key_log(&file, t)?;
    }
    let mode = xdp::mode(opts.xdp_mode.unwrap_or(file.appliance.xdp_mode));

    crate::sys::ensure_bpffs(Paths::BPFFS)?;
    let paths = opts.paths;
    let daemon_lock = Lock::daemon(&paths)?;
    let pid_file = PidFile::write(&paths)?;

    // A program left attached by an earlier run (crashed, or stopped with --on-exit bridge) is
    // adopted: traffic has kept flowing through it, and its tables stay as they are.
    let adopt = xdp::is_attached(&paths);
    let mut pins = xdp::PinDir::new(paths.pin_dir.clone());
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
        Some(xdp::attach(&paths, &file, &set, (&inside, inside_ifindex), (&outside, outside_ifindex), mode)?)
    };
    if let Some(list) = &intel {
        crate::control::intel::load(&paths, &list.entries, list.mode, &list.source)?;
        info!(entries = list.entries.len(), mode = ?list.mode, "threat intelligence loaded");
    }
    let set = state::read(&paths)?;
    info!(
        instance = %paths.instance, %inside, %outside, ?mode,
        policies = set.policies.len(), scopes = set.scopes.len(),
        "attached; bridging, and steering matching TCP flows"
    );
    let logger = if file.log.any() {
        Some(crate::log::Logger::start(crate::log::LogTargets {
            file: file.log.eve.as_ref().map(PathBuf::from),
            stdout: file.log.stdout,
            http: file.log.http,
        })?)
    } else {
        None
    };
    let pcap_log = match &file.log.pcap {
        Some(settings) => {
            let p = crate::log::pcap::PcapLog::start(settings.clone())?;
            warn!(dir = %settings.dir, "log.pcap: the decrypted plaintext of inspected flows is written to pcap files there");
            Some(p)
        }
        None => None,
    };
    let mut supervisor = if opts.no_workers {
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
                ips: match &ips {
                    Some(r) => Some(r.shared.clone()),
                    None => http_log_only(&file)?,
                },
                log: logger.as_ref().map(|l| l.sender.clone()),
                pcap: pcap_log.as_ref().map(|p| p.tap.clone()),
                alert_counts: logger.as_ref().map(|l| l.alert_counts.clone()),
            },
        )?)
    };
    let control = crate::control::socket::ControlSocket::start(&paths, tls.as_ref().map(|t| t.policy.clone()), ips)?;
    // Running: from here on the pins outlive this process unless the operator says otherwise.
    pins.disarm();
    // A line a supervisor or test can wait for.
    crate::log::console::running(&paths.instance);
    service::ready(&format!("running: instance {}", paths.instance));

    // The watchdog is fed while every worker is well; a sick appliance is restarted by systemd
    // (its XDP program bridges meanwhile and the new process adopts it).
    let watchdog = service::watchdog_period();
    let signal = loop {
        match signals.wait(watchdog.unwrap_or(Duration::from_secs(3600)))? {
            Some(Signal::Stop(sig)) => break sig,
            Some(Signal::Reopen) => {
                info!("SIGHUP: reopening the log files");
                if let Some(l) = &logger {
                    l.reopen();
                }
            }
            None => {}
        }
        if watchdog.is_some() {
            match supervisor.as_mut().map_or(Ok(()), Supervisor::check) {
                Ok(()) => service::alive(),
                Err(why) => {
                    error!(%why, "not feeding the watchdog");
                    service::unwell(&why);
                }
            }
        }
    };
    service::stopping();
    info!(signal, "stopping the workers");
    if let Some(s) = supervisor {
        s.stop();
    }
    if let Some(l) = logger {
        l.stop();
    }
    if let Some(p) = pcap_log {
        p.stop();
    }
    control.stop();
    drop(pid_file);
    drop(daemon_lock);
    match opts.on_exit {
        OnExit::Bridge => info!(
            "the XDP program stays attached and bridges everything (`tls-inspect detach` removes it)"
        ),
        OnExit::Detach => {
            xdp::detach(&paths)?;
            info!("detached; pins and state removed");
        }
    }
    Ok(())
}

/// The threat-intelligence list of the config, read and parsed.
pub struct IntelList {
    pub source: String,
    pub mode: crate::control::intel::IntelMode,
    pub entries: Vec<crate::addr::Ipv4Cidr>,
}

/// Everything `run` needs from the configuration, checked, before it touches the kernel.
pub struct Prepared {
    pub inside: String,
    pub outside: String,
    pub inside_ifindex: u32,
    pub outside_ifindex: u32,
    pub set: ScopeSet,
    pub tls: Option<TlsPlan>,
    pub ips: Option<RulesControl>,
    pub intel: Option<IntelList>,
}

/// Checks and prepares what `run` would refuse: the interfaces (given or configured, distinct,
/// present in this network namespace), the policies and scopes within their limits, the CA,
/// trust store, CRLs and key log, the IPS rules (compiled), the threat-intelligence list. No
/// side effect: `config check` runs exactly this.
pub fn prepare(file: &ConfigFile, inside: Option<String>, outside: Option<String>) -> Result<Prepared> {
    let inside = inside.or(file.appliance.inside.clone()).context(
        "inside: no inside interface (give --inside or appliance.inside in the config)",
    )?;
    let outside = outside.or(file.appliance.outside.clone()).context(
        "outside: no outside interface (give --outside or appliance.outside in the config)",
    )?;
    if inside == outside {
        bail!("inside and outside: both are '{inside}'; the appliance needs two interfaces");
    }
    let inside_ifindex = crate::sys::ifindex("inside", &inside)?;
    let outside_ifindex = crate::sys::ifindex("outside", &outside)?;
    let (policies, scopes) = file.scope_set(file.limits)?;
    let mut set = ScopeSet::new(file.limits);
    // QUIC is blocked by default where TLS is inspected: browsers then use TCP, which is.
    set.quic_default = if file.tls.inspect { QuicMode::Block } else { QuicMode::Pass };
    set.replace_with(policies, scopes)?;
    let tls = tls_plan(file)?;
    if let Some(p) = &file.log.pcap {
        p.check()?;
        if tls.is_none() {
            bail!("log.pcap: there is plaintext only where TLS is inspected: it needs [tls] inspect = true");
        }
    }
    let ips = ips_plan(file)?;
    let intel = match &file.intel.file {
        Some(path) => {
            let text = fs::read_to_string(path).with_context(|| format!("intel.file: reading {path}"))?;
            let entries = crate::control::intel::parse(&text).with_context(|| format!("intel.file: {path}"))?;
            Some(IntelList { source: path.clone(), mode: file.intel.mode.unwrap_or(crate::control::intel::IntelMode::Block), entries })
        }
        None => None,
    };
    Ok(Prepared { inside, outside, inside_ifindex, outside_ifindex, set, tls, ips, intel })
}

/// Without the IPS, inspected flows still have their `http` records: the workers follow HTTP
/// with a rule set of no rules (when TLS inspection is on and `[log] http` is logged).
fn http_log_only(file: &ConfigFile) -> Result<Option<crate::inspect::SharedRules>> {
    if !file.tls.inspect || !file.log.http || !file.log.any() {
        return Ok(None);
    }
    let (set, _) = crate::inspect::ips::Ruleset::compile(Vec::new(), &crate::inspect::ips::Options::default())?;
    Ok(Some(std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(set))))
}

/// Compiles the IPS rules when `[ips] enabled` is on.
fn ips_plan(file: &ConfigFile) -> Result<Option<RulesControl>> {
    if !file.ips.enabled {
        return Ok(None);
    }
    if !file.tls.inspect {
        bail!("ips.enabled: the IPS scans decrypted traffic: it needs [tls] inspect = true");
    }
    Ok(Some(RulesControl::start(&file.ips)?))
}

/// Loads the CA and the roots trusted upstream when `[tls] inspect` is on.
fn tls_plan(file: &ConfigFile) -> Result<Option<TlsPlan>> {
    let settings = &file.tls;
    if !settings.inspect {
        if file.log.keylog.is_some() {
            bail!("log.keylog: there are session secrets only where TLS is inspected: it needs [tls] inspect = true");
        }
        return Ok(None);
    }
    let dir = PathBuf::from(&settings.ca_dir);
    let ca = crate::tls::ca::load(&dir).context("tls.ca_dir")?;
    if let Ok(info) = crate::tls::ca::show(&dir) {
        for w in info.warnings() {
            warn!("{w}");
            crate::log::console::warning(&w);
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
    let mut config = crate::tls::intercept::TlsConfig::new(roots, crls, settings.untrusted_upstream).map_err(|e| {
        // webpki checks the CRLs when the verifier is built: a bad one names its file set.
        anyhow!("tls.crls: {e}")
    })?;
    config = if settings.resumption { config.with_upstream_sessions(settings.upstream_sessions) } else { config.without_resumption() };
    if let Some(path) = &file.log.keylog {
        if std::path::Path::new(path).is_dir() {
            bail!("log.keylog: {path} is a directory");
        }
    }
    info!(system_roots = added, extra = settings.extra_roots.len(), crl_files = settings.crls.len(), "TLS inspection on");
    Ok(Some(TlsPlan {
        config: Arc::new(config),
        policy: Arc::new(crate::tls::policy::TlsPolicy::from_settings(settings)?),
        ca: Arc::new(ca),
        cert_cache: settings.cert_cache,
    }))
}

/// Opens `[log] keylog` (0600) and gives its writer to the TLS configuration, with a warning.
fn open_key_log(file: &ConfigFile, tls: &mut TlsPlan) -> Result<()> {
    if let Some(path) = &file.log.keylog {
        let k = crate::tls::keylog::KeyLogFile::open(std::path::Path::new(path))?;
        let w = format!(
            "log.keylog: the secrets of every inspected session (both legs) are written to {}: whoever reads it can decrypt captures of this traffic; turn it off when done",
            k.path().display()
        );
        warn!("{w}");
        crate::log::console::warning(&w);
        let config = crate::tls::intercept::TlsConfig::clone(&tls.config).with_key_log(Arc::new(k));
        tls.config = Arc::new(config);
    }
    Ok(())
}
