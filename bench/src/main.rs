//! `tls-inspect-bench`: measures tls-inspect against the systems an operator would pick instead,
//! on the same namespace topology, in the same run, and prints ratios against the baseline each
//! scenario names, with its target (never absolute claims: these are small VMs with veth).
//!
//! Scenarios (`--only` picks some; docs/benchmarks.md has the method):
//! - `forwarding`: one iperf3 flow and new TCP connections/s through the Linux bridge, the XDP
//!   bridge and the splice path (a scope steers the flow to the workers, which terminate and
//!   re-originate it).
//! - `pps`: pass-through packets/s from the AF_XDP generator (`pktgen`) to an XDP sink:
//!   tls-inspect vs a bare devmap redirect vs the Linux bridge ([`passthrough`]).
//! - `prog-run`: ns per frame of the XDP program through BPF_PROG_TEST_RUN, 10 to 1M scope items.
//! - `tls`: new HTTPS connections/s and bulk throughput: tls-inspect (IPS off and on), Squid
//!   ssl-bump and mitmproxy ([`proxies`]), direct, the splice, and rustls' in-memory ceiling
//!   ([`tlsbench`]); Hyperscan's scan rate.
//! - `memory`: memory per idle inspected connection at 1k, 10k and 100k ([`memory`]).
//!
//! Each system gets server ports of its own: a server keeps closed connections in TIME-WAIT for
//! a minute, and a SYN that reuses such a 4-tuple with an older timestamp costs a
//! retransmission, whoever sends it.
//!
//! The subcommands are the load generators and servers the scenarios run inside the client and
//! server namespaces, and `plot`, which draws a results file's plots again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use tls_inspect_tests::{check, Topology, INSIDE, OUTSIDE, SERVER_IP};

mod charts;
mod flood;
mod ipsscan;
mod memory;
mod passthrough;
mod plot;
mod pktgen;
mod proxies;
mod tlsbench;
mod xdp;

#[derive(Parser)]
#[command(name = "tls-inspect-bench")]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// About a second per measurement: proves every scenario runs and produces a number.
    #[arg(long)]
    quick: bool,
    /// Repetitions per system (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only the TLS and IPS measurements (same as `--only tls`).
    #[arg(long)]
    tls_only: bool,
    /// Only these scenarios (comma-separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Connection counts of the memory scenario (default 1000,10000,100000; quick: 1000).
    #[arg(long, value_delimiter = ',')]
    memory_levels: Vec<usize>,
    /// The public ruleset the IPS rows load on top of the bundled rules (and the memory
    /// scenario loads): the ET Open sample in the tree by default, or an operator's whole
    /// release (`emerging-all.rules`).
    #[arg(long, default_value = ipsscan::ET_SAMPLE)]
    et_rules: std::path::PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Scenario {
    /// Single-flow throughput and new TCP connections: Linux bridge, XDP bridge, splice.
    Forwarding,
    /// Pass-through packets per second: tls-inspect vs bare XDP redirect vs Linux bridge.
    Pps,
    /// ns per frame of the XDP program (BPF_PROG_TEST_RUN) with 10, 10k and 1M scope items.
    ProgRun,
    /// HTTPS: direct, splice, inspected, IPS on/off, Squid, mitmproxy, the rustls ceiling.
    Tls,
    /// Memory per idle inspected connection at 1k, 10k and 100k connections.
    Memory,
    /// A SYN flood at an inspected scope while a client makes new inspected connections.
    Flood,
}

/// The terminal table: each row printed when measured, all of them again at the end.
#[derive(Default)]
pub struct Table {
    rows: Vec<String>,
}

impl Table {
    pub fn row(&mut self, name: &str, values: &[(&str, f64)], note: &str) {
        let cells: Vec<String> = values.iter().map(|(unit, v)| format!("{:>12} {unit}", fmt_num(*v))).collect();
        let line = format!("{name:<52} {} {note}", cells.join("  "));
        println!("  {}", line.trim_end());
        self.rows.push(line.trim_end().to_string());
    }

    pub fn ratio(&mut self, name: &str, value: f64, target: &str) {
        let line = format!("{name:<52} {:>12.2}      (target {target})", value);
        println!("  {line}");
        self.rows.push(line);
    }

    pub fn note(&mut self, text: &str) {
        println!("  {text}");
        self.rows.push(text.to_string());
    }

    fn print(&self) {
        println!("\n{}", "=".repeat(100));
        for r in &self.rows {
            println!("{r}");
        }
        println!("{}", "=".repeat(100));
    }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Userspace packet generator (AF_XDP, frames built once and replayed), for kernels without
    /// /proc/net/pktgen; bench/pktgen/ scripts call it with the kernel samples' options.
    Pktgen(pktgen::PktgenArgs),
    /// Opens connections to ADDR for SECS seconds from THREADS threads; prints connections/s.
    ConnClient {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Answers every connection's byte with one byte and closes.
    EchoServer {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Draws the plots of a results file again (bench/results/<date>.json).
    Plot { file: std::path::PathBuf },
    /// Holds idle HTTPS connections to ADDRS; `open N` on stdin opens N more.
    IdleClient {
        #[arg(long, value_delimiter = ',')]
        addrs: Vec<SocketAddr>,
        #[arg(long, default_value = "server.test")]
        name: String,
        #[arg(long)]
        ca: std::path::PathBuf,
        #[arg(long, default_value_t = 8)]
        threads: usize,
    },
    /// A rustls HTTPS server on ADDR that answers with the key exchange group it negotiated.
    TlsServer {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        cert: std::path::PathBuf,
        #[arg(long)]
        key: std::path::PathBuf,
    },
    /// Scan throughput of the IPS engine on this core: the bundled rules, or N generated ones.
    IpsScan {
        /// Generated rules instead of the bundled set.
        #[arg(long)]
        generated: Option<usize>,
        /// A rule file instead (its rules that load).
        #[arg(long, conflicts_with = "generated")]
        rules: Option<std::path::PathBuf>,
        /// Megabytes of synthetic HTTP traffic to scan.
        #[arg(long, default_value_t = 256)]
        megabytes: usize,
        /// What to scan.
        #[arg(long, value_enum, default_value_t = ipsscan::Traffic::Pages)]
        traffic: ipsscan::Traffic,
    },
    /// Baseline bridge: attach a bare devmap redirect between two interfaces until stopped.
    XdpRedirect {
        #[arg(long)]
        a: String,
        #[arg(long)]
        b: String,
        /// Generic (skb) mode instead of native.
        #[arg(long)]
        generic: bool,
    },
    /// Receiver: count and drop every frame arriving on DEV until stopped.
    XdpSink {
        #[arg(long)]
        dev: String,
        #[arg(long)]
        generic: bool,
    },
    /// ns per frame of the running appliance's XDP program (or of the bare redirect) through
    /// BPF_PROG_TEST_RUN, on a mix of frames arriving on INSIDE. Run it in the appliance's
    /// network namespace.
    ProgRun {
        /// Measure the bare devmap redirect instead of the appliance's program.
        #[arg(long)]
        bare: bool,
        /// The appliance instance whose pinned program is measured.
        #[arg(long, env = "TLS_INSPECT_INSTANCE", default_value = "tls-inspect")]
        instance: String,
        #[arg(long, default_value = "inside")]
        inside: String,
        #[arg(long, default_value = "outside")]
        outside: String,
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// New flows measured one SYN each.
        #[arg(long, default_value_t = 2_000)]
        new_flows: u32,
        /// Source port of the first new flow (the next ones count up).
        #[arg(long, default_value_t = 20_000)]
        first_port: u16,
        /// A flow the scopes match: client, server, server port.
        #[arg(long, default_value = "198.18.0.1")]
        client: String,
        #[arg(long, default_value = "198.18.0.2")]
        server: String,
        #[arg(long, default_value_t = 443)]
        port: u16,
        #[arg(long)]
        json: bool,
    },
    /// HTTPS requests to ADDR (name NAME, trusting CA), a new connection each, for SECS seconds.
    TlsClient {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "server.test")]
        name: String,
        #[arg(long)]
        ca: std::path::PathBuf,
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Keep sessions and resume them (as a returning browser does); default: a full
        /// handshake every time.
        #[arg(long)]
        resume: bool,
    },
}

/// This binary: the scenarios start its subcommands (load generators, XDP baselines) inside the
/// namespaces.
pub fn own_bin() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("locating tls-inspect-bench")
}

/// A config with one policy of one scope: the client network to the server on `dports`
/// (TOML list items, e.g. `"443/443"`).
pub fn one_scope(dports: &str) -> String {
    format!(
        "[[policy]]\nid = 1\n[[policy.scope]]\nsrc = [\"198.18.0.0/24\"]\nsport = [\"1024/65535\"]\n\
         dst = [\"{SERVER_IP}\"]\ndport = [{dports}]\n"
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Cmd::Pktgen(a)) => pktgen::run(&a).map(|_| ()),
        Some(Cmd::ConnClient { addr, secs, threads }) => conn_client(addr, secs, threads),
        Some(Cmd::EchoServer { addr }) => echo_server(addr),
        Some(Cmd::Plot { file }) => {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
            let map = v.as_object().context("not a results object")?;
            let stamp = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plot");
            let dir = file.parent().unwrap_or(std::path::Path::new("."));
            for chart in charts::from_results(map) {
                println!("plot: {}", plot::draw(dir, stamp, &chart)?.display());
            }
            Ok(())
        }
        Some(Cmd::IdleClient { addrs, name, ca, threads }) => tlsbench::idle_client(&addrs, &name, &ca, threads),
        Some(Cmd::TlsServer { addr, cert, key }) => tlsbench::tls_server(addr, &cert, &key),
        Some(Cmd::TlsClient { addr, name, ca, secs, threads, resume }) => tlsbench::tls_client(addr, &name, &ca, secs, threads, resume),
        Some(Cmd::IpsScan { generated, rules, megabytes, traffic }) => {
            let s = ipsscan::scan_rate(generated, rules.as_deref(), megabytes, traffic)?;
            println!("ips-scan {}: compile {:.2} s, {:.1} MiB", s.label, s.compile_s, s.compiled_mib);
            let unit = if traffic == ipsscan::Traffic::Conns { "connections/s" } else { "MB/s" };
            println!("ips-scan rate: {:.1} {unit}", s.rate);
            Ok(())
        }
        Some(Cmd::XdpRedirect { a, b, generic }) => xdp::bench_redirect(&a, &b, xdp::mode(generic)),
        Some(Cmd::XdpSink { dev, generic }) => {
            let n = xdp::bench_sink(&dev, xdp::mode(generic))?;
            println!("xdp-sink: {n} frames");
            Ok(())
        }
        Some(Cmd::ProgRun { bare, instance, inside, outside, repeat, new_flows, first_port, client, server, port, json }) => {
            let paths = tls_inspect_dataplane::control::maps::Paths::new(&instance)?;
            let pin = if bare { None } else { Some(xdp::program_pin(&paths)?) };
            let rows = xdp::prog_run(&xdp::ProgRun {
                target: match &pin {
                    Some(p) => xdp::Target::Pinned(p),
                    None => xdp::Target::Bare,
                },
                paths: pin.as_ref().map(|_| &paths),
                inside: &inside,
                outside: &outside,
                repeat,
                new_flows,
                first_port,
                client: xdp::ipv4("client", &client)?,
                server: xdp::ipv4("server", &server)?,
                port,
            })?;
            if json {
                let v: serde_json::Map<String, serde_json::Value> =
                    rows.iter().map(|(name, ns, action)| ((*name).to_string(), serde_json::json!({ "ns": ns, "action": action }))).collect();
                println!("{}", serde_json::Value::Object(v));
            } else {
                for (name, ns, action) in rows {
                    println!("{name:<28} {ns:>8.1} ns  action {action}");
                }
            }
            Ok(())
        }
        None => run_all(&args),
    }
}

fn run_all(args: &Args) -> Result<()> {
    let only: Vec<Scenario> = if args.tls_only { vec![Scenario::Tls] } else { args.only.clone() };
    let want = |s: Scenario| only.is_empty() || only.contains(&s);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let runs = if args.quick { 1 } else { args.runs.max(1) };
    println!("tls-inspect-bench: {cores} cores, {runs} run(s) per system, medians{}", if args.quick { ", quick" } else { "" });
    let mut table = Table::default();
    table.note(&format!("machine: {cores} cores; {runs} run(s) per system, medians"));
    let mut results = serde_json::Map::new();
    let mut failed = Vec::new();
    let scenarios: [(Scenario, &str); 6] = [
        (Scenario::Forwarding, "forwarding"),
        (Scenario::Pps, "pps"),
        (Scenario::ProgRun, "prog_run"),
        (Scenario::Tls, "tls"),
        (Scenario::Memory, "memory"),
        (Scenario::Flood, "flood"),
    ];
    for (scenario, key) in scenarios {
        if !want(scenario) {
            continue;
        }
        let r = match scenario {
            Scenario::Forwarding => compare(args.quick, runs, &mut table),
            Scenario::Pps => passthrough::pps(args.quick, runs, &mut table),
            Scenario::ProgRun => passthrough::prog_run(args.quick, runs, &mut table),
            Scenario::Tls => tlsbench::compare(args.quick, runs, &args.et_rules, &mut table),
            Scenario::Memory => memory::idle_memory(args.quick, &args.memory_levels, &args.et_rules, &mut table),
            Scenario::Flood => flood::syn_flood(args.quick, &mut table),
        };
        match r {
            Ok(v) => {
                results.insert(key.into(), v);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!("scenario {key} failed: {msg}");
                table.note(&format!("{key}: FAILED: {}", msg.lines().next().unwrap_or("")));
                results.insert(key.into(), serde_json::json!({ "error": msg }));
                failed.push(key);
            }
        }
    }
    table.print();
    write_results(results, args.quick, runs)?;
    if !failed.is_empty() {
        bail!("scenario(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Writes `bench/results/<UTC date and time>.json` (below the current directory, the checkout
/// when run by `cargo xtask bench`): the machine, the settings and every number printed.
fn write_results(mut results: serde_json::Map<String, serde_json::Value>, quick: bool, runs: usize) -> Result<()> {
    let charts = charts::from_results(&results);
    let stamp = check(Command::new("date").args(["-u", "+%Y-%m-%dT%H-%M-%SZ"]))?.trim().to_string();
    let kernel = check(Command::new("uname").arg("-r"))?.trim().to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    results.insert(
        "machine".into(),
        serde_json::json!({ "cores": cores, "kernel": kernel, "date": stamp, "quick": quick, "runs": if quick { 1 } else { runs.max(1) } }),
    );
    let dir = std::path::Path::new("bench/results");
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{stamp}.json"));
    let mut plots = Vec::new();
    for chart in &charts {
        match plot::draw(dir, &stamp, chart) {
            Ok(p) => {
                println!("plot: {}", p.display());
                plots.push(p.display().to_string());
            }
            Err(e) => eprintln!("plot {}: {e:#}", chart.file),
        }
    }
    results.insert("plots".into(), plots.into());
    std::fs::write(&path, serde_json::to_string_pretty(&serde_json::Value::Object(results))?)?;
    println!("results: {}", path.display());
    Ok(())
}

/// Runs `op` in a loop from `threads` threads for `secs` seconds; returns (ok, failed).
pub fn hammer(secs: f64, threads: usize, op: impl Fn() -> bool + Clone + Send + 'static) -> Result<(u64, u64)> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let op = op.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < end {
                    if op() {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for h in handles {
        let (o, f) = h.join().map_err(|_| anyhow!("a client thread panicked"))?;
        ok += o;
        failed += f;
    }
    Ok((ok, failed))
}

fn conn_client(addr: SocketAddr, secs: f64, threads: usize) -> Result<()> {
    let (ok, failed) = hammer(secs, threads, move || {
        let mut buf = [0u8; 1];
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"x")?;
                s.read_exact(&mut buf)
            })
            .is_ok()
    })?;
    println!("conn-client {:.1} conn/s {ok} ok {failed} failed", ok as f64 / secs);
    Ok(())
}

fn echo_server(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("listening {addr}");
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        std::thread::spawn(move || {
            let mut buf = [0u8; 1];
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(&buf);
            }
        });
    }
    Ok(())
}

/// Gbit/s of one iperf3 TCP run of `secs` seconds from client to server.
fn iperf(t: &Topology, port: u16, secs: u32) -> Result<f64> {
    let out = check(t.client.cmd("iperf3").args([
        "-c", SERVER_IP, "-p", &port.to_string(), "-t", &secs.to_string(), "-J", "--connect-timeout", "3000",
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| anyhow!("iperf3 reported no throughput: {out}"))
}

/// New connections per second through the topology as it is.
fn conn_rate(t: &Topology, port: u16, secs: f64) -> Result<f64> {
    let me = std::env::current_exe()?;
    let out = check(t.client.cmd(me.to_str().context("path")?).args([
        "conn-client",
        "--addr",
        &format!("{SERVER_IP}:{port}"),
        "--secs",
        &secs.to_string(),
    ]))?;
    let rate: f64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("conn-client said {out}"))?;
    if !out.contains(" 0 failed") {
        eprintln!("  note: {}", out.trim());
    }
    Ok(rate)
}

/// Adds (or removes) a Linux bridge of `inside` and `outside` in the appliance namespace.
pub fn linux_bridge(t: &Topology, up: bool) -> Result<()> {
    let a = t.appliance.0.as_str();
    if !up {
        check(Command::new("ip").args(["-n", a, "link", "del", "br0"]))?;
        return Ok(());
    }
    check(Command::new("ip").args(["-n", a, "link", "add", "br0", "type", "bridge"]))?;
    for l in [INSIDE, OUTSIDE] {
        check(Command::new("ip").args(["-n", a, "link", "set", l, "master", "br0"]))?;
    }
    check(Command::new("ip").args(["-n", a, "link", "set", "br0", "up"]))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn repeat(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    Ok(median((0..runs).map(|_| f()).collect::<Result<Vec<_>>>()?))
}

fn compare(quick: bool, runs: usize, table: &mut Table) -> Result<serde_json::Value> {
    let secs = if quick { 1 } else { 5 };
    let conn_secs = if quick { 1.0 } else { 3.0 };
    println!("\nmeasuring single-flow throughput (iperf3) and new TCP connections");

    let mut t = Topology::new()?;
    let me = std::env::current_exe()?;
    for port in [5201u16, 5202] {
        let mut iperf_server = t.server.cmd("iperf3");
        iperf_server.args(["-s", "-B", SERVER_IP, "-p", &port.to_string()]);
        t.spawn(iperf_server)?;
        t.wait_listening(&t.server.clone(), port)?;
    }
    for port in [9100u16, 9101] {
        let mut echo = t.server.cmd(me.to_str().context("path")?);
        echo.args(["echo-server", "--addr", &format!("{SERVER_IP}:{port}")]);
        t.spawn(echo)?;
        t.wait_listening(&t.server.clone(), port)?;
    }

    // (a) The Linux bridge in the appliance namespace: the kernel's own path.
    linux_bridge(&t, true)?;
    println!("measuring: Linux bridge");
    let linux_tput = repeat(runs, || iperf(&t, 5201, secs))?;
    let linux_conn = repeat(runs, || conn_rate(&t, 9100, conn_secs))?;
    linux_bridge(&t, false)?;

    // (b) tls-inspect's XDP bridge: no scope matches.
    println!("measuring: tls-inspect XDP bridge");
    t.start_appliance("")?;
    let xdp_tput = repeat(runs, || iperf(&t, 5201, secs))?;
    t.stop_appliance();
    check(t.cli().arg("detach"))?;

    // (c) The splice path: the workers terminate and re-originate every flow.
    println!("measuring: tls-inspect splice (workers)");
    // The splice runs' ports (iperf3 5202, echo 9101) go to the workers. Each system gets ports
    // of its own, so that no run meets the server's TIME-WAIT sockets of another.
    t.start_appliance(&one_scope(r#""5202/5202", "9101/9101""#))?;
    let splice_tput = repeat(runs, || iperf(&t, 5202, secs))?;
    let splice_conn = repeat(runs, || conn_rate(&t, 9101, conn_secs))?;
    let steered = t.metric("tls_inspect_xdp_frames_total", &[("path", "steered")])?;

    table.row("single flow (iperf3): Linux bridge", &[("Gbit/s", linux_tput)], "");
    table.row("single flow (iperf3): tls-inspect XDP bridge", &[("Gbit/s", xdp_tput)], "");
    table.row("single flow (iperf3): tls-inspect splice", &[("Gbit/s", splice_tput)], "");
    table.ratio("single flow: XDP bridge / Linux bridge", xdp_tput / linux_tput, "-");
    table.ratio("single flow: splice / XDP bridge", splice_tput / xdp_tput, ">= 0.50");
    table.row("new TCP connections: Linux bridge", &[("conn/s", linux_conn)], "");
    table.row("new TCP connections: tls-inspect splice", &[("conn/s", splice_conn)], "");
    table.ratio("new TCP connections: splice / Linux bridge", splice_conn / linux_conn, "-");
    table.note(&format!("(XDP steered {steered} frames to the workers during the splice runs)"));
    Ok(serde_json::json!({
        "single_flow_gbit_s": { "linux_bridge": linux_tput, "xdp_bridge": xdp_tput, "splice": splice_tput },
        "new_connections_per_s": { "linux_bridge": linux_conn, "splice": splice_conn },
        "ratios": {
            "xdp_bridge_over_linux_bridge": xdp_tput / linux_tput,
            "splice_over_xdp_bridge": splice_tput / xdp_tput,
            "splice_over_linux_bridge": splice_tput / linux_tput,
            "splice_conn_over_linux_bridge": splice_conn / linux_conn,
        },
        "targets": { "splice_over_xdp_bridge": 0.5 },
        "steered_frames": steered,
    }))
}
