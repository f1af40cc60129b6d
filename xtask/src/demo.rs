//! `cargo xtask demo`: the appliance between a real client and a real server, in network
//! namespaces on 198.18.0.0/15, with the example policy from docs/example-config.toml.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
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

    step(2, "tls-inspect run with the example policy (docs/example-config.toml)");
    t.start_appliance(&config)?;
    show(t.cli().args(["scope", "list"]))?;

    step(3, "ping and plain HTTP on port 80: not in any scope, bridged inside XDP");
    show(t.client.cmd("ping").args(["-c", "2", "-i", "0.2", SERVER_IP]))?;
    let mut http = t.server.cmd("python3");
    http.args(["-m", "http.server", "--bind", SERVER_IP, "80", "--directory", "/etc"]);
    t.spawn(http)?;
    t.wait_listening(&t.server.clone(), 80)?;
    let code = check(t.client.cmd("curl").args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{SERVER_IP}/hostname")]))?;
    println!("curl http://{SERVER_IP}/hostname -> HTTP {code}");

    step(4, "HTTPS on port 443 matches scope 1: a worker terminates the client's TCP connection and re-originates it, from the client's address");
    let (key, cert) = tls_inspect_tests::self_signed_cert(&t.dir, "server.demo")?;
    let mut tls = t.server.cmd("openssl");
    tls.args(["s_server", "-accept", &format!("{SERVER_IP}:443"), "-www", "-key"]).arg(&key).arg("-cert").arg(&cert);
    t.spawn(tls)?;
    t.wait_listening(&t.server.clone(), 443)?;
    let page = check(t.client.cmd("curl").args(["-sSk", "--max-time", "10", &format!("https://{SERVER_IP}/")]))?;
    let cipher = page.lines().find(|l| l.starts_with("New,")).unwrap_or("(page received)");
    println!("curl -k https://{SERVER_IP}/ -> {} bytes, {}", page.len(), cipher.trim());
    println!("(spliced: TLS passes through unchanged until TLS interception is enabled)");
    std::thread::sleep(Duration::from_millis(500));

    step(5, "tls-inspect flows and stats");
    show(t.cli().arg("flows"))?;
    show(t.cli().arg("stats"))?;

    step(6, "teardown: appliance stopped (its XDP program would keep bridging), then detached; namespaces and pins removed");
    let status = t.stop_appliance();
    println!("appliance exited: {status:?}");
    show(t.cli().arg("detach"))?;
    drop(t);
    println!("done");
    Ok(())
}
