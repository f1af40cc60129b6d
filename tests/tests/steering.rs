//! Scopes record the handshakes they match and steer the connection from its first data segment
//! on to the AF_XDP socket of their queue (a real AF_XDP receiver, `tls-inspect debug xsk-recv`,
//! sees it; the handshake itself reaches the server) while other ports are bridged; a flow keeps
//! its decision when its policy is disabled, new flows do not; with no socket, matching traffic
//! still flows (fail-open) and the counters say so.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::time::Duration;

use anyhow::Result;
use tls_inspect_tests::{check, metric_in, wait_until, Background, Topology, CLIENT_IP, INSIDE, SERVER_IP};

const SCOPE_8080: &str = r#"
[[policy]]
id = 7
name = "steer-8080"

  [[policy.scope]]
  id = 70
  src = ["198.18.0.0/24"]
  sport = ["1024/65535"]
  dst = ["198.18.0.2"]
  dport = ["8080/8080"]
"#;

/// HTTP servers on 8080 and 8081 in the server namespace.
fn serve_http(t: &mut Topology) -> Result<()> {
    for port in ["8080", "8081"] {
        let mut s = t.server.cmd("python3");
        s.args(["-m", "http.server", "--bind", SERVER_IP, port, "--directory", "/"]);
        t.spawn(s)?;
    }
    t.wait_listening(&t.server.clone(), 8080)?;
    t.wait_listening(&t.server.clone(), 8081)
}

fn curl_ok(t: &Topology, port: u16) -> Result<()> {
    check(t.client.cmd("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "--max-time",
        "10",
        &format!("http://{SERVER_IP}:{port}/"),
    ]))?;
    Ok(())
}

/// A client that connects from a fixed source port to 8080 (the handshake reaches the server)
/// and sends a request, then waits for an answer that never comes while its first data segment
/// is steered to the test receiver (the kernel retransmits it at 0.2 s, 0.6 s, ...).
fn hanging_request(t: &Topology, sport: u16) -> Result<Background> {
    let mut c = t.client.cmd("python3");
    c.args([
        "-c",
        &format!(
            "import socket\n\
             s = socket.socket(); s.bind(('{CLIENT_IP}', {sport})); s.settimeout(8)\n\
             s.connect(('{SERVER_IP}', 8080)); print('connected', flush=True)\n\
             s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
             try:\n\
             \x20   print('reply', len(s.recv(100)), flush=True)\n\
             except Exception as e:\n\
             \x20   print('failed', e, flush=True)\n"
        ),
    ]);
    Background::spawn(c)
}

/// Data segments (PSH|ACK) of the client's connection from `sport` the receiver got.
fn data_seen(receiver: &Background, sport: u16) -> usize {
    let needle = format!("tcp {CLIENT_IP}:{sport} > {SERVER_IP}:8080 flags=0x18");
    receiver.lines().iter().filter(|l| l.contains(&needle)).count()
}

fn start_receiver(t: &Topology) -> Result<Background> {
    let mut r = t.appliance.cmd(tls_inspect_tests::appliance_bin().to_str().unwrap_or("tls-inspect"));
    r.env("TLS_INSPECT_INSTANCE", &t.instance)
        .args(["debug", "xsk-recv", "--iface", INSIDE, "--side", "inside", "--queue", "0", "--timeout", "60"]);
    let mut receiver = Background::spawn(r)?;
    receiver.wait_for("xsk-recv: ready", Duration::from_secs(10))?;
    Ok(receiver)
}

fn flow_action(t: &Topology, sport: u16) -> Result<Option<String>> {
    let out = check(t.cli().args(["flows", "--json"]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let client = format!("{CLIENT_IP}:{sport}");
    Ok(v["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["client"] == client.as_str())
        .and_then(|f| f["action"].as_str().map(String::from)))
}

#[test]
fn matching_connections_are_steered_from_their_first_data_and_policy_changes_affect_new_flows_only() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance_with(SCOPE_8080, &["--no-workers"])?;
    serve_http(&mut t)?;
    let mut receiver = start_receiver(&t)?;

    // Another port of the same server is bridged and works.
    curl_ok(&t, 8081)?;

    // A connection to the scope's port: its handshake reaches the server, its first data
    // segment the AF_XDP socket (and not the server, which never answers).
    let mut a = hanging_request(&t, 40001)?;
    a.wait_for("connected", Duration::from_secs(5))?;
    wait_until("the first data segment at the AF_XDP socket", Duration::from_secs(5), || Ok(data_seen(&receiver, 40001) >= 1))?;
    assert_eq!(flow_action(&t, 40001)?.as_deref(), Some("steer"));
    assert!(receiver.lines().iter().all(|l| !l.contains("flags=0x02")), "the SYN is bridged: {:?}", receiver.lines());
    let stats = t.stats()?;
    assert!(metric_in(&stats, "tls_inspect_xdp_frames_total", &[("path", "steered")])? >= 1);
    assert!(metric_in(&stats, "tls_inspect_xdp_handshake_frames_total", &[])? >= 2, "SYN and ACK bridged: {stats}");
    assert!(metric_in(&stats, "tls_inspect_xdp_peeked_flows_total", &[])? >= 1, "{stats}");
    assert!(metric_in(&stats, "tls_inspect_scope_flows_total", &[("policy", "7"), ("scope", "70"), ("path", "steered")])? >= 1);

    // Disable the policy: the flow already steered stays steered (its retransmitted data
    // still arrives at the socket) ...
    check(t.cli().args(["policy", "disable", "7"]))?;
    let seen = data_seen(&receiver, 40001);
    wait_until("a retransmitted segment after disabling", Duration::from_secs(6), || Ok(data_seen(&receiver, 40001) > seen))?;
    // ... while a new connection to the same port is bridged and reaches the server.
    curl_ok(&t, 8080)?;
    let steered: Vec<String> = receiver.lines().into_iter().filter(|l| l.contains("tcp ")).collect();
    assert!(steered.iter().all(|l| l.contains(":40001 >")), "only the old flow may reach the socket: {steered:?}");
    a.wait_for("failed", Duration::from_secs(15))?;

    // Enable again: new connections are steered again.
    check(t.cli().args(["policy", "enable", "7"]))?;
    let _b = hanging_request(&t, 40002)?;
    wait_until("the data of a new flow after enabling", Duration::from_secs(5), || Ok(data_seen(&receiver, 40002) >= 1))?;
    receiver.stop(Duration::from_secs(5));
    Ok(())
}

#[test]
fn matching_traffic_fails_open_without_a_socket() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance_with(SCOPE_8080, &["--no-workers"])?;
    serve_http(&mut t)?;

    // No AF_XDP socket is registered: the matching connection is bridged and works.
    curl_ok(&t, 8080)?;
    let stats = t.stats()?;
    assert!(metric_in(&stats, "tls_inspect_xdp_syns_matched_total", &[])? >= 1, "{stats}");
    assert!(metric_in(&stats, "tls_inspect_xdp_failopen_frames_total", &[])? >= 1, "{stats}");
    assert!(metric_in(&stats, "tls_inspect_xdp_bypass_frames_total", &[])? >= 3, "{stats}");
    assert!(metric_in(&stats, "tls_inspect_scope_frames_total", &[("scope", "70"), ("path", "bypass")])? >= 3, "{stats}");
    assert_eq!(metric_in(&stats, "tls_inspect_xdp_frames_total", &[("path", "steered")])?, 0);
    assert!(metric_in(&stats, "tls_inspect_scope_flows_total", &[("scope", "70"), ("path", "failopen")])? >= 1);
    // Closed (both FINs seen), the bypass flow has left the flow table.
    let flows = check(t.cli().args(["flows"]))?;
    assert!(!flows.contains(":8080"), "{flows}");

    // A flow that failed open stays bridged even after a socket appears.
    let mut c = t.client.cmd("python3");
    c.args([
        "-c",
        &format!(
            "import socket, time\n\
             s = socket.create_connection(('{SERVER_IP}', 8080), timeout=5)\n\
             print('connected', flush=True)\n\
             time.sleep(3)\n\
             s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
             print('reply', len(s.recv(100)) > 0, flush=True)\n"
        ),
    ]);
    let old = t.spawn(c)?;
    t.background(old).wait_for("connected", Duration::from_secs(5))?;
    let flows = check(t.cli().args(["flows"]))?;
    assert!(flows.contains("bypass"), "an open flow that failed open is marked bypass: {flows}");
    let receiver = start_receiver(&t)?;
    t.background(old).wait_for("reply True", Duration::from_secs(10))?;

    // A new connection now connects (its handshake is bridged), but its request is steered to
    // the socket and never reaches the server.
    let mut c = hanging_request(&t, 40003)?;
    c.wait_for("connected", Duration::from_secs(5))?;
    wait_until("the request at the AF_XDP socket", Duration::from_secs(5), || Ok(data_seen(&receiver, 40003) >= 1))?;
    c.wait_for("failed", Duration::from_secs(15))?;
    Ok(())
}

#[test]
fn udp_and_quic_are_never_steered() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance_with(
        r#"
[[policy]]
id = 1
  [[policy.scope]]
  src = ["0.0.0.0/0"]
  sport = ["0/65535"]
  dst = ["0.0.0.0/0"]
  dport = ["0/65535"]
"#,
        &["--no-workers"],
    )?;
    let receiver = start_receiver(&t)?;
    let mut r = t.server.cmd("python3");
    r.args([
        "-c",
        &format!(
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{SERVER_IP}', 443)); s.settimeout(10)\n\
             print('listening', flush=True)\n\
             print('got', len(s.recvfrom(2048)[0]), flush=True)\n"
        ),
    ]);
    let i = t.spawn(r)?;
    t.background(i).wait_for("listening", Duration::from_secs(10))?;
    check(t.client.cmd("python3").args([
        "-c",
        &format!(
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.sendto(b'\\xc0' + b'q' * 1199, ('{SERVER_IP}', 443))\n"
        ),
    ]))?;
    t.background(i).wait_for("got 1200", Duration::from_secs(10))?;
    assert!(receiver.lines().iter().all(|l| !l.contains("udp")), "{:?}", receiver.lines());
    Ok(())
}

#[test]
fn a_fail_closed_policy_drops_its_scope_without_a_socket_and_bridges_the_rest() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance_with(&SCOPE_8080.replace("name = \"steer-8080\"", "name = \"steer-8080\"\non_failure = \"closed\""), &["--no-workers"])?;
    serve_http(&mut t)?;

    // The scope's connection gets nowhere: its SYNs are dropped, not bridged.
    let out = tls_inspect_tests::run(t.client.cmd("curl").args(["-sS", "--max-time", "3", &format!("http://{SERVER_IP}:8080/")]))?;
    assert!(!out.status.success(), "a fail-closed scope without a worker must not connect");
    // The rest of the network is bridged as ever.
    curl_ok(&t, 8081)?;
    check(t.client.cmd("ping").args(["-c", "1", "-W", "2", SERVER_IP]))?;
    let stats = t.stats()?;
    let scope = |family: &str, path: &str| metric_in(&stats, family, &[("policy", "7"), ("scope", "70"), ("path", path)]);
    assert!(scope("tls_inspect_scope_frames_total", "dropped")? >= 2, "SYN and its retransmission: {stats}");
    assert_eq!((scope("tls_inspect_scope_flows_total", "failopen")?, scope("tls_inspect_scope_flows_total", "steered")?), (0, 0), "{stats}");
    assert_eq!(metric_in(&stats, "tls_inspect_xdp_failopen_frames_total", &[])?, 0, "{stats}");
    // Nothing of it is in the flow table: with a worker back, the next connection is taken.
    let flows = check(t.cli().args(["flows"]))?;
    assert!(!flows.contains(":8080"), "{flows}");
    let mut receiver = start_receiver(&t)?;
    let _b = hanging_request(&t, 40010)?;
    wait_until("the data once a socket is there", Duration::from_secs(5), || Ok(data_seen(&receiver, 40010) >= 1))?;
    receiver.stop(Duration::from_secs(5));
    Ok(())
}

/// Scope counters live in an array, at an element each scope is given; flows carry the element.
/// A deleted scope's element goes to the next new scope, but the frames of the deleted scope's
/// last flow (it keeps its decision) never count towards the new owner, and a scope that stays
/// keeps its counts across changes.
#[test]
fn a_deleted_scopes_last_flow_never_counts_towards_the_scope_given_its_counters() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance_with(SCOPE_8080, &["--no-workers"])?;
    serve_http(&mut t)?;
    let mut receiver = start_receiver(&t)?;
    let scope_frames = |t: &Topology, scope: &str| -> Result<u64> {
        metric_in(&t.stats()?, "tls_inspect_scope_frames_total", &[("scope", scope), ("path", "steered")])
    };

    // Scope 70's flow, steered (and retransmitting its data: nobody answers it).
    let mut a = hanging_request(&t, 40020)?;
    a.wait_for("connected", Duration::from_secs(5))?;
    wait_until("the first data segment at the AF_XDP socket", Duration::from_secs(5), || Ok(data_seen(&receiver, 40020) >= 1))?;
    assert!(scope_frames(&t, "70")? >= 1);

    // Another scope (another port) is added: 70 keeps its counts; then 70 is deleted, which
    // frees its element, and a third scope is added, which is given it.
    let add = |port: &str| -> Result<u32> {
        let out = check(t.cli().args([
            "--json", "scope", "add", "--policy", "7", "--src", "198.18.0.0/24", "--sport", "1024/65535",
            "--dst", SERVER_IP, "--dport", &format!("{port}/{port}"),
        ]))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v["scope"].as_u64().expect("the new scope's ID") as u32)
    };
    let second = add("9001")?;
    assert!(scope_frames(&t, "70")? >= 1, "a scope that stays keeps its counters");
    check(t.cli().args(["scope", "del", "70"]))?;
    let third = add("9002")?;
    assert_eq!(scope_frames(&t, &third.to_string())?, 0);

    // The old flow still goes to the socket, and its retransmissions count for nobody.
    let seen = data_seen(&receiver, 40020);
    wait_until("a retransmission after the changes", Duration::from_secs(8), || Ok(data_seen(&receiver, 40020) > seen))?;
    assert_eq!(flow_action(&t, 40020)?.as_deref(), Some("steer"));
    for scope in [second, third] {
        assert_eq!(scope_frames(&t, &scope.to_string())?, 0, "scope {scope} counted another scope's frames");
    }
    receiver.stop(Duration::from_secs(5));
    Ok(())
}
