//! The dataplane carries steered TCP flows itself: it terminates the client's connection and
//! re-originates it from the client's own address, and relays the bytes. Real clients (curl,
//! openssl, Python) and real servers (Python's http.server, openssl s_server, scripted peers).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use anyhow::Result;
use tls_inspect_tests::{check, metric_in, wait_until, run, Background, Topology, SERVER_IP};

/// Steers every TCP connection from the client network to ports 8000-9999 of the server.
const SCOPE: &str = r#"
[[policy]]
id = 1
  [[policy.scope]]
  id = 1
  src = ["198.18.0.0/24"]
  sport = ["1024/65535"]
  dst = ["198.18.0.2"]
  dport = ["8000/9999"]
"#;

#[test]
fn http_and_https_are_spliced_and_the_server_sees_the_client() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance_with(SCOPE, &["--metrics", "127.0.0.1:10095"])?;
    let www = t.dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("hello.txt"), "hello through the splice\n")?;
    let mut http = t.server.cmd("python3");
    http.args(["-m", "http.server", "--bind", SERVER_IP, "8080", "--directory"]).arg(&www);
    let h = t.spawn(http)?;
    t.wait_listening(&t.server.clone(), 8080)?;

    let body = check(t.client.cmd("curl").args(["-sS", "--max-time", "10", &format!("http://{SERVER_IP}:8080/hello.txt")]))?;
    assert_eq!(body, "hello through the splice\n");
    let body = check(t.client.cmd("python3").args([
        "-c",
        &format!("import urllib.request; print(urllib.request.urlopen('http://{SERVER_IP}:8080/hello.txt', timeout=10).read().decode(), end='')"),
    ]))?;
    assert_eq!(body, "hello through the splice\n");
    // The server saw the client's own address, not the appliance's.
    let log = t.background(h).lines().join("\n");
    assert!(log.contains("198.18.0.1 - - ") && log.contains("GET /hello.txt"), "{log}");
    // Workers publish their counters a few times a second.
    wait_until("the workers to count both flows", Duration::from_secs(5), || Ok(t.metric("tls_inspect_worker_flows_total", &[])? >= 2))?;
    assert_eq!(t.metric("tls_inspect_xdp_failopen_frames_total", &[])?, 0);
    // The same counters on the Prometheus endpoint (in the appliance's namespace).
    // A scraper that connects and sends nothing holds up no other scrape: each is answered on
    // its own thread.
    let mut idle = t.appliance.cmd("python3");
    idle.args(["-c", "import socket,time; s=socket.create_connection(('127.0.0.1',10095)); print('connected', flush=True); time.sleep(8)"]);
    let idle = t.spawn(idle)?;
    t.background(idle).wait_for("connected", Duration::from_secs(5))?;
    let metrics = check(t.appliance.cmd("curl").args(["-sS", "--max-time", "2", "http://127.0.0.1:10095/metrics"]))?;
    assert!(metrics.contains("tls_inspect_xdp_frames_total{path=\"steered\"} "), "{metrics}");
    // Prometheus' own linter finds nothing to say.
    let mut lint = std::process::Command::new("promtool");
    lint.args(["check", "metrics"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = lint.spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), metrics.as_bytes())?;
    let out = child.wait_with_output()?;
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(), "promtool check metrics: {}{}\n{metrics}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let flows = metrics
        .lines()
        .find(|l| l.starts_with("tls_inspect_worker_flows_total{worker=\"0\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(flows.is_some_and(|n| n >= 2), "{metrics}");
    // `stats --json` names what the endpoint serves: the same families (the alerts per rule
    // aside, which only the running process has), the same label sets.
    let stats = t.stats()?;
    let served: std::collections::BTreeSet<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.starts_with("tls_inspect_alerts_total"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect();
    let printed: std::collections::BTreeSet<String> = stats["metrics"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(name, f)| {
            f["samples"].as_array().unwrap().iter().map(move |s| {
                let labels: Vec<String> = s["labels"].as_object().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect();
                if labels.is_empty() { name.clone() } else { format!("{name}{{{}}}", labels.join(",")) }
            })
        })
        .collect();
    assert_eq!(printed, served, "stats --json and the endpoint differ");

    // HTTPS on a steered port passes through unchanged: the client sees the server's own
    // certificate (TLS interception is not enabled yet).
    let (key, cert) = tls_inspect_tests::pki::self_signed_cert(&t.dir, "splice.test")?;
    let mut tls = t.server.cmd("openssl");
    tls.args(["s_server", "-accept", &format!("{SERVER_IP}:8443"), "-www", "-key"]).arg(&key).arg("-cert").arg(&cert);
    t.spawn(tls)?;
    t.wait_listening(&t.server.clone(), 8443)?;
    let want = check(std::process::Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(&cert))?;
    let seen = check(t.client.sh(&format!(
        "openssl s_client -connect {SERVER_IP}:8443 -servername splice.test </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    )))?;
    assert_eq!(seen, want, "the client must see the server's real certificate");
    let page = check(t.client.cmd("curl").args(["-sSk", "--max-time", "10", &format!("https://{SERVER_IP}:8443/")]))?;
    assert!(page.contains("s_server"), "{page}");
    Ok(())
}

#[test]
fn large_transfers_both_ways_with_half_close() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance(SCOPE)?;
    const SIZE: &str = "200000000";
    let src = t.peer_server("source", 9001, &["--size", SIZE, "--seed", "7"])?;
    t.peer_server("sink", 9002, &[])?;

    // 200 MB down; the client then sends 1000 bytes after the server's FIN (half-close).
    let out = t.peer_client("download", 9001, &["--size", SIZE, "--seed", "7"])?;
    assert!(out.contains("download ok 200000000"), "{out}");
    t.background(src).wait_for("after-fin 1000", Duration::from_secs(10))?;

    // 200 MB up; the client half-closes and the server answers after the FIN.
    let out = t.peer_client("upload", 9002, &["--size", SIZE, "--seed", "9"])?;
    assert!(out.contains("upload ok 200000000"), "{out}");

    wait_until("the byte counters", Duration::from_secs(5), || {
        Ok(t.metric("tls_inspect_worker_relayed_bytes_total", &[("direction", "to_client")])? >= 200_000_000 && t.metric("tls_inspect_worker_relayed_bytes_total", &[("direction", "to_server")])? >= 200_000_000)
    })?;
    wait_until("both flows to close", Duration::from_secs(10), || Ok(t.metric("tls_inspect_worker_flows_open", &[])? == 0))?;
    Ok(())
}

#[test]
fn five_hundred_concurrent_connections() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance(SCOPE)?;
    t.peer_server("echo", 9003, &[])?;
    let out = t.peer_client("concurrent", 9003, &["--count", "500"])?;
    assert!(out.contains("concurrent 500 of 500"), "{out}");
    wait_until("500 flows counted", Duration::from_secs(5), || Ok(t.metric("tls_inspect_worker_flows_total", &[])? >= 500))?;
    wait_until("all flows to close", Duration::from_secs(15), || Ok(t.metric("tls_inspect_worker_flows_open", &[])? == 0))?;
    Ok(())
}

#[test]
fn resets_propagate_and_a_closed_port_looks_closed() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance(SCOPE)?;
    // The server resets: the client sees the reset.
    t.peer_server("rst", 9004, &[])?;
    let out = t.peer_client("expect-rst", 9004, &[])?;
    assert!(out.contains("reset"), "{out}");
    // The client resets: the server sees the reset.
    let s = t.peer_server("expect-rst", 9005, &[])?;
    t.peer_client("rst", 9005, &[])?;
    t.background(s).wait_for("reset", Duration::from_secs(10))?;
    // Nothing listens on 9006: refused at once, as without the appliance. The handshake passes
    // between the real ends in XDP, so the RST is the server's own and no worker is involved.
    let handshakes = t.metric("tls_inspect_xdp_handshake_frames_total", &[])?;
    let out = t.peer_client("connect", 9006, &["--timeout", "5"])?;
    assert!(out.contains("connect refused"), "{out}");
    wait_until("both resets to be counted", Duration::from_secs(5), || Ok(t.metric("tls_inspect_worker_resets_total", &[])? >= 2))?;
    assert!(t.metric("tls_inspect_xdp_handshake_frames_total", &[])? >= handshakes + 2, "the SYN and the RST bridged");
    assert_eq!(t.metric("tls_inspect_worker_connect_refused_total", &[])?, 0, "the refusal never reached a worker");
    assert_eq!(t.metric("tls_inspect_worker_peeked_flows_total", &[])?, 2, "only the two connections with data reached a worker");
    Ok(())
}

#[test]
fn two_workers_with_directions_on_different_queues() -> Result<()> {
    let mut t = Topology::with_queues(2)?;
    t.start_appliance(SCOPE)?;
    let stats = t.stats()?;
    assert_eq!(tls_inspect_tests::workers_in(&stats), 2, "one worker per queue: {stats}");
    t.peer_server("echo", 9007, &[])?;
    t.peer_server("source", 9008, &["--size", "20000000", "--seed", "3"])?;
    let out = t.peer_client("concurrent", 9007, &["--count", "200"])?;
    assert!(out.contains("concurrent 200 of 200"), "{out}");
    for _ in 0..4 {
        let out = t.peer_client("download", 9008, &["--size", "20000000", "--seed", "3"])?;
        assert!(out.contains("download ok"), "{out}");
    }
    std::thread::sleep(Duration::from_millis(600));
    let stats = t.stats()?;
    for w in ["0", "1"] {
        assert!(metric_in(&stats, "tls_inspect_worker_flows_total", &[("worker", w)])? > 0, "both workers own flows: {stats}");
    }
    let handed = metric_in(&stats, "tls_inspect_worker_handoff_frames_total", &[("direction", "in")])?;
    assert!(handed > 0, "some frames arrived on the other worker's queue and were handed over: {stats}");
    Ok(())
}

#[test]
fn killing_the_dataplane_fails_open_and_a_restart_adopts() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance(SCOPE)?;
    t.peer_server("source", 9010, &["--size", "300000000", "--seed", "5"])?;
    t.peer_server("echo", 9011, &[])?;
    // A long download is running when the dataplane is killed.
    let mut c = t.client.cmd("python3");
    c.arg(tls_inspect_tests::peer_script()).args(["client", "download", "--host", SERVER_IP, "--port", "9010", "--size", "300000000", "--seed", "5"]);
    let mut download = Background::spawn(c)?;
    wait_until("the download to start", Duration::from_secs(10), || Ok(t.metric("tls_inspect_worker_relayed_bytes_total", &[("direction", "to_client")])? > 1_000_000))
        .map_err(|e| anyhow::anyhow!("{e}: client said {:?}; stats {}", download.lines(), t.stats().unwrap_or_default()))?;
    let pid = t.daemon().unwrap().child.id();
    check(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]))?;
    std::thread::sleep(Duration::from_millis(300));
    download.kill();

    // The program is still attached (its links are pinned) and fails open: new connections
    // to the steered port work, bridged.
    let out = t.peer_client("churn", 9011, &["--count", "3"])?;
    assert!(out.contains("churn 3 of 3"), "{out}");
    assert!(t.metric("tls_inspect_xdp_failopen_frames_total", &[])? > 0);

    // A restarted dataplane adopts the pinned program and maps and carries new flows again.
    let steered_before = t.metric("tls_inspect_xdp_frames_total", &[("path", "steered")])?;
    t.start_appliance(SCOPE)?;
    let out = t.peer_client("churn", 9011, &["--count", "3"])?;
    assert!(out.contains("churn 3 of 3"), "{out}");
    assert!(t.metric("tls_inspect_xdp_frames_total", &[("path", "steered")])? > steered_before);
    wait_until("the new workers to count the flows", Duration::from_secs(5), || Ok(t.metric("tls_inspect_worker_flows_total", &[])? >= 3))?;
    let log = t.daemon().unwrap().lines().join("\n");
    assert!(log.contains("adopted"), "{log}");
    Ok(())
}

#[test]
fn ten_thousand_flows_of_churn_leave_no_state() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance(SCOPE)?;
    t.peer_server("echo", 9012, &[])?;
    let out = t.peer_client("churn", 9012, &["--count", "10000"])?;
    assert!(out.contains("churn 10000 of 10000"), "{out}");
    wait_until("the flow tables to empty", Duration::from_secs(15), || {
        let stats = t.stats()?;
        Ok(metric_in(&stats, "tls_inspect_xdp_flows", &[])? == 0 && t.metric("tls_inspect_worker_flows_open", &[])? == 0)
    })?;
    assert!(t.metric("tls_inspect_worker_flows_total", &[])? >= 10_000);
    let out = run(t.cli().arg("flows"))?;
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    Ok(())
}
