//! Pass-through: traffic no scope matches, which the appliance must bridge at line rate.
//!
//! - `pps`: packets per second through the appliance namespace, 64- and 1500-byte frames, many
//!   UDP flows, from the userspace AF_XDP generator in the client namespace to a counting XDP
//!   sink on the server's interface: tls-inspect's classifier-bridge vs a bare devmap redirect
//!   vs the Linux bridge. The generator's offered rate is reported beside each received rate:
//!   on a 2-core VM generator, forwarder and sink share the cores, and a run in which nothing
//!   was lost says only that the forwarder kept up with that generator.
//! - `prog_run`: ns per frame of the XDP program itself through BPF_PROG_TEST_RUN, with scope
//!   tables of 10, 10k and 1M items, against the bare redirect.

use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tls_inspect_tests::{check, Topology, INSIDE, OUTSIDE, SERVER_IP};

use crate::{median, Table};

/// Frames the sink's interface has received (XDP-dropped ones included).
fn rx_packets(t: &Topology) -> Result<u64> {
    let out = check(Command::new("ip").args(["-n", &t.server.0, "-s", "-j", "link", "show", "eth0"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["stats64"]["rx"]["packets"].as_u64().ok_or_else(|| anyhow!("no rx counter: {out}"))
}

/// One generator run of `size`-byte frames on the wire (the generator's size leaves out the
/// 4-byte FCS, as pktgen's does): (offered pps, received pps).
fn blast(t: &Topology, size: usize, secs: f64, threads: u32) -> Result<(f64, f64)> {
    let me = std::env::current_exe()?;
    let before = rx_packets(t)?;
    let out = check(t.client.cmd(me.to_str().context("path")?).args([
        "pktgen", "-i", "eth0", "-s", &(size - 4).to_string(), "-d", "198.18.0.0/24", "--src", "198.18.0.0/24",
        "--sport", "1024-65535", "-p", "9-99", "-f", "4096", "-t", &threads.to_string(), "-D", &secs.to_string(), "--json",
    ]))?;
    std::thread::sleep(Duration::from_millis(200));
    let received = rx_packets(t)? - before;
    let v: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("pktgen said {out}"))?;
    let (sent, took) = (v["sent"].as_u64().unwrap_or(0), v["secs"].as_f64().unwrap_or(1.0));
    Ok((sent as f64 / took, received as f64 / took))
}

pub fn pps(quick: bool, runs: usize, table: &mut Table) -> Result<serde_json::Value> {
    let secs = if quick { 1.0 } else { 4.0 };
    let runs = if quick { 1 } else { runs.max(1) };
    let threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1).min(4);
    println!("\nmeasuring pass-through packets/s: {threads} generator thread(s), 4,096 UDP flows, {secs} s per run");
    let mut t = Topology::with_queues(threads)?;
    let mut sink = t.server.cmd(crate::own_bin()?.to_str().context("path")?);
    sink.args(["xdp-sink", "--dev", "eth0"]);
    let i = t.spawn(sink)?;
    t.background(i).wait_for("attached", Duration::from_secs(20))?;

    let mut results = serde_json::Map::new();
    let sizes = [64usize, 1500];
    let mut measure = |t: &Topology, system: &str, results: &mut serde_json::Map<String, serde_json::Value>| -> Result<()> {
        for size in sizes {
            let mut offered = Vec::new();
            let mut received = Vec::new();
            for _ in 0..runs {
                let (o, r) = blast(t, size, secs, threads)?;
                offered.push(o);
                received.push(r);
            }
            let (o, r) = (median(offered), median(received));
            let bound = r >= 0.99 * o;
            table.row(&format!("pps {size} B: {system}"), &[("offered pps", o), ("received pps", r)], if bound { "generator-bound" } else { "" });
            results.insert(format!("{system}/{size}"), serde_json::json!({ "offered_pps": o, "received_pps": r, "generator_bound": bound }));
        }
        Ok(())
    };

    // (a) The bare redirect: the in-kernel limit of a devmap bridge on these interfaces.
    let mut bare = t.appliance.cmd(crate::own_bin()?.to_str().context("path")?);
    bare.args(["xdp-redirect", "--a", INSIDE, "--b", OUTSIDE]);
    let b = t.spawn(bare)?;
    t.background(b).wait_for("attached", Duration::from_secs(20))?;
    measure(&t, "bare XDP redirect", &mut results)?;
    t.background(b).stop(Duration::from_secs(10));

    // (b) tls-inspect: a scope on TCP 443, which none of these frames match.
    t.start_appliance(&crate::one_scope(r#""443/443""#))?;
    measure(&t, "tls-inspect", &mut results)?;
    t.stop_appliance();
    check(t.cli().arg("detach"))?;

    // (c) The Linux bridge in the appliance namespace.
    crate::linux_bridge(&t, true)?;
    measure(&t, "Linux bridge", &mut results)?;

    let get = |k: &str| results[k]["received_pps"].as_f64().unwrap_or(f64::NAN);
    let mut ratios = serde_json::Map::new();
    for size in sizes {
        let ti = get(&format!("tls-inspect/{size}"));
        let over_bare = ti / get(&format!("bare XDP redirect/{size}"));
        let over_linux = ti / get(&format!("Linux bridge/{size}"));
        table.ratio(&format!("pps {size} B: tls-inspect / bare redirect"), over_bare, ">= 0.95");
        table.ratio(&format!("pps {size} B: tls-inspect / Linux bridge"), over_linux, ">= 3");
        ratios.insert(format!("tls_inspect_over_bare_{size}"), over_bare.into());
        ratios.insert(format!("tls_inspect_over_linux_bridge_{size}"), over_linux.into());
    }
    Ok(serde_json::json!({
        "threads": threads, "secs": secs, "flows": 4096, "systems": results, "ratios": ratios,
        "targets": { "tls_inspect_over_bare": 0.95, "tls_inspect_over_linux_bridge": 3.0 },
    }))
}


/// A config whose scopes hold about `items` items (src x sport x dst x dport, summed), spread
/// over as many distinct prefixes as the limits allow, the first scope matching the test flow
/// 198.18.0.1 -> 198.18.0.2:443.
pub fn scope_config(items: usize) -> String {
    // Scopes of up to 100 sources x 100 destinations (10k items each), 10 per policy.
    let per_scope = items.clamp(1, 10_000);
    let scopes = items.div_ceil(per_scope);
    let (srcs, dsts) = if per_scope >= 10_000 { (100, 100) } else if per_scope >= 100 { (per_scope / 100, 100) } else { (1, per_scope) };
    let mut s = String::from("[appliance]\nprefix_table_size = 131072\n[limits]\nquota_per_scope = 10000\n");
    let addr = |n: usize| format!("198.19.{}.{}", (n / 256) % 256, n % 256);
    let mut n = 0usize;
    for scope in 0..scopes {
        if scope % 10 == 0 {
            s += &format!("[[policy]]\nid = {}\n", scope / 10 + 1);
        }
        let mut src: Vec<String> = Vec::new();
        let mut dst: Vec<String> = Vec::new();
        if scope == 0 {
            src.push("\"198.18.0.0/24\"".into());
            dst.push(format!("\"{SERVER_IP}\""));
        }
        while src.len() < srcs {
            src.push(format!("\"{}\"", addr(n)));
            n += 1;
        }
        while dst.len() < dsts {
            dst.push(format!("\"{}\"", addr(n)));
            n += 1;
        }
        s += &format!(
            "[[policy.scope]]\nsrc = [{}]\nsport = [\"1024/65535\"]\ndst = [{}]\ndport = [\"443/443\"]\n",
            src.join(", "),
            dst.join(", ")
        );
    }
    s
}

pub fn prog_run(quick: bool, runs: usize, table: &mut Table) -> Result<serde_json::Value> {
    let repeat = if quick { "100000" } else { "2000000" };
    let new_flows = if quick { "500" } else { "5000" };
    println!("\nmeasuring the XDP program per frame (BPF_PROG_TEST_RUN, {repeat} repeats; new flows one SYN each)");
    let mut t = Topology::new()?;
    let runs = if quick { 1 } else { runs.max(1) };
    // One run of the appliance's program (or the bare one); each run's new flows on ports of
    // their own, so that every SYN really is new.
    let run = |t: &Topology, bare: bool, first_port: usize| -> Result<serde_json::Value> {
        let mut c = t.appliance.cmd(crate::own_bin()?.to_str().context("path")?);
        c.env("TLS_INSPECT_INSTANCE", &t.instance)
            .args(["prog-run", "--json", "--repeat", repeat, "--new-flows", new_flows, "--first-port"])
            .arg(first_port.to_string());
        if bare {
            c.arg("--bare");
        }
        Ok(serde_json::from_str(check(c)?.trim())?)
    };
    let mut out = serde_json::Map::new();
    // The issue's target is on the frames of steered and passed flows; the rest is reported.
    let (mut worst_extra, mut worst_other) = (0f64, 0f64);
    let mut by_items = Vec::new();
    for items in [10usize, 10_000, 1_000_000] {
        t.start_appliance(&scope_config(items))?;
        // The two programs alternated, medians per frame: the VM's drift hits both alike.
        let (mut mine, mut bares) = (Vec::new(), Vec::new());
        for r in 0..runs {
            mine.push(run(&t, false, 20_000 + r * 5_000)?);
            bares.push(run(&t, true, 20_000)?);
        }
        t.stop_appliance();
        check(t.cli().arg("detach"))?;
        let med = |all: &[serde_json::Value], frame: &str| median(all.iter().map(|v| v[frame]["ns"].as_f64().unwrap_or(f64::NAN)).collect());
        let v = mine[0].clone();
        let bare = serde_json::Value::Object(
            v.as_object().into_iter().flatten().map(|(f, _)| (f.clone(), serde_json::json!({ "ns": med(&bares, f) }))).collect(),
        );
        let v = serde_json::Value::Object(
            v.as_object().into_iter().flatten().map(|(f, r)| (f.clone(), serde_json::json!({ "ns": med(&mine, f), "action": r["action"] }))).collect(),
        );
        let mut rows = serde_json::Map::new();
        for (frame, r) in v.as_object().into_iter().flatten() {
            let ns = r["ns"].as_f64().unwrap_or(f64::NAN);
            let base = bare[frame]["ns"].as_f64().unwrap_or(f64::NAN);
            // The extra cost is the median of each pair's difference (a run of the appliance's
            // program and the bare run right after it): the VM's drift between pairs cancels,
            // where a difference of the two medians takes it in.
            let diffs: Vec<f64> = mine.iter().zip(&bares).map(|(m, b)| paired_extra(m, b, frame)).collect();
            let extra = median(diffs.clone());
            let each = diffs.iter().map(|d| format!("{d:+.0}")).collect::<Vec<_>>().join(" ");
            table.row(&format!("prog-run {items} items: {frame}"), &[("ns/frame", ns), ("bare ns", base)], &format!("{extra:+.0} ns (pairs: {each})"));
            if frame.starts_with("steered flow") || frame.starts_with("passed flow") {
                worst_extra = worst_extra.max(extra);
            } else if !frame.starts_with("matching SYN") {
                worst_other = worst_other.max(extra);
            }
            rows.insert(frame.clone(), serde_json::json!({ "ns": ns, "bare_ns": base, "extra_ns": extra, "pair_extra_ns": diffs, "action": r["action"] }));
        }
        by_items.push(v["tcp, no scope"]["ns"].as_f64().unwrap_or(f64::NAN));
        out.insert(items.to_string(), serde_json::json!({ "frames": rows }));
    }
    let growth = by_items[2] / by_items[0];
    table.ratio("prog-run: steered and passed frames, worst extra ns over bare", worst_extra, "<= 30 ns");
    table.ratio("prog-run: other frames (not new flows), worst extra ns", worst_other, "reported");
    table.ratio("prog-run: non-matching TCP, 1M / 10 items", growth, "~1.0");
    Ok(serde_json::json!({ "items": out, "worst_extra_ns": worst_extra, "worst_other_extra_ns": worst_other, "growth_1m_over_10": growth, "targets": { "extra_ns": 30 } }))
}

/// One pair's extra ns per frame on `frame`: the appliance's program's run less the bare one's.
fn paired_extra(mine: &serde_json::Value, bare: &serde_json::Value, frame: &str) -> f64 {
    mine[frame]["ns"].as_f64().unwrap_or(f64::NAN) - bare[frame]["ns"].as_f64().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_extra_cost_is_the_median_of_the_pairs_differences() {
        // Pair 2's bare run and all of pair 3 ran in a slow stretch of the VM: the medians'
        // difference (32 - 60) takes it in, the pairs' own differences (25, -28, 25) do not.
        let runs = |v: &[f64]| v.iter().map(|ns| serde_json::json!({ "steered flow ACK": { "ns": ns } })).collect::<Vec<_>>();
        let mine = runs(&[30.0, 32.0, 90.0]);
        let bare = runs(&[5.0, 60.0, 65.0]);
        let diffs: Vec<f64> = mine.iter().zip(&bare).map(|(m, b)| super::paired_extra(m, b, "steered flow ACK")).collect();
        assert_eq!(crate::median(diffs), 25.0);
    }

    #[test]
    fn scope_configs_hold_the_items_asked() {
        for items in [10usize, 10_000, 1_000_000] {
            let text = super::scope_config(items);
            let v: toml::Value = toml::from_str(&text).unwrap();
            let mut total = 0;
            for p in v["policy"].as_array().unwrap() {
                let scopes = p["scope"].as_array().unwrap();
                assert!(scopes.len() <= 10);
                for s in scopes {
                    let n = |f: &str| s[f].as_array().unwrap().len();
                    assert!(n("src") <= 1000 && n("dst") <= 100);
                    total += n("src") * n("sport") * n("dst") * n("dport");
                }
            }
            assert!(total >= items && total <= items + 200, "{items}: {total}");
        }
    }
}
