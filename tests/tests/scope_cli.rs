//! The scope CLI against a running appliance: add, list, delete, load from a file, and every
//! rejection, each of which must name the field and value and change nothing (neither the state
//! nor the live table generation).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::process::Command;

use anyhow::{bail, Result};
use serde_json::Value;
use tls_inspect_tests::{check, metric_in, run, Topology, SERVER_IP};

/// Small limits so that each limit can be hit with a short command line.
const CONFIG: &str = r#"
[limits]
src_per_scope = 3
entries_per_field = 2
scopes_per_policy = 2
quota_per_scope = 8
description_len = 20

[[policy]]
id = 1
name = "first"

  [[policy.scope]]
  id = 1
  src = ["198.18.0.0/24"]
  sport = ["1024/65535"]
  dst = ["198.18.0.2"]
  dport = ["443/443"]
  description = "from config"
"#;

fn json(cmd: &mut Command) -> Result<Value> {
    Ok(serde_json::from_str(&check(cmd)?)?)
}

/// Everything a rejected command must leave alone.
fn snapshot(t: &Topology) -> Result<(Value, Value, Value)> {
    let scopes = json(t.cli().args(["scope", "list", "--json"]))?;
    let policies = json(t.cli().args(["policy", "list", "--json"]))?;
    let generation = t.stats()?["generation"].clone();
    Ok((scopes, policies, generation))
}

/// Runs a command that must fail with an error mentioning every `needle`, and change nothing.
fn rejected(t: &Topology, args: &[&str], needles: &[&str]) -> Result<()> {
    let before = snapshot(t)?;
    let out = run(t.cli().args(args))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        bail!("accepted: {args:?}: {}", String::from_utf8_lossy(&out.stdout));
    }
    for n in needles {
        if !err.contains(n) {
            bail!("{args:?}: error does not mention '{n}': {err}");
        }
    }
    if snapshot(t)? != before {
        bail!("{args:?} was rejected but changed the appliance");
    }
    Ok(())
}

fn scope_ids(t: &Topology) -> Result<Vec<u64>> {
    let v = json(t.cli().args(["scope", "list", "--json"]))?;
    Ok(v["scopes"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_u64()).collect())
}

#[test]
fn add_list_delete_load_and_every_rejection() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance_with(CONFIG, &["--no-workers"])?;
    assert_eq!(scope_ids(&t)?, vec![1]);

    // add: prints the ID and the quota (2 src x 1 sport x 2 dst x 2 dport = 8).
    let out = check(t.cli().args([
        "scope", "add", "--policy", "1", "--src", "198.18.0.1,198.18.0.3", "--sport", "0/65535",
        "--dst", "198.18.0.0/24,198.18.1.0/24", "--dport", "8080/8080,9000/9100", "--description", "cli",
    ]))?;
    assert!(out.contains("scope 2 added to policy 1: quota 8"), "{out}");
    let gen_after_add = t.stats()?["generation"].clone();

    // list: the new scope with its fields, quota and counters.
    let list = json(t.cli().args(["scope", "list", "--json"]))?;
    let s2 = list["scopes"].as_array().and_then(|a| a.iter().find(|s| s["id"] == 2)).cloned().unwrap_or_default();
    assert_eq!(s2["quota"], 8);
    assert_eq!(s2["dport"], serde_json::json!(["8080/8080", "9000/9100"]));
    assert_eq!(s2["description"], "cli");
    assert_eq!(metric_in(&s2, "tls_inspect_scope_flows_total", &[("scope", "2"), ("path", "steered")])?, 0);
    let table = check(t.cli().args(["scope", "list"]))?;
    assert!(table.contains("src 198.18.0.1,198.18.0.3 sport 0/65535"), "{table}");

    // The added scope is live in the XDP tables: a connection to 9050 matches it (and fails
    // open, as no AF_XDP socket is registered).
    let mut server = t.server.cmd("python3");
    server.args(["-m", "http.server", "--bind", SERVER_IP, "9050", "--directory", "/"]);
    t.spawn(server)?;
    t.wait_listening(&t.server.clone(), 9050)?;
    check(t.client.cmd("curl").args(["-sS", "-o", "/dev/null", "--max-time", "5", &format!("http://{SERVER_IP}:9050/")]))?;
    let stats = t.stats()?;
    assert_eq!(metric_in(&stats, "tls_inspect_scope_flows_total", &[("policy", "1"), ("scope", "2"), ("path", "failopen")])?, 1, "{stats}");

    // Every rejection names the field and the value, and changes nothing.
    let base = ["scope", "add", "--policy", "1"];
    let add = |src: &'static str, sport: &'static str, dst: &'static str, dport: &'static str| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend(["--src", src, "--sport", sport, "--dst", dst, "--dport", dport]);
        v
    };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (add("198.18.0.1", "0/65535", "0.0.0.0/0", "443/70000"), vec!["dport", "443/70000", "out of range"]),
        (add("198.18.0.1", "0/65535", "0.0.0.0/0", "443"), vec!["dport", "'443'", "start/end"]),
        (add("198.18.0.1", "10/5", "0.0.0.0/0", "443/443"), vec!["sport", "10/5", "greater"]),
        (add("198.18.0.1", "0/65535", "0.0.0.0/0", "443-443"), vec!["dport", "443-443"]),
        (add("198.18.0.1", "0/65535", "198.18.0.7/24", "443/443"), vec!["dst", "198.18.0.7/24", "198.18.0.0/24"]),
        (add("198.18.0.1", "0/65535", "198.18.0.0/33", "443/443"), vec!["dst", "198.18.0.0/33"]),
        (add("198.18.0", "0/65535", "0.0.0.0/0", "443/443"), vec!["src", "198.18.0"]),
        (add("example.com", "0/65535", "0.0.0.0/0", "443/443"), vec!["src", "example.com"]),
        (add("198.18.0.1,,198.18.0.2", "0/65535", "0.0.0.0/0", "443/443"), vec!["src", "empty entry"]),
        (add("198.18.0.1,198.18.0.1", "0/65535", "0.0.0.0/0", "443/443"), vec!["src", "198.18.0.1", "twice"]),
        (add("198.18.0.1,198.18.0.2,198.18.0.3,198.18.0.4", "0/65535", "0.0.0.0/0", "443/443"), vec!["src", "4 entries", "limit of 3"]),
        (add("198.18.0.1", "0/65535", "0.0.0.0/0", "1/1,2/2,3/3"), vec!["dport", "3 entries", "limit of 2"]),
    ];
    for (args, needles) in &cases {
        rejected(&t, args, needles)?;
    }
    // quota: 3 x 2 x 2 x 1 = 12 > 8
    rejected(
        &t,
        &add("198.18.0.1,198.18.0.2,198.18.0.3", "1/1,2/2", "198.18.0.0/24,198.18.1.0/24", "443/443"),
        &["quota", "= 12", "limit of 8"],
    )?;
    // a third scope in policy 1 (limit 2)
    rejected(&t, &add("198.18.0.1", "0/65535", "0.0.0.0/0", "443/443"), &["policy", "'1'", "limit of 2 scopes"])?;
    // unknown policy
    rejected(&t, &["scope", "add", "--policy", "9", "--src", "198.18.0.1", "--sport", "0/65535", "--dst", "0.0.0.0/0", "--dport", "443/443"], &["policy", "'9'", "no such policy"])?;
    // description too long
    rejected(&t, &["scope", "add", "--policy", "1", "--src", "198.18.0.1", "--sport", "0/65535", "--dst", "0.0.0.0/0", "--dport", "443/443", "--description", "a description that is far too long"], &["description", "longer than 20"])?;
    rejected(&t, &["scope", "del", "99"], &["scope id", "'99'", "no such scope"])?;
    rejected(&t, &["policy", "disable", "5"], &["policy id", "'5'", "no such policy"])?;
    rejected(&t, &["policy", "add", "1"], &["policy id", "'1'", "exists"])?;
    rejected(&t, &["policy", "del", "1"], &["policy id", "still has scope"])?;
    // Files: unparsable, unknown field, an invalid scope among valid ones, over the limits.
    let bad_files = [
        ("[[policy]\nid = 1\n", "TOML"),
        ("[[policy]]\nid = 2\ncolour = \"red\"\n", "colour"),
        ("[[policy]]\nid = 2\n[[policy.scope]]\nsrc = [\"198.18.0.1\"]\nsport = [\"0/65535\"]\ndst = [\"0.0.0.0/0\"]\ndport = [\"443/443\"]\n[[policy.scope]]\nsrc = [\"198.18.0.1\"]\nsport = [\"0/65535\"]\ndst = [\"0.0.0.0/0\"]\ndport = [\"0/99999\"]\n", "0/99999"),
        ("[[policy]]\nid = 2\n[[policy.scope]]\nsrc = [\"198.18.0.1\",\"198.18.0.2\",\"198.18.0.3\",\"198.18.0.4\"]\nsport = [\"0/65535\"]\ndst = [\"0.0.0.0/0\"]\ndport = [\"443/443\"]\n", "limit of 3"),
    ];
    for (i, (text, needle)) in bad_files.iter().enumerate() {
        let path = t.dir.join(format!("bad-{i}.toml"));
        std::fs::write(&path, text)?;
        let p = path.to_string_lossy().into_owned();
        rejected(&t, &["scope", "load", &p], &[needle, &p])?;
    }
    rejected(&t, &["scope", "load", "/nonexistent/scopes.toml"], &["/nonexistent/scopes.toml"])?;
    assert_eq!(t.stats()?["generation"], gen_after_add, "no rejection may switch the tables");

    // delete
    let out = check(t.cli().args(["scope", "del", "2"]))?;
    assert!(out.contains("scope 2 deleted"), "{out}");
    assert_eq!(scope_ids(&t)?, vec![1]);

    // load: replaces every policy and scope at once.
    let file = t.dir.join("scopes.toml");
    std::fs::write(
        &file,
        "[[policy]]\nid = 3\nname = \"loaded\"\nenabled = false\n\
         [[policy.scope]]\nid = 30\nsrc = [\"198.18.0.0/24\"]\nsport = [\"0/65535\"]\ndst = [\"0.0.0.0/0\"]\ndport = [\"22/22\"]\n\
         [[policy.scope]]\nsrc = [\"198.18.0.5\"]\nsport = [\"0/65535\"]\ndst = [\"0.0.0.0/0\"]\ndport = [\"25/25\"]\n",
    )?;
    let out = check(t.cli().args(["scope", "load"]).arg(&file))?;
    assert!(out.contains("loaded 1 policies and 2 scopes"), "{out}");
    assert_eq!(scope_ids(&t)?, vec![30, 31]);
    let policies = json(t.cli().args(["policy", "list", "--json"]))?;
    assert_eq!(policies["policies"][0]["id"], 3);
    assert_eq!(policies["policies"][0]["enabled"], false);
    // Scope IDs are never reused: the next one comes after every ID ever given.
    check(t.cli().args(["policy", "enable", "3"]))?;
    let out = check(t.cli().args(["scope", "add", "--policy", "3", "--src", "198.18.0.9", "--sport", "0/65535", "--dst", "0.0.0.0/0", "--dport", "80/80"]))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(out.contains("limit of 2 scopes"), "policy 3 already has two scopes: {out}");
    Ok(())
}

#[test]
fn commands_without_a_running_appliance_fail_clearly() -> Result<()> {
    let t = Topology::new()?;
    for args in [vec!["scope", "list"], vec!["stats"], vec!["policy", "enable", "1"]] {
        let out = run(t.cli().args(&args))?;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&t.instance), "{args:?}: {err}");
    }
    Ok(())
}

/// `--json` anywhere on the command line: every command that prints answers in JSON on
/// standard output (an error too, with status 1), `stats` with the metrics endpoint's names,
/// and `run` logs one JSON object per line.
#[test]
fn every_command_answers_in_json_under_the_global_flag() -> Result<()> {
    let mut t = Topology::new()?;
    t.start_appliance_with(CONFIG, &["--no-workers", "--json"])?;
    let j = |args: &[&str]| json(t.cli().arg("--json").args(args));
    // An answer that is a failure: status 1, and still JSON with the error on standard output.
    let failed = |args: &[&str]| -> Result<Value> {
        let out = run(t.cli().arg("--json").args(args))?;
        assert!(!out.status.success(), "{args:?} succeeded");
        serde_json::from_slice(&out.stdout).map_err(|e| anyhow::anyhow!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    };

    assert_eq!(j(&["policy", "add", "5", "--name", "five"])?, serde_json::json!({ "policy": 5, "name": "five", "enabled": true }));
    let added = j(&["scope", "add", "--policy", "5", "--src", "198.18.0.1", "--sport", "0/65535", "--dst", "198.18.0.2", "--dport", "7000/7000"])?;
    assert_eq!((added["policy"].as_u64(), added["quota"].as_u64()), (Some(5), Some(1)), "{added}");
    let id = added["scope"].as_u64().expect("the new scope's id");
    assert!(j(&["scope", "list"])?["scopes"].as_array().unwrap().iter().any(|s| s["id"] == id));
    assert_eq!(j(&["policy", "disable", "5"])?["enabled"], false);
    assert!(j(&["policy", "list"])?["policies"].as_array().unwrap().iter().any(|p| p["id"] == 5 && p["scopes"] == serde_json::json!([id])));
    let refused = failed(&["scope", "add", "--policy", "99", "--src", "198.18.0.1", "--sport", "0/65535", "--dst", "198.18.0.2", "--dport", "1/1"])?;
    assert!(refused["error"].as_str().unwrap_or("").contains("99"), "{refused}");
    assert_eq!(j(&["scope", "del", &id.to_string()])?["deleted"], true);
    assert_eq!(j(&["policy", "del", "5"])?["deleted"], true);

    // stats: the endpoint's families, labels and values.
    let stats = j(&["stats"])?;
    for path in ["bridged", "steered", "dropped"] {
        let samples = stats["metrics"]["tls_inspect_xdp_frames_total"]["samples"].as_array().unwrap();
        assert!(samples.iter().any(|s| s["labels"]["path"] == path), "{stats}");
    }
    assert_eq!(stats["metrics"]["tls_inspect_xdp_frames_total"]["type"], "counter");
    assert!(metric_in(&stats, "tls_inspect_xdp_flows_capacity", &[])? > 0, "{stats}");
    assert_eq!(metric_in(&stats, "tls_inspect_scope_flows_total", &[("policy", "1"), ("scope", "1"), ("path", "steered")])?, 0);
    assert_eq!(j(&["flows"])?["flows"], serde_json::json!([]));

    let list = t.dir.join("intel.txt");
    std::fs::write(&list, "# test\n203.0.113.0/24\n198.51.100.7\n")?;
    let loaded = json(t.cli().args(["intel", "load", "--json"]).arg(&list))?;
    assert_eq!((loaded["entries"].as_u64(), loaded["mode"].as_str()), (Some(2), Some("block")), "{loaded}");
    assert_eq!(j(&["intel", "list"])?["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(j(&["intel", "clear"])?["cleared"], true);

    // What the running appliance does not do answers with its error.
    assert!(failed(&["rules", "list"])?["error"].as_str().unwrap_or("").contains("IPS is off"));
    assert!(failed(&["bypass", "list"])?["error"].as_str().unwrap_or("").contains("TLS inspection is off"));

    // Offline commands.
    let ca = t.dir.join("ca");
    let ca = ca.to_str().unwrap();
    let trial = j(&["ca", "--dir", ca, "trial"])?;
    assert_eq!((trial["root"].as_bool(), trial["key"].as_str()), (Some(true), Some("ECDSA P-256")), "{trial}");
    assert_eq!(j(&["ca", "--dir", ca, "show"])?["sha256"], trial["sha256"]);
    let pem = t.dir.join("ca.pem");
    assert_eq!(j(&["ca", "--dir", ca, "export", "--out", pem.to_str().unwrap()])?["certificates"], 1);
    let config = t.dir.join("config.toml");
    // In the appliance's namespace, where its interfaces are.
    let mut check_cmd = t.appliance.cmd(tls_inspect_tests::appliance_bin().to_str().unwrap());
    check_cmd.args(["config", "check", "--json", "--inside", tls_inspect_tests::INSIDE, "--outside", tls_inspect_tests::OUTSIDE]).arg(&config);
    let summary = json(&mut check_cmd)?;
    assert_eq!((summary["policies"].as_u64(), summary["scopes"].as_u64()), (Some(1), Some(1)), "{summary}");
    let rules = t.dir.join("bad.rules");
    std::fs::write(&rules, "alert http any any -> any any (msg:\"ok\"; content:\"a\"; sid:1;)\nalert http any any -> any any (msg:\"no\"; nosuchkeyword; sid:2;)\n")?;
    let checked = failed(&["rules", "check", rules.to_str().unwrap()])?;
    assert_eq!((checked["loaded"].as_u64(), checked["refused"].as_u64(), checked["parser"][0]["line"].as_u64()), (Some(1), Some(1), Some(2)), "{checked}");
    assert!(failed(&["completions", "bash"])?["error"].as_str().is_some());

    // `run --json`: every line it wrote is a JSON object, the log's with level and message.
    let lines = t.daemon().expect("running").lines();
    assert!(lines.iter().any(|l| l.contains("\"level\":\"INFO\"")), "{lines:?}");
    for l in &lines {
        assert!(serde_json::from_str::<serde_json::Map<String, Value>>(l).is_ok(), "not JSON: {l}");
    }
    Ok(())
}
