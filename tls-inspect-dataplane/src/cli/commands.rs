//! The commands: each validates its input, applies it (scopes and policies through
//! `control::state::change`, all or nothing; rules and bypass through the running appliance's
//! control socket), and prints a short answer or, with `--json`, JSON.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tls_inspect_common::{counter, FlowAction, ScopeCounters};

use super::args::{CaCommand, RulesCommand, Side};
use crate::control::config::ConfigFile;
use crate::control::intel::IntelMode;
use crate::control::maps::{Maps, Paths, Sockets};
use crate::control::scopes::{Scope, ScopeSpec};
use crate::control::{intel, socket, state, xdp};

pub fn scope_add(
    paths: &Paths,
    policy: u32,
    src: &str,
    sport: &str,
    dst: &str,
    dport: &str,
    description: &str,
) -> Result<()> {
    let spec = ScopeSpec::parse(src, sport, dst, dport, description)?;
    let quota = spec.quota();
    let dims = (spec.src.len(), spec.sport.len(), spec.dst.len(), spec.dport.len());
    let id = state::change(paths, |set| Ok(set.add_scope(policy, spec)?))?;
    println!(
        "scope {id} added to policy {policy}: quota {quota} ({} src x {} sport x {} dst x {} dport)",
        dims.0, dims.1, dims.2, dims.3
    );
    Ok(())
}

pub fn scope_del(paths: &Paths, id: u32) -> Result<()> {
    let scope = state::change(paths, |set| Ok(set.remove_scope(id)?))?;
    println!("scope {id} deleted from policy {}", scope.policy);
    Ok(())
}

pub fn scope_load(paths: &Paths, file: &Path) -> Result<()> {
    let parsed = ConfigFile::read(file)?;
    let (n_policies, n_scopes) = state::change(paths, |set| {
        let (policies, scopes) = parsed
            .scope_set(set.limits)
            .with_context(|| format!("in file {}", file.display()))?;
        set.replace_with(policies, scopes)?;
        Ok((set.policies.len(), set.scopes.len()))
    })?;
    println!("loaded {n_policies} policies and {n_scopes} scopes from {}", file.display());
    if parsed.appliance.inside.is_some() || parsed.appliance.outside.is_some() {
        println!("note: [appliance] and [limits] apply at start only; they were not changed");
    }
    Ok(())
}

pub fn policy_add(paths: &Paths, id: u32, name: &str, enabled: bool) -> Result<()> {
    state::change(paths, |set| Ok(set.add_policy(id, name, enabled)?))?;
    println!("policy {id} added ({})", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

pub fn policy_del(paths: &Paths, id: u32) -> Result<()> {
    state::change(paths, |set| Ok(set.remove_policy(id)?))?;
    println!("policy {id} deleted");
    Ok(())
}

pub fn policy_enable(paths: &Paths, id: u32, enabled: bool) -> Result<()> {
    state::change(paths, |set| Ok(set.set_enabled(id, enabled)?))?;
    println!(
        "policy {id} {}; connections already decided keep their decision",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

fn counters_json(c: &ScopeCounters) -> serde_json::Value {
    c.fields().iter().map(|(n, v)| (n.to_string(), json!(v))).collect::<serde_json::Map<_, _>>().into()
}

fn scope_json(scope: &Scope, maps: &Maps, enabled: bool) -> serde_json::Value {
    let c = maps.scope_counters(scope.id);
    json!({
        "id": scope.id,
        "policy": scope.policy,
        "policy_enabled": enabled,
        "src": scope.spec.src,
        "sport": scope.spec.sport,
        "dst": scope.spec.dst,
        "dport": scope.spec.dport,
        "description": scope.spec.description,
        "quota": scope.spec.quota(),
        "counters": counters_json(&c),
    })
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

pub fn scope_list(paths: &Paths, as_json: bool) -> Result<()> {
    let set = state::read(paths)?;
    let maps = Maps::open(paths)?;
    let enabled = |p: u32| set.policies.get(&p).is_some_and(|p| p.enabled);
    if as_json {
        let scopes: Vec<_> = set.scopes.values().map(|s| scope_json(s, &maps, enabled(s.policy))).collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "scopes": scopes }))?);
        return Ok(());
    }
    println!(
        "{:>5} {:>6} {:>3} {:>7} {:>9} {:>9} {:>12}  MATCH",
        "SCOPE", "POLICY", "ON", "QUOTA", "STEERED", "FAILOPEN", "BYTES"
    );
    for s in set.scopes.values() {
        let c = maps.scope_counters(s.id);
        println!(
            "{:>5} {:>6} {:>3} {:>7} {:>9} {:>9} {:>12}  src {} sport {} dst {} dport {}{}",
            s.id,
            s.policy,
            if enabled(s.policy) { "yes" } else { "no" },
            s.spec.quota(),
            c.flows_steered,
            c.flows_failopen,
            c.steered_bytes,
            join(&s.spec.src),
            join(&s.spec.sport),
            join(&s.spec.dst),
            join(&s.spec.dport),
            if s.spec.description.is_empty() { String::new() } else { format!("  # {}", s.spec.description) }
        );
    }
    Ok(())
}

pub fn policy_list(paths: &Paths, as_json: bool) -> Result<()> {
    let set = state::read(paths)?;
    if as_json {
        let policies: Vec<_> = set
            .policies
            .values()
            .map(|p| {
                let scopes: Vec<u32> = set.scopes.values().filter(|s| s.policy == p.id).map(|s| s.id).collect();
                json!({ "id": p.id, "name": p.name, "enabled": p.enabled, "on_failure": p.on_failure, "scopes": scopes })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "policies": policies }))?);
        return Ok(());
    }
    println!("{:>6} {:>8} {:>6}  NAME", "POLICY", "ENABLED", "SCOPES");
    for p in set.policies.values() {
        let n = set.scopes.values().filter(|s| s.policy == p.id).count();
        println!("{:>6} {:>8} {:>6}  {}", p.id, if p.enabled { "yes" } else { "no" }, n, p.name);
    }
    Ok(())
}

pub fn stats(paths: &Paths, as_json: bool) -> Result<()> {
    let set = state::read(paths)?;
    let maps = Maps::open(paths)?;
    let global = maps.counters()?;
    let (flows, capacity) = maps.flow_count();
    let config = maps.config()?;
    // The running workers publish their counters a few times a second.
    let workers: serde_json::Value = std::fs::read(crate::runtime::supervisor::workers_file(paths))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({ "workers": [] }));
    let mut policies = serde_json::Map::new();
    for p in set.policies.values() {
        let mut sum = ScopeCounters::default();
        let mut scopes = serde_json::Map::new();
        for s in set.scopes.values().filter(|s| s.policy == p.id) {
            let c = maps.scope_counters(s.id);
            sum.accumulate(&c);
            scopes.insert(s.id.to_string(), counters_json(&c));
        }
        let mut entry = counters_json(&sum);
        entry["enabled"] = json!(p.enabled);
        entry["scopes"] = scopes.into();
        policies.insert(p.id.to_string(), entry);
    }
    if as_json {
        let xdp: serde_json::Map<String, serde_json::Value> = counter::NAMES
            .iter()
            .zip(global.iter())
            .map(|(n, v)| (n.to_string(), json!(v)))
            .collect();
        let out = json!({
            "instance": paths.instance,
            "generation": config.generation,
            "flows": { "entries": flows, "capacity": capacity },
            "xdp": xdp,
            "policies": policies,
            "workers": workers["workers"],
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("instance {} (table generation {})", paths.instance, config.generation);
    println!("xdp:");
    for (name, v) in counter::NAMES.iter().zip(global.iter()) {
        println!("  {name:<20} {v}");
    }
    println!("flows: {flows} of {capacity}");
    for w in workers["workers"].as_array().into_iter().flatten() {
        let fields: Vec<String> = w
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "worker")
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("worker {}: {}", w["worker"], fields.join(", "));
    }
    let line = |c: &serde_json::Value| {
        ScopeCounters::default()
            .fields()
            .iter()
            .map(|(n, _)| format!("{n} {}", c[n]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (id, p) in &policies {
        let state = if p["enabled"] == json!(true) { "enabled" } else { "disabled" };
        println!("policy {id} ({state}): {}", line(p));
        for (sid, c) in p["scopes"].as_object().into_iter().flatten() {
            println!("  scope {sid}: {}", line(c));
        }
    }
    Ok(())
}

pub fn flows(paths: &Paths, as_json: bool) -> Result<()> {
    let maps = Maps::open(paths)?;
    let rows: Vec<_> = maps
        .flows()
        .into_iter()
        .map(|(k, v)| {
            json!({
                "client": format!("{}:{}", Ipv4Addr::from(k.client_addr), u16::from_be_bytes(k.client_port)),
                "server": format!("{}:{}", Ipv4Addr::from(k.server_addr), u16::from_be_bytes(k.server_port)),
                "policy": v.policy_id,
                "scope": v.scope_id,
                "action": match FlowAction::try_from(v.action) {
                    Ok(FlowAction::Steer) => "steer".to_string(),
                    Ok(FlowAction::Bypass) => "bypass".to_string(),
                    Err(other) => format!("unknown({other})"),
                },
            })
        })
        .collect();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({ "flows": rows }))?);
    } else {
        for r in rows {
            println!("{} -> {} policy {} scope {} {}", r["client"].as_str().unwrap_or(""), r["server"].as_str().unwrap_or(""), r["policy"], r["scope"], r["action"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

fn print_ca(info: &crate::tls::ca::CaInfo) {
    println!("subject:   {}", info.subject);
    println!("issuer:    {}{}", info.issuer, if info.is_root { " (root)" } else { " (intermediate)" });
    println!("key:       {}", info.key_type);
    println!("valid:     {} to {}", info.not_before, info.not_after);
    println!("sha256:    {}", info.sha256);
    for w in info.warnings() {
        eprintln!("tls-inspect: warning: {w}");
    }
}

pub fn ca(dir: &Path, command: CaCommand) -> Result<()> {
    use crate::tls::ca;
    match command {
        CaCommand::Trial => {
            let info = ca::trial(dir)?;
            println!("trial CA written to {} (key {}/ca.key, mode 0600)", dir.display(), dir.display());
            print_ca(&info);
        }
        CaCommand::Import { cert, key, chain } => {
            let info = ca::import(dir, &cert, &key, chain.as_deref())?;
            println!("CA imported into {}", dir.display());
            print_ca(&info);
        }
        CaCommand::Show => print_ca(&ca::show(dir)?),
        CaCommand::Export { out } => {
            let n = ca::export(dir, &out)?;
            println!("{n} certificate(s) written to {}", out.display());
        }
    }
    Ok(())
}

pub fn detach(paths: &Paths) -> Result<()> {
    if state::Lock::daemon_is_running(paths)? {
        anyhow::bail!("`tls-inspect run` is active for instance '{}': stop it first", paths.instance);
    }
    xdp::detach(paths)?;
    println!("detached instance {}", paths.instance);
    Ok(())
}

/// `rules check FILE`: every rule that would not load, with its line and keyword (the parser)
/// or its sid and reason (the engine: variables, classtypes, Hyperscan), as `run` would load it
/// with the default `[ips]` settings.
pub fn rules_check(file: &Path, as_json: bool) -> Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let (rules, errors) = crate::inspect::rules::parse_rules(&text);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rules)?);
    }
    for e in &errors {
        eprintln!("{}: {e}", file.display());
    }
    let parsed = rules.len();
    let refused = if rules.is_empty() {
        Vec::new()
    } else {
        let (_, refused) = crate::inspect::ips::Ruleset::compile(rules, &crate::inspect::settings::IpsSettings::default().options()?)?;
        refused
    };
    for (sid, why) in &refused {
        eprintln!("{}: sid {sid}: {why}", file.display());
    }
    let bad = errors.len() + refused.len();
    println!("{} rules load, {bad} refused ({} by the parser, {} by the engine)", parsed - refused.len(), errors.len(), refused.len());
    if bad == 0 {
        Ok(())
    } else {
        anyhow::bail!("{bad} rule(s) refused")
    }
}

/// The `rules` commands that go to the running appliance.
pub fn rules(paths: &Paths, command: RulesCommand) -> Result<()> {
    let request = |line: &str| -> Result<()> {
        println!("{}", socket::request(paths, line)?);
        Ok(())
    };
    match command {
        RulesCommand::Check { file, json } => rules_check(&file, json),
        RulesCommand::List(f) => {
            let v = socket::request(paths, "rules list")?;
            if f.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:>8} {:>4} {:>7} {:>6}  MSG", "SID", "REV", "ENABLED", "ACTION");
                for r in v["rules"].as_array().into_iter().flatten() {
                    println!(
                        "{:>8} {:>4} {:>7} {:>6}  {}",
                        r["sid"],
                        r["rev"],
                        if r["enabled"] == true { "yes" } else { "no" },
                        r["action"].as_str().unwrap_or(""),
                        r["msg"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        RulesCommand::Enable { sid } => request(&format!("rules enable {sid}")),
        RulesCommand::Disable { sid } => request(&format!("rules disable {sid}")),
        RulesCommand::Action { sid, action } => request(&format!("rules action {sid} {action}")),
        RulesCommand::Reset => request("rules reset"),
        RulesCommand::Reload => request("rules reload"),
    }
}

pub fn intel_load(paths: &Paths, file: &Path, mode: IntelMode) -> Result<()> {
    let n = intel::load_file(paths, file, mode)?;
    println!("{n} entries loaded ({mode:?})");
    Ok(())
}

pub fn intel_list(paths: &Paths, as_json: bool) -> Result<()> {
    let (state, rows) = intel::list(paths)?;
    if as_json {
        let entries: Vec<_> = rows.iter().map(|(c, n)| json!({ "entry": c.to_string(), "frames": n })).collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "mode": state.map(|s| s.mode), "entries": entries }))?);
        return Ok(());
    }
    match state {
        None => println!("no list loaded"),
        Some(s) => {
            println!("mode {:?}, from {}", s.mode, s.source);
            for (c, n) in rows {
                println!("{c:<20} {n} frames");
            }
        }
    }
    Ok(())
}

pub fn intel_clear(paths: &Paths) -> Result<()> {
    intel::clear(paths)?;
    println!("intelligence list no longer used");
    Ok(())
}

pub fn bypass_list(paths: &Paths, as_json: bool) -> Result<()> {
    let v = socket::request(paths, "bypass list")?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for e in v["bypass"].as_array().into_iter().flatten() {
        println!(
            "{} {} clients {} ({}) expires in {} s",
            e["server"].as_str().unwrap_or(""),
            e["sni"].as_str().unwrap_or(""),
            e["clients"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or(""),
            e["expires_in"]
        );
    }
    Ok(())
}

pub fn bypass_clear(paths: &Paths) -> Result<()> {
    let v = socket::request(paths, "bypass clear")?;
    println!("{} entries cleared", v["cleared"]);
    Ok(())
}

/// `debug xsk-recv`: registers an AF_XDP socket for one queue, prints one line per frame the
/// XDP program steers to it, and unregisters it on the way out.
pub fn xsk_recv(paths: &Paths, iface: &str, side: Side, queue: u32, count: u64, timeout: Duration) -> Result<()> {
    if queue >= tls_inspect_common::MAX_QUEUES {
        anyhow::bail!("queue: '{queue}': at most {} queues per interface", tls_inspect_common::MAX_QUEUES);
    }
    let side = match side {
        Side::Inside => tls_inspect_common::SIDE_INSIDE,
        Side::Outside => tls_inspect_common::SIDE_OUTSIDE,
    };
    let mut probe = crate::phy::xsk::Probe::open(iface, queue)?;
    let mut sockets = Sockets::open(paths)?;
    let index = tls_inspect_common::xsk_index(side, queue);
    sockets.register(index, probe.fd())?;
    println!("xsk-recv: ready on {iface} queue {queue}");
    let deadline = Instant::now() + timeout;
    let mut received = 0u64;
    let result = (|| -> Result<()> {
        while received < count && Instant::now() < deadline {
            received += probe.next_batch(Duration::from_millis(100), |frame| println!("xsk-recv: {}", describe(frame)))? as u64;
        }
        Ok(())
    })();
    sockets.unregister(index)?;
    result?;
    println!("xsk-recv: {received} frames");
    Ok(())
}

/// One line per frame: `tcp 198.18.0.1:40000 > 198.18.0.2:443 flags=0x02 len=74`.
fn describe(frame: &[u8]) -> String {
    use tls_inspect_common::{parse_frame, Frame, L4};
    match parse_frame(frame) {
        Ok(Frame::Ipv4 { src, dst, l4, .. }) => {
            let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            match l4 {
                L4::Tcp { sport, dport, flags } => format!(
                    "tcp {s}:{} > {d}:{} flags=0x{flags:02x} len={}",
                    u16::from_be_bytes(sport),
                    u16::from_be_bytes(dport),
                    frame.len()
                ),
                L4::Udp { sport, dport } => format!("udp {s}:{} > {d}:{} len={}", u16::from_be_bytes(sport), u16::from_be_bytes(dport), frame.len()),
                other => format!("ipv4 {s} > {d} {other:?} len={}", frame.len()),
            }
        }
        Ok(other) => format!("{other:?} len={}", frame.len()),
        Err(e) => format!("unparsed ({e:?}) len={}", frame.len()),
    }
}

/// `config check FILE`: what `run` checks before it touches the kernel, and nothing more; a
/// summary of what would run.
pub fn config_check(file: &Path, inside: Option<String>, outside: Option<String>, as_json: bool) -> Result<()> {
    let config = ConfigFile::read(file)?;
    let p = crate::runtime::run::prepare(&config, inside, outside).with_context(|| format!("{}", file.display()))?;
    let rules = p.ips.as_ref().map(|r| r.shared.load().rules.len());
    let summary = json!({
        "config": file.display().to_string(),
        "inside": p.inside,
        "outside": p.outside,
        "policies": p.set.policies.len(),
        "scopes": p.set.scopes.len(),
        "tls_inspect": p.tls.is_some(),
        "ips_rules": rules,
        "intel_entries": p.intel.as_ref().map(|i| i.entries.len()),
        "keylog": config.log.keylog,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{}: OK: inside {}, outside {}; {} policies, {} scopes; TLS inspection {}; IPS {}; threat intelligence {}",
            file.display(),
            p.inside,
            p.outside,
            p.set.policies.len(),
            p.set.scopes.len(),
            if p.tls.is_some() { "on" } else { "off" },
            rules.map_or_else(|| "off".to_string(), |n| format!("{n} rules")),
            p.intel.as_ref().map_or_else(|| "off".to_string(), |i| format!("{} entries", i.entries.len())),
        );
    }
    Ok(())
}

/// One man page per command and subcommand (`tls-inspect.1`, `tls-inspect-scope-add.1`, ...),
/// generated from the command line's own declaration, into `dir`.
pub fn manpages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = <super::args::Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd, dir).with_context(|| format!("writing man pages into {}", dir.display()))?;
    Ok(())
}
