//! The commands: each validates its input, applies it (scopes and policies through
//! `control::state::change`, all or nothing; rules and bypass through the running appliance's
//! control socket), and returns a [`Report`]: the same answer as text and as JSON (`--json`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tls_inspect_common::FlowAction;

use super::args::{CaCommand, RulesCommand, Side};
use super::output::{Format, Report};
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
) -> Result<Report> {
    let spec = ScopeSpec::parse(src, sport, dst, dport, description)?;
    let quota = spec.quota();
    let dims = (spec.src.len(), spec.sport.len(), spec.dst.len(), spec.dport.len());
    let id = state::change(paths, |set| Ok(set.add_scope(policy, spec)?))?;
    Ok(Report::new(
        json!({ "scope": id, "policy": policy, "quota": quota }),
        format!("scope {id} added to policy {policy}: quota {quota} ({} src x {} sport x {} dst x {} dport)", dims.0, dims.1, dims.2, dims.3),
    ))
}

pub fn scope_del(paths: &Paths, id: u32) -> Result<Report> {
    let scope = state::change(paths, |set| Ok(set.remove_scope(id)?))?;
    Ok(Report::new(json!({ "scope": id, "policy": scope.policy, "deleted": true }), format!("scope {id} deleted from policy {}", scope.policy)))
}

pub fn scope_load(paths: &Paths, file: &Path) -> Result<Report> {
    let parsed = ConfigFile::read(file)?;
    let (n_policies, n_scopes) = state::change(paths, |set| {
        let (policies, scopes) = parsed
            .scope_set(set.limits)
            .with_context(|| format!("in file {}", file.display()))?;
        set.replace_with(policies, scopes)?;
        Ok((set.policies.len(), set.scopes.len()))
    })?;
    let report = Report::new(
        json!({ "file": file.display().to_string(), "policies": n_policies, "scopes": n_scopes }),
        format!("loaded {n_policies} policies and {n_scopes} scopes from {}", file.display()),
    );
    let start_only = parsed.appliance.inside.is_some() || parsed.appliance.outside.is_some();
    Ok(report.warn(start_only.then(|| "[appliance] and [limits] apply at start only; they were not changed".to_string())))
}

pub fn policy_add(paths: &Paths, id: u32, name: &str, enabled: bool) -> Result<Report> {
    state::change(paths, |set| Ok(set.add_policy(id, name, enabled)?))?;
    Ok(Report::new(json!({ "policy": id, "name": name, "enabled": enabled }), format!("policy {id} added ({})", if enabled { "enabled" } else { "disabled" })))
}

pub fn policy_del(paths: &Paths, id: u32) -> Result<Report> {
    state::change(paths, |set| Ok(set.remove_policy(id)?))?;
    Ok(Report::new(json!({ "policy": id, "deleted": true }), format!("policy {id} deleted")))
}

pub fn policy_enable(paths: &Paths, id: u32, enabled: bool) -> Result<Report> {
    state::change(paths, |set| Ok(set.set_enabled(id, enabled)?))?;
    Ok(Report::new(
        json!({ "policy": id, "enabled": enabled }),
        format!("policy {id} {}; connections already decided keep their decision", if enabled { "enabled" } else { "disabled" }),
    ))
}

fn scope_json(scope: &Scope, maps: &Maps, enabled: bool) -> serde_json::Value {
    let mut counters = crate::runtime::metrics::Scrape::default();
    counters.add_scope(maps, scope.policy, scope.id);
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
        "metrics": counters.to_json(),
    })
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

pub fn scope_list(paths: &Paths) -> Result<Report> {
    use std::fmt::Write;
    let set = state::read(paths)?;
    let maps = Maps::open(paths)?;
    let enabled = |p: u32| set.policies.get(&p).is_some_and(|p| p.enabled);
    let scopes: Vec<_> = set.scopes.values().map(|s| scope_json(s, &maps, enabled(s.policy))).collect();
    let mut text = format!(
        "{:>5} {:>6} {:>3} {:>7} {:>9} {:>9} {:>12}  MATCH\n",
        "SCOPE", "POLICY", "ON", "QUOTA", "STEERED", "FAILOPEN", "BYTES"
    );
    for s in set.scopes.values() {
        let c = maps.scope_counters(s.id);
        let _ = writeln!(
            text,
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
    Ok(Report::new(json!({ "scopes": scopes }), text))
}

pub fn policy_list(paths: &Paths) -> Result<Report> {
    use std::fmt::Write;
    let set = state::read(paths)?;
    let policies: Vec<_> = set
        .policies
        .values()
        .map(|p| {
            let scopes: Vec<u32> = set.scopes.values().filter(|s| s.policy == p.id).map(|s| s.id).collect();
            json!({ "id": p.id, "name": p.name, "enabled": p.enabled, "on_failure": p.on_failure, "scopes": scopes })
        })
        .collect();
    let mut text = format!("{:>6} {:>8} {:>6}  NAME\n", "POLICY", "ENABLED", "SCOPES");
    for p in set.policies.values() {
        let n = set.scopes.values().filter(|s| s.policy == p.id).count();
        let _ = writeln!(text, "{:>6} {:>8} {:>6}  {}", p.id, if p.enabled { "yes" } else { "no" }, n, p.name);
    }
    Ok(Report::new(json!({ "policies": policies }), text))
}

/// `stats`: the families and samples the metrics endpoint serves (the XDP program's counters,
/// globally and per policy and scope, the flow table, every worker's counters), from one scrape;
/// the alerts per rule live in the running process and only the endpoint has them.
pub fn stats(paths: &Paths) -> Result<Report> {
    let set = state::read(paths)?;
    let maps = Maps::open(paths)?;
    let config = maps.config()?;
    let scopes: Vec<(u32, u32)> = set.scopes.values().map(|s| (s.policy, s.id)).collect();
    // The running workers publish their counters a few times a second, by counter name.
    let published: serde_json::Value = std::fs::read(crate::runtime::supervisor::workers_file(paths))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({ "workers": [] }));
    let workers: Vec<Vec<u64>> = published["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| crate::net::counters::COUNTERS.iter().map(|d| w[d.name].as_u64().unwrap_or(0)).collect())
        .collect();
    let scrape = crate::runtime::metrics::scrape(Some(&maps), &scopes, &workers, None);
    Ok(Report::new(
        json!({ "instance": paths.instance, "generation": config.generation, "metrics": scrape.to_json() }),
        format!("instance {} (table generation {})\n{}", paths.instance, config.generation, scrape.to_lines()),
    ))
}

pub fn flows(paths: &Paths) -> Result<Report> {
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
    let text: Vec<String> = rows
        .iter()
        .map(|r| format!("{} -> {} policy {} scope {} {}", r["client"].as_str().unwrap_or(""), r["server"].as_str().unwrap_or(""), r["policy"], r["scope"], r["action"].as_str().unwrap_or("")))
        .collect();
    Ok(Report::new(json!({ "flows": rows }), text.join("\n")))
}

/// The installed CA, after `what` (one line) was done to it.
fn ca_report(what: String, dir: &Path, info: &crate::tls::ca::CaInfo) -> Report {
    let text = format!(
        "{what}subject:   {}\nissuer:    {}{}\nkey:       {}\nvalid:     {} to {}\nsha256:    {}",
        info.subject,
        info.issuer,
        if info.is_root { " (root)" } else { " (intermediate)" },
        info.key_type,
        info.not_before,
        info.not_after,
        info.sha256
    );
    let json = json!({
        "dir": dir.display().to_string(),
        "subject": info.subject,
        "issuer": info.issuer,
        "root": info.is_root,
        "key": info.key_type,
        "not_before": info.not_before.to_string(),
        "not_after": info.not_after.to_string(),
        "sha256": info.sha256,
    });
    Report::new(json, text).warn(info.warnings())
}

pub fn ca(dir: &Path, command: CaCommand) -> Result<Report> {
    use crate::tls::ca;
    Ok(match command {
        CaCommand::Trial => {
            let info = ca::trial(dir)?;
            ca_report(format!("trial CA written to {} (key {}/ca.key, mode 0600)\n", dir.display(), dir.display()), dir, &info)
        }
        CaCommand::Import { cert, key, chain } => {
            let info = ca::import(dir, &cert, &key, chain.as_deref())?;
            ca_report(format!("CA imported into {}\n", dir.display()), dir, &info)
        }
        CaCommand::Show => ca_report(String::new(), dir, &ca::show(dir)?),
        CaCommand::Export { out } => {
            let n = ca::export(dir, &out)?;
            Report::new(json!({ "certificates": n, "file": out.display().to_string() }), format!("{n} certificate(s) written to {}", out.display()))
        }
    })
}

pub fn detach(paths: &Paths) -> Result<Report> {
    if state::Lock::daemon_is_running(paths)? {
        anyhow::bail!("`tls-inspect run` is active for instance '{}': stop it first", paths.instance);
    }
    xdp::detach(paths)?;
    Ok(Report::new(json!({ "instance": paths.instance, "detached": true }), format!("detached instance {}", paths.instance)))
}

/// `rules check FILE`: every rule that would not load, with its line and keyword (the parser)
/// or its sid and reason (the engine: variables, classtypes, Hyperscan), as `run` would load it
/// with the default `[ips]` settings. Fails when any is refused.
pub fn rules_check(file: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let (rules, errors) = crate::inspect::rules::parse_rules(&text);
    let parsed = rules.len();
    let refused = if rules.is_empty() {
        Vec::new()
    } else {
        let (_, refused) = crate::inspect::ips::Ruleset::compile(rules, &crate::inspect::settings::IpsSettings::default().options()?)?;
        refused
    };
    let mut lines: Vec<String> = errors.iter().map(|e| format!("{}: {e}", file.display())).collect();
    lines.extend(refused.iter().map(|(sid, why)| format!("{}: sid {sid}: {why}", file.display())));
    let bad = errors.len() + refused.len();
    let loaded = parsed - refused.len();
    lines.push(format!("{loaded} rules load, {bad} refused ({} by the parser, {} by the engine)", errors.len(), refused.len()));
    let json = json!({
        "file": file.display().to_string(),
        "loaded": loaded,
        "refused": bad,
        "parser": errors.iter().map(|e| json!({ "line": e.line, "keyword": e.keyword, "message": e.message })).collect::<Vec<_>>(),
        "engine": refused.iter().map(|(sid, why)| json!({ "sid": sid, "reason": why.to_string() })).collect::<Vec<_>>(),
    });
    Ok(Report::new(json, lines.join("\n")).fail((bad > 0).then(|| format!("{bad} rule(s) refused"))))
}

/// The `rules` commands that go to the running appliance.
pub fn rules(paths: &Paths, command: RulesCommand) -> Result<Report> {
    use std::fmt::Write;
    let request = |line: &str, text: String| -> Result<Report> { Ok(Report::new(socket::request(paths, line)?, text)) };
    match command {
        RulesCommand::Check { file } => rules_check(&file),
        RulesCommand::List => {
            let v = socket::request(paths, "rules list")?;
            let mut text = format!("{:>8} {:>4} {:>7} {:>6}  MSG\n", "SID", "REV", "ENABLED", "ACTION");
            for r in v["rules"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    text,
                    "{:>8} {:>4} {:>7} {:>6}  {}",
                    r["sid"],
                    r["rev"],
                    if r["enabled"] == true { "yes" } else { "no" },
                    r["action"].as_str().unwrap_or(""),
                    r["msg"].as_str().unwrap_or("")
                );
            }
            Ok(Report::new(v, text))
        }
        RulesCommand::Enable { sid } => request(&format!("rules enable {sid}"), format!("rule {sid} enabled for new flows")),
        RulesCommand::Disable { sid } => request(&format!("rules disable {sid}"), format!("rule {sid} disabled for new flows")),
        RulesCommand::Action { sid, action } => request(&format!("rules action {sid} {action}"), format!("rule {sid}: action {action} for new flows")),
        RulesCommand::Reset => {
            let v = socket::request(paths, "rules reset")?;
            let text = format!("rules reset: {} rules at their defaults", v["rules"]);
            Ok(Report::new(v, text))
        }
        RulesCommand::Reload => {
            let v = socket::request(paths, "rules reload")?;
            let text = format!("rules reloaded: {} rules", v["rules"]);
            Ok(Report::new(v, text))
        }
    }
}

pub fn intel_load(paths: &Paths, file: &Path, mode: IntelMode) -> Result<Report> {
    let n = intel::load_file(paths, file, mode)?;
    Ok(Report::new(json!({ "entries": n, "mode": mode, "file": file.display().to_string() }), format!("{n} entries loaded ({mode:?})")))
}

pub fn intel_list(paths: &Paths) -> Result<Report> {
    use std::fmt::Write;
    let (state, rows) = intel::list(paths)?;
    let entries: Vec<_> = rows.iter().map(|(c, n)| json!({ "entry": c.to_string(), "frames": n })).collect();
    let json = json!({ "mode": state.as_ref().map(|s| s.mode), "source": state.as_ref().map(|s| s.source.clone()), "entries": entries });
    let text = match state {
        None => "no list loaded".to_string(),
        Some(s) => {
            let mut text = format!("mode {:?}, from {}\n", s.mode, s.source);
            for (c, n) in rows {
                let _ = writeln!(text, "{c:<20} {n} frames");
            }
            text
        }
    };
    Ok(Report::new(json, text))
}

pub fn intel_clear(paths: &Paths) -> Result<Report> {
    intel::clear(paths)?;
    Ok(Report::new(json!({ "cleared": true }), "intelligence list no longer used"))
}

pub fn bypass_list(paths: &Paths) -> Result<Report> {
    let v = socket::request(paths, "bypass list")?;
    let text: Vec<String> = v["bypass"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} {} clients {} ({}) expires in {} s",
                e["server"].as_str().unwrap_or(""),
                e["sni"].as_str().unwrap_or(""),
                e["clients"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                e["expires_in"]
            )
        })
        .collect();
    Ok(Report::new(v, text.join("\n")))
}

pub fn bypass_clear(paths: &Paths) -> Result<Report> {
    let v = socket::request(paths, "bypass clear")?;
    let text = format!("{} entries cleared", v["cleared"]);
    Ok(Report::new(v, text))
}

/// `debug xsk-recv`: registers an AF_XDP socket for one queue, prints one line per frame the
/// XDP program steers to it, and unregisters it on the way out.
/// With `--json`, one JSON object per line (`{"event": "ready"}`, one per frame, then the count).
pub fn xsk_recv(paths: &Paths, iface: &str, side: Side, queue: u32, count: u64, timeout: Duration, format: Format) -> Result<()> {
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
    let say = |json: serde_json::Value, text: String| match format {
        Format::Json => println!("{json}"),
        Format::Text => println!("xsk-recv: {text}"),
    };
    say(json!({ "event": "ready", "iface": iface, "queue": queue }), format!("ready on {iface} queue {queue}"));
    let deadline = Instant::now() + timeout;
    let mut received = 0u64;
    let result = (|| -> Result<()> {
        while received < count && Instant::now() < deadline {
            received += probe.next_batch(Duration::from_millis(100), |frame| say(json!({ "event": "frame", "frame": describe(frame) }), describe(frame)))? as u64;
        }
        Ok(())
    })();
    sockets.unregister(index)?;
    result?;
    say(json!({ "event": "done", "frames": received }), format!("{received} frames"));
    Ok(())
}

/// One line per frame: `tcp 198.18.0.1:40000 > 198.18.0.2:443 flags=0x02 len=74`.
fn describe(frame: &[u8]) -> String {
    use tls_inspect_common::{parse_frame, Frame, L4};
    match parse_frame(frame) {
        Ok(Frame::Ipv4 { src, dst, l4, .. }) => {
            let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            match l4 {
                L4::Tcp { sport, dport, seg } => format!(
                    "tcp {s}:{} > {d}:{} flags=0x{:02x} len={}",
                    u16::from_be_bytes(sport),
                    u16::from_be_bytes(dport),
                    seg.flags,
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
pub fn config_check(file: &Path, inside: Option<String>, outside: Option<String>) -> Result<Report> {
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
    let text = format!(
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
    Ok(Report::new(summary, text))
}

/// One man page per command and subcommand (`tls-inspect.1`, `tls-inspect-scope-add.1`, ...),
/// generated from the command line's own declaration, into `dir`.
pub fn manpages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = <super::args::Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd, dir).with_context(|| format!("writing man pages into {}", dir.display()))?;
    Ok(())
}
