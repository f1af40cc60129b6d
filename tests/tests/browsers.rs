//! The clients people use: headless Chromium and Firefox ESR (Debian's packages), default
//! settings, the appliance's CA in their NSS database, load a page from one HTTPS host that pulls
//! a script from a second one. Both hosts must load and both must be inspected: browsers send a
//! GREASE Encrypted Client Hello on every connection, and NSS refuses two certificates with one
//! issuer and serial.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tls_inspect_tests::pki::Pair;
use tls_inspect_tests::tlsbed::Bed;
use tls_inspect_tests::{check, run, wait_until, SERVER_IP};

/// A browser takes both cores while it starts: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const PAGE_HOST: &str = "page.test";
const SCRIPT_HOST: &str = "script.test";
const SCRIPT_PORT: u16 = 8443;

/// nginx with two hosts, each its own certificate and port: `https://page.test/` is a page that
/// loads `https://script.test:8443/b.js`, which writes a line into the page.
fn two_hosts(b: &mut Bed) -> Result<PathBuf> {
    let page = b.pki.server("page", &[PAGE_HOST], "root", None)?;
    let script = b.pki.server("script", &[SCRIPT_HOST], "root", None)?;
    let d = b.t.dir.join("nginx2");
    std::fs::create_dir_all(d.join("tmp"))?;
    std::fs::create_dir_all(d.join("page"))?;
    std::fs::create_dir_all(d.join("script"))?;
    std::fs::write(
        d.join("page/index.html"),
        format!("<!doctype html><html><head><title>two hosts</title></head><body><h1>page from {PAGE_HOST}</h1>\n<script src=\"https://{SCRIPT_HOST}:{SCRIPT_PORT}/b.js\"></script></body></html>\n"),
    )?;
    std::fs::write(d.join("script/b.js"), format!("document.body.insertAdjacentHTML('beforeend', '<p>script from {SCRIPT_HOST} ran</p>');\n"))?;
    let server = |port: u16, pair: &Pair, root: &str| {
        format!(
            "server {{ listen {SERVER_IP}:{port} ssl http2; ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.2 TLSv1.3;\n\
             root {}/{root}; index index.html; }}\n",
            pair.cert.display(),
            pair.key.display(),
            d.display()
        )
    };
    let conf = format!(
        "worker_processes 1; daemon off; user root; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{ access_log {d}/access.log; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
           fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
           types {{ text/html html; application/javascript js; }}\n{}{} }}\n",
        server(443, &page, "page"),
        server(SCRIPT_PORT, &script, "script"),
        d = d.display()
    );
    b.t.start_nginx(&d, &conf, &[443, SCRIPT_PORT])?;
    Ok(d)
}

/// An NSS database in `dir` that trusts `ca` for TLS servers (what `certutil` does for users).
fn nss_db(dir: &Path, ca: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let db = format!("sql:{}", dir.display());
    check(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]))?;
    check(Command::new("certutil").args(["-A", "-d", &db, "-n", "tls-inspect", "-t", "C,,", "-i"]).arg(ca))?;
    Ok(())
}

/// A hosts file naming both test hosts, and a command that runs `script` in the client
/// namespace with it bind-mounted over /etc/hosts in a mount namespace of its own.
///
/// IPv6 is switched off in the client namespace first: the link-local address of a new veth
/// becomes valid (DAD) a second or two after the link comes up, and Chromium, which watches the
/// namespace's addresses, aborts a page load under way with ERR_NETWORK_CHANGED when it does.
fn with_hosts(b: &Bed, script: &str) -> Result<Command> {
    check(b.t.client.cmd("sysctl").args(["-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.eth0.disable_ipv6=1"]))?;
    let hosts = b.t.dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{SERVER_IP} {PAGE_HOST} {SCRIPT_HOST}\n"))?;
    let mut c = b.t.client.cmd("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount --bind {} /etc/hosts && exec {script}", hosts.display()));
    Ok(c)
}

/// Headless Chromium in the client namespace (default settings, the bed's CA in its NSS
/// database) dumping the DOM of `url` once loaded.
fn chromium(b: &Bed, url: &str) -> Result<std::process::Output> {
    let home = b.t.dir.join("chromium-home");
    // Chromium on Linux reads the user's NSS database in ~/.pki/nssdb.
    if !home.join(".pki/nssdb").exists() {
        nss_db(&home.join(".pki/nssdb"), &b.ca)?;
    }
    let script = format!(
        "timeout 90 chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
         --disable-component-update --disable-sync --user-data-dir={} --dump-dom {url}",
        b.t.dir.join("chromium-profile").display()
    );
    let mut c = with_hosts(b, &script)?;
    c.env("HOME", &home);
    run(&mut c)
}

/// The flow records of this bed for `sni` on `port`.
fn flows(b: &Bed, sni: &str, port: u16) -> Vec<Value> {
    b.eve()
        .into_iter()
        .filter(|r| r["event_type"] == "tls" && r["tls"]["sni"] == sni && r["dest_port"] == port)
        .collect()
}

/// Waits until both hosts have an inspected flow, and returns their records.
fn both_inspected(b: &Bed, browser: &str) -> Result<(Vec<Value>, Vec<Value>)> {
    wait_until(&format!("{browser}: both hosts' flows logged"), Duration::from_secs(20), || {
        Ok(!flows(b, PAGE_HOST, 443).is_empty() && !flows(b, SCRIPT_HOST, SCRIPT_PORT).is_empty())
    })
    .with_context(|| format!("records: {:?}", b.eve()))?;
    let (page, script) = (flows(b, PAGE_HOST, 443), flows(b, SCRIPT_HOST, SCRIPT_PORT));
    for r in page.iter().chain(&script) {
        assert_eq!(r["tls_inspect"]["decision"], "inspected", "{browser}: every flow to both hosts is inspected: {r}");
    }
    Ok((page, script))
}

/// The browser's GETs that nginx answered with 200.
fn served(d: &Path, path: &str, agent: &str) -> usize {
    std::fs::read_to_string(d.join("access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"GET {path} HTTP/")) && l.contains("\" 200 ") && l.contains(agent))
        .count()
}

#[test]
fn headless_chromium_loads_two_hosts_and_both_are_inspected() -> Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Bed::new("")?;
    let www = two_hosts(&mut b)?;
    let out = chromium(&b, &format!("https://{PAGE_HOST}/"))?;
    let dom = String::from_utf8_lossy(&out.stdout);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(dom.contains(&format!("page from {PAGE_HOST}")), "the page loaded:\n{dom}\n{said}");
    assert!(dom.contains(&format!("script from {SCRIPT_HOST} ran")), "the second host's script loaded and ran:\n{dom}\n{said}");
    assert!(served(&www, "/b.js", "Chrome") >= 1, "nginx served the script to Chromium");
    let (page, script) = both_inspected(&b, "chromium")?;
    for r in page.iter().chain(&script) {
        // Chromium sends a GREASE ECH extension on every connection: decided on the outer hello.
        assert_eq!(r["tls_inspect"]["reason"], "ech_outer", "{r}");
        // It offers X25519MLKEM768, and gets it from the appliance (nginx, on OpenSSL 3.0, has
        // no post-quantum group: X25519 upstream).
        assert_eq!(r["tls_inspect"]["client"]["kx_group"], "X25519MLKEM768", "{r}");
        assert_eq!(r["tls_inspect"]["upstream"]["kx_group"], "X25519", "{r}");
        // Graded: the client leg as Chromium would have it; the upstream leg a B, nginx's doing
        // (no post-quantum group), and the appliance weakened nothing.
        assert_eq!(r["tls_inspect"]["client"]["grade"], "A", "{r}");
        assert_eq!(r["tls_inspect"]["upstream"]["grade"], "B", "{r}");
        assert_eq!(r["tls_inspect"]["upstream"]["grade_reasons"], serde_json::json!(["classical key exchange where the client offered post-quantum"]), "{r}");
        assert_eq!(r["tls_inspect"]["weakened"], serde_json::json!([]), "{r}");
    }
    Ok(())
}

fn bench_bin() -> PathBuf {
    std::env::var_os("TLS_INSPECT_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| tls_inspect_tests::appliance_bin().with_file_name("tls-inspect-bench"))
}

#[test]
fn chromium_and_a_rustls_server_get_x25519mlkem768_on_both_legs() -> Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Bed::new("")?;
    // A rustls server (aws-lc-rs, post-quantum preferred) for page.test on port 9451.
    let page = b.pki.server("pq", &[PAGE_HOST], "root", None)?;
    let mut c = b.t.server.cmd(bench_bin().to_str().unwrap());
    c.args(["tls-server", "--addr", &format!("{SERVER_IP}:9451"), "--cert"]).arg(&page.cert).arg("--key").arg(&page.key);
    let i = b.t.spawn(c)?;
    b.t.background(i).wait_for("listening", Duration::from_secs(10))?;
    let out = chromium(&b, &format!("https://{PAGE_HOST}:9451/"))?;
    let dom = String::from_utf8_lossy(&out.stdout);
    // The rustls server says what it negotiated with the appliance.
    assert!(dom.contains("key exchange X25519MLKEM768"), "{dom}\n{}", String::from_utf8_lossy(&out.stderr));
    wait_until("the flow record", Duration::from_secs(10), || Ok(!flows(&b, PAGE_HOST, 9451).is_empty()))?;
    let r = &flows(&b, PAGE_HOST, 9451)[0];
    assert_eq!(r["tls_inspect"]["decision"], "inspected", "{r}");
    assert_eq!((&r["tls_inspect"]["client"]["kx_group"], &r["tls_inspect"]["upstream"]["kx_group"]), (&Value::from("X25519MLKEM768"), &Value::from("X25519MLKEM768")), "{r}");
    assert_eq!((&r["tls_inspect"]["client"]["grade"], &r["tls_inspect"]["upstream"]["grade"]), (&Value::from("A"), &Value::from("A")), "{r}");
    Ok(())
}

#[test]
fn headless_firefox_esr_loads_two_hosts_and_both_are_inspected() -> Result<()> {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Bed::new("")?;
    let www = two_hosts(&mut b)?;
    let profile = b.t.dir.join("firefox-profile");
    // Firefox reads the NSS database of its profile (cert9.db).
    nss_db(&profile, &b.ca)?;
    let shot = b.t.dir.join("firefox.png");
    let script = format!(
        "timeout 90 firefox-esr --headless --no-remote --profile {} --screenshot {} https://{PAGE_HOST}/",
        profile.display(),
        shot.display()
    );
    let mut c = with_hosts(&b, &script)?;
    c.env("HOME", b.t.dir.join("firefox-home")).env("MOZ_CRASHREPORTER_DISABLE", "1");
    let out = run(&mut c)?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&shot).is_ok_and(|p| p.starts_with(b"\x89PNG")), "Firefox rendered the page: {said}");
    // What nginx served is what Firefox accepted: the page, then the second host's script under
    // a second forged certificate from the same issuer.
    assert!(served(&www, "/", "Firefox") >= 1, "nginx served the page to Firefox: {said}");
    wait_until("Firefox fetched the second host's script", Duration::from_secs(10), || Ok(served(&www, "/b.js", "Firefox") >= 1))
        .with_context(|| format!("access log: {}; eve: {:?}; {said}", std::fs::read_to_string(www.join("access.log")).unwrap_or_default(), b.eve()))?;
    let (page, script) = both_inspected(&b, "firefox")?;
    for r in page.iter().chain(&script) {
        assert_eq!(r["tls_inspect"]["reason"], "ech_outer", "Firefox sends GREASE ECH too: {r}");
        assert_eq!(r["tls_inspect"]["client"]["kx_group"], "X25519MLKEM768", "{r}");
    }
    assert!(check(b.t.cli().args(["bypass", "list"]))?.trim().lines().all(|l| !l.contains(SCRIPT_HOST)), "nothing entered the exclusion cache");
    Ok(())
}
