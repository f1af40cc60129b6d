//! Peek, then decide: a scoped connection's handshake passes between the real ends in XDP, a
//! worker sees it from its first data segment on and either hands it back to XDP (passed: the
//! rest never reaches userspace) or adopts it on both legs (inspected). Real clients (curl,
//! Python, hping3) and real servers (nginx, a Python TLS server with TCP Fast Open).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use tls_inspect_tests::tlsbed::{Bed, TRIAL_ISSUER};
use tls_inspect_tests::{check, wait_until, Background, SERVER_IP};

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The SHA-256 of nginx's `/big` as the server has it.
fn big_sha(b: &Bed) -> Result<String> {
    let out = check(std::process::Command::new("sha256sum").arg(b.t.dir.join("nginx/www/big")))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_string())
}

/// Downloads `/big` from `host` (through the appliance) and returns the SHA-256 of what arrived.
fn download_sha(b: &Bed, host: &str, ca: &str, extra: &[&str]) -> Result<String> {
    let file = b.t.dir.join(format!("got-{host}"));
    let mut args = vec!["--cacert", ca, "-o", file.to_str().unwrap(), "--max-time", "60"];
    args.extend_from_slice(extra);
    let url = format!("https://{host}/big");
    args.push(&url);
    let o = b.curl(&args);
    anyhow::ensure!(o.status.success(), "curl {host}: {}", text(&o));
    let out = check(std::process::Command::new("sha256sum").arg(&file))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_string())
}

fn worker_rx(b: &Bed) -> Result<u64> {
    b.t.metric("tls_inspect_worker_frames_total", &[("direction", "rx")])
}

#[test]
fn a_passed_flow_never_reaches_a_worker_after_its_first_flight() -> Result<()> {
    let mut b = Bed::new("do_not_inspect_hosts = [\"passthrough.test\"]")?;
    b.nginx()?;
    let root = b.pki.root.to_str().unwrap().to_string();
    let want = big_sha(&b)?;

    // 30 MB from a Do-Not-Inspect host: the real certificate, every byte, and the worker saw
    // the first flight only (the ClientHello, and at most a frame or two on their way before
    // the flow map said bypass).
    let before = worker_rx(&b)?;
    assert_eq!(download_sha(&b, "passthrough.test", &root, &[])?, want);
    wait_until("the hand-off to be counted", Duration::from_secs(5), || Ok(b.t.metric("tls_inspect_worker_bypassed_flows_total", &[])? == 1))?;
    let seen = worker_rx(&b)? - before;
    assert!(seen <= 10, "a passed 30 MB download brought {seen} frames to the workers");
    let stats = b.t.stats()?;
    let m = |f: &str, l: &[(&str, &str)]| tls_inspect_tests::metric_in(&stats, f, l).unwrap();
    assert!(m("tls_inspect_xdp_bypass_frames_total", &[]) >= 20_000, "the rest was bridged in XDP: {stats}");
    assert_eq!(m("tls_inspect_worker_adopted_flows_total", &[]), 0, "{stats}");
    assert!(m("tls_inspect_xdp_handshake_frames_total", &[]) >= 3, "SYN, SYN-ACK and ACK bridged: {stats}");
    // Once both ends sent their FIN, the passed flow leaves the XDP flow table.
    wait_until("the passed flow to leave the flow table", Duration::from_secs(5), || Ok(b.t.metric("tls_inspect_xdp_flows", &[])? == 0))?;

    // The same download, inspected: the worker adopted it and carried every frame.
    let before = worker_rx(&b)?;
    assert_eq!(download_sha(&b, "server.test", b.ca.to_str().unwrap(), &[])?, want);
    assert!(worker_rx(&b)? - before >= 10_000, "the inspected download went through a worker");
    assert_eq!(b.t.metric("tls_inspect_worker_adopted_flows_total", &[])?, 1);

    // The passed flow's record says it was handed to the capture layer, as Suricata words it.
    let records = b.wait_records(2)?;
    let passed = records.iter().find(|r| r["tls_inspect"]["decision"] == "passed").expect("a passed record");
    assert_eq!(passed["tls_inspect"]["reason"], "do_not_inspect_host");
    wait_until("the passed flow's flow record", Duration::from_secs(5), || {
        Ok(b.eve_all().iter().any(|r| r["event_type"] == "flow" && r["flow"]["state"] == "bypassed"))
    })?;
    let flow = b.eve_all().into_iter().find(|r| r["event_type"] == "flow" && r["flow"]["state"] == "bypassed").unwrap();
    assert_eq!(flow["flow"]["bypass"], "capture", "{flow}");
    tls_inspect_tests::tlsbed::check_eve_schema(&b.eve_all())?;
    Ok(())
}

/// HTTPS requests from one client port (41234), one connection each, as fast as the client can
/// open them (a connect waits while the last connection's socket still holds the port); `reset`: each ends with a RST (SO_LINGER 0), else with FINs (the server's first).
/// Prints, per connection: the name, the issuer of the certificate the client got, the status line.
fn same_port_connections(b: &Bed, names: &[&str], reset: bool) -> Result<String> {
    let bundle = b.t.dir.join("both-roots.pem");
    std::fs::write(&bundle, format!("{}{}", std::fs::read_to_string(&b.pki.root)?, std::fs::read_to_string(&b.ca)?))?;
    let names = names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    // Closing after the server's FIN has arrived (CLOSE_WAIT, state 8) leaves the client no
    // TIME_WAIT of its own, as in a `Connection: close` exchange the client reads to its end.
    let ending = if reset {
        "t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))"
    } else {
        "[time.sleep(0.001) for _ in range(5000) if t.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != 8]"
    };
    let py = format!(
        "import socket, ssl, struct, time\n\
         ctx = ssl.create_default_context(cafile='{bundle}')\n\
         for name in [{names}]:\n\
         \x20   for attempt in range(2000):\n\
         \x20       s = socket.socket()\n\
         \x20       s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         \x20       s.bind(('198.18.0.1', 41234))\n\
         \x20       s.settimeout(10)\n\
         \x20       try:\n\
         \x20           s.connect(('{SERVER_IP}', 443))\n\
         \x20           break\n\
         \x20       except OSError as e:\n\
         \x20           if e.errno != 99: raise\n\
         \x20           s.close()\n\
         \x20           time.sleep(0.001)\n\
         \x20   t = ctx.wrap_socket(s, server_hostname=name)\n\
         \x20   issuer = dict(x[0] for x in t.getpeercert()['issuer'])['commonName']\n\
         \x20   t.sendall(b'GET / HTTP/1.1\\r\\nHost: ' + name.encode() + b'\\r\\nConnection: close\\r\\n\\r\\n')\n\
         \x20   data = b''\n\
         \x20   while True:\n\
         \x20       chunk = t.recv(4096)\n\
         \x20       if not chunk: break\n\
         \x20       data += chunk\n\
         \x20   {ending}\n\
         \x20   t.close()\n\
         \x20   print(name, '|', issuer, '|', data.split(b'\\r\\n')[0].decode())\n",
        bundle = bundle.display()
    );
    check(b.t.client.cmd("python3").args(["-c", &py]))
}

/// The client's SYNs sent again so far (its namespace's own count).
fn syn_retransmits(b: &Bed) -> Result<u64> {
    let out = check(b.t.client.cmd("nstat").args(["-az", "TcpExtTCPSynRetrans"]))?;
    Ok(out.lines().filter_map(|l| l.strip_prefix("TcpExtTCPSynRetrans")).find_map(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0))
}

/// A client that reuses its port at once: the first connection is passed (a Do-Not-Inspect
/// host), the next on the same addresses and ports asks for an inspected host while the worker
/// still lingers on the first. It is peeked and decided afresh (inspected: the forged
/// certificate), not forwarded as the passed connection's late frames, and nothing of it stays
/// in the flow table.
#[test]
fn a_new_connection_on_a_just_passed_connections_port_is_decided_afresh() -> Result<()> {
    let mut b = Bed::new("do_not_inspect_hosts = [\"passthrough.test\"]")?;
    b.nginx()?;
    let out = same_port_connections(&b, &["passthrough.test", "server.test"], true)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("passthrough.test |") && !lines[0].contains(TRIAL_ISSUER) && lines[0].contains("200 OK"), "passed, the real certificate: {out}");
    assert!(lines[1].starts_with("server.test |") && lines[1].contains(TRIAL_ISSUER) && lines[1].contains("200 OK"), "inspected, the forged certificate: {out}");

    wait_until("the reused port to be counted", Duration::from_secs(5), || Ok(b.t.metric("tls_inspect_worker_peeks_port_reused_total", &[])? == 1))?;
    assert_eq!(b.t.metric("tls_inspect_worker_adopted_flows_total", &[])?, 1);
    assert_eq!(b.t.metric("tls_inspect_worker_bypassed_flows_total", &[])?, 1);
    // Nothing of either connection stays steered in the flow table.
    wait_until("both flows to leave the flow table", Duration::from_secs(5), || Ok(b.t.metric("tls_inspect_xdp_flows", &[])? == 0))?;
    let records = b.wait_records(2)?;
    let decision = |sni: &str| records.iter().find(|r| r["tls"]["sni"] == sni).map(|r| r["tls_inspect"]["decision"].clone());
    assert_eq!(decision("passthrough.test"), Some(Value::from("passed")), "{records:?}");
    assert_eq!(decision("server.test"), Some(Value::from("inspected")), "{records:?}");
    assert!(records.iter().all(|r| r["src_port"] == 41234), "{records:?}");
    Ok(())
}

/// A client that reconnects at once from the port it just closed (the server's FIN first, then
/// the client's, as `Connection: close` goes), after inspected and passed connections alike: the
/// server's TIME_WAIT takes the new SYN, and so must the appliance. No SYN waits for a resend,
/// each connection is decided for itself, and nothing stays in the flow table.
#[test]
#[ignore = "not yet reliable: with a debug build (CI) a reconnect right after an inspected connection still stalls at times; passes with release builds (run with --ignored)"]
fn a_client_reconnecting_from_a_just_closed_port_is_not_held_up() -> Result<()> {
    let mut b = Bed::new("do_not_inspect_hosts = [\"passthrough.test\"]")?;
    b.nginx()?;
    let before = syn_retransmits(&b)?;
    let names = ["server.test", "server.test", "passthrough.test", "server.test", "passthrough.test", "passthrough.test", "server.test"];
    let out = same_port_connections(&b, &names, false)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), names.len(), "{out}");
    for (line, name) in lines.iter().zip(names) {
        assert!(line.starts_with(&format!("{name} |")) && line.contains("200 OK"), "{out}");
        assert_eq!(line.contains(TRIAL_ISSUER), name == "server.test", "inspected exactly when not Do-Not-Inspect: {out}");
    }
    assert_eq!(syn_retransmits(&b)? - before, 0, "a SYN on the reused port waited for its resend");
    wait_until("every flow to be counted", Duration::from_secs(5), || {
        Ok(b.t.metric("tls_inspect_worker_adopted_flows_total", &[])? == 4 && b.t.metric("tls_inspect_worker_bypassed_flows_total", &[])? == 3)
    })?;
    wait_until("every flow to leave the flow table", Duration::from_secs(5), || Ok(b.t.metric("tls_inspect_xdp_flows", &[])? == 0))?;
    let records = b.wait_records(names.len())?;
    assert_eq!(records.iter().filter(|r| r["tls_inspect"]["decision"] == "inspected").count(), 4, "{records:?}");
    assert_eq!(records.iter().filter(|r| r["tls_inspect"]["decision"] == "passed").count(), 3, "{records:?}");
    Ok(())
}

/// The TCP options of every SYN and SYN-ACK, and the data segments from the client side without
/// a timestamp, in a capture at the server.
fn options_at_the_server(pcap: &std::path::Path) -> Result<(Vec<String>, usize)> {
    let syns = check(std::process::Command::new("tshark").arg("-r").arg(pcap).args([
        "-Y", "tcp.flags.syn == 1", "-T", "fields",
        "-e", "ip.src", "-e", "tcp.options.sack_perm", "-e", "tcp.options.timestamp.tsval", "-e", "tcp.options.wscale.shift",
    ]))?;
    let bare = check(std::process::Command::new("tshark").arg("-r").arg(pcap).args(["-Y", "ip.src == 198.18.0.1 && tcp.len > 0 && !tcp.options.timestamp.tsval", "-T", "fields", "-e", "frame.number"]))?;
    Ok((syns.lines().map(String::from).collect(), bare.lines().count()))
}

#[test]
fn window_scaling_sack_and_timestamps_hold_through_a_passed_and_an_adopted_flow() -> Result<()> {
    let mut b = Bed::new("do_not_inspect_hosts = [\"passthrough.test\"]")?;
    b.nginx()?;
    let root = b.pki.root.to_str().unwrap().to_string();
    let ca = b.ca.to_str().unwrap().to_string();
    let want = big_sha(&b)?;
    // Linux offers all three: the server sees them as the client offered them (the handshake
    // is the client's own, inspected or not), and every data segment towards it, the adopted
    // leg's included, carries a timestamp.
    let pcap = b.t.dir.join("server.pcap");
    let mut cap = b.t.server.cmd("dumpcap");
    cap.args(["-i", "eth0", "-f", "tcp port 443", "-w"]).arg(&pcap);
    let mut cap = Background::spawn(cap)?;
    cap.wait_for("Capturing on", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(1));
    for (host, cafile) in [("passthrough.test", &root), ("server.test", &ca)] {
        assert_eq!(download_sha(&b, host, cafile, &[])?, want, "{host}");
    }
    std::thread::sleep(Duration::from_millis(500));
    cap.stop(Duration::from_secs(5));
    let (syns, bare) = options_at_the_server(&pcap)?;
    assert!(syns.len() >= 4, "two SYNs and two SYN-ACKs: {syns:?}");
    for syn in &syns {
        let f: Vec<&str> = syn.split('\t').collect();
        assert!(f.len() == 4 && f[1..].iter().all(|v| !v.is_empty()), "SACK, timestamps and window scaling on every SYN: {syns:?}");
    }
    assert_eq!(bare, 0, "data segments without a timestamp reached the server");
    // A client that offers none of them (so the connection uses none): the adopted legs speak
    // plain RFC 793 windows and still carry every byte.
    for knob in ["net.ipv4.tcp_timestamps=0", "net.ipv4.tcp_sack=0", "net.ipv4.tcp_window_scaling=0"] {
        check(b.t.client.cmd("sysctl").args(["-qw", knob]))?;
    }
    for (host, cafile) in [("passthrough.test", &root), ("server.test", &ca)] {
        assert_eq!(download_sha(&b, host, cafile, &[])?, want, "{host} without TCP options");
    }
    assert_eq!(b.t.metric("tls_inspect_worker_adopt_failed_flows_total", &[])?, 0);
    assert_eq!(b.t.metric("tls_inspect_worker_adopted_flows_total", &[])?, 2);
    Ok(())
}

/// A TLS server that takes TCP Fast Open (a Python `ssl` server; nginx's `fastopen` needs a
/// listen option the bed's nginx does not have).
fn tfo_server(b: &mut Bed, port: u16) -> Result<usize> {
    let script = format!(
        "import socket, ssl, threading\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain('{}', '{}')\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.setsockopt(socket.SOL_TCP, socket.TCP_FASTOPEN, 16)\n\
         s.bind(('{SERVER_IP}', {port})); s.listen(16); print('listening', flush=True)\n\
         def serve(c):\n\
         \x20   try:\n\
         \x20       t = ctx.wrap_socket(c, server_side=True); t.recv(4096)\n\
         \x20       t.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 9\\r\\nConnection: close\\r\\n\\r\\nfast open'); t.close()\n\
         \x20   except Exception as e:\n\
         \x20       print('error', e, flush=True)\n\
         while True:\n\
         \x20   c, _ = s.accept(); threading.Thread(target=serve, args=(c,)).start()\n",
        b.server.cert.display(),
        b.server.key.display()
    );
    let mut c = b.t.server.cmd("python3");
    c.args(["-c", &script]);
    let i = b.t.spawn(c)?;
    b.t.background(i).wait_for("listening", Duration::from_secs(10))?;
    Ok(i)
}

#[test]
fn tcp_fast_open_connections_are_inspected_and_passed() -> Result<()> {
    let mut b = Bed::new("do_not_inspect_hosts = [\"passthrough.test\"]")?;
    for ns in [&b.t.client, &b.t.server] {
        check(ns.cmd("sysctl").args(["-qw", "net.ipv4.tcp_fastopen=3"]))?;
    }
    tfo_server(&mut b, 8443)?;
    let root = b.pki.root.to_str().unwrap().to_string();
    let ca = b.ca.to_str().unwrap().to_string();
    // The first connection to a server asks for a cookie; the later ones carry the ClientHello
    // in their SYN. Inspected and passed, each answers.
    for (host, cafile) in [("server.test", &ca), ("passthrough.test", &root)] {
        for _ in 0..3 {
            let o = b.curl(&["--tcp-fastopen", "--cacert", cafile, &format!("https://{host}:8443/")]);
            assert!(o.status.success() && text(&o).contains("fast open"), "{host}: {}", text(&o));
        }
    }
    // The client's kernel did send its ClientHello in a SYN (it counts it as failed: never
    // acknowledged); the XDP program dropped that SYN, so the server never got a client's
    // first bytes before the decision, and the client went on without Fast Open.
    let nstat = |ns: &tls_inspect_tests::Netns, name: &str| -> u64 {
        check(ns.sh(&format!("nstat -az {name} | awk '$1 == \"{name}\" {{print $2}}'"))).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let with_data = nstat(&b.t.client, "TcpExtTCPFastOpenActive") + nstat(&b.t.client, "TcpExtTCPFastOpenActiveFail");
    assert!(with_data >= 1, "the client sent data in a SYN: {with_data}");
    assert_eq!(nstat(&b.t.server, "TcpExtTCPFastOpenPassive"), 0, "the server took SYN data past the appliance");
    assert!(b.t.metric("tls_inspect_xdp_syn_data_dropped_total", &[])? >= 1);
    // Workers publish their counters a few times a second.
    wait_until("every connection to be peeked at", Duration::from_secs(5), || Ok(b.t.metric("tls_inspect_worker_peeked_flows_total", &[])? == 6))?;
    let records = b.wait_records(6)?;
    assert_eq!(records.iter().filter(|r| r["tls_inspect"]["decision"] == "inspected").count(), 3, "{records:?}");
    assert_eq!(records.iter().filter(|r| r["tls_inspect"]["decision"] == "passed").count(), 3, "{records:?}");
    Ok(())
}

/// Drops `percent` % of the TCP segments `ns` receives (netem is not in every kernel; nftables'
/// `numgen random` is): a lossy link into each end.
fn lossy(ns: &tls_inspect_tests::Netns, percent: u32) -> Result<()> {
    check(ns.cmd("nft").arg(format!(
        "add table inet lossy; add chain inet lossy in {{ type filter hook input priority 0; }}; \
         add rule inet lossy in meta l4proto tcp numgen random mod 100 < {percent} drop"
    )))?;
    Ok(())
}

#[test]
fn a_lossy_link_during_the_handshake_peek_and_adoption_loses_nothing() -> Result<()> {
    let mut b = Bed::new("do_not_inspect_hosts = [\"passthrough.test\"]")?;
    b.nginx()?;
    let root = b.pki.root.to_str().unwrap().to_string();
    let ca = b.ca.to_str().unwrap().to_string();
    // 10% of the segments into the client and into the server are lost: SYNs, SYN-ACKs, held
    // first flights, their retransmissions while the worker peeks, and the adopted legs' data.
    lossy(&b.t.client, 10)?;
    lossy(&b.t.server, 10)?;
    for i in 0..10 {
        for (host, cafile) in [("server.test", &ca), ("passthrough.test", &root)] {
            let o = b.curl(&["--max-time", "30", "--cacert", cafile, &format!("https://{host}/")]);
            if !(o.status.success() && text(&o).contains("hello from nginx")) {
                let server = check(b.t.server.cmd("ss").args(["-tinaH", "( sport = :443 )"])).unwrap_or_default();
                let client = check(b.t.client.cmd("ss").args(["-tinaH", "( dport = :443 )"])).unwrap_or_default();
                let log = b.t.daemon().map(|d| d.lines().join("\n")).unwrap_or_default();
                panic!("{host} #{i}: {}\nserver: {server}\nclient: {client}\nstats: {}\nlog: {log}", text(&o), b.t.stats().unwrap_or_default());
            }
        }
    }
    // 1 MB from each server under that loss: every byte arrives, in order. (An adopted leg recovers
    // from a lost tail with smoltcp's retransmission timer, at least 1 s and doubling when the
    // resend is lost too, where Linux waits 200 ms: at 10% loss an inspected download runs at
    // 30-75 KB/s here with a debug build, and far slower when other tests share the cores.)
    let head = check(b.t.server.sh(&format!("head -c 1000000 {} | sha256sum", b.t.dir.join("nginx/www/big").display())))?;
    let head = head.split_whitespace().next().unwrap_or_default().to_string();
    for (host, cafile) in [("server.test", &ca), ("passthrough.test", &root)] {
        assert_eq!(download_sha(&b, host, cafile, &["--max-time", "150", "--range", "0-999999"])?, head, "{host}");
    }
    // Every connection was peeked at and handed over one way or the other (11 each; the
    // workers publish their counters as they go round, so the last ones are waited for).
    let handed = |stats: &serde_json::Value| -> (u64, u64) {
        let m = |f: &str| tls_inspect_tests::metric_in(stats, f, &[]).unwrap_or(0);
        (m("tls_inspect_worker_adopted_flows_total"), m("tls_inspect_worker_bypassed_flows_total"))
    };
    let _ = wait_until("every connection adopted or passed", Duration::from_secs(5), || {
        let (adopted, passed) = handed(&b.t.stats()?);
        Ok(adopted >= 11 && passed >= 11)
    });
    let stats = b.t.stats()?;
    let m = |f: &str| tls_inspect_tests::metric_in(&stats, f, &[]).unwrap();
    assert_eq!(m("tls_inspect_worker_adopt_failed_flows_total"), 0, "{stats}");
    assert_eq!(m("tls_inspect_worker_unrecorded_resets_total"), 0, "{stats}");
    let (adopted, passed) = handed(&stats);
    assert!(adopted >= 11 && passed >= 11, "adopted {adopted}, passed {passed}: {stats}");
    Ok(())
}

/// The dataplane's resident memory, in KiB.
fn rss_kib(b: &mut Bed) -> u64 {
    let pid = b.t.daemon().map(|d| d.child.id()).unwrap_or(0);
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_syn_flood_at_a_scope_never_reaches_a_worker_and_inspection_goes_on() -> Result<()> {
    let mut b = Bed::new("")?;
    b.nginx()?;
    let ca = b.ca.to_str().unwrap().to_string();
    // Warm: the forged certificate exists and the worker's memory has settled.
    let o = b.curl(&["--cacert", &ca, "https://server.test/"]);
    assert!(o.status.success(), "{}", text(&o));
    let rss_before = rss_kib(&mut b);
    let rx_before = worker_rx(&b)?;
    let syn_before = b.t.metric("tls_inspect_xdp_syns_matched_total", &[])?;
    // hping3 floods the inspected port with SYNs from another address of the client network
    // (a source that answers nothing, as a spoofed flood's), its source port moving on with
    // every SYN: tens of thousands of half-open connections. (From the client's own address,
    // the flood would reuse the curls' own ports and break them with or without the appliance.)
    let mut flood = b.t.client.cmd("timeout");
    flood.args(["8", "hping3", "--flood", "-q", "-S", "-a", "198.18.0.77", "-p", "443", SERVER_IP]);
    let mut flood = Background::spawn(flood)?;
    std::thread::sleep(Duration::from_millis(500));
    let (mut ok, total) = (0, 20);
    for _ in 0..total {
        let o = b.curl(&["--max-time", "5", "--cacert", &ca, "https://server.test/"]);
        if o.status.success() && text(&o).contains("hello from nginx") {
            ok += 1;
        }
    }
    let flood_syns = b.t.metric("tls_inspect_xdp_syns_matched_total", &[])? - syn_before;
    flood.stop(Duration::from_secs(10));
    assert!(ok >= 19, "{ok} of {total} inspected connections succeeded during the flood");
    assert!(flood_syns >= 10_000, "the flood reached the scope: {flood_syns} SYNs matched");
    // The workers saw the real connections' frames, none of the flood's SYNs.
    let rx = worker_rx(&b)? - rx_before;
    assert!(rx < 60 * total as u64, "{rx} frames reached the workers for {total} connections and {flood_syns} SYNs");
    let records: Vec<Value> = b.eve();
    assert!(records.iter().filter(|r| r["tls_inspect"]["decision"] == "inspected").count() >= 20, "{}", records.len());
    let rss_after = rss_kib(&mut b);
    assert!(rss_after < rss_before + 16 * 1024, "RSS went from {rss_before} to {rss_after} KiB");
    Ok(())
}
