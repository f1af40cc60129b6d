//! Threat intelligence in XDP: an address on the list cannot be reached in block mode (and is
//! counted), is reached but counted in monitor mode, and removing it restores access.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use anyhow::Result;
use tls_inspect_tests::{check, run, Topology, SERVER_IP};

fn reachable(t: &Topology) -> bool {
    run(t.client.cmd("ping").args(["-c", "1", "-W", "1", SERVER_IP])).map(|o| o.status.success()).unwrap_or(false)
}

fn tcp_reachable(t: &Topology) -> bool {
    let out = run(t.client.cmd("curl").args(["-sS", "-o", "/dev/null", "--max-time", "2", &format!("http://{SERVER_IP}:8000/")])).unwrap();
    out.status.success()
}

#[test]
fn listed_addresses_are_dropped_counted_and_restored() -> Result<()> {
    let mut t = Topology::new()?;
    let list = t.dir.join("intel.txt");
    std::fs::write(&list, format!("# a feed\n{SERVER_IP}   # the server\n198.19.0.0/16\n"))?;
    t.start_appliance(&format!("[intel]\nfile = \"{}\"\nmode = \"block\"\n", list.display()))?;
    let mut http = t.server.cmd("python3");
    http.args(["-m", "http.server", "--bind", SERVER_IP, "8000", "--directory", "/"]);
    t.spawn(http)?;
    t.wait_listening(&t.server.clone(), 8000)?;

    // Block mode: neither ICMP nor TCP gets through, and the entry counts the frames.
    assert!(!reachable(&t), "the listed server must be unreachable");
    assert!(!tcp_reachable(&t));
    assert!(t.metric("tls_inspect_xdp_intel_dropped_frames_total", &[])? >= 2);
    let listing: serde_json::Value = serde_json::from_str(&check(t.cli().args(["intel", "list", "--json"]))?)?;
    let server = listing["entries"].as_array().unwrap().iter().find(|e| e["entry"] == SERVER_IP).unwrap();
    assert!(server["frames"].as_u64().unwrap() >= 2, "{listing}");

    // A bad list is refused with its line number, and the old one stays in force.
    let bad = t.dir.join("bad.txt");
    std::fs::write(&bad, "198.19.1.1\n198.18.0.2/24\n")?;
    let out = run(t.cli().args(["intel", "load"]).arg(&bad))?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!reachable(&t));

    // Monitor mode: traffic passes and is counted.
    let before = t.metric("tls_inspect_xdp_intel_frames_total", &[])?;
    check(t.cli().args(["intel", "load", "--mode", "monitor"]).arg(&list))?;
    assert!(reachable(&t) && tcp_reachable(&t));
    assert!(t.metric("tls_inspect_xdp_intel_frames_total", &[])? > before);

    // Back to block, then a list without the server: access is restored.
    check(t.cli().args(["intel", "load"]).arg(&list))?;
    assert!(!reachable(&t));
    let other = t.dir.join("other.txt");
    std::fs::write(&other, "198.19.0.0/16\n")?;
    check(t.cli().args(["intel", "load"]).arg(&other))?;
    assert!(reachable(&t) && tcp_reachable(&t));

    // Clear: nothing is dropped.
    check(t.cli().args(["intel", "load"]).arg(&list))?;
    assert!(!reachable(&t));
    check(t.cli().args(["intel", "clear"]))?;
    assert!(reachable(&t));
    Ok(())
}
