//! The appliance's life cycle and the test bed's own promise: bad configs attach nothing, one
//! `run` per instance, a graceful stop detaches and removes pins, and a topology leaves nothing
//! behind, also when the test using it panics.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::process::Command;

use anyhow::Result;
use tls_inspect_tests::{check, run, Topology, INSIDE, OUTSIDE, SERVER_IP};

fn xdp_attached(t: &Topology, link: &str) -> Result<bool> {
    let out = check(Command::new("ip").args(["-n", &t.appliance.0, "link", "show", link]))?;
    Ok(out.contains("xdp"))
}

#[test]
fn topology_leaves_nothing_behind_even_when_the_test_panics() -> Result<()> {
    let names = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = names.clone();
    let result = std::thread::spawn(move || {
        let mut t = Topology::new().expect("topology");
        t.start_appliance("").expect("appliance");
        *seen.lock().expect("lock") = Some((t.id.clone(), t.instance.clone()));
        assert!(std::path::Path::new(&format!("/sys/fs/bpf/{}", t.instance)).exists());
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err(), "the thread was meant to panic");
    let (id, instance) = names.lock().expect("lock").clone().expect("names recorded");
    let left = Topology::leftovers(&id, &instance);
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[test]
fn a_bad_config_is_rejected_before_anything_is_attached() -> Result<()> {
    let t = Topology::new()?;
    let err = t.start_appliance_expecting_failure(
        "[[policy]]\nid = 1\n[[policy.scope]]\nsrc = [\"198.18.0.1\"]\nsport = [\"0/65535\"]\ndst = [\"0.0.0.0/0\"]\ndport = [\"443/4430000\"]\n",
    )?;
    assert!(err.contains("dport") && err.contains("443/4430000"), "{err}");
    assert!(!xdp_attached(&t, INSIDE)? && !xdp_attached(&t, OUTSIDE)?);
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/{}", t.instance)).exists());

    let err = t.start_appliance_expecting_failure("[appliance]\nflow_table_size = 0\n")?;
    assert!(err.contains("flow_table_size"), "{err}");
    Ok(())
}

/// `config check FILE` in the appliance's namespace: its output and whether it passed.
fn config_check(t: &Topology, config: &str, json: bool) -> Result<(bool, String)> {
    let path = t.dir.join("checked.toml");
    std::fs::write(&path, config)?;
    let mut c = t.appliance.cmd(tls_inspect_tests::appliance_bin().to_str().unwrap_or_default());
    c.env("TLS_INSPECT_INSTANCE", &t.instance).args(["config", "check", "--inside", INSIDE, "--outside", OUTSIDE]).arg(&path);
    if json {
        c.arg("--json");
    }
    let out = run(c)?;
    // The JSON answer is standard output alone (standard error has the log, as JSON lines too).
    let stderr = if json { String::new() } else { String::from_utf8_lossy(&out.stderr).into_owned() };
    Ok((out.status.success(), format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))))
}

#[test]
fn config_check_refuses_what_run_refuses_and_touches_nothing() -> Result<()> {
    let t = Topology::new()?;
    check(Command::new(tls_inspect_tests::appliance_bin()).args(["ca", "--dir"]).arg(t.dir.join("ca")).arg("trial"))?;
    let rules = t.dir.join("local.rules");
    std::fs::write(&rules, "alert http any any -> any any (msg:\"x\"; http.uri; content:\"/x\"; sid:1; rev:1;)\n")?;
    let intel = t.dir.join("intel.txt");
    std::fs::write(&intel, "203.0.113.0/24\n198.51.100.7\n")?;
    let good = format!(
        "[[policy]]\nid = 1\n[[policy.scope]]\nid = 10\nsrc = [\"198.18.0.0/24\"]\nsport = [\"1024/65535\"]\ndst = [\"198.18.0.2\"]\ndport = [\"443/443\"]\n\
         [tls]\ninspect = true\nca_dir = \"{}\"\n[ips]\nenabled = true\ndefault_rules = false\nrules = [\"{}\"]\n[intel]\nfile = \"{}\"\n",
        t.dir.join("ca").display(),
        rules.display(),
        intel.display()
    );
    let bad_rules = t.dir.join("bad.rules");
    std::fs::write(&bad_rules, "alert http any any -> any any (msg:\"x\"; nosuchkeyword; sid:2;)\n")?;
    let (ok, out) = config_check(&t, &good, true)?;
    assert!(ok, "{out}");
    let summary: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!((summary["policies"].as_u64(), summary["scopes"].as_u64(), summary["ips_rules"].as_u64(), summary["intel_entries"].as_u64()), (Some(1), Some(1), Some(1), Some(2)), "{out}");
    assert_eq!(summary["tls_inspect"], true);

    // A rule that does not load is a warning, as in `run` (the others load; `rules check`
    // lists every refusal).
    let (ok, out) = config_check(&t, &good.replace(&rules.display().to_string(), &bad_rules.display().to_string()), false)?;
    assert!(ok && out.contains("line 1: nosuchkeyword") && out.contains("IPS 0 rules"), "{out}");

    // Each a mistake `run` refuses: `config check` names the same field, and neither attaches.
    let cases = [
        (good.replace("443/443", "443/4430000"), "443/4430000"),
        (good.replace(&rules.display().to_string(), "/nonexistent/local.rules"), "/nonexistent/local.rules"),
        // (the list is rewritten with a bad address below)
        (good.clone(), "intel.file"),
        (good.replace(&t.dir.join("ca").display().to_string(), "/nonexistent/ca"), "tls.ca_dir"),
        (good.replace("inspect = true", "inspect = false") + "[log]\nkeylog = \"/tmp/k.log\"\n", "log.keylog"),
        (good.replace("inspect = true", "inspect = false"), "ips.enabled"),
    ];
    for (config, needle) in &cases {
        if needle == &"intel.file" {
            std::fs::write(&intel, "203.0.113.0/24\n198.51.100.300\n")?;
        } else {
            std::fs::write(&intel, "203.0.113.0/24\n198.51.100.7\n")?;
        }
        let (ok, out) = config_check(&t, config, false)?;
        assert!(!ok && out.contains(needle), "config check of a config with {needle}: {out}");
        let err = t.start_appliance_expecting_failure(config)?;
        assert!(err.contains(needle), "run of a config with {needle}: {err}");
        assert!(!xdp_attached(&t, INSIDE)? && !xdp_attached(&t, OUTSIDE)?, "{needle}: attached");
    }
    // An interface that is not there.
    let path = t.dir.join("checked.toml");
    std::fs::write(&path, &good)?;
    let out = run(t.appliance.cmd(tls_inspect_tests::appliance_bin().to_str().unwrap_or_default()).args(["config", "check", "--inside", "nosuch0", "--outside", OUTSIDE]).arg(&path))?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nosuch0"));
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/{}", t.instance)).exists(), "config check pinned nothing");
    Ok(())
}

#[test]
fn one_run_per_instance_graceful_stop_bridges_and_detach_cleans_up() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance("")?;
    assert!(xdp_attached(&t, INSIDE)? && xdp_attached(&t, OUTSIDE)?);

    let mut second = t.appliance.cmd(tls_inspect_tests::appliance_bin().to_str().unwrap_or_default());
    second.env("TLS_INSPECT_INSTANCE", &t.instance).args(["run", "--inside", INSIDE, "--outside", OUTSIDE]);
    let out = run(second)?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another `tls-inspect run` is active"));
    // The first one is unharmed.
    check(t.client.cmd("ping").args(["-c", "1", "-W", "2", SERVER_IP]))?;

    // A graceful stop leaves the program attached and bridging (the default, --on-exit bridge).
    let status = t.stop_appliance().expect("the appliance exits");
    assert!(status.success(), "graceful stop: {status}");
    assert!(xdp_attached(&t, INSIDE)? && xdp_attached(&t, OUTSIDE)?);
    check(t.client.cmd("ping").args(["-c", "1", "-W", "2", SERVER_IP]))?;
    // `tls-inspect detach` removes it all.
    let out = check(t.cli().arg("detach"))?;
    assert!(out.contains("detached"), "{out}");
    assert!(!xdp_attached(&t, INSIDE)? && !xdp_attached(&t, OUTSIDE)?);
    let left = Topology::leftovers("no-such-topology", &t.instance);
    assert!(left.is_empty(), "pins or state left after detach: {left:?}");

    // --on-exit detach does the same when the appliance stops.
    t.start_appliance_with("", &["--on-exit", "detach"])?;
    assert!(xdp_attached(&t, INSIDE)?);
    let out = run(t.cli().arg("detach"))?;
    assert!(!out.status.success(), "detach while running must be refused");
    assert!(t.stop_appliance().expect("exits").success());
    assert!(!xdp_attached(&t, INSIDE)? && !xdp_attached(&t, OUTSIDE)?);
    let left = Topology::leftovers("no-such-topology", &t.instance);
    assert!(left.is_empty(), "pins or state left after --on-exit detach: {left:?}");
    Ok(())
}

#[test]
fn generic_mode_when_asked() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance("[appliance]\nxdp_mode = \"generic\"\n")?;
    let out = check(Command::new("ip").args(["-n", &t.appliance.0, "link", "show", INSIDE]))?;
    assert!(out.contains("xdpgeneric"), "{out}");
    check(t.client.cmd("ping").args(["-c", "2", "-i", "0.2", "-W", "2", SERVER_IP]))?;
    assert!(t.metric("tls_inspect_xdp_frames_total", &[("path", "bridged")])? >= 4);
    Ok(())
}
