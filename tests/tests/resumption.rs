//! Session resumption on both legs, with real clients (openssl s_client `-sess_out`/`-sess_in`,
//! curl, Python's ssl) and real servers (nginx, openssl s_server): what resumes is logged per
//! leg, early data is never taken, and nothing resumes past a restart with a new CA, a
//! Do-Not-Inspect change, an untrusted or an expired upstream certificate.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use tls_inspect_tests::tlsbed::Bed;
use tls_inspect_tests::{check, run, SERVER_IP};

/// An HTTP/1.1 request through `openssl s_client` that reads the answer to its end (so the
/// session tickets, sent after the handshake, are in), with `extra` arguments; its output.
fn s_client(b: &Bed, port: u16, name: &str, ca: &Path, extra: &str) -> String {
    let script = format!(
        "printf 'GET / HTTP/1.1\\r\\nHost: {name}\\r\\nConnection: close\\r\\n\\r\\n' | \
         timeout 10 openssl s_client -connect {SERVER_IP}:{port} -servername {name} -CAfile {} -ign_eof {extra} 2>&1",
        ca.display()
    );
    let o = run(&mut b.t.client.sh(&script)).unwrap();
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The `tls` records of `name`, in order.
fn flows_of(b: &Bed, name: &str) -> Vec<Value> {
    b.eve().into_iter().filter(|r| r["event_type"] == "tls" && r["tls"]["sni"] == name).collect()
}

fn resumed(r: &Value) -> (bool, bool) {
    (r["tls_inspect"]["client"]["resumed"] == true, r["tls_inspect"]["upstream"]["resumed"] == true)
}

#[test]
fn openssl_curl_and_python_resume_both_legs_and_the_log_says_so() -> Result<()> {
    let mut b = Bed::new("")?;
    b.nginx()?;
    let dir = b.t.dir.clone();
    let ca = b.ca.clone();

    // openssl, TLS 1.3 and TLS 1.2: the second connection resumes the first's session.
    for (version, flag) in [("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")] {
        let sess = dir.join(format!("{flag}.sess"));
        let first = s_client(&b, 443, "server.test", &ca, &format!("{flag} -sess_out {}", sess.display()));
        assert!(first.contains(&format!("New, {version}")) && first.contains("Verify return code: 0 (ok)") && first.contains("hello from nginx"), "{first}");
        let second = s_client(&b, 443, "server.test", &ca, &format!("{flag} -sess_in {}", sess.display()));
        assert!(second.contains(&format!("Reused, {version}")) && second.contains("hello from nginx"), "{version}: the client's session was not resumed: {second}");
    }
    let records = b.wait_records(4)?;
    let flows: Vec<(bool, bool)> = records.iter().filter(|r| r["event_type"] == "tls").map(resumed).collect();
    // Each second connection resumed on both legs: the client with the appliance's ticket, the
    // appliance with nginx's.
    assert_eq!(flows, [(false, false), (true, true), (false, false), (true, true)], "{records:?}");
    let second = records.iter().filter(|r| r["event_type"] == "tls").nth(1).unwrap();
    assert_eq!(second["tls"]["session_resumed"], true, "{second}");
    assert_eq!(second["tls_inspect"]["decision"], "inspected");
    // The resumed upstream session keeps the server's certificate for the log and the rules.
    assert!(second["tls"]["subject"].as_str().is_some_and(|s| s.contains("server.test")), "{second}");
    assert!(records.iter().find(|r| r["event_type"] == "tls").unwrap()["tls"].get("session_resumed").is_none());
    // The counters, as the workers publish them.
    tls_inspect_tests::wait_until("the resumptions counted", Duration::from_secs(5), || {
        Ok(b.t.metric("tls_inspect_worker_tls_resumed_total", &[("leg", "client")])? == 2 && b.t.metric("tls_inspect_worker_tls_resumed_total", &[("leg", "upstream")])? == 2)
    })?;

    // curl resumes within one run (two URLs, a new connection each).
    let o = b.curl(&["--http1.1", "-H", "Connection: close", "--cacert", ca.to_str().unwrap(), "https://server.test/", "https://server.test/"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Python keeps the first connection's session and offers it on the second.
    let py = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile='{ca}')\n\
         sess = None\n\
         for i in range(2):\n\
         \x20   s = ctx.wrap_socket(socket.create_connection(('{SERVER_IP}', 443), timeout=10), server_hostname='server.test', session=sess)\n\
         \x20   s.sendall(b'GET / HTTP/1.1\\r\\nHost: server.test\\r\\nConnection: close\\r\\n\\r\\n')\n\
         \x20   while s.recv(4096): pass\n\
         \x20   print('reused', s.session_reused)\n\
         \x20   sess = s.session\n\
         \x20   s.close()\n",
        ca = ca.display()
    );
    let out = check(b.t.client.cmd("python3").args(["-c", &py]))?;
    assert_eq!(out.lines().collect::<Vec<_>>(), ["reused False", "reused True"], "{out}");
    let records = b.wait_records(8)?;
    // Each client's second connection resumed on both legs (a client's first is full upstream
    // too: its offer differs from openssl's, and sessions are kept per offer).
    let flows: Vec<(bool, bool)> = records.iter().filter(|r| r["event_type"] == "tls").map(resumed).skip(4).collect();
    assert_eq!(flows, [(false, false), (true, true), (false, false), (true, true)], "curl, then Python: {flows:?}");
    Ok(())
}

#[test]
fn early_data_is_never_accepted() -> Result<()> {
    let mut b = Bed::new("")?;
    b.nginx()?;
    let sess = b.t.dir.join("early.sess");
    let early = b.t.dir.join("early.txt");
    std::fs::write(&early, "GET /early HTTP/1.1\r\nHost: server.test\r\n\r\n")?;
    let first = s_client(&b, 443, "server.test", &b.ca, &format!("-tls1_3 -sess_out {}", sess.display()));
    assert!(first.contains("New, TLSv1.3"), "{first}");
    // The appliance's tickets allow no early data ...
    let text = check(Command::new("openssl").args(["sess_id", "-noout", "-text", "-in"]).arg(&sess))?;
    assert!(text.contains("Max Early Data: 0"), "{text}");
    // ... and a client that sends some anyway gets none of it accepted.
    let second = s_client(&b, 443, "server.test", &b.ca, &format!("-tls1_3 -sess_in {} -early_data {}", sess.display(), early.display()));
    assert!(!second.contains("Early data was accepted"), "{second}");
    let log = std::fs::read_to_string(b.t.dir.join("nginx/access.log")).unwrap_or_default();
    assert!(!log.contains("/early"), "nginx saw the early request: {log}");
    Ok(())
}

#[test]
fn nothing_resumes_past_a_new_ca_or_a_do_not_inspect_change() -> Result<()> {
    let mut b = Bed::new("")?;
    b.nginx()?;
    let dir = b.t.dir.clone();
    let (inspected, passed) = (dir.join("inspected.sess"), dir.join("passed.sess"));
    for (name, sess) in [("server.test", &inspected), ("passthrough.test", &passed)] {
        let out = s_client(&b, 443, name, &b.ca, &format!("-sess_out {}", sess.display()));
        assert!(out.contains("New, TLSv1.3") && out.contains("Verify return code: 0 (ok)"), "{out}");
    }
    // A new CA (which takes a restart) and passthrough.test now not to be inspected.
    let ca_dir = b.ca.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&ca_dir)?;
    check(Command::new(tls_inspect_tests::appliance_bin()).args(["ca", "--dir"]).arg(&ca_dir).arg("trial"))?;
    b.restart("", "do_not_inspect_hosts = [\"passthrough.test\"]")?;
    // The old ticket is not taken: a full handshake with a certificate of the new CA.
    let out = s_client(&b, 443, "server.test", &b.ca, &format!("-sess_in {}", inspected.display()));
    assert!(out.contains("New, TLSv1.3") && out.contains("Verify return code: 0 (ok)") && out.contains("hello from nginx"), "{out}");
    // The Do-Not-Inspect host is passed: the ticket goes to nginx, which does not know it, and
    // the client gets nginx's own certificate.
    let out = s_client(&b, 443, "passthrough.test", &b.pki.root, &format!("-sess_in {}", passed.display()));
    assert!(out.contains("New, TLSv1.3") && out.contains("Verify return code: 0 (ok)") && out.contains("hello from nginx"), "{out}");
    b.wait_records(4)?;
    let after: Vec<Value> = flows_of(&b, "server.test").into_iter().skip(1).collect();
    // (A new process: no upstream session was kept either.)
    assert_eq!(after.iter().map(resumed).collect::<Vec<_>>(), [(false, false)], "{after:?}");
    let passed_flow = flows_of(&b, "passthrough.test").pop().unwrap();
    assert_eq!(passed_flow["tls_inspect"]["decision"], "passed", "{passed_flow}");
    Ok(())
}

#[test]
fn an_upstream_session_is_not_resumed_once_its_certificate_expired() -> Result<()> {
    let mut b = Bed::new("")?;
    // A server certificate that ends a few seconds from now, on an openssl s_server (which
    // resumes its own tickets).
    let date = |offset: &str| -> Result<String> { Ok(check(Command::new("date").args(["-u", "-d", offset, "+%Y%m%d%H%M%SZ"]))?.trim().to_string()) };
    let short = b.pki.server("expiring", &["expiring.test"], "root", Some((&date("-1 hour")?, &date("+6 seconds")?)))?;
    b.s_server(8444, &short, &[])?;
    let first = s_client(&b, 8444, "expiring.test", &b.ca, "");
    assert!(first.contains("Verify return code: 0 (ok)"), "{first}; {:?}", b.eve());
    b.wait_records(1)?;
    std::thread::sleep(Duration::from_secs(8));
    // The server would resume; the appliance does not offer the session, validates again, and
    // the expired certificate blocks.
    let second = s_client(&b, 8444, "expiring.test", &b.ca, "");
    assert!(second.contains("alert access denied") && second.contains("no peer certificate available"), "{second}");
    let records = b.wait_records(2)?;
    let last = records.iter().filter(|r| r["event_type"] == "tls").nth(1).unwrap();
    assert_eq!(last["tls_inspect"]["decision"], "blocked", "{last}");
    assert!(last["tls_inspect"]["reason"].as_str().unwrap_or("").contains("certificate expired"), "{last}");
    assert_eq!(resumed(last), (false, false));
    Ok(())
}
