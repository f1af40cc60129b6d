//! `cargo xtask fuzz`: every fuzz target of `tls-inspect-dataplane/fuzz` (libFuzzer through
//! cargo-fuzz, on nightly) for a while each, `--jobs` at a time (two: the machine's cores), each from
//! a working copy of its committed seed corpus (`fuzz/corpus/<target>`, which stays as it is).
//! Prints each target's executions and what it found; fails when anything was found. Findings
//! are in `tls-inspect-dataplane/fuzz/artifacts/<target>/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{cargo, root, status};

/// The targets, in the order they run (the names of `fuzz/fuzz_targets/*.rs`).
const TARGETS: [&str; 5] = ["clienthello", "rules", "http1", "h2", "frame"];

fn fuzz_dir() -> PathBuf {
    root().join("tls-inspect-dataplane/fuzz")
}

/// `cargo +nightly fuzz ...` with the build's environment, through rustup's proxy (the `cargo`
/// that runs xtask is the stable toolchain's own, which takes no `+toolchain`).
fn cargo_fuzz() -> Command {
    let mut c = cargo();
    let proxy = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/cargo")).filter(|p| p.exists());
    c.env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
    let mut proxied = Command::new(proxy.unwrap_or_else(|| PathBuf::from("cargo")));
    proxied.current_dir(root());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => proxied.env(k, v),
            None => proxied.env_remove(k),
        };
    }
    proxied.args(["+nightly", "fuzz"]);
    proxied
}

struct Running {
    target: &'static str,
    child: Child,
    log: PathBuf,
    findings_before: usize,
}

fn findings(target: &str) -> Vec<PathBuf> {
    std::fs::read_dir(fuzz_dir().join("artifacts").join(target))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn start(target: &'static str, minutes: f64) -> Result<Running> {
    let work = root().join("target/fuzz-corpus").join(target);
    std::fs::create_dir_all(&work)?;
    let seeds = fuzz_dir().join("corpus").join(target);
    let log = root().join("target/fuzz-corpus").join(format!("{target}.log"));
    let out = std::fs::File::create(&log)?;
    let secs = (minutes * 60.0).round().max(1.0) as u64;
    let child = cargo_fuzz()
        .args(["run", "--fuzz-dir"])
        .arg(fuzz_dir())
        .arg(target)
        .arg(&work)
        .arg(&seeds)
        .args(["--", &format!("-max_total_time={secs}"), "-rss_limit_mb=4096", "-print_final_stats=1"])
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting the {target} fuzzer"))?;
    Ok(Running { target, child, log, findings_before: findings(target).len() })
}

/// libFuzzer's `stat::number_of_executed_units` (or its "Done N runs" line).
fn executions(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:").and_then(|v| v.trim().parse().ok()))
        .or_else(|| text.lines().rev().find_map(|l| l.strip_prefix("Done ").and_then(|v| v.split_whitespace().next()?.parse().ok())))
}

pub fn run(minutes: f64, only: &[String], jobs: usize) -> Result<()> {
    for t in only {
        if !TARGETS.contains(&t.as_str()) {
            bail!("--target: '{t}': not one of {}", TARGETS.join(", "));
        }
    }
    let targets: Vec<&'static str> = TARGETS.iter().copied().filter(|t| only.is_empty() || only.iter().any(|o| o == t)).collect();
    // One build for all, so that the runs start together.
    status(cargo_fuzz().args(["build", "--fuzz-dir"]).arg(fuzz_dir()))?;
    let mut queue = targets.into_iter();
    let mut running: Vec<Running> = Vec::new();
    let mut report = Vec::new();
    let mut found = 0;
    loop {
        while running.len() < jobs.max(1) {
            match queue.next() {
                Some(t) => running.push(start(t, minutes)?),
                None => break,
            }
        }
        if running.is_empty() {
            break;
        }
        let mut r = running.remove(0);
        let exit = r.child.wait()?;
        let new = findings(r.target).len().saturating_sub(r.findings_before);
        found += new;
        let runs = executions(&r.log).map_or("unknown".to_string(), |n| n.to_string());
        let line = format!("{:<12} {minutes} min: {runs} executions, {new} finding(s), exit {exit} (log {})", r.target, r.log.display());
        println!("fuzz: {line}");
        report.push(line);
    }
    println!("\nfuzz summary:");
    for l in &report {
        println!("  {l}");
    }
    if found > 0 {
        bail!("{found} finding(s): see tls-inspect-dataplane/fuzz/artifacts/");
    }
    Ok(())
}
