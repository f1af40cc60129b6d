//! `tls-inspect-bench`: measures tls-inspect against baselines on the same namespace topology, in
//! the same run, and prints ratios (never absolute claims: these are 2-core VMs with veth).
//!
//! Scenario `passthrough-tcp`: one bulk TCP flow (iperf3) from client to server through
//! (a) the Linux bridge in the appliance namespace (baseline) and (b) tls-inspect's XDP
//! classifier-bridge with no scope matching. Reports the median of repeated runs.

use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use tls_inspect_tests::{check, Topology, INSIDE, OUTSIDE, SERVER_IP};

#[derive(Parser)]
#[command(name = "tls-inspect-bench")]
struct Args {
    /// A few seconds per scenario: proves every scenario runs and produces a number.
    #[arg(long)]
    quick: bool,
    /// Repetitions per system (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Gbit/s of one iperf3 TCP run of `secs` seconds from client to server.
fn iperf(t: &Topology, secs: u32) -> Result<f64> {
    let out = check(t.client.cmd("iperf3").args([
        "-c", SERVER_IP, "-t", &secs.to_string(), "-J", "--connect-timeout", "3000",
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| anyhow!("iperf3 reported no throughput: {out}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let secs = if args.quick { 1 } else { 5 };
    let runs = if args.quick { 1 } else { args.runs.max(1) };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("tls-inspect-bench: {cores} cores, {runs} run(s) of {secs} s per system");

    let mut t = Topology::new()?;
    let mut server = t.server.cmd("iperf3");
    server.args(["-s", "-B", SERVER_IP]);
    t.spawn(server)?;
    t.wait_listening(&t.server.clone(), 5201)?;

    // (a) Linux bridge in the appliance namespace.
    let a = &t.appliance.0.clone();
    check(Command::new("ip").args(["-n", a, "link", "add", "br0", "type", "bridge"]))?;
    for l in [INSIDE, OUTSIDE] {
        check(Command::new("ip").args(["-n", a, "link", "set", l, "master", "br0"]))?;
    }
    check(Command::new("ip").args(["-n", a, "link", "set", "br0", "up"]))?;
    std::thread::sleep(Duration::from_millis(200));
    let linux: Vec<f64> = (0..runs).map(|_| iperf(&t, secs)).collect::<Result<_>>()?;
    check(Command::new("ip").args(["-n", a, "link", "del", "br0"]))?;

    // (b) tls-inspect's XDP bridge, no scopes.
    t.start_appliance("")?;
    let xdp: Vec<f64> = (0..runs).map(|_| iperf(&t, secs)).collect::<Result<_>>()?;
    let bridged = t.counter("bridged_bytes")?;

    let (l, x) = (median(linux), median(xdp));
    println!("{:<34} {:>10}", "scenario passthrough-tcp", "Gbit/s");
    println!("{:<34} {:>10.2}", "linux bridge (baseline)", l);
    println!("{:<34} {:>10.2}", "tls-inspect XDP bridge", x);
    println!("ratio tls-inspect / linux bridge: {:.2}", x / l);
    println!("(XDP counters: {bridged} bytes bridged during the tls-inspect runs)");
    Ok(())
}
