//! Memory per idle inspected connection: the dataplane's resident set (VmRSS) grows by how much
//! for each TLS connection it holds open, both legs terminated, after one request and response?
//! Measured at 1k, 10k and 100k connections held at once by `idle-client`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use tls_inspect_tests::pki::TestPki;
use tls_inspect_tests::{appliance_bin, check, Topology, SERVER_IP};

use crate::Table;

const PORTS: [u16; 4] = [12443, 12444, 12445, 12446];
const PER_CLIENT: usize = 15_000;

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

pub fn idle_memory(quick: bool, levels: &[usize], et_rules: &std::path::Path, table: &mut Table) -> Result<serde_json::Value> {
    let levels: &[usize] = if !levels.is_empty() {
        levels
    } else if quick {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    println!("\nmeasuring memory per idle inspected connection at {levels:?} connections");
    let mut t = Topology::new()?;
    let pki = TestPki::new(&t.dir)?;
    let server = pki.server("server", &["server.test", SERVER_IP], "root", None)?;
    let ca_dir = t.dir.join("ca");
    check(Command::new(appliance_bin()).args(["ca", "--dir"]).arg(&ca_dir).arg("trial"))?;
    check(t.client.cmd("sysctl").args(["-qw", "net.ipv4.ip_local_port_range=1024 65535"]))?;

    let d = t.dir.join("nginx-idle");
    std::fs::create_dir_all(d.join("tmp"))?;
    std::fs::create_dir_all(d.join("www"))?;
    std::fs::write(d.join("www/index.html"), "hello from nginx\n")?;
    let listen: String = PORTS.iter().map(|p| format!("listen {SERVER_IP}:{p} ssl reuseport; ")).collect();
    let conf = format!(
        "worker_processes {workers}; worker_rlimit_nofile 19000; daemon off; user root; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 18000; }}\n\
         http {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
           uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp; keepalive_timeout 3600s; keepalive_requests 1000000;\n\
           server {{ {listen} ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.3; root {d}/www; }} }}\n",
        server.cert.display(),
        server.key.display(),
        d = d.display(),
        // Each worker holds at most 18,000 connections (descriptors), and reuseport spreads them.
        workers = (levels.iter().max().copied().unwrap_or(0) / 12_000 + 2).min(16),
    );
    std::fs::write(d.join("nginx.conf"), conf)?;
    let mut c = t.server.cmd("nginx");
    c.arg("-c").arg(d.join("nginx.conf")).arg("-p").arg(&d);
    t.spawn(c)?;
    for p in PORTS {
        t.wait_listening(&t.server.clone(), p)?;
    }

    let config = format!(
        "[appliance]\nflow_table_size = 262144\n[dataplane]\nmax_flows = 200000\nidle_timeout = 3600\n\
         [[policy]]\nid = 1\n[[policy.scope]]\nsrc = [\"198.18.0.0/24\"]\nsport = [\"1024/65535\"]\ndst = [\"198.18.0.2\"]\n\
         dport = [\"12443/12446\"]\n[tls]\ninspect = true\nca_dir = \"{}\"\nextra_roots = [\"{}\"]\n\
         [ips]\nenabled = true\nmode = \"monitor\"\nlevel = \"strict\"\nrules = [\"{}\"]\n",
        ca_dir.display(),
        pki.root.display(),
        // Each connection holds its IPS state, with a public ruleset loaded.
        et_rules.display(),
    );
    t.start_appliance(&config)?;
    let pid = t.daemon().context("no daemon")?.child.id();

    let me = std::env::current_exe()?;
    let addrs: Vec<String> = PORTS.iter().map(|p| format!("{SERVER_IP}:{p}")).collect();
    // The client trusts the appliance's CA (and the server's root, for a run without inspection).
    let bundle = t.dir.join("client-roots.pem");
    std::fs::write(&bundle, std::fs::read_to_string(ca_dir.join("ca.crt"))? + &std::fs::read_to_string(&pki.root)?)?;
    // Each client process holds at most PER_CLIENT connections (one descriptor each: the
    // hard RLIMIT_NOFILE here may be as low as 20,000).
    let max = levels.iter().max().copied().unwrap_or(0) + 16;
    let mut children = Vec::new();
    for _ in 0..max.div_ceil(PER_CLIENT) {
        let mut client = t.client.cmd(me.to_str().context("path")?);
        client
            .args(["idle-client", "--ca"])
            .arg(&bundle)
            .args(["--threads", "4", "--addrs", &addrs.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        children.push(client.spawn().context("idle-client")?);
    }
    let result = (|| -> Result<serde_json::Value> {
        let mut pipes = Vec::new();
        for child in &mut children {
            pipes.push((child.stdin.take().context("stdin")?, BufReader::new(child.stdout.take().context("stdout")?), 0usize, 0usize));
        }
        // Opens `n` more, filling each client up to PER_CLIENT, all clients at once.
        let mut open = |n: usize| -> Result<(usize, usize)> {
            let mut left = n;
            let mut asked = Vec::new();
            for (i, (input, _, held, _)) in pipes.iter_mut().enumerate() {
                let k = left.min(PER_CLIENT.saturating_sub(*held));
                if k > 0 {
                    writeln!(input, "open {k}")?;
                    asked.push(i);
                    left -= k;
                }
            }
            for i in asked {
                let (_, output, held, failed) = &mut pipes[i];
                let mut line = String::new();
                output.read_line(&mut line)?;
                let mut f = line.split_whitespace().skip(1).map(|v| v.parse::<usize>());
                match (f.next(), f.next()) {
                    (Some(Ok(total)), Some(Ok(bad))) => {
                        *held = total;
                        *failed = bad;
                    }
                    _ => bail!("idle-client said '{line}'"),
                }
            }
            Ok((pipes.iter().map(|p| p.2).sum(), pipes.iter().map(|p| p.3).sum()))
        };
        // Warm: the certificate is forged and the buffers the first flows touch are there.
        let warm = 16;
        open(warm)?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let base = rss_kib(pid)?;
        let mut rows = serde_json::Map::new();
        let mut held = warm;
        for &level in levels {
            let (total, failed) = open(level + warm - held)?;
            held = total;
            std::thread::sleep(std::time::Duration::from_millis(500));
            let rss = rss_kib(pid)?;
            let open_flows = t.metric("tls_inspect_worker_flows_open", &[])? as usize;
            let inspected = t.metric("tls_inspect_worker_tls_flows_total", &[("decision", "inspected")])?;
            let per = (rss.saturating_sub(base)) as f64 / (total - warm).max(1) as f64;
            table.row(
                &format!("memory: {} idle inspected connections (IPS on, {} loaded)", total - warm, crate::ipsscan::ruleset_name(et_rules)),
                &[("KiB/conn", per), ("MiB RSS", rss as f64 / 1024.0)],
                &format!("(target <= 48 KiB; {failed} failed to open; workers hold {open_flows})"),
            );
            if open_flows + 16 < total {
                let stats = t.stats()?;
                let log = std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "the workers hold {open_flows} flows, the client {total}: connections were not kept (stats: {}; nginx: {tail:?})",
                    stats["metrics"]
                );
            }
            rows.insert(
                (total - warm).to_string(),
                serde_json::json!({ "rss_kib": rss, "base_rss_kib": base, "kib_per_connection": per, "flows_open": open_flows, "failed": failed, "inspected": inspected }),
            );
        }
        Ok(serde_json::json!({ "levels": rows, "target_kib": 48 }))
    })();
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}
