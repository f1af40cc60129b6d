//! A SYN flood at an inspected scope while a client makes new inspected HTTPS connections: the
//! userspace generator behind `pktgen/pktgen_sample03_syn_flood.sh` (AF_XDP, SYNs from 65,536
//! source address and port pairs of the client network) at its full rate, against nginx on the
//! scope's port. What is measured: the share of inspected connections that succeed during the
//! flood, the dataplane's RSS before and after, and the frames that reached the workers per
//! flood SYN (the handshakes pass in XDP, so the answer should be none).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tls_inspect_tests::pki::TestPki;
use tls_inspect_tests::{check, Background, Topology, SERVER_IP};

use crate::Table;

/// The dataplane's resident memory (KiB), from its pid file.
fn rss_kib(t: &Topology) -> Result<u64> {
    let pid = std::fs::read_to_string(format!("/run/{}/tls-inspect.pid", t.instance)).context("the appliance's pid file")?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS"))
}

pub fn syn_flood(quick: bool, table: &mut Table) -> Result<serde_json::Value> {
    let secs = if quick { 3.0 } else { 8.0 };
    println!("\nmeasuring a SYN flood at an inspected scope ({secs} s) with new inspected HTTPS connections");
    let mut t = Topology::new()?;
    let pki = TestPki::new(&t.dir)?;
    let server = pki.server("server", &["server.test", SERVER_IP], "root", None)?;
    tls_inspect_tests::tlsbed::nginx(&mut t, &tls_inspect_tests::pki::Pair { cert: server.cert.clone(), key: server.key.clone() })?;
    let ca_dir = t.dir.join("ca");
    check(std::process::Command::new(tls_inspect_tests::appliance_bin()).args(["ca", "--dir"]).arg(&ca_dir).arg("trial"))?;
    t.start_appliance(&format!(
        "[[policy]]\nid = 1\n[[policy.scope]]\nsrc = [\"198.18.0.0/24\"]\nsport = [\"1024/65535\"]\ndst = [\"198.18.0.2\"]\ndport = [\"443/443\"]\n\
         [tls]\ninspect = true\nca_dir = \"{}\"\nextra_roots = [\"{}\"]\n",
        ca_dir.display(),
        pki.root.display()
    ))?;
    let ca = ca_dir.join("ca.crt");
    let curl = |t: &Topology| -> bool {
        let mut c = t.client.cmd("curl");
        c.args(["-fsS", "-o", "/dev/null", "--max-time", "5", "--connect-to", "::198.18.0.2:", "--cacert"]).arg(&ca).arg("https://server.test/");
        tls_inspect_tests::run(c).is_ok_and(|o| o.status.success())
    };
    // Warm: the forged certificate exists and the workers' memory has settled.
    for _ in 0..5 {
        curl(&t);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(&t)?;
    let rx_before = t.metric("tls_inspect_worker_frames_total", &[("direction", "rx")])?;
    let syns_before = t.metric("tls_inspect_xdp_syns_matched_total", &[])?;
    let handshakes_before = t.metric("tls_inspect_xdp_handshake_frames_total", &[])?;

    let mut gen = t.client.cmd(crate::own_bin()?.to_str().context("path")?);
    gen.args(["pktgen", "-i", "eth0", "--syn", "-d", SERVER_IP, "--src", "198.18.0.0/24", "--sport", "1024-65535", "-p", "443", "-f", "65536", "-D", &secs.to_string(), "--json"]);
    let mut gen = Background::spawn(gen)?;
    let start = Instant::now();
    let (mut ok, mut tried) = (0u64, 0u64);
    while start.elapsed().as_secs_f64() < secs - 0.5 {
        tried += 1;
        if curl(&t) {
            ok += 1;
        }
    }
    gen.wait_for("\"pps\"", Duration::from_secs(15))?;
    let report = gen.lines().into_iter().find(|l| l.starts_with('{')).ok_or_else(|| anyhow!("the generator said {:?}", gen.lines()))?;
    let report: serde_json::Value = serde_json::from_str(&report)?;
    let pps = report["pps"].as_f64().unwrap_or(0.0);
    let sent = report["sent"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(&t)?;
    let matched = t.metric("tls_inspect_xdp_syns_matched_total", &[])? - syns_before;
    let handshake_frames = t.metric("tls_inspect_xdp_handshake_frames_total", &[])? - handshakes_before;
    let worker_frames = t.metric("tls_inspect_worker_frames_total", &[("direction", "rx")])? - rx_before;
    // Each real connection brings its own frames (about 20 for a small HTTPS exchange); what
    // is left over per flood SYN is what the flood cost the workers.
    let flood_syns = sent;
    let leftover = worker_frames.saturating_sub(30 * tried);
    let share = ok as f64 / tried.max(1) as f64;
    table.row("SYN flood at an inspected scope (AF_XDP generator)", &[("SYN/s", pps), ("new flows", matched as f64)], "");
    table.row("inspected HTTPS during the flood", &[("ok", ok as f64), ("tried", tried as f64)], "");
    table.row("dataplane RSS before / after the flood", &[("KiB", rss_before as f64), ("KiB after", rss_after as f64)], "");
    table.ratio("flood: inspected connections that succeeded", share, ">= 0.95");
    table.ratio("flood: worker frames per flood SYN", leftover as f64 / flood_syns.max(1) as f64, "0");
    let syn_data_dropped = t.metric("tls_inspect_xdp_syn_data_dropped_total", &[])?;
    t.stop_appliance();
    check(t.cli().arg("detach"))?;
    Ok(serde_json::json!({
        "syn_per_s": pps,
        "syns_sent": sent,
        "syns_matched": matched,
        "syn_data_dropped": syn_data_dropped,
        "handshake_frames": handshake_frames,
        "inspected_ok": ok,
        "inspected_tried": tried,
        "inspected_ok_share": share,
        "worker_frames": worker_frames,
        "worker_frames_per_flood_syn": leftover as f64 / flood_syns.max(1) as f64,
        "rss_kib": { "before": rss_before, "after": rss_after },
        "targets": { "inspected_ok_share": 0.95 },
    }))
}
