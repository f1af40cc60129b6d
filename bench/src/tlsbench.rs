//! TLS scenarios: new HTTPS connections per second and bulk throughput on one connection,
//! through the inspection path, the passed path (a Do-Not-Inspect host) and the XDP bridge (no inspection), and the
//! ceiling: rustls' own handshake rate, client and server in memory, on one core.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tls_inspect_tests::pki::TestPki;
use tls_inspect_tests::{appliance_bin, check, Topology, SERVER_IP};

use crate::{median, proxies, repeat, Table};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

fn roots(ca: &Path) -> Result<Arc<RootCertStore>> {
    let text = std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut r = RootCertStore::empty();
    for b in pem::parse_many(&text)?.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
        r.add(CertificateDer::from(b.into_contents()))?;
    }
    Ok(Arc::new(r))
}

fn client_config(ca: &Path, resume: bool) -> Result<Arc<ClientConfig>> {
    let mut cc = ClientConfig::builder().with_root_certificates(roots(ca)?).with_no_client_auth();
    if !resume {
        // A new session each time: every connection pays a full handshake.
        cc.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(cc))
}

/// `tls-client`: HTTPS requests, each on a new connection, for `secs` from `threads` threads;
/// with `resume` the threads share rustls' session cache and resume.
pub fn tls_client(addr: SocketAddr, name: &str, ca: &Path, secs: f64, threads: usize, resume: bool) -> Result<()> {
    let config = client_config(ca, resume)?;
    let name = ServerName::try_from(name.to_string())?;
    let (ok, failed) = crate::hammer(secs, threads, move || {
        (|| -> Result<()> {
            let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
            let conn = ClientConnection::new(config.clone(), name.clone())?;
            let mut tls = StreamOwned::new(conn, tcp);
            tls.write_all(b"GET / HTTP/1.1\r\nHost: server.test\r\nConnection: close\r\n\r\n")?;
            let mut buf = [0u8; 4096];
            let mut got = 0;
            loop {
                match tls.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if got == 0 {
                return Err(anyhow!("empty response"));
            }
            Ok(())
        })()
        .is_ok()
    })?;
    println!("tls-client {:.1} req/s {ok} ok {failed} failed", ok as f64 / secs);
    Ok(())
}

/// A rustls server configuration (the provider's defaults) for a PEM certificate chain and key.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = pem::parse_many(std::fs::read_to_string(cert)?)?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    let key_pem = pem::parse_many(std::fs::read_to_string(key)?)?
        .into_iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .context("no key")?;
    let key = PrivateKeyDer::try_from(key_pem.into_contents()).map_err(|e| anyhow!("{e}"))?;
    Ok(Arc::new(ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?))
}

/// `tls-server`: a rustls HTTPS server (aws-lc-rs, X25519MLKEM768 preferred) that answers each
/// connection's request with the key exchange group it negotiated, then closes.
pub fn tls_server(addr: SocketAddr, cert: &Path, key: &Path) -> Result<()> {
    let config = server_config(cert, key)?;
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    println!("listening {addr}");
    for stream in listener.incoming() {
        let (config, mut stream) = (config.clone(), stream?);
        std::thread::spawn(move || -> Result<()> {
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut conn = ServerConnection::new(config)?;
            let mut tls = rustls::Stream::new(&mut conn, &mut stream);
            let mut request = [0u8; 4096];
            let _ = tls.read(&mut request)?;
            let group = tls.conn.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name())).unwrap_or_default();
            let body = format!("hello from rustls, key exchange {group}\n");
            write!(tls, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())?;
            tls.conn.send_close_notify();
            tls.flush()?;
            Ok(())
        });
    }
    Ok(())
}

/// rustls' handshake rate with client and server in memory, on this thread.
pub fn rustls_ceiling(cert: &Path, key: &Path, ca: &Path, secs: f64) -> Result<f64> {
    let server = server_config(cert, key)?;
    let client = client_config(ca, false)?;
    let name = ServerName::try_from("server.test")?;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    let start = Instant::now();
    while Instant::now() < end {
        let mut c = ClientConnection::new(client.clone(), name.clone())?;
        let mut s = ServerConnection::new(server.clone())?;
        let mut buf = Vec::new();
        while c.is_handshaking() || s.is_handshaking() {
            buf.clear();
            while c.wants_write() {
                c.write_tls(&mut buf)?;
            }
            s.read_tls(&mut &buf[..])?;
            s.process_new_packets()?;
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf)?;
            }
            c.read_tls(&mut &buf[..])?;
            c.process_new_packets()?;
        }
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `idle-client`: holds idle HTTPS connections open. Each line `open N` on stdin opens N more
/// (one request each, answered, then nothing), spread over `addrs`, from `threads` threads, and
/// prints `open TOTAL FAILED`. Only the TCP socket is kept: the client's own TLS state is
/// dropped, the appliance's is what is measured. Exits at end of input.
pub fn idle_client(addrs: &[SocketAddr], name: &str, ca: &Path, threads: usize) -> Result<()> {
    // One descriptor per connection: raise the limit as far as the hard limit allows (root may).
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid rlimit pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let want = libc::rlimit { rlim_cur: lim.rlim_max.max(1_048_576), rlim_max: lim.rlim_max.max(1_048_576) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            // Not allowed to raise the hard limit here: the soft one goes up to it.
            let soft = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
            eprintln!("idle-client: RLIMIT_NOFILE stays at the hard limit {} (cannot raise it here)", lim.rlim_max);
        }
    }
    let config = client_config(ca, false)?;
    let name = ServerName::try_from(name.to_string())?;
    let held = std::sync::Mutex::new(Vec::<TcpStream>::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut failed = 0usize;
    for line in std::io::stdin().lines() {
        let line = line?;
        let Some(n) = line.strip_prefix("open ").and_then(|n| n.trim().parse::<usize>().ok()) else {
            continue;
        };
        let todo = std::sync::atomic::AtomicUsize::new(n);
        let bad = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| {
                    while todo.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |v| v.checked_sub(1)).is_ok() {
                        let addr = addrs[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % addrs.len()];
                        match open_idle(addr, &config, &name) {
                            Ok(tcp) => held.lock().map(|mut h| h.push(tcp)).unwrap_or(()),
                            Err(_) => {
                                bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        failed += bad.into_inner();
        let total = held.lock().map(|h| h.len()).unwrap_or(0);
        println!("open {total} {failed}");
        std::io::stdout().flush()?;
    }
    Ok(())
}

fn open_idle(addr: SocketAddr, config: &Arc<ClientConfig>, name: &ServerName<'static>) -> Result<TcpStream> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = ClientConnection::new(config.clone(), name.clone())?;
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: server.test\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    // nginx answers "hello from nginx\n" with a Content-Length and keeps the connection.
    while !got.ends_with(b"hello from nginx\n") {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Err(anyhow!("closed before the response ended"));
        }
        got.extend_from_slice(&buf[..n]);
    }
    let (_, tcp) = (tls.conn, tls.sock);
    Ok(tcp)
}

/// nginx on one port per system: 443 direct, 8443 passed (Do-Not-Inspect), 9443 inspected, 10443 Squid, 11443
/// mitmproxy, so that no run meets the server's TIME-WAIT sockets of another. These ports
/// resume no session: every connection costs the server, and each system's upstream leg, a
/// full handshake.
const PORTS: [u16; 5] = [443, 8443, 9443, crate::proxies::SQUID_PORT, crate::proxies::MITM_PORT];

/// The port one above each of [`PORTS`] serves the same with nginx's own default of session
/// tickets on: the resuming clients' runs go there, so that a system which keeps its upstream
/// sessions (as tls-inspect's workers do) can resume them as it would with a real server.
pub const RESUMABLE: u16 = 1;

fn nginx(t: &mut Topology, cert: &Path, key: &Path, big: u64) -> Result<()> {
    let d = t.dir.join("nginx");
    std::fs::create_dir_all(d.join("tmp"))?;
    std::fs::create_dir_all(d.join("www"))?;
    check(Command::new("head").arg("-c").arg(big.to_string()).arg("/dev/urandom").stdout(std::fs::File::create(d.join("www/big"))?))?;
    std::fs::write(d.join("www/index.html"), "hello from nginx\n")?;
    let listen: String = PORTS.iter().map(|p| format!("listen {SERVER_IP}:{p} ssl http2; ")).collect();
    let listen_resumable: String = PORTS.iter().map(|p| format!("listen {SERVER_IP}:{} ssl http2; ", p + RESUMABLE)).collect();
    let conf = format!(
        "worker_processes 2; daemon off; user root; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
           uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp; sendfile on; keepalive_timeout 0;\n\
           ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; root {d}/www;\n\
           server {{ {listen} ssl_session_cache off; ssl_session_tickets off; }}\n\
           server {{ {listen_resumable} ssl_session_tickets on; }} }}\n",
        cert = cert.display(),
        key = key.display(),
        d = d.display()
    );
    let ports: Vec<u16> = PORTS.iter().flat_map(|&p| [p, p + RESUMABLE]).collect();
    t.start_nginx(&d, &conf, &ports).map(drop)
}

fn tls_rps(t: &Topology, port: u16, ca: &Path, secs: f64) -> Result<f64> {
    tls_rps_with(t, port, ca, secs, false)
}

/// New connections per second; `resume`: the client resumes its sessions.
fn tls_rps_with(t: &Topology, port: u16, ca: &Path, secs: f64, resume: bool) -> Result<f64> {
    let me = std::env::current_exe()?;
    let mut cmd = t.client.cmd(me.to_str().context("path")?);
    cmd.args(["tls-client", "--addr", &format!("{SERVER_IP}:{port}"), "--ca", ca.to_str().context("path")?, "--secs", &secs.to_string()]);
    if resume {
        cmd.arg("--resume");
    }
    let out = check(&mut cmd)?;
    if !out.contains(" 0 failed") {
        eprintln!("  note: {}", out.trim());
    }
    let rate: f64 = out.split_whitespace().nth(1).and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("tls-client said {out}"))?;
    if rate <= 0.0 {
        return Err(anyhow!("no request succeeded on port {port}: {}", out.trim()));
    }
    Ok(rate)
}

/// Gbit/s of one HTTPS download of /big (all of it, or an error), over HTTP/1.1 for every
/// system (mitmproxy's HTTP/2 towards nginx fails on a large response: "Invalid input
/// ConnectionInputs.RECV_HEADERS in state ConnectionState.CLOSED", a 502).
fn tls_bulk(t: &Topology, port: u16, ca: &Path, big: u64) -> Result<f64> {
    let out = check(t.client.cmd("curl").args(["-fsS", "--http1.1", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", "--max-time", "300", "--connect-to", "::198.18.0.2:", "--cacert"])
        .arg(ca)
        .arg(format!("https://server.test:{port}/big")))?;
    let mut f = out.split_whitespace().map(|v| v.parse::<f64>());
    match (f.next(), f.next()) {
        (Some(Ok(bytes_per_s)), Some(Ok(size))) if size as u64 == big => Ok(bytes_per_s * 8.0 / 1e9),
        _ => Err(anyhow!("curl on port {port} fetched less than {big} bytes: {out}")),
    }
}

/// CPU seconds (user + system) the appliance's worker threads (`worker-N`) have used, from
/// /proc: the running appliance's pid file names the process.
fn worker_cpu_secs(t: &Topology) -> Result<f64> {
    let pid = std::fs::read_to_string(format!("/run/{}/tls-inspect.pid", t.instance))?;
    let tick = clock_ticks();
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{}/task", pid.trim()))? {
        let dir = task?.path();
        if !std::fs::read_to_string(dir.join("comm")).unwrap_or_default().starts_with("worker-") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat"))?;
        // After the command's closing parenthesis: state is field 3, utime 14 and stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (utime, stime) = (fields.get(11).and_then(|v| v.parse::<u64>().ok()), fields.get(12).and_then(|v| v.parse::<u64>().ok()));
        total += utime.unwrap_or(0) + stime.unwrap_or(0);
    }
    Ok(total as f64 / tick)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, the unit of /proc's CPU times).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Worker CPU seconds per inspected connection over one run of `f` (the counters the workers
/// publish a few times a second are read after they settle), and what `f` returned.
fn cpu_per_inspected<T>(t: &Topology, f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    cpu_per(t, ("tls_inspect_worker_tls_flows_total", &[("decision", "inspected")]), f)
}

/// Worker CPU seconds per flow counted by `counter` (a metric family and labels) over one run
/// of `f`, and what `f` returned.
fn cpu_per<T>(t: &Topology, counter: (&str, &[(&str, &str)]), f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let inspected = || t.metric(counter.0, counter.1);
    std::thread::sleep(Duration::from_millis(400));
    let (cpu0, n0) = (worker_cpu_secs(t)?, inspected()?);
    let out = f()?;
    std::thread::sleep(Duration::from_millis(400));
    let (cpu1, n1) = (worker_cpu_secs(t)?, inspected()?);
    if n1 <= n0 {
        return Err(anyhow!("no connection was inspected"));
    }
    Ok(((cpu1 - cpu0) / (n1 - n0) as f64, out))
}

/// The operator's CA for this scenario, the same for tls-inspect, Squid and mitmproxy: an
/// RSA-2048 root made with openssl (every one of them takes RSA), imported into tls-inspect's
/// store. Returns (store, certificate, key).
fn shared_ca(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let d = dir.join("shared-ca");
    std::fs::create_dir_all(&d)?;
    let (key, cert) = (d.join("ca.key"), d.join("ca.crt"));
    check(Command::new("openssl").args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"]).arg(&key))?;
    check(Command::new("openssl").args(["req", "-x509", "-new", "-days", "30", "-subj", "/CN=Bench Inspection CA", "-key"]).arg(&key).arg("-out").arg(&cert)
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]))?;
    let store = dir.join("ca");
    check(Command::new(appliance_bin()).arg("ca").arg("--dir").arg(&store).arg("import").arg("--cert").arg(&cert).arg("--key").arg(&key))?;
    // Squid reads the key after dropping to its own user.
    check(Command::new("chmod").arg("644").arg(&key))?;
    Ok((store, cert, key))
}

pub fn compare(quick: bool, runs: usize, et_rules: &Path, table: &mut Table) -> Result<serde_json::Value> {
    let et_name = crate::ipsscan::ruleset_name(et_rules);
    let secs = if quick { 1.0 } else { 3.0 };
    let big: u64 = if quick { 20_000_000 } else { 200_000_000 };
    println!("\nmeasuring HTTPS: direct, passed, inspected (IPS off/on), Squid ssl-bump, mitmproxy, the rustls ceiling");
    let mut t = Topology::new()?;
    // One client address makes tens of thousands of connections to one server port here: with
    // the default 28,232 ports and 60 s of TIME_WAIT, a later system would find ports still
    // waiting from an earlier one's run (stalls of a second per collision, up to half its
    // rate). Every system gets the whole port range and reuses its own TIME_WAIT ports, as a
    // busy client host does.
    check(t.client.sh("sysctl -qw net.ipv4.ip_local_port_range='1024 65535' net.ipv4.tcp_tw_reuse=1"))?;
    let pki = TestPki::new(&t.dir)?;
    let server = pki.server("server", &["server.test", SERVER_IP], "root", None)?;
    let (ca_dir, ca_cert, ca_key) = shared_ca(&t.dir)?;
    nginx(&mut t, &server.cert, &server.key, big)?;

    t.start_appliance("")?;
    let direct = (repeat(runs, || tls_rps(&t, 443, &pki.root, secs))?, repeat(runs, || tls_bulk(&t, 443, &pki.root, big))?);
    table.row("HTTPS direct (XDP bridge, no inspection)", &[("req/s", direct.0), ("bulk Gbit/s", direct.1)], "");
    t.stop_appliance();
    check(t.cli().arg("detach"))?;

    let scope = |inspect: bool| {
        format!(
            "[[policy]]\nid = 1\n[[policy.scope]]\nsrc = [\"198.18.0.0/24\"]\nsport = [\"1024/65535\"]\ndst = [\"198.18.0.2\"]\n\
             dport = [\"8443/8443\", \"9443/9444\"]\n[tls]\ninspect = {inspect}\nca_dir = \"{}\"\nextra_roots = [\"{}\"]\n",
            ca_dir.display(),
            pki.root.display()
        )
    };
    // Passed: a Do-Not-Inspect host. The workers peek at each connection's first flight, hand
    // it back to XDP, and see nothing of it after that (the rest is bridged at line rate).
    t.start_appliance(&format!("{}do_not_inspect_hosts = [\"server.test\"]\n", scope(true)))?;
    let rx_before = t.metric("tls_inspect_worker_frames_total", &[("direction", "rx")])?;
    let passed_before = t.metric("tls_inspect_worker_bypassed_flows_total", &[])?;
    let (cpu_passed, passed_rps) = cpu_per(&t, ("tls_inspect_worker_bypassed_flows_total", &[]), || tls_rps(&t, 8443, &pki.root, secs))?;
    let frames_per_passed = (t.metric("tls_inspect_worker_frames_total", &[("direction", "rx")])? - rx_before) as f64
        / (t.metric("tls_inspect_worker_bypassed_flows_total", &[])? - passed_before).max(1) as f64;
    // The XDP bridge in the same appliance (port 443 is outside the scope), alternated run by run
    // with the passed runs (at least five pairs), and the ratio taken pair by pair: the VM's
    // drift, over the minutes between the direct phase and this one or between two runs, does
    // not decide it.
    let pairs = runs.max(5);
    let (mut passed_rates, mut bridged_rates) = (vec![passed_rps], vec![tls_rps(&t, 443, &pki.root, secs)?]);
    for _ in 1..pairs {
        passed_rates.push(tls_rps(&t, 8443, &pki.root, secs)?);
        bridged_rates.push(tls_rps(&t, 443, &pki.root, secs)?);
    }
    let (mut passed_bulks, mut bridged_bulks) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        passed_bulks.push(tls_bulk(&t, 8443, &pki.root, big)?);
        bridged_bulks.push(tls_bulk(&t, 443, &pki.root, big)?);
    }
    let pair_ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(a, b)| a / b).collect());
    let passed_over_bridge = (pair_ratio(&passed_rates, &bridged_rates), pair_ratio(&passed_bulks, &bridged_bulks));
    let bridged_alongside = (median(bridged_rates.clone()), median(bridged_bulks.clone()));
    table.note(&format!(
        "(passed / bridge, run by run: new conns {:?}, bulk {:?})",
        passed_rates.iter().zip(&bridged_rates).map(|(a, b)| format!("{a:.0}/{b:.0}")).collect::<Vec<_>>(),
        passed_bulks.iter().zip(&bridged_bulks).map(|(a, b)| format!("{a:.2}/{b:.2}")).collect::<Vec<_>>()
    ));
    let passed = (median(passed_rates), median(passed_bulks));
    let cpu_passed_conn = cpu_passed;
    table.row("HTTPS tls-inspect passed (Do-Not-Inspect host)", &[("req/s", passed.0), ("bulk Gbit/s", passed.1)], "");
    table.row("HTTPS XDP bridge, run by run with passed (same appliance, port outside the scope)", &[("req/s", bridged_alongside.0), ("bulk Gbit/s", bridged_alongside.1)], "");
    table.row("worker frames per passed connection (its first flight)", &[("frames", frames_per_passed)], "");
    t.stop_appliance();
    check(t.cli().arg("detach"))?;

    // Inspected with the IPS off and on (the bundled rules, strict level, block mode; the
    // requests and the bulk body match nothing, so everything is scanned and nothing stops),
    // alternated run by run so that the VM's drift hits both alike.
    // The client's network is HOME_NET, as it is where the appliance runs: the ruleset's rules
    // for traffic from the operator's network to the outside are live.
    let ips = |rules: &str| format!("{}[ips]\nenabled = true\nmode = \"block\"\nlevel = \"strict\"\n{rules}[ips.vars]\nHOME_NET = \"{}\"\n", scope(true), crate::ipsscan::HOME_NET);
    let with_ips_config = ips("");
    // And with a public ruleset on top (the ET Open sample or `--et-rules`: its rules alert, none
    // blocks here).
    let with_et_config = ips(&format!("rules = [\"{}\"]\n", et_rules.display()));
    let (mut off, mut on, mut et) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    let (mut forged, mut inspected_flows) = (0, 0);
    // With the IPS off: worker CPU per inspected connection (new sessions, resuming clients),
    // and the connection rate of resuming clients.
    let (mut cpu_new, mut cpu_resumed, mut resumed_rps) = (Vec::new(), Vec::new(), Vec::new());
    // The share of the resuming clients' inspected flows that resumed, per leg (the worker's
    // counters): a CPU figure for "resumed" connections means little without it.
    let mut resumed_legs = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (i, (config, into)) in [(scope(true), &mut off), (with_ips_config.clone(), &mut on), (with_et_config.clone(), &mut et)].into_iter().enumerate() {
            t.start_appliance(&config)?;
            if i == 0 {
                let (cpu, rps) = cpu_per_inspected(&t, || tls_rps(&t, 9443, &ca_cert, secs))?;
                cpu_new.push(cpu);
                into.0.push(rps);
                let resumed = |leg: &str| t.metric("tls_inspect_worker_tls_resumed_total", &[("leg", leg)]);
                let (flows0, client0, upstream0) = (t.metric("tls_inspect_worker_tls_flows_total", &[("decision", "inspected")])?, resumed("client")?, resumed("upstream")?);
                let (cpu, rps) = cpu_per_inspected(&t, || tls_rps_with(&t, 9443 + RESUMABLE, &ca_cert, secs, true))?;
                let flows = (t.metric("tls_inspect_worker_tls_flows_total", &[("decision", "inspected")])? - flows0).max(1) as f64;
                resumed_legs.0.push((resumed("client")? - client0) as f64 / flows);
                resumed_legs.1.push((resumed("upstream")? - upstream0) as f64 / flows);
                cpu_resumed.push(cpu);
                resumed_rps.push(rps);
            } else {
                into.0.push(tls_rps(&t, 9443, &ca_cert, secs)?);
            }
            into.1.push(tls_bulk(&t, 9443, &ca_cert, big)?);
            forged += t.metric("tls_inspect_worker_certs_forged_total", &[])?;
            inspected_flows += t.metric("tls_inspect_worker_tls_flows_total", &[("decision", "inspected")])?;
            t.stop_appliance();
            check(t.cli().arg("detach"))?;
        }
    }
    let inspected = (median(off.0), median(off.1));
    let with_ips = (median(on.0), median(on.1));
    let with_et = (median(et.0), median(et.1));
    table.row("HTTPS tls-inspect inspected", &[("req/s", inspected.0), ("bulk Gbit/s", inspected.1)], "");
    let resuming = median(resumed_rps);
    let resumed_legs = (median(resumed_legs.0), median(resumed_legs.1));
    table.row("HTTPS tls-inspect inspected, resuming clients", &[("req/s", resuming), ("client leg resumed", resumed_legs.0), ("upstream resumed", resumed_legs.1)], "");
    let (cpu_new, cpu_resumed) = (median(cpu_new), median(cpu_resumed));
    table.row("HTTPS tls-inspect inspected + IPS (bundled, block)", &[("req/s", with_ips.0), ("bulk Gbit/s", with_ips.1)], "");
    table.row(&format!("HTTPS tls-inspect inspected + IPS (bundled + {et_name})"), &[("req/s", with_et.0), ("bulk Gbit/s", with_et.1)], "");
    table.note(&format!("({inspected_flows} flows inspected with {forged} certificate signature(s), one per appliance start: the cache was warm)"));

    // The transparent proxies, on the appliance namespace turned router.
    proxies::route_through_appliance(&t)?;
    let mut others = serde_json::Map::new();
    type Ensure = fn() -> Result<PathBuf>;
    type Starter = fn(&mut Topology, &Path, (&Path, &Path), &Path) -> Result<usize>;
    let systems: [(&str, Ensure, Starter, u16); 2] = [
        ("squid", proxies::ensure_squid, proxies::start_squid, proxies::SQUID_PORT),
        ("mitmproxy", proxies::ensure_mitmproxy, proxies::start_mitmproxy, proxies::MITM_PORT),
    ];
    for (name, ensure, start, port) in systems {
        let mut process = None;
        let measured = (|| -> Result<(f64, f64, f64)> {
            let bin = ensure()?;
            process = Some(start(&mut t, &bin, (&ca_cert, &ca_key), &pki.root)?);
            // The first connection makes the certificate; the runs find it cached.
            let _ = tls_rps(&t, port, &ca_cert, 0.5);
            Ok((
                repeat(runs, || tls_rps(&t, port, &ca_cert, secs))?,
                repeat(runs, || tls_bulk(&t, port, &ca_cert, big))?,
                repeat(runs, || tls_rps_with(&t, port + RESUMABLE, &ca_cert, secs, true))?,
            ))
        })()
        .map_err(|e| {
            let said = process.map(|i| t.background(i).lines()).unwrap_or_default();
            let tail = said.iter().rev().take(5).rev().cloned().collect::<Vec<_>>().join(" | ");
            if tail.is_empty() { e } else { e.context(format!("{name} said: {tail}")) }
        });
        match measured {
            Ok((rps, bulk, resumed)) => {
                table.row(&format!("HTTPS {name}"), &[("req/s", rps), ("bulk Gbit/s", bulk)], "");
                table.row(&format!("HTTPS {name}, resuming clients"), &[("req/s", resumed)], "");
                others.insert(name.into(), serde_json::json!({ "req_per_s": rps, "bulk_gbit_s": bulk, "resumed_req_per_s": resumed }));
            }
            Err(e) => {
                table.note(&format!("{name}: not measured: {e:#}"));
                others.insert(name.into(), serde_json::json!({ "unavailable": format!("{e:#}") }));
            }
        }
    }

    let ceiling = repeat(runs, || rustls_ceiling(&server.cert, &server.key, &pki.root, secs))?;
    table.row("rustls in-memory handshake pairs (1 core)", &[("hs/s", ceiling)], "");
    let megabytes = if quick { "64" } else { "512" };
    // (MB/s, compile s, MiB) of one ips-scan run.
    let scan = |generated: Option<&str>, rules: Option<&str>, bulk: bool| -> Result<(f64, f64, f64)> {
        let mut c = Command::new(crate::own_bin()?);
        c.args(["ips-scan", "--megabytes", megabytes]);
        if bulk {
            c.args(["--traffic", "bulk"]);
        }
        if let Some(n) = generated {
            c.args(["--generated", n]);
        }
        if let Some(r) = rules {
            c.args(["--rules", r]);
        }
        let out = check(&mut c)?;
        let after = |prefix: &str| out.split(prefix).nth(1).and_then(|v| v.split_whitespace().next()).and_then(|v| v.trim_end_matches(',').parse::<f64>().ok());
        match (after("rate: "), after("compile "), after(" s, ")) {
            (Some(r), Some(c), Some(m)) => Ok((r, c, m)),
            _ => Err(anyhow!("ips-scan printed {out}")),
        }
    };
    let median3 = |v: Vec<(f64, f64, f64)>| (median(v.iter().map(|x| x.0).collect()), median(v.iter().map(|x| x.1).collect()), median(v.iter().map(|x| x.2).collect()));
    let measure = |g: Option<&str>, r: Option<&str>, bulk: bool| -> Result<(f64, f64, f64)> {
        let mut v = Vec::new();
        for _ in 0..runs {
            v.push(scan(g, r, bulk)?);
        }
        Ok(median3(v))
    };
    let scans = [
        ("bundled ruleset".to_string(), measure(None, None, false)?),
        ("1,000 generated rules".to_string(), measure(Some("1000"), None, false)?),
        ("10,000 generated rules".to_string(), measure(Some("10000"), None, false)?),
        (et_name.clone(), measure(None, Some(&et_rules.to_string_lossy()), false)?),
        (format!("{et_name}, one random download"), measure(None, Some(&et_rules.to_string_lossy()), true)?),
    ];
    for (name, (mbs, compile, mib)) in &scans {
        table.row(&format!("Hyperscan streaming scan, 1 core: {name}"), &[("MB/s", *mbs), ("compile s", *compile), ("MiB", *mib)], "");
    }

    let pair_secs = 1.0 / ceiling;
    table.row("worker CPU per inspected connection, new sessions", &[("ms", cpu_new * 1e3)], "");
    table.row("worker CPU per inspected connection, resuming clients", &[("ms", cpu_resumed * 1e3)], "");
    table.row("worker CPU per passed connection (peek and hand-off)", &[("ms", cpu_passed_conn * 1e3)], "");
    let other = |name: &str, i: usize| {
        let key = ["req_per_s", "bulk_gbit_s", "resumed_req_per_s"][i];
        others.get(name).and_then(|v| v[key].as_f64()).unwrap_or(f64::NAN)
    };
    let mut ratios = serde_json::Map::new();
    let mut ratio = |table: &mut Table, key: &str, label: &str, v: f64, target: &str| {
        table.ratio(label, v, target);
        ratios.insert(key.into(), if v.is_finite() { v.into() } else { serde_json::Value::Null });
    };
    ratio(table, "inspected_over_squid_req", "new conns: tls-inspect / Squid", inspected.0 / other("squid", 0), ">= 6");
    ratio(table, "inspected_over_mitmproxy_req", "new conns: tls-inspect / mitmproxy", inspected.0 / other("mitmproxy", 0), ">= 12");
    ratio(table, "resumed_over_squid_req", "new conns, resuming clients: tls-inspect / Squid", resuming / other("squid", 2), ">= 6");
    ratio(table, "resumed_over_mitmproxy_req", "new conns, resuming clients: tls-inspect / mitmproxy", resuming / other("mitmproxy", 2), ">= 12");
    ratio(table, "inspected_over_squid_bulk", "bulk: tls-inspect / Squid", inspected.1 / other("squid", 1), ">= 3");
    ratio(table, "inspected_over_mitmproxy_bulk", "bulk: tls-inspect / mitmproxy", inspected.1 / other("mitmproxy", 1), ">= 1.5");
    ratio(table, "cpu_per_conn_over_rustls_pair", "worker CPU per new inspected conn / rustls handshake pair", cpu_new / pair_secs, "<= 1.0");
    ratio(table, "cpu_per_resumed_conn_over_rustls_pair", "worker CPU per resumed inspected conn / rustls handshake pair", cpu_resumed / pair_secs, "<= 0.5");
    ratio(table, "passed_over_bridge_req", "new conns: passed (Do-Not-Inspect) / XDP bridge, pair by pair", passed_over_bridge.0, ">= 0.90");
    ratio(table, "passed_over_bridge_bulk", "bulk: passed (Do-Not-Inspect) / XDP bridge, pair by pair", passed_over_bridge.1, ">= 0.90");
    ratio(table, "passed_over_direct_req", "new conns: passed (Do-Not-Inspect) / XDP bridge (direct, earlier phase)", passed.0 / direct.0, "-");
    ratio(table, "passed_over_direct_bulk", "bulk: passed (Do-Not-Inspect) / XDP bridge (direct, earlier phase)", passed.1 / direct.1, "-");
    ratio(table, "inspected_over_direct_req", "new conns: tls-inspect / direct", inspected.0 / direct.0, "-");
    ratio(table, "inspected_over_direct_bulk", "bulk: tls-inspect / direct", inspected.1 / direct.1, "-");
    ratio(table, "inspected_over_rustls_ceiling", "new conns: tls-inspect / rustls ceiling", inspected.0 / ceiling, ">= 0.80");
    ratio(table, "ips_on_over_off_req", "IPS on / off, new conns", with_ips.0 / inspected.0, ">= 0.90");
    ratio(table, "ips_on_over_off_bulk", "IPS on / off, bulk", with_ips.1 / inspected.1, ">= 0.90");
    ratio(table, "et_ips_on_over_off_req", &format!("IPS with {et_name} on / off, new conns"), with_et.0 / inspected.0, ">= 0.80");
    ratio(table, "et_ips_on_over_off_bulk", &format!("IPS with {et_name} on / off, bulk"), with_et.1 / inspected.1, ">= 0.80");
    ratio(table, "inspected_over_passed_req", "new conns: inspected / passed", inspected.0 / passed.0, "-");
    Ok(serde_json::json!({
        "https_req_per_s": { "direct": direct.0, "passed": passed.0, "bridged_alongside_passed": bridged_alongside.0, "inspected": inspected.0, "inspected_resuming": resuming, "inspected_ips": with_ips.0, "inspected_ips_et": with_et.0, "rustls_ceiling": ceiling },
        "resumed_share_of_resuming_clients": { "client": resumed_legs.0, "upstream": resumed_legs.1 },
        "worker_cpu_ms_per_inspected_conn": { "new": cpu_new * 1e3, "resuming": cpu_resumed * 1e3, "passed": cpu_passed_conn * 1e3, "rustls_pair": pair_secs * 1e3 },
        "worker_frames_per_passed_conn": frames_per_passed,
        "https_bulk_gbit_s": { "direct": direct.1, "passed": passed.1, "bridged_alongside_passed": bridged_alongside.1, "inspected": inspected.1, "inspected_ips": with_ips.1, "inspected_ips_et": with_et.1 },
        "others": others,
        "ratios": ratios,
        "targets": { "over_squid_req": 6.0, "over_mitmproxy_req": 12.0, "over_squid_bulk": 3.0, "over_mitmproxy_bulk": 1.5, "over_rustls_ceiling": 0.8, "ips_on_over_off": 0.9, "cpu_per_conn_over_rustls_pair": 1.0, "cpu_per_resumed_conn_over_rustls_pair": 0.5, "passed_over_bridge_req": 0.9, "passed_over_bridge_bulk": 0.9 },
        "ips_scan_mb_s": { "bundled": scans[0].1.0, "generated_1000": scans[1].1.0, "generated_10000": scans[2].1.0, "et_open_sample": scans[3].1.0, "et_open_sample_bulk": scans[4].1.0 },
        "ips_compile_s": { "bundled": scans[0].1.1, "et_open_sample": scans[3].1.1 },
        "ips_compiled_mib": { "bundled": scans[0].1.2, "et_open_sample": scans[3].1.2 },
        "et_rules": et_rules.display().to_string(),
        "flows_inspected": inspected_flows,
        "certificates_forged": forged,
        "ca": "RSA-2048 root, the same for tls-inspect, Squid and mitmproxy",
    }))
}
