//! Hyperscan's scan rate on this core, through the IPS's own per-flow state
//! (`tls-inspect-bench ips-scan`), independent of the network.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use tls_inspect_dataplane::inspect::ips::{FlowIps, FlowTuple, IpsMode, Level, Options, Ruleset};
use tls_inspect_dataplane::inspect::rules::parse_rules;
use tls_inspect_dataplane::inspect::{Direction, DEFAULT_RULES};

/// The public ruleset sample the benchmarks load (ET Open, BSD part; see its header).
pub const ET_SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tls-inspect-dataplane/tests/fixtures/et-open-sample.rules");

/// How the tables name a public ruleset: "ET Open sample" for the one in the tree, else its
/// file name.
pub fn ruleset_name(path: &std::path::Path) -> String {
    if path == std::path::Path::new(ET_SAMPLE) {
        "ET Open sample".into()
    } else {
        format!("ET Open ({})", path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default())
    }
}

/// What one `ips-scan` measured.
pub struct Scan {
    pub mb_per_s: f64,
    pub label: String,
    /// Seconds to compile the rules into Hyperscan databases.
    pub compile_s: f64,
    /// Resident memory the compiled rule set added, in MiB.
    pub compiled_mib: f64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Scan throughput (MB/s on this thread) of the bundled rules, of `generated` synthetic rules
/// (half stream contents, half http.uri contents with modifiers), or of a rule file (what loads
/// of it), over `megabytes` of HTTP/1.1 requests and responses fed in 16 KiB reads, in streaming
/// mode; with the compile time and memory of the rule set. `bulk`: one request, then one response
/// of random bytes (what the bulk download benchmark sends) in 16 KiB reads.
pub fn scan_rate(generated: Option<usize>, file: Option<&std::path::Path>, megabytes: usize, bulk: bool) -> Result<Scan> {
    let text = match (generated, file) {
        (_, Some(path)) => std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))?,
        (None, None) => DEFAULT_RULES.to_string(),
        (Some(n), None) => (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    format!("alert tcp any any -> any any (msg:\"gen {i}\"; content:\"zq{i:06}xv\"; sid:{};)\n", 100_000 + i)
                } else {
                    format!("alert http any any -> any any (msg:\"gen {i}\"; http.uri; content:\"/gz{i:06}/\"; nocase; content:\"k{i}=\"; distance:0; within:40; sid:{};)\n", 100_000 + i)
                }
            })
            .collect(),
    };
    let (rules, errors) = parse_rules(&text);
    if !errors.is_empty() && file.is_none() {
        return Err(anyhow!("{} generated rules refused: {}", errors.len(), errors[0]));
    }
    let before = rss_kib();
    let started = std::time::Instant::now();
    let (set, refused) = Ruleset::compile(rules, &Options { mode: IpsMode::Monitor, level: Level::Strict, ..Options::default() })?;
    let compile_s = started.elapsed().as_secs_f64();
    let compiled_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;
    let n = set.rules.len();
    let _ = refused;
    let set = Arc::new(set);
    let mut scratch = set.scratch()?;
    // Realistic traffic: requests with headers and small bodies, responses with HTML.
    let mut req = Vec::new();
    let mut resp = Vec::new();
    for i in 0..64 {
        req.extend_from_slice(format!("GET /app/items/{i}?page=3&sort=name HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html\r\nCookie: session=abcdef0123456789\r\n\r\n").as_bytes());
        let body = "<html><body>".to_string() + &"<p>lorem ipsum dolor sit amet, consectetur adipiscing elit</p>".repeat(40) + "</body></html>";
        resp.extend_from_slice(format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    }
    let target = megabytes * 1_000_000;
    if bulk {
        // Random bytes from a fixed-seed generator (xorshift), as urandom would give them.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let body: Vec<u8> = (0..4 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
        f.inspect(Direction::ToServer, b"GET /big HTTP/1.1\r\nHost: server.test\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n", &mut scratch);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {target}\r\n\r\n");
        let start = std::time::Instant::now();
        f.inspect(Direction::ToClient, head.as_bytes(), &mut scratch);
        let mut scanned = 0;
        while scanned < target {
            for chunk in body.chunks(16 * 1024) {
                f.inspect(Direction::ToClient, chunk, &mut scratch);
                scanned += chunk.len();
            }
        }
        let mbps = scanned as f64 / 1e6 / start.elapsed().as_secs_f64();
        return Ok(Scan { mb_per_s: mbps, label: format!("{}, bulk", label(generated, file, n)), compile_s, compiled_mib });
    }
    let start = std::time::Instant::now();
    let mut scanned = 0;
    let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
    while scanned < target {
        for chunk in req.chunks(16 * 1024) {
            f.inspect(Direction::ToServer, chunk, &mut scratch);
            scanned += chunk.len();
        }
        for chunk in resp.chunks(16 * 1024) {
            f.inspect(Direction::ToClient, chunk, &mut scratch);
            scanned += chunk.len();
        }
        if f.hits.len() > 1000 {
            f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
        }
    }
    let mbps = scanned as f64 / 1e6 / start.elapsed().as_secs_f64();
    Ok(Scan { mb_per_s: mbps, label: label(generated, file, n), compile_s, compiled_mib })
}

fn label(generated: Option<usize>, file: Option<&std::path::Path>, n: usize) -> String {
    match (generated, file) {
        (_, Some(p)) => format!("{} ({n} rules load)", p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()),
        (None, None) => format!("bundled ({n} rules)"),
        (Some(_), None) => format!("{n} generated rules"),
    }
}
