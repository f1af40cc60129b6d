//! `tls-inspect-bench`: measures tls-inspect against baselines on the same namespace topology, in
//! the same run, and prints ratios (never absolute claims: these are small VMs with veth).
//!
//! Scenarios:
//! - `throughput`: one bulk TCP flow (iperf3, client to server) through the Linux bridge in the
//!   appliance namespace, through tls-inspect's XDP bridge (no scope matches), and through the
//!   splice path (a scope steers it to the workers, which terminate and re-originate it).
//! - `connections`: new TCP connections per second (connect, one byte each way, close) through
//!   the Linux bridge and through the splice path.
//!
//! The splice runs use server ports of their own: a server keeps closed connections in
//! TIME-WAIT for a minute, and a SYN that reuses such a 4-tuple with an older timestamp costs a
//! retransmission, whoever sends it.
//!
//! `conn-client` and `echo-server` are the load generator and server of `connections`; the
//! benchmark runs them inside the client and server namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use tls_inspect_tests::pki::TestPki;
use tls_inspect_tests::{appliance_bin, check, Topology, INSIDE, OUTSIDE, SERVER_IP};

mod tlsbench;

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
    /// Only the TLS and IPS measurements (skips the bridge and splice comparison).
    #[arg(long)]
    tls_only: bool,
}

#[derive(Subcommand)]
enum Cmd {
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
    },
}

/// Steers the splice runs' ports (iperf3 5202, echo 9101) to the workers. Each system gets
/// ports of its own, so that no run meets the server's TIME-WAIT sockets of another.
const SPLICE_SCOPE: &str = r#"
[[policy]]
id = 1
  [[policy.scope]]
  src = ["198.18.0.0/24"]
  sport = ["1024/65535"]
  dst = ["198.18.0.2"]
  dport = ["5202/5202", "9101/9101"]
"#;

fn main() -> Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Cmd::ConnClient { addr, secs, threads }) => conn_client(addr, secs, threads),
        Some(Cmd::EchoServer { addr }) => echo_server(addr),
        Some(Cmd::TlsClient { addr, name, ca, secs, threads }) => tlsbench::tls_client(addr, &name, &ca, secs, threads),
        None => {
            let mut results = serde_json::Map::new();
            if !args.tls_only {
                results.insert("forwarding".into(), compare(args.quick, args.runs)?);
            }
            results.insert("tls".into(), tls_compare(args.quick, args.runs)?);
            write_results(results, args.quick, args.runs)
        }
    }
}

/// Writes `bench/results/<UTC date and time>.json` (below the current directory, the checkout
/// when run by `cargo xtask bench`): the machine, the settings and every number printed.
fn write_results(mut results: serde_json::Map<String, serde_json::Value>, quick: bool, runs: usize) -> Result<()> {
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
    std::fs::write(&path, serde_json::to_string_pretty(&serde_json::Value::Object(results))?)?;
    println!("\nresults: {}", path.display());
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn repeat(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    Ok(median((0..runs).map(|_| f()).collect::<Result<Vec<_>>>()?))
}

fn compare(quick: bool, runs: usize) -> Result<serde_json::Value> {
    let secs = if quick { 1 } else { 5 };
    let conn_secs = if quick { 1.0 } else { 3.0 };
    let runs = if quick { 1 } else { runs.max(1) };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("tls-inspect-bench: {cores} cores, {runs} run(s) per system, medians");

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
    let a = t.appliance.0.clone();
    check(Command::new("ip").args(["-n", &a, "link", "add", "br0", "type", "bridge"]))?;
    for l in [INSIDE, OUTSIDE] {
        check(Command::new("ip").args(["-n", &a, "link", "set", l, "master", "br0"]))?;
    }
    check(Command::new("ip").args(["-n", &a, "link", "set", "br0", "up"]))?;
    std::thread::sleep(Duration::from_millis(300));
    println!("measuring: Linux bridge");
    let linux_tput = repeat(runs, || iperf(&t, 5201, secs))?;
    let linux_conn = repeat(runs, || conn_rate(&t, 9100, conn_secs))?;
    check(Command::new("ip").args(["-n", &a, "link", "del", "br0"]))?;

    // (b) tls-inspect's XDP bridge: no scope matches.
    println!("measuring: tls-inspect XDP bridge");
    t.start_appliance("")?;
    let xdp_tput = repeat(runs, || iperf(&t, 5201, secs))?;
    t.stop_appliance();
    check(t.cli().arg("detach"))?;

    // (c) The splice path: the workers terminate and re-originate every flow.
    println!("measuring: tls-inspect splice (workers)");
    t.start_appliance(SPLICE_SCOPE)?;
    let splice_tput = repeat(runs, || iperf(&t, 5202, secs))?;
    let splice_conn = repeat(runs, || conn_rate(&t, 9101, conn_secs))?;
    let steered = t.counter("steered_frames")?;

    println!();
    println!("{:<44} {:>12}", "single-flow throughput (iperf3)", "Gbit/s");
    println!("{:<44} {:>12.2}", "Linux bridge", linux_tput);
    println!("{:<44} {:>12.2}", "tls-inspect XDP bridge", xdp_tput);
    println!("{:<44} {:>12.2}", "tls-inspect splice", splice_tput);
    println!("ratio XDP bridge / Linux bridge:   {:.2}", xdp_tput / linux_tput);
    println!("ratio splice / XDP bridge:         {:.2}   (target >= 0.50)", splice_tput / xdp_tput);
    println!("ratio splice / Linux bridge:       {:.2}", splice_tput / linux_tput);
    println!();
    println!("{:<44} {:>12}", "new connections", "conn/s");
    println!("{:<44} {:>12.0}", "Linux bridge", linux_conn);
    println!("{:<44} {:>12.0}", "tls-inspect splice", splice_conn);
    println!("ratio splice / Linux bridge:       {:.2}", splice_conn / linux_conn);
    println!("(XDP steered {steered} frames to the workers during the splice runs)");
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

/// nginx on 443 (direct), 8443 (splice) and 9443 (inspected): each system on its own port, so
/// that no run meets the server's TIME-WAIT sockets of another.
fn nginx(t: &mut Topology, cert: &std::path::Path, key: &std::path::Path, big: u64) -> Result<()> {
    let d = t.dir.join("nginx");
    std::fs::create_dir_all(d.join("tmp"))?;
    std::fs::create_dir_all(d.join("www"))?;
    check(Command::new("head").arg("-c").arg(big.to_string()).arg("/dev/urandom").stdout(std::fs::File::create(d.join("www/big"))?))?;
    std::fs::write(d.join("www/index.html"), "hello from nginx\n")?;
    let listen: String = [443, 8443, 9443].iter().map(|p| format!("listen {SERVER_IP}:{p} ssl http2; ")).collect();
    let conf = format!(
        "worker_processes 2; daemon off; user root; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
           uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp; sendfile on; keepalive_timeout 0;\n\
           server {{ {listen} ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.2 TLSv1.3;\n\
             ssl_session_cache off; ssl_session_tickets off; root {d}/www; }} }}\n",
        cert.display(),
        key.display(),
        d = d.display()
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut c = t.server.cmd("nginx");
    c.arg("-c").arg(&path).arg("-p").arg(&d);
    t.spawn(c)?;
    for port in [443, 8443, 9443] {
        t.wait_listening(&t.server.clone(), port)?;
    }
    Ok(())
}

fn tls_rps(t: &Topology, port: u16, ca: &std::path::Path, secs: f64) -> Result<f64> {
    let me = std::env::current_exe()?;
    let out = check(t.client.cmd(me.to_str().context("path")?).args([
        "tls-client", "--addr", &format!("{SERVER_IP}:{port}"), "--ca", ca.to_str().context("path")?, "--secs", &secs.to_string(),
    ]))?;
    if !out.contains(" 0 failed") {
        eprintln!("  note: {}", out.trim());
    }
    out.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("tls-client said {out}"))
}

/// Gbit/s of one HTTPS download of /big.
fn tls_bulk(t: &Topology, port: u16, ca: &std::path::Path) -> Result<f64> {
    let out = check(t.client.cmd("curl").args(["-sS", "-o", "/dev/null", "-w", "%{speed_download}", "--max-time", "120", "--connect-to", "::198.18.0.2:", "--cacert"])
        .arg(ca)
        .arg(format!("https://server.test:{port}/big")))?;
    let bytes_per_s: f64 = out.trim().parse().map_err(|_| anyhow!("curl said {out}"))?;
    Ok(bytes_per_s * 8.0 / 1e9)
}

fn tls_compare(quick: bool, runs: usize) -> Result<serde_json::Value> {
    let secs = if quick { 1.0 } else { 3.0 };
    let runs = if quick { 1 } else { runs.max(1) };
    let big: u64 = if quick { 20_000_000 } else { 200_000_000 };
    println!("\nmeasuring TLS: HTTPS through the XDP bridge (direct), the splice and the inspection path");
    let mut t = Topology::new()?;
    let pki = TestPki::new(&t.dir)?;
    let server = pki.server("server", &["server.test", SERVER_IP], "root", None)?;
    let ca_dir = t.dir.join("ca");
    check(Command::new(appliance_bin()).args(["ca", "--dir"]).arg(&ca_dir).arg("trial"))?;
    let trial = ca_dir.join("ca.crt");
    nginx(&mut t, &server.cert, &server.key, big)?;

    t.start_appliance("")?;
    let direct = (repeat(runs, || tls_rps(&t, 443, &pki.root, secs))?, repeat(runs, || tls_bulk(&t, 443, &pki.root))?);
    t.stop_appliance();
    check(t.cli().arg("detach"))?;

    let scope = |inspect: bool| {
        format!(
            "[[policy]]\nid = 1\n[[policy.scope]]\nsrc = [\"198.18.0.0/24\"]\nsport = [\"1024/65535\"]\ndst = [\"198.18.0.2\"]\n\
             dport = [\"8443/8443\", \"9443/9443\"]\n[tls]\ninspect = {inspect}\nca_dir = \"{}\"\nextra_roots = [\"{}\"]\n",
            ca_dir.display(),
            pki.root.display()
        )
    };
    t.start_appliance(&scope(false))?;
    let splice = (repeat(runs, || tls_rps(&t, 8443, &pki.root, secs))?, repeat(runs, || tls_bulk(&t, 8443, &pki.root))?);
    t.stop_appliance();
    check(t.cli().arg("detach"))?;

    // Inspected with the IPS off and on (the bundled rules, strict level, block mode; the
    // requests and the bulk body match nothing, so everything is scanned and nothing stops),
    // alternated run by run so that the VM's drift hits both alike.
    let with_ips_config = format!("{}[ips]\nenabled = true\nmode = \"block\"\nlevel = \"strict\"\n", scope(true));
    let (mut off, mut on) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    let (mut forged, mut inspected_flows) = (0, 0);
    for _ in 0..runs {
        for (config, into) in [(scope(true), &mut off), (with_ips_config.clone(), &mut on)] {
            t.start_appliance(&config)?;
            into.0.push(tls_rps(&t, 9443, &trial, secs)?);
            into.1.push(tls_bulk(&t, 9443, &trial)?);
            let stats = t.stats()?;
            let workers = stats["workers"].as_array().cloned().unwrap_or_default();
            forged += workers.iter().filter_map(|w| w["certs_forged"].as_u64()).sum::<u64>();
            inspected_flows += workers.iter().filter_map(|w| w["tls_inspected"].as_u64()).sum::<u64>();
            t.stop_appliance();
            check(t.cli().arg("detach"))?;
        }
    }
    let inspected = (median(off.0), median(off.1));
    let with_ips = (median(on.0), median(on.1));

    let ceiling = repeat(runs, || tlsbench::rustls_ceiling(&server.cert, &server.key, &pki.root, secs))?;
    let megabytes = if quick { "64" } else { "512" };
    let scan = |generated: Option<&str>| -> Result<f64> {
        let mut c = Command::new(appliance_bin());
        c.args(["debug", "ips-bench", "--megabytes", megabytes]);
        if let Some(n) = generated {
            c.args(["--generated", n]);
        }
        let out = check(&mut c)?;
        out.rsplit(':')
            .next()
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("ips-bench printed {out}"))
    };
    let scans = [
        ("bundled ruleset", repeat(runs, || scan(None))?),
        ("1,000 generated rules", repeat(runs, || scan(Some("1000")))?),
        ("10,000 generated rules", repeat(runs, || scan(Some("10000")))?),
    ];

    println!();
    println!("{:<44} {:>12} {:>12}", "HTTPS (nginx, TLS 1.3, new connection each)", "req/s", "bulk Gbit/s");
    println!("{:<44} {:>12.0} {:>12.2}", "direct (XDP bridge, no inspection)", direct.0, direct.1);
    println!("{:<44} {:>12.0} {:>12.2}", "tls-inspect splice", splice.0, splice.1);
    println!("{:<44} {:>12.0} {:>12.2}", "tls-inspect inspected", inspected.0, inspected.1);
    println!("{:<44} {:>12.0}", "rustls in-memory handshake pairs (1 core)", ceiling);
    println!("ratio inspected / direct:          {:.2} req/s, {:.2} bulk", inspected.0 / direct.0, inspected.1 / direct.1);
    println!("ratio inspected / splice:          {:.2} req/s, {:.2} bulk", inspected.0 / splice.0, inspected.1 / splice.1);
    println!("ratio inspected / rustls ceiling:  {:.2}", inspected.0 / ceiling);
    println!("({inspected_flows} flows inspected with {forged} certificate signature(s), one per appliance start: the cache was warm)");
    println!();
    println!("{:<44} {:>12.0} {:>12.2}", "tls-inspect inspected + IPS (bundled, block)", with_ips.0, with_ips.1);
    println!(
        "ratio IPS on / off:                {:.2} req/s, {:.2} bulk (target >= 0.90)",
        with_ips.0 / inspected.0,
        with_ips.1 / inspected.1
    );
    println!();
    println!("{:<44} {:>12}", "Hyperscan streaming scan, 1 core", "MB/s");
    for (name, mbs) in &scans {
        println!("{name:<44} {mbs:>12.0}");
    }
    println!("ratio 10,000 generated / bundled:  {:.2}", scans[2].1 / scans[0].1);
    Ok(serde_json::json!({
        "https_req_per_s": { "direct": direct.0, "splice": splice.0, "inspected": inspected.0, "inspected_ips": with_ips.0, "rustls_ceiling": ceiling },
        "https_bulk_gbit_s": { "direct": direct.1, "splice": splice.1, "inspected": inspected.1, "inspected_ips": with_ips.1 },
        "ratios": {
            "inspected_over_direct_req": inspected.0 / direct.0,
            "inspected_over_direct_bulk": inspected.1 / direct.1,
            "inspected_over_splice_req": inspected.0 / splice.0,
            "inspected_over_splice_bulk": inspected.1 / splice.1,
            "inspected_over_rustls_ceiling": inspected.0 / ceiling,
            "ips_on_over_off_req": with_ips.0 / inspected.0,
            "ips_on_over_off_bulk": with_ips.1 / inspected.1,
        },
        "targets": { "ips_on_over_off": 0.9 },
        "ips_scan_mb_s": { "bundled": scans[0].1, "generated_1000": scans[1].1, "generated_10000": scans[2].1 },
        "flows_inspected": inspected_flows,
        "certificates_forged": forged,
    }))
}
