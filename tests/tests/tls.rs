//! TLS interception through the appliance, with real clients (curl, openssl s_client, Python's
//! ssl) and real servers (nginx, openssl s_server) on a test PKI the appliance trusts upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use serde_json::{json, Value};
use tls_inspect_tests::pki::Pair;
use tls_inspect_tests::{check, run, SERVER_IP};

use tls_inspect_tests::tlsbed::{Bed, TRIAL_ISSUER};

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn s_client(bed: &Bed, port: u16, ca: &Path, extra: &[&str]) -> String {
    let mut c = bed.t.client.sh(&format!(
        "openssl s_client -connect {SERVER_IP}:{port} -CAfile {} {} </dev/null 2>&1",
        ca.display(),
        extra.join(" ")
    ));
    text(&run(&mut c).unwrap())
}

#[test]
fn curl_openssl_and_python_are_inspected_over_tls13_tls12_h1_and_h2() -> Result<()> {
    let mut b = Bed::new("")?;
    b.nginx()?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    b.s_server(8443, &server, &[])?;
    let ca = b.ca.to_str().unwrap().to_string();

    // curl, HTTP/2 over TLS 1.3: the certificate it trusts is the operator's.
    let o = b.curl(&["--http2", "--cacert", &ca, "https://server.test/"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("hello from nginx"), "{out}");
    assert!(out.contains("HTTP/2 200"), "{out}");
    assert!(out.contains(TRIAL_ISSUER), "the forged certificate is issued by the trial CA: {out}");
    assert!(out.contains("TLSv1.3"), "{out}");
    // HTTP/1.1 over TLS 1.2.
    let o = b.curl(&["--http1.1", "--tlsv1.2", "--tls-max", "1.2", "--cacert", &ca, "https://server.test/"]);
    let out = text(&o);
    assert!(o.status.success() && out.contains("hello from nginx") && out.contains("TLSv1.2"), "{out}");
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    // 30 MB through the inspected path, HTTP/2 and HTTP/1.1, checksummed.
    let want = check(Command::new("sha256sum").arg(b.t.dir.join("nginx/www/big")))?;
    let want = want.split_whitespace().next().unwrap().to_string();
    for proto in ["--http2", "--http1.1"] {
        let got = check(b.t.client.sh(&format!(
            "curl -sS --max-time 60 {proto} --connect-to ::198.18.0.2: --cacert {ca} https://server.test/big | sha256sum"
        )))?;
        assert_eq!(got.split_whitespace().next(), Some(want.as_str()), "{proto}: the download differs");
    }
    // No SNI (a connection to the IP): the forged certificate carries the server's IP too.
    let o = b.curl(&["--cacert", &ca, "https://198.18.0.2/"]);
    assert!(o.status.success(), "{}", text(&o));

    // openssl s_client to openssl s_server, TLS 1.3 and 1.2.
    for version in ["-tls1_3", "-tls1_2"] {
        let out = s_client(&b, 8443, &b.ca, &["-servername", "server.test", version]);
        assert!(out.contains("Verify return code: 0 (ok)"), "{version}: {out}");
        assert!(out.contains(TRIAL_ISSUER), "{version}: {out}");
    }

    // Python's ssl and http.client.
    let py = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile='{ca}')\n\
         s = ctx.wrap_socket(socket.create_connection(('{SERVER_IP}', 443), timeout=10), server_hostname='server.test')\n\
         s.sendall(b'GET / HTTP/1.1\\r\\nHost: server.test\\r\\nConnection: close\\r\\n\\r\\n')\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = s.recv(4096)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(s.version(), dict(x[0] for x in s.getpeercert()['issuer'])['commonName'])\n\
         print(data.decode())\n"
    );
    let out = check(b.t.client.cmd("python3").args(["-c", &py]))?;
    assert!(out.contains(TRIAL_ISSUER) && out.contains("hello from nginx"), "{out}");

    // One record per flow: inspected, with the policy and scope, SNI, JA4 and ALPN.
    let records = b.wait_records(8)?;
    let inspected: Vec<&Value> = records.iter().filter(|r| r["tls_inspect"]["decision"] == "inspected").collect();
    assert!(inspected.len() >= 8, "{records:?}");
    assert!(inspected.iter().any(|r| r["flow"]["bytes_toclient"].as_u64().unwrap() > 30_000_000));
    assert!(inspected.iter().all(|r| r["tls_inspect"]["policy_id"] == 3 && r["tls_inspect"]["scope_id"] == 30), "{records:?}");
    assert!(inspected.iter().any(|r| r["tls_inspect"]["alpn"] == "h2"), "{records:?}");
    assert!(inspected.iter().any(|r| r["tls"]["sni"] == "server.test" && r["tls"]["ja4"].as_str().is_some_and(|j| j.starts_with("t13d"))));
    assert!(inspected.iter().any(|r| r["tls"]["version"] == "TLS 1.2"), "{records:?}");
    // Both legs as a modern browser gets them (none of these clients offers post-quantum),
    // and never weaker than the client asked.
    for r in &inspected {
        let ours = &r["tls_inspect"];
        assert_eq!((&ours["client"]["grade"], &ours["upstream"]["grade"]), (&json!("A"), &json!("A")), "{r}");
        assert_eq!(ours["weakened"], json!([]), "{r}");
    }
    Ok(())
}

#[test]
fn invalid_upstreams_are_blocked_with_the_reason() -> Result<()> {
    let mut b = Bed::new("")?;
    let names = ["server.test", SERVER_IP];
    let expired = b.pki.server("expired", &names, "root", Some(("20200101000000Z", "20200201000000Z")))?;
    let wrong = b.pki.server("wrong", &["wrong.test"], "root", None)?;
    let selfsigned = b.pki.server("self", &names, "self", None)?;
    let unknown = b.pki.server("unknown", &names, "other", None)?;
    let cases = [(9441u16, &expired, "expired"), (9442, &wrong, "not valid for name"), (9443, &selfsigned, "issuer"), (9444, &unknown, "issuer")];
    for (port, pair, _) in &cases {
        b.s_server(*port, pair, &[])?;
    }
    let ca = b.ca.to_str().unwrap().to_string();
    for (port, _, _) in &cases {
        let o = b.curl(&["--cacert", &ca, &format!("https://server.test:{port}/")]);
        assert!(!o.status.success(), "port {port} must not succeed: {}", text(&o));
        assert!(!text(&o).contains(TRIAL_ISSUER), "never a certificate from the operator's CA for an invalid upstream");
    }
    let records = b.wait_records(4)?;
    for (port, _, why) in &cases {
        let r = records.iter().find(|r| r["dest_port"] == *port).unwrap_or_else(|| panic!("no record for {port}: {records:?}"));
        assert_eq!(r["tls_inspect"]["decision"], "blocked", "{r}");
        let reason = r["tls_inspect"]["reason"].as_str().unwrap().to_lowercase();
        assert!(reason.starts_with("upstream_invalid") && reason.contains(why), "{port}: {reason}");
    }
    Ok(())
}

#[test]
fn forward_untrusted_lets_the_client_see_the_failure() -> Result<()> {
    let mut b = Bed::new("untrusted_upstream = \"forward_untrusted\"")?;
    let wrong = b.pki.server("wrong", &["wrong.test"], "root", None)?;
    b.s_server(9442, &wrong, &[])?;
    let out = s_client(&b, 9442, &b.ca.clone(), &["-servername", "server.test"]);
    assert!(out.contains("NOT trusted"), "signed by the untrusted key: {out}");
    assert!(!out.contains("Verify return code: 0 (ok)"), "{out}");
    // Forwarded, the connection is graded F on both legs: nobody validated the server.
    let records = b.wait_records(1)?;
    let r = records.iter().find(|r| r["dest_port"] == 9442).expect("the flow's record");
    for leg in ["client", "upstream"] {
        assert_eq!(r["tls_inspect"][leg]["grade"], "F", "{r}");
        assert!(r["tls_inspect"][leg]["grade_reasons"].as_array().unwrap().contains(&json!("certificate not validated")), "{r}");
    }
    Ok(())
}

#[test]
fn do_not_inspect_hosts_and_sources_see_the_real_certificate() -> Result<()> {
    let mut b = Bed::new("do_not_inspect_hosts = [\"passthrough.test\"]")?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    b.s_server(8443, &server, &[])?;
    let root = b.pki.root.to_str().unwrap().to_string();
    // The Do-Not-Inspect host: the client validates the server's own certificate.
    let o = b.curl(&["--cacert", &root, "https://passthrough.test:8443/"]);
    let out = text(&o);
    assert!(o.status.success() && out.contains("issuer: CN=Test Root"), "{out}");
    // Any other host is inspected: the test root alone does not validate the forged chain.
    let o = b.curl(&["--cacert", &root, "https://server.test:8443/"]);
    assert!(!o.status.success(), "{}", text(&o));
    let records = b.wait_records(2)?;
    assert!(records.iter().any(|r| r["tls_inspect"]["decision"] == "passed" && r["tls_inspect"]["reason"] == "do_not_inspect_host"));
    drop(b);

    // A Do-Not-Inspect source network.
    let mut b = Bed::new("do_not_inspect_src = [\"198.18.0.1/32\"]")?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    b.s_server(8443, &server, &[])?;
    let root = b.pki.root.to_str().unwrap().to_string();
    let o = b.curl(&["--cacert", &root, "https://server.test:8443/"]);
    assert!(o.status.success() && text(&o).contains("issuer: CN=Test Root"), "{}", text(&o));
    let records = b.wait_records(1)?;
    assert_eq!(records[0]["tls_inspect"]["reason"], "do_not_inspect_source");
    Ok(())
}

#[test]
fn legacy_tls_and_ech_follow_the_policy() -> Result<()> {
    let legacy = ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"];
    // Default policy: pass both, never break them.
    let mut b = Bed::new("")?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    b.s_server(9445, &server, &legacy)?;
    b.s_server(8443, &server, &[])?;
    let root = b.pki.root.clone();
    let out = s_client(&b, 9445, &root, &["-servername", "server.test", "-tls1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(out.contains("Protocol  : TLSv1") && out.contains("Test Root"), "a TLS 1.0 client reaches the TLS 1.0 server: {out}");
    // An ECH extension (GREASE or real) is decided on the outer hello: inspected, and our own
    // ServerHello answers it.
    let ech = b.t.peer_client("hello", 8443, &["--count", "1"])?;
    assert!(ech.contains("answer 160303"), "a ServerHello: {ech}");
    let records = b.wait_records(2)?;
    let reasons: Vec<&str> = records.iter().filter_map(|r| r["tls_inspect"]["reason"].as_str()).collect();
    assert!(reasons.contains(&"legacy_tls"), "{reasons:?}");
    let ech_flow = records.iter().find(|r| r["dest_port"] == 8443).unwrap();
    assert_ne!(ech_flow["tls_inspect"]["decision"], "passed", "{ech_flow}");
    drop(b);

    // ech = "pass": the hello goes to the server unchanged.
    let mut b = Bed::new("ech = \"pass\"")?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    b.s_server(8443, &server, &[])?;
    let ech = b.t.peer_client("hello", 8443, &["--count", "1"])?;
    assert!(!ech.contains("1503030002022") && !ech.contains("none"), "the ECH hello was passed to the server: {ech}");
    let records = b.wait_records(1)?;
    assert_eq!((&records[0]["tls_inspect"]["decision"], &records[0]["tls_inspect"]["reason"]), (&Value::from("passed"), &Value::from("ech")), "{records:?}");
    drop(b);

    // Block both.
    let mut b = Bed::new("legacy_tls = \"block\"\nech = \"block\"")?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    b.s_server(9445, &server, &legacy)?;
    b.s_server(8443, &server, &[])?;
    let root = b.pki.root.clone();
    let out = s_client(&b, 9445, &root, &["-servername", "server.test", "-tls1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(out.contains("alert access denied"), "the TLS 1.0 client gets our access_denied alert: {out}");
    let ech = b.t.peer_client("hello", 8443, &["--count", "1"])?;
    assert!(ech.contains("answer 15030300020231"), "access_denied alert: {ech}");
    let records = b.wait_records(2)?;
    assert!(records.iter().all(|r| r["tls_inspect"]["decision"] == "blocked"), "{records:?}");
    Ok(())
}

#[test]
fn an_mtls_server_fails_once_then_is_passed_from_the_exclusion_cache() -> Result<()> {
    let mut b = Bed::new("")?;
    let server = Pair { cert: b.server.cert.clone(), key: b.server.key.clone() };
    let root = b.pki.root.clone();
    b.s_server(9446, &server, &["-Verify", "1", "-CAfile", root.to_str().unwrap()])?;
    let ca = b.ca.clone();
    // First connection: inspected, the server asks for a client certificate, the flow closes.
    let _ = s_client(&b, 9446, &ca, &["-servername", "server.test"]);
    // A flow record and the exclusion's record.
    let flows = |n: usize| -> Result<Vec<Value>> { Ok(b.wait_records(n)?.into_iter().filter(|r| r["event_type"] == "tls").collect()) };
    let records = flows(2)?;
    assert_eq!(records[0]["tls_inspect"]["reason"], "client_auth_requested", "{records:?}");
    assert!(b.eve().iter().any(|r| r["event_type"] == "tls_exclusion" && r["tls_inspect"]["exclusion"]["clients"] == "all"), "{:?}", b.eve());
    let list = check(b.t.cli().args(["bypass", "list"]))?;
    assert!(list.contains("198.18.0.2:9446 server.test clients all (client_auth_requested)"), "{list}");
    // Second connection: passed untouched, the client sees the server's real certificate.
    let out = s_client(&b, 9446, &root, &["-servername", "server.test"]);
    assert!(out.contains("Test Root") && !out.contains(TRIAL_ISSUER), "{out}");
    let records = flows(3)?;
    assert_eq!(records[1]["tls_inspect"]["reason"], "exclusion_cache", "{records:?}");
    let cleared = check(b.t.cli().args(["bypass", "clear"]))?;
    assert!(cleared.contains("1 entries cleared"), "{cleared}");
    Ok(())
}

#[test]
fn a_revoked_upstream_certificate_is_blocked_once_its_crl_is_loaded() -> Result<()> {
    let mut b = Bed::new("")?;
    let revoked = b.pki.server("revoked", &["server.test"], "root", None)?;
    b.s_server(9452, &revoked, &[])?;
    let ca = b.ca.to_str().unwrap().to_string();
    // Without the CRL the certificate is valid: inspected.
    let o = b.curl(&["--cacert", &ca, "https://server.test:9452/"]);
    assert!(o.status.success(), "{}", text(&o));
    let crl = b.pki.revoke(&revoked)?;
    b.restart("", &format!("crls = [\"{}\"]", crl.display()))?;
    let o = b.curl(&["--cacert", &ca, "https://server.test:9452/"]);
    assert!(!o.status.success(), "{}", text(&o));
    // The bed's own server certificate, not revoked, is still inspected under the same CRL.
    b.s_server(9453, &Pair { cert: b.server.cert.clone(), key: b.server.key.clone() }, &[])?;
    let o = b.curl(&["--cacert", &ca, "https://server.test:9453/"]);
    assert!(o.status.success(), "{}", text(&o));
    let records: Vec<Value> = b.wait_records(3)?.into_iter().filter(|r| r["dest_port"] == 9452).collect();
    let last = records.last().unwrap();
    assert_eq!(last["tls_inspect"]["decision"], "blocked", "{records:?}");
    assert!(last["tls_inspect"]["reason"].as_str().unwrap().contains("Revoked"), "{records:?}");
    // A file that is not a CRL is refused at start, naming the field.
    let bad = b.t.dir.join("not-a-crl.pem");
    std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")?;
    b.t.stop_appliance();
    check(b.t.cli().arg("detach"))?;
    let config = std::fs::read_to_string(b.t.dir.join("config.toml"))?.replace(&crl.display().to_string(), &bad.display().to_string());
    let err = b.t.start_appliance_expecting_failure(&config)?;
    assert!(err.contains("tls.crls"), "{err}");
    Ok(())
}

#[test]
fn an_http2_upload_that_nginx_answers_early_gets_the_status_it_gets_directly() -> Result<()> {
    use tls_inspect_tests::tlsbed::DIRECT_PORT;
    // With the IPS off and on: nginx answers 404 (no such file) or 413 (over client_max_body_size)
    // while curl still uploads, then resets the stream.
    for extra in ["", "[ips]\nenabled = true\nmode = \"block\""] {
        let mut b = Bed::new(extra)?;
        b.nginx()?;
        let (ca, root) = (b.ca.to_str().unwrap().to_string(), b.pki.root.to_str().unwrap().to_string());
        for (size, path, want) in [(200_000, "/nothing-here", "404"), (5_000_000, "/nothing-here", "413"), (5_000_000, "/", "413")] {
            let body = b.t.dir.join(format!("upload-{size}"));
            std::fs::write(&body, vec![b'x'; size])?;
            let upload = format!("@{}", body.display());
            let code = |port: u16, trust: &str| {
                let o = b.curl(&["--http2", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", trust, "--data-binary", &upload, &format!("https://server.test:{port}{path}")]);
                (String::from_utf8_lossy(&o.stdout).to_string(), text(&o).lines().filter(|l| l.starts_with("curl:")).collect::<String>())
            };
            let direct = code(DIRECT_PORT, &root);
            let through = code(443, &ca);
            assert_eq!(direct.0, want, "directly ({extra:?}, {size} bytes to {path}): {direct:?}");
            assert_eq!(through.0, want, "through the appliance ({extra:?}, {size} bytes to {path}): {through:?}");
        }
    }
    Ok(())
}
