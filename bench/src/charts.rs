//! Which bars each scenario's plot shows, read from the results it wrote.

use serde_json::{Map, Value};

use crate::plot::Chart;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

pub fn from_results(r: &Map<String, Value>) -> Vec<Chart> {
    let mut charts = Vec::new();
    let chart = |file: &str, title: &str, unit: &str, bars: Vec<(&str, f64)>, baseline: usize| Chart {
        file: file.into(),
        title: title.into(),
        unit: unit.into(),
        bars: bars.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        baseline,
    };
    if let Some(f) = r.get("forwarding").filter(|v| v.get("error").is_none()) {
        let g = &f["single_flow_gbit_s"];
        charts.push(chart("forwarding", "Single TCP flow (iperf3), ratio to the Linux bridge", "Gbit/s",
            vec![("Linux bridge", num(&g["linux_bridge"])), ("tls-inspect XDP bridge", num(&g["xdp_bridge"])), ("tls-inspect splice", num(&g["splice"]))], 0));
    }
    if let Some(p) = r.get("pps").filter(|v| v.get("error").is_none()) {
        for size in [64, 1500] {
            let get = |s: &str| num(&p["systems"][format!("{s}/{size}")]["received_pps"]);
            charts.push(chart(&format!("pps-{size}"), &format!("Pass-through, {size}-byte frames, received pps, ratio to bare redirect"), "packets/s",
                vec![("bare XDP redirect", get("bare XDP redirect")), ("tls-inspect", get("tls-inspect")), ("Linux bridge", get("Linux bridge"))], 0));
        }
    }
    if let Some(p) = r.get("prog_run").filter(|v| v.get("error").is_none()) {
        let f = |items: &str, frame: &str| num(&p["items"][items]["frames"][frame]["ns"]);
        let bare = num(&p["items"]["10"]["frames"]["tcp, no scope"]["bare_ns"]);
        charts.push(chart("prog-run", "XDP per frame (BPF_PROG_TEST_RUN), non-matching TCP, ratio to bare redirect", "ns per frame",
            vec![("bare redirect", bare), ("10 items", f("10", "tcp, no scope")), ("10k items", f("10000", "tcp, no scope")), ("1M items", f("1000000", "tcp, no scope")), ("1M: steered flow", f("1000000", "steered flow (ACK)"))], 0));
    }
    if let Some(t) = r.get("tls").filter(|v| v.get("error").is_none()) {
        for (file, key, other_key, title, unit) in [
            ("https-conns", "https_req_per_s", "req_per_s", "New HTTPS connections/s (TLS 1.3, warm cert cache), ratio to Squid", "requests/s"),
            ("https-bulk", "https_bulk_gbit_s", "bulk_gbit_s", "Bulk HTTPS on one connection, ratio to Squid", "Gbit/s"),
        ] {
            charts.push(chart(file, title, unit, vec![
                ("Squid ssl-bump", num(&t["others"]["squid"][other_key])),
                ("mitmproxy", num(&t["others"]["mitmproxy"][other_key])),
                ("tls-inspect", num(&t[key]["inspected"])),
                ("tls-inspect + IPS", num(&t[key]["inspected_ips"])),
                ("tls-inspect passed (Do-Not-Inspect)", num(&t[key]["passed"])),
                ("direct (no inspection)", num(&t[key]["direct"])),
            ], 0));
        }
        charts.push(chart("https-ceiling", "tls-inspect vs rustls' in-memory handshake ceiling", "handshakes/s",
            vec![("rustls ceiling (1 core)", num(&t["https_req_per_s"]["rustls_ceiling"])), ("tls-inspect", num(&t["https_req_per_s"]["inspected"]))], 0));
        charts.push(chart("ips", "IPS cost: inspected HTTPS, bundled rules on vs off", "requests/s",
            vec![("IPS off", num(&t["https_req_per_s"]["inspected"])), ("IPS on", num(&t["https_req_per_s"]["inspected_ips"]))], 0));
    }
    if let Some(m) = r.get("memory").filter(|v| v.get("error").is_none()) {
        let mut bars = vec![("target".to_string(), num(&m["target_kib"]))];
        for (level, v) in m["levels"].as_object().into_iter().flatten() {
            bars.push((format!("{level} idle conns"), num(&v["kib_per_connection"])));
        }
        charts.push(Chart { file: "memory".into(), title: "Memory per idle inspected connection, ratio to the 48 KiB target".into(), unit: "KiB".into(), bars, baseline: 0 });
    }
    charts
}
