//! The control commands: each validates its input, applies it through `control::state::change`
//! (all or nothing), and prints a short answer.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use tls_inspect_common::{counter, FlowAction, ScopeCounters};

use crate::control::config::ConfigFile;
use crate::control::maps::{Maps, Paths};
use crate::control::scopes::{Scope, ScopeSpec};
use crate::control::state;

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
                json!({ "id": p.id, "name": p.name, "enabled": p.enabled, "scopes": scopes })
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
    let workers: serde_json::Value = std::fs::read(crate::control::supervisor::workers_file(paths))
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

pub fn ca(dir: &Path, command: crate::app::CaCommand) -> Result<()> {
    use crate::tls::ca;
    match command {
        crate::app::CaCommand::Trial => {
            let info = ca::trial(dir)?;
            println!("trial CA written to {} (key {}/ca.key, mode 0600)", dir.display(), dir.display());
            print_ca(&info);
        }
        crate::app::CaCommand::Import { cert, key, chain } => {
            let info = ca::import(dir, &cert, &key, chain.as_deref())?;
            println!("CA imported into {}", dir.display());
            print_ca(&info);
        }
        crate::app::CaCommand::Show => print_ca(&ca::show(dir)?),
        crate::app::CaCommand::Export { out } => {
            let n = ca::export(dir, &out)?;
            println!("{n} certificate(s) written to {}", out.display());
        }
    }
    Ok(())
}
