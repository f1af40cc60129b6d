//! Nothing in scope escapes inspection by the way it is sent: crafted ClientHellos are blocked or
//! inspected, never spliced; a server that speaks first does not make the flow skip the
//! decision; QUIC to a scope is dropped; one client cannot switch inspection off for others; a
//! server cannot opt itself out when its policy says so; a client cannot make the appliance hold
//! memory by sending before the server answers.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use tls_inspect_tests::pki::Pair;
use tls_inspect_tests::tlsbed::{Bed, TRIAL_ISSUER};
use tls_inspect_tests::{check, wait_until, CLIENT_IP, PREFIX_LEN, SERVER_IP};

/// The access_denied alert the appliance answers a blocked hello with.
const ACCESS_DENIED: &str = "answer 15030300020231";

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn records_on(b: &Bed, port: u16) -> Vec<Value> {
    b.eve().into_iter().filter(|r| r["event_type"] == "tls" && r["dest_port"] == port).collect()
}

fn wait_on(b: &Bed, port: u16, n: usize) -> Result<Vec<Value>> {
    wait_until(&format!("{n} flow records on port {port}"), Duration::from_secs(10), || Ok(records_on(b, port).len() >= n))
        .map_err(|e| anyhow::anyhow!("{e}: {:?}", b.eve()))?;
    Ok(records_on(b, port))
}

#[test]
fn crafted_client_hellos_are_blocked_or_inspected_never_spliced() -> Result<()> {
    let mut b = Bed::new("")?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    b.s_server(8443, &server, &[])?;
    let mut seen = 0;
    for (variant, what) in [
        ("bad-sni", "server_name is not ASCII"),
        ("long-sni", "server_name empty or longer than 253 bytes"),
        ("empty-alpn", "empty ALPN protocol name"),
        ("dup-sni", "duplicate extension"),
    ] {
        let out = b.t.peer_client("hello", 8443, &["--variant", variant])?;
        assert!(out.contains(ACCESS_DENIED), "{variant}: the appliance refuses it: {out}");
        seen += 1;
        let r = wait_on(&b, 8443, seen)?.pop().unwrap();
        assert_eq!(r["tls_inspect"]["decision"], "blocked", "{variant}: {r}");
        assert_eq!(r["tls_inspect"]["reason"], format!("malformed_client_hello: {what}"), "{variant}: {r}");
    }
    // A 20 KiB hello in 1 KiB records: reassembled and inspected (the answer is our ServerHello).
    let out = b.t.peer_client("hello", 8443, &["--variant", "big"])?;
    assert!(out.contains("answer 160303"), "a ServerHello: {out}");
    seen += 1;
    let r = wait_on(&b, 8443, seen)?.pop().unwrap();
    assert_ne!(r["tls_inspect"]["decision"], "passed", "{r}");
    assert_eq!(r["tls"]["sni"], "server.test", "{r}");
    // An SSLv2-format hello follows the legacy_tls policy (pass by default).
    let _ = b.t.peer_client("hello", 8443, &["--variant", "sslv2"])?;
    seen += 1;
    let r = wait_on(&b, 8443, seen)?.pop().unwrap();
    assert_eq!((&r["tls_inspect"]["decision"], &r["tls_inspect"]["reason"]), (&Value::from("passed"), &Value::from("legacy_tls")), "{r}");
    assert_eq!(r["tls_inspect"]["client"]["versions"], serde_json::json!(["SSLv2"]), "{r}");
    drop(b);

    // non_tls = "block": plain bytes on a scoped port are refused too.
    let mut b = Bed::new("non_tls = \"block\"")?;
    b.t.peer_server("echo", 9450, &[])?;
    let out = b.t.peer_client("hello", 9450, &["--variant", "http"])?;
    assert!(out.contains(ACCESS_DENIED), "not TLS, blocked with an alert: {out}");
    let r = wait_on(&b, 9450, 1)?;
    assert_eq!((&r[0]["tls_inspect"]["decision"], &r[0]["tls_inspect"]["reason"]), (&Value::from("blocked"), &Value::from("not_tls")), "{r:?}");
    Ok(())
}

#[test]
fn a_client_hello_after_a_server_banner_is_inspected() -> Result<()> {
    let mut b = Bed::new("")?;
    let (cert, key) = (b.server.cert.to_str().unwrap().to_string(), b.server.key.to_str().unwrap().to_string());
    b.t.peer_server("banner-tls", 9447, &["--cert", &cert, "--key", &key])?;
    let ca = b.ca.to_str().unwrap().to_string();
    let out = b.t.peer_client("banner-tls", 9447, &["--ca", &ca])?;
    // The banner reached the client, and the TLS after it was terminated by the appliance.
    assert!(out.contains("banner-tls + issuer=tls-inspect_trial_CA"), "{out}");
    assert!(out.contains("tls_after_banner:_ping"), "{out}");
    let r = wait_on(&b, 9447, 1)?;
    assert_eq!(r[0]["tls_inspect"]["decision"], "inspected", "{r:?}");
    Ok(())
}

/// UDP datagrams from the client to the server's `port`; the server counts what arrives.
fn udp_through(b: &mut Bed, port: u16, n: usize) -> Result<usize> {
    let counter = b.t.dir.join(format!("udp-{port}.count"));
    let listen = format!(
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{SERVER_IP}',{port}))\n\
         print('listening',flush=True)\ns.settimeout(3)\nn=0\n\
         try:\n  while True:\n    s.recv(2000); n+=1\nexcept OSError: pass\nopen('{}','w').write(str(n))\n",
        counter.display()
    );
    let mut c = b.t.server.cmd("python3");
    c.args(["-c", &listen]);
    let i = b.t.spawn(c)?;
    b.t.background(i).wait_for("listening", Duration::from_secs(10))?;
    check(b.t.client.cmd("python3").args([
        "-c",
        &format!("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range({n}): s.sendto(b'\\xc0'+bytes(1199),('{SERVER_IP}',{port}))"),
    ]))?;
    wait_until("the UDP listener's count", Duration::from_secs(10), || Ok(counter.exists()))?;
    Ok(std::fs::read_to_string(&counter)?.trim().parse()?)
}

/// A counter of scope 30 (policy 3): its metric family and the label that picks the series.
fn scope_counter(b: &Bed, family: &str, label: (&str, &str)) -> Result<u64> {
    b.t.metric(family, &[("policy", "3"), ("scope", "30"), label])
}

#[test]
fn quic_to_a_scope_is_dropped_by_default_and_passed_when_the_policy_says() -> Result<()> {
    // TLS inspection on, no `quic` in the policy: UDP/443 to the scope is dropped, counted.
    let mut b = Bed::new("")?;
    assert_eq!(udp_through(&mut b, 443, 20)?, 0, "no QUIC datagram reaches the server");
    assert_eq!(scope_counter(&b, "tls_inspect_scope_quic_datagrams_total", ("action", "dropped"))?, 20);
    // UDP outside the scope's ports is bridged and not counted.
    assert_eq!(udp_through(&mut b, 53, 5)?, 5);
    assert_eq!(scope_counter(&b, "tls_inspect_scope_quic_datagrams_total", ("action", "passed"))?, 0);
    drop(b);

    let mut b = Bed::with_policy("quic = \"pass\"", "", &["--metrics", "127.0.0.1:9466"])?;
    assert_eq!(udp_through(&mut b, 443, 20)?, 20, "quic = pass bridges it");
    assert_eq!((scope_counter(&b, "tls_inspect_scope_quic_datagrams_total", ("action", "passed"))?, scope_counter(&b, "tls_inspect_scope_quic_datagrams_total", ("action", "dropped"))?), (20, 0));
    // The metrics endpoint counts it per policy and scope too.
    let metrics = check(b.t.appliance.cmd("curl").args(["-sS", "--max-time", "5", "http://127.0.0.1:9466/metrics"]))?;
    assert!(metrics.contains("tls_inspect_scope_quic_datagrams_total{action=\"passed\",policy=\"3\",scope=\"30\"} 20"), "{metrics}");
    assert!(metrics.contains("tls_inspect_scope_quic_datagrams_total{action=\"dropped\",policy=\"3\",scope=\"30\"} 0"), "{metrics}");
    Ok(())
}

#[test]
fn one_client_rejecting_the_forged_certificate_does_not_stop_inspection_for_another() -> Result<()> {
    let mut b = Bed::new("")?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    b.s_server(8443, &server, &[])?;
    let other = "198.18.0.3";
    check(Command::new("ip").args(["-n", &b.t.client.0, "addr", "add", &format!("{other}/{PREFIX_LEN}"), "dev", "eth0"]))?;
    let (ca, root) = (b.ca.to_str().unwrap().to_string(), b.pki.root.to_str().unwrap().to_string());
    // The first client trusts only the real root: it refuses the forged certificate.
    let o = b.curl(&["--cacert", &root, "https://server.test:8443/"]);
    assert!(!o.status.success(), "{}", text(&o));
    let r = wait_on(&b, 8443, 1)?;
    assert!(r[0]["tls_inspect"]["reason"].as_str().unwrap().starts_with("client_rejected_certificate"), "{r:?}");
    let added: Vec<Value> = b.eve().into_iter().filter(|r| r["event_type"] == "tls_exclusion").collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["tls_inspect"]["exclusion"]["clients"], CLIENT_IP, "{added:?}");
    assert_eq!(added[0]["tls_inspect"]["exclusion"]["reason"], "client_rejected_certificate");
    let list = check(b.t.cli().args(["bypass", "list"]))?;
    assert!(list.contains(&format!("198.18.0.2:8443 server.test clients {CLIENT_IP} (client_rejected_certificate)")), "{list}");
    // Another client is still inspected.
    let o = b.curl(&["--interface", other, "--cacert", &ca, "https://server.test:8443/"]);
    assert!(o.status.success() && text(&o).contains(TRIAL_ISSUER), "{}", text(&o));
    // The first one now gets the server's own certificate, from the cache.
    let o = b.curl(&["--cacert", &root, "https://server.test:8443/"]);
    assert!(o.status.success() && !text(&o).contains(TRIAL_ISSUER), "{}", text(&o));
    let r = wait_on(&b, 8443, 3)?;
    assert_eq!(r[1]["tls_inspect"]["decision"], "inspected", "{r:?}");
    assert_eq!(r[1]["src_ip"], other);
    assert_eq!(r[2]["tls_inspect"]["reason"], "exclusion_cache", "{r:?}");
    Ok(())
}

#[test]
fn servers_asking_for_client_certificates_are_excluded_or_blocked_and_invalid_ones_never_excluded() -> Result<()> {
    let mut b = Bed::new("")?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    let root = b.pki.root.to_str().unwrap().to_string();
    let ca = b.ca.to_str().unwrap().to_string();
    // Optional client authentication (-verify, not -Verify): never inspected without the
    // client's certificate, excluded instead.
    b.s_server(9446, &server, &["-verify", "1", "-CAfile", &root])?;
    let _ = b.curl(&["--cacert", &ca, "https://server.test:9446/"]);
    let r = wait_on(&b, 9446, 1)?;
    assert_eq!(r[0]["tls_inspect"]["reason"], "client_auth_requested", "{r:?}");
    let o = b.curl(&["--cacert", &root, "https://server.test:9446/"]);
    assert!(o.status.success() && !text(&o).contains(TRIAL_ISSUER), "then passed with its own certificate: {}", text(&o));
    // An expired server that asks for a client certificate is blocked, not excluded.
    let expired = b.pki.server("expired", &["server.test"], "root", Some(("20200101000000Z", "20210101000000Z")))?;
    b.s_server(9448, &expired, &["-Verify", "1", "-CAfile", &root])?;
    let _ = b.curl(&["--cacert", &ca, "https://server.test:9448/"]);
    let r = wait_on(&b, 9448, 1)?;
    assert_eq!(r[0]["tls_inspect"]["decision"], "blocked", "{r:?}");
    assert!(r[0]["tls_inspect"]["reason"].as_str().unwrap().starts_with("upstream_invalid"), "{r:?}");
    let list = check(b.t.cli().args(["bypass", "list"]))?;
    assert_eq!(list.lines().count(), 1, "only the valid mTLS server is excluded: {list}");
    drop(b);

    // client_auth = "block": the server cannot opt itself out.
    let mut b = Bed::with_policy("client_auth = \"block\"", "", &[])?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    let root = b.pki.root.to_str().unwrap().to_string();
    let ca = b.ca.to_str().unwrap().to_string();
    b.s_server(9446, &server, &["-Verify", "1", "-CAfile", &root])?;
    for _ in 0..2 {
        let _ = b.curl(&["--cacert", &ca, "https://server.test:9446/"]);
    }
    let r = wait_on(&b, 9446, 2)?;
    for r in &r {
        assert_eq!((&r["tls_inspect"]["decision"], &r["tls_inspect"]["reason"]), (&Value::from("blocked"), &Value::from("client_auth_requested")), "{r}");
    }
    assert!(check(b.t.cli().args(["bypass", "list"]))?.trim().is_empty());
    Ok(())
}

/// The appliance's resident memory, from /proc.
fn rss_kib(b: &mut Bed) -> u64 {
    let pid = b.t.daemon().expect("the appliance runs").child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
fn a_client_sending_before_the_server_answers_is_held_back_by_tcp_not_memory() -> Result<()> {
    let mut b = Bed::new("")?;
    // A server that accepts and says nothing: the upstream handshake never completes.
    b.t.peer_server("silent", 9449, &["--timeout", "30"])?;
    let before = rss_kib(&mut b);
    let out = b.t.peer_client("flood", 9449, &["--timeout", "4"])?;
    let sent: u64 = out.split_whitespace().nth(1).unwrap().parse()?;
    let after = rss_kib(&mut b);
    // What the client got to send is what TCP windows and buffers take, not gigabytes.
    assert!(sent < 8 << 20, "the client sent {sent} bytes into a flow whose server never answered");
    assert!(after < before + 32 * 1024, "the appliance grew from {before} KiB to {after} KiB");
    Ok(())
}
