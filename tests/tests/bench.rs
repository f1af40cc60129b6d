//! The benchmarks run: the pktgen samples send (userspace AF_XDP backend, as on these
//! kernels) and their receiver counts what arrived, and `tls-inspect-bench --quick` produces a
//! number for every scenario and every comparison system, and a plot for each. What the
//! numbers are is the bench's business, not a test's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tls_inspect_tests::{appliance_bin, check, require_root, Topology};

/// The two tests load the same two cores; one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn bench_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TLS_INSPECT_BENCH_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tls-inspect-bench");
    assert!(p.exists(), "{} is missing: build it first (cargo xtask test does)", p.display());
    p
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/pktgen")
}

/// The first number after `prefix` in `out`.
fn number_after(out: &str, prefix: &str) -> Result<u64> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no '{prefix}<number>' in:\n{out}"))
}

#[test]
fn pktgen_samples_send_through_the_appliance_and_the_receiver_counts() -> Result<()> {
    require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Topology::with_queues(2)?;
    let mut sink = t.server.cmd(bench_bin().to_str().context("path")?);
    sink.args(["xdp-sink", "--dev", "eth0"]);
    let i = t.spawn(sink)?;
    t.background(i).wait_for("attached", Duration::from_secs(20))?;
    t.start_appliance("")?;
    let rx = format!("{}:eth0", t.server.0);
    let syn_before = t.metric("tls_inspect_xdp_syns_classified_total", &[])?;

    for (script, extra) in [
        ("pktgen_sample01_simple.sh", &[][..]),
        ("pktgen_sample02_many_flows.sh", &["-S", "198.18.0.0/24", "-d", "198.18.0.0/24", "-p", "9-99"][..]),
        ("pktgen_sample03_syn_flood.sh", &["-S", "198.18.0.0/24", "-p", "443"][..]),
        ("pktgen_sample04_multi_thread.sh", &["-t", "2"][..]),
        ("pktgen_sample01_simple.sh", &["-6", "-s", "128"][..]),
    ] {
        let out = check(
            Command::new("bash")
                .arg(scripts().join(script))
                .args(["-N", &t.client.0, "-i", "eth0", "-n", "3000", "-r", &rx])
                .args(extra)
                .env("PKTGEN_BIN", bench_bin()),
        )?;
        let sent = number_after(&out, "pktgen: ")?;
        let threads = if extra.contains(&"-t") { 2 } else { 1 };
        assert_eq!(sent, 3000 * threads, "{script} {extra:?}: every packet asked for was sent:\n{out}");
        let received = number_after(&out, "received: ")?;
        // The veth rings may drop a few under a burst; the count is what is asserted.
        assert!(received >= sent * 9 / 10, "{script} {extra:?}: the receiver saw {received} of {sent}:\n{out}");
        assert!(out.contains(" pps"), "{script}: no rate:\n{out}");
    }
    // The SYN flood went through the classifier: every SYN was a new flow to classify.
    let syns = t.metric("tls_inspect_xdp_syns_classified_total", &[])? - syn_before;
    assert!(syns >= 3000, "the XDP program classified {syns} SYNs");

    // Bad options are refused by the generator, naming the option.
    let out = Command::new("bash")
        .arg(scripts().join("pktgen_sample01_simple.sh"))
        .args(["-N", &t.client.0, "-i", "eth0", "-n", "10", "-s", "20"])
        .env("PKTGEN_BIN", bench_bin())
        .output()?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("size"), "{out:?}");
    Ok(())
}

#[test]
fn quick_bench_produces_a_number_for_every_scenario_and_system() -> Result<()> {
    require_root();
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("tls-inspect-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<()> {
        let out = Command::new(bench_bin()).arg("--quick").current_dir(&dir).env("TLS_INSPECT_BIN", appliance_bin()).output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the quick bench failed:\n{text}");
        let results = dir.join("bench/results");
        let json = std::fs::read_dir(&results)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .with_context(|| format!("no results JSON in {}:\n{text}", results.display()))?;
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
        let positive = |path: &[&str]| {
            let mut x = &v;
            for p in path {
                x = &x[*p];
            }
            assert!(x.as_f64().is_some_and(|n| n > 0.0 && n.is_finite()), "{path:?} is {x} in {}:\n{text}", json.display());
        };
        assert_eq!(v["machine"]["cores"].as_u64(), std::thread::available_parallelism().ok().map(|n| n.get() as u64));
        for system in ["linux_bridge", "xdp_bridge", "splice"] {
            positive(&["forwarding", "single_flow_gbit_s", system]);
        }
        for system in ["bare XDP redirect", "tls-inspect", "Linux bridge"] {
            for size in [64, 1500] {
                let key = format!("{system}/{size}");
                positive(&["pps", "systems", &key, "offered_pps"]);
                positive(&["pps", "systems", &key, "received_pps"]);
            }
        }
        for items in ["10", "10000", "1000000"] {
            for frame in ["tcp, no scope", "udp/443 (QUIC)", "ipv6 tcp", "arp", "steered flow (ACK)", "passed flow (ACK, bypass)", "handshake (ACK)", "matching SYN (new flow)"] {
                positive(&["prog_run", "items", items, "frames", frame, "ns"]);
                positive(&["prog_run", "items", items, "frames", frame, "bare_ns"]);
            }
        }
        for system in ["direct", "passed", "inspected", "inspected_resuming", "inspected_ips", "rustls_ceiling", "bridged_alongside_passed"] {
            positive(&["tls", "https_req_per_s", system]);
        }
        positive(&["tls", "worker_frames_per_passed_conn"]);
        // The resuming clients' runs resumed on both legs (a server with tickets on): most of
        // their connections, by the workers' counters.
        for leg in ["client", "upstream"] {
            let share = &v["tls"]["resumed_share_of_resuming_clients"][leg];
            assert!(share.as_f64().is_some_and(|s| s >= 0.8), "{leg} leg resumed {share} of the resuming clients' connections");
        }
        positive(&["flood", "syn_per_s"]);
        assert!(v["flood"]["inspected_ok_share"].as_f64().is_some_and(|s| s >= 0.95), "flood: {}", v["flood"]);
        assert_eq!(v["flood"]["worker_frames_per_flood_syn"].as_f64().map(|f| f < 0.01), Some(true), "flood: {}", v["flood"]);
        for system in ["direct", "passed", "inspected", "inspected_ips", "bridged_alongside_passed"] {
            positive(&["tls", "https_bulk_gbit_s", system]);
        }
        for other in ["squid", "mitmproxy"] {
            positive(&["tls", "others", other, "req_per_s"]);
            positive(&["tls", "others", other, "bulk_gbit_s"]);
            positive(&["tls", "others", other, "resumed_req_per_s"]);
        }
        for leg in ["new", "resuming", "passed", "rustls_pair"] {
            positive(&["tls", "worker_cpu_ms_per_inspected_conn", leg]);
        }
        positive(&["memory", "levels", "1000", "kib_per_connection"]);
        let plots = v["plots"].as_array().cloned().unwrap_or_default();
        assert!(plots.len() >= 9, "plots: {plots:?}");
        for p in plots {
            let p = dir.join(p.as_str().unwrap_or_default());
            let bytes = std::fs::read(&p).with_context(|| format!("{}", p.display()))?;
            assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", p.display());
        }
        // The terminal table names the targets beside the ratios.
        assert!(text.contains("(target >= 6)") && text.contains("(target <= 0.5)") && text.contains("(target >= 0.95)"), "{text}");
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
