//! Hyperscan's scan rate on this core, through the IPS's own per-flow state
//! (`tls-inspect-bench ips-scan`), independent of the network.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use tls_inspect_dataplane::inspect::ips::{FlowIps, FlowTuple, IpsMode, Level, Options, PastBodyDepth, Ruleset};
use tls_inspect_dataplane::inspect::header::Vars;
use tls_inspect_dataplane::inspect::rules::parse_rules;
use tls_inspect_dataplane::inspect::ips::Scratch;
use tls_inspect_dataplane::inspect::{Direction, HelloFields, DEFAULT_RULES};

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

/// `HOME_NET` where the benchmarks run: the client's address (`FlowTuple::to_port`'s, the
/// namespace client's).
pub const HOME_NET: &str = "[198.18.0.1]";

/// What `ips-scan` feeds the engine.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Traffic {
    /// HTTP/1.1 requests and responses with HTML, on one flow.
    Pages,
    /// One request, then one response of random bytes (the bulk download benchmark's body).
    Bulk,
    /// What one benchmark connection is: a new flow, its ClientHello, the server's
    /// certificate, one small request and one small response.
    Conns,
}

/// What one `ips-scan` measured.
pub struct Scan {
    /// MB/s (pages, bulk) or connections/s (conns).
    pub rate: f64,
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
/// mode; with the compile time and memory of the rule set. See [`Traffic`] for the others; `conns`
/// makes as many connections as `megabytes` says (in thousands).
pub fn scan_rate(generated: Option<usize>, file: Option<&std::path::Path>, megabytes: usize, traffic: Traffic) -> Result<Scan> {
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
    // The client's network is the operator's own (`HOME_NET`), as where the appliance runs:
    // ET's rules are written from it, to `$EXTERNAL_NET`.
    let vars = Vars::with(&[("HOME_NET".to_string(), HOME_NET.to_string())].into()).map_err(|e| anyhow!(e))?;
    // The engine's scan rate: a download's bytes past the body depth still go through the stream
    // database (the appliance skips them by default, `[ips] past_body_depth`).
    let opts = Options { mode: IpsMode::Monitor, level: Level::Strict, vars, past_body_depth: PastBodyDepth::Stream, ..Options::default() };
    let (set, refused) = Ruleset::compile(rules, &opts)?;
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
    if traffic == Traffic::Conns {
        return conns(set, &mut scratch, megabytes * 1000, label(generated, file, n), compile_s, compiled_mib);
    }
    if traffic == Traffic::Bulk {
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
        return Ok(Scan { rate: mbps, label: format!("{}, bulk", label(generated, file, n)), compile_s, compiled_mib });
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
    Ok(Scan { rate: mbps, label: label(generated, file, n), compile_s, compiled_mib })
}

/// `n` connections as the connection benchmark makes them (its client's hello, a certificate,
/// `GET /` and nginx's default page).
fn conns(set: Arc<Ruleset>, scratch: &mut Scratch, n: usize, label: String, compile_s: f64, compiled_mib: f64) -> Result<Scan> {
    let dir = std::env::temp_dir().join(format!("ips-scan-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = tls_inspect_dataplane::tls::ca::trial(&dir).and_then(|_| tls_inspect_dataplane::tls::ca::load(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    let cert = ca?.cert;
    let hello = HelloFields {
        sni: Some("server.test"),
        version: 0x0303,
        ja3_string: "771,4866-4867-4865-49196-49200-52393-52392-49195-49199-159-158-255,0-11-10-35-16-22-23-13-43-45-51,4588-29-23-30-25-24,0-1-2",
        ja3_hash: "3b5074b1b5d032e5620f69f9f700ff0e",
        ja4: "t13d1112h1_e8e7d5b1d2d0_d41ae481755e",
    };
    let request = b"GET / HTTP/1.1\r\nHost: server.test\r\nConnection: close\r\n\r\n";
    let body = "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n<h1>Welcome to nginx!</h1>\n<p>If you see this page, the nginx web server is successfully installed and working.</p>\n</body>\n</html>\n";
    let response = format!("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 23:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: {}\r\nLast-Modified: Tue, 01 Dec 2026 08:00:00 GMT\r\nConnection: close\r\nETag: \"6750a1b2-267\"\r\nAccept-Ranges: bytes\r\n\r\n{body}", body.len());
    let start = std::time::Instant::now();
    for _ in 0..n {
        let mut f = FlowIps::new(set.clone(), FlowTuple::to_port(443));
        f.scan_client_hello(&hello, scratch);
        f.scan_certificates(&[cert.as_ref()], Some(0x0304), scratch);
        f.inspect(Direction::ToServer, request, scratch);
        f.inspect(Direction::ToClient, response.as_bytes(), scratch);
        std::hint::black_box(f.take_hits());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    Ok(Scan { rate, label: format!("{label}, connections"), compile_s, compiled_mib })
}

fn label(generated: Option<usize>, file: Option<&std::path::Path>, n: usize) -> String {
    match (generated, file) {
        (_, Some(p)) => format!("{} ({n} rules load)", p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()),
        (None, None) => format!("bundled ({n} rules)"),
        (Some(_), None) => format!("{n} generated rules"),
    }
}
