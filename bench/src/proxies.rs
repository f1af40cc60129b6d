//! The systems operators would pick instead, on the same topology and the same CA: Squid with
//! ssl-bump (Debian's squid-openssl, intercept mode) and mitmproxy (PyPI, transparent mode).
//!
//! Both are transparent proxies on a router, so for them the appliance namespace stops being a
//! bridge: it gets an address on each side, proxy ARP answers for the far host (the client and
//! server keep their addresses and routes), and an nftables rule redirects each system's server
//! port to its listener. `cargo xtask setup` installs both (and nftables); when one is missing
//! or does not start, the run says why and carries on with the others.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tls_inspect_tests::{check, run, Topology, INSIDE, OUTSIDE};

/// Server ports: each system its own, so that none meets another's TIME-WAIT sockets.
pub const SQUID_PORT: u16 = 10443;
pub const MITM_PORT: u16 = 11443;
const SQUID_LISTEN: u16 = 3129;
const MITM_LISTEN: u16 = 8081;

/// Squid with OpenSSL (ssl-bump), installed by `cargo xtask setup` (squid-openssl).
pub fn ensure_squid() -> Result<PathBuf> {
    let squid = PathBuf::from("/usr/sbin/squid");
    let version = run(Command::new(&squid).arg("-v")).with_context(|| format!("{} is missing: run `cargo xtask setup`", squid.display()))?;
    if !String::from_utf8_lossy(&version.stdout).contains("--with-openssl") {
        bail!("{} has no OpenSSL support (ssl-bump needs squid-openssl: run `cargo xtask setup`)", squid.display());
    }
    Ok(squid)
}

/// mitmproxy in the virtualenv `cargo xtask setup` makes under bench/.venv.
pub fn ensure_mitmproxy() -> Result<PathBuf> {
    let mitmdump = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/mitmdump");
    check(Command::new(&mitmdump).arg("--version")).with_context(|| format!("{} does not run: run `cargo xtask setup`", mitmdump.display()))?;
    Ok(mitmdump)
}

/// Turns the appliance namespace from a bridge into a router with proxy ARP, and redirects the
/// proxies' ports to their listeners. Call it once the XDP program is detached.
pub fn route_through_appliance(t: &Topology) -> Result<()> {
    let a = &t.appliance;
    for (ns, _) in [(&t.client, ()), (&t.server, ())] {
        check(Command::new("ip").args(["-n", &ns.0, "neigh", "flush", "all"]))?;
    }
    for (dev, addr, far) in [(INSIDE, "198.18.0.254/32", "198.18.0.1/32"), (OUTSIDE, "198.18.0.253/32", "198.18.0.2/32")] {
        check(Command::new("ip").args(["-n", &a.0, "addr", "add", addr, "dev", dev]))?;
        check(Command::new("ip").args(["-n", &a.0, "route", "add", far, "dev", dev]))?;
    }
    check(a.cmd("sysctl").args(["-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.proxy_arp=1"]))?;
    for dev in [INSIDE, OUTSIDE] {
        check(a.cmd("sysctl").args(["-qw", &format!("net.ipv4.conf.{dev}.proxy_arp=1")]))?;
    }
    let rules = format!(
        "table ip bench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n\
         iifname \"{INSIDE}\" tcp dport {{ {SQUID_PORT}, {squid_resumable} }} redirect to :{SQUID_LISTEN}\n\
         iifname \"{INSIDE}\" tcp dport {{ {MITM_PORT}, {mitm_resumable} }} redirect to :{MITM_LISTEN}\n  }}\n}}\n",
        squid_resumable = SQUID_PORT + crate::tlsbench::RESUMABLE,
        mitm_resumable = MITM_PORT + crate::tlsbench::RESUMABLE,
    );
    let path = t.dir.join("redirect.nft");
    std::fs::write(&path, rules)?;
    check(a.cmd("nft").arg("-f").arg(&path))?;
    Ok(())
}

/// Starts Squid in the appliance namespace, bumping with `ca`, trusting `upstream_root`.
pub fn start_squid(t: &mut Topology, squid: &Path, ca: (&Path, &Path), upstream_root: &Path) -> Result<usize> {
    let d = t.dir.join("squid");
    std::fs::create_dir_all(&d)?;
    let db = d.join("ssl_db");
    check(Command::new("/usr/lib/squid/security_file_certgen").arg("-c").arg("-s").arg(&db).args(["-M", "16MB"]))?;
    std::fs::write(d.join("hosts"), "198.18.0.2 server.test\n")?;
    let conf = format!(
        "http_port 127.0.0.1:3128\n\
         https_port {SQUID_LISTEN} intercept ssl-bump tls-cert={cert} tls-key={key} generate-host-certificates=on dynamic_cert_mem_cache_size=16MB\n\
         sslcrtd_program /usr/lib/squid/security_file_certgen -s {db} -M 16MB\n\
         sslcrtd_children 4 startup=1 idle=1\n\
         acl step1 at_step SslBump1\n\
         ssl_bump peek step1\n\
         ssl_bump bump all\n\
         tls_outgoing_options cafile={root}\n\
         http_access allow all\n\
         cache deny all\n\
         access_log none\n\
         cache_store_log none\n\
         cache_log {d}/cache.log\n\
         pid_filename {d}/squid.pid\n\
         coredump_dir {d}\n\
         hosts_file {d}/hosts\n\
         dns_nameservers 127.0.0.1\n\
         shutdown_lifetime 1 seconds\n\
         max_filedescriptors 65536\n",
        cert = ca.0.display(),
        key = ca.1.display(),
        db = db.display(),
        root = upstream_root.display(),
        d = d.display(),
    );
    let path = d.join("squid.conf");
    std::fs::write(&path, conf)?;
    // Squid drops to the `proxy` user: it writes its state here.
    check(Command::new("chown").args(["-R", "proxy:proxy"]).arg(&d))?;
    check(Command::new(squid).arg("-k").arg("parse").arg("-f").arg(&path))?;
    let mut c = t.appliance.cmd(squid.to_str().context("path")?);
    c.args(["-N", "-f"]).arg(&path);
    let i = t.spawn(c)?;
    t.wait_listening(&t.appliance.clone(), SQUID_LISTEN)
        .map_err(|e| anyhow!("{e}; cache.log: {}", std::fs::read_to_string(d.join("cache.log")).unwrap_or_default()))?;
    Ok(i)
}

/// Starts mitmdump in transparent mode in the appliance namespace with the same CA.
pub fn start_mitmproxy(t: &mut Topology, mitmdump: &Path, ca: (&Path, &Path), upstream_root: &Path) -> Result<usize> {
    let d = t.dir.join("mitmproxy");
    std::fs::create_dir_all(&d)?;
    // mitmproxy's CA file: the key, then the certificate.
    let pem = std::fs::read_to_string(ca.1)? + &std::fs::read_to_string(ca.0)?;
    std::fs::write(d.join("mitmproxy-ca.pem"), pem)?;
    let mut c = t.appliance.cmd(mitmdump.to_str().context("path")?);
    c.args(["--mode", &format!("transparent@{MITM_LISTEN}"), "--set"])
        .arg(format!("confdir={}", d.display()))
        .arg("--set")
        .arg(format!("ssl_verify_upstream_trusted_ca={}", upstream_root.display()))
        // Bodies over 1 MB pass through as they come instead of being buffered whole (what an
        // operator sets for downloads).
        .args(["--set", "termlog_verbosity=error", "--set", "flow_detail=0", "--set", "stream_large_bodies=1m"]);
    let i = t.spawn(c)?;
    let ns = t.appliance.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if t.wait_listening(&ns, MITM_LISTEN).is_ok() {
            return Ok(i);
        }
        if std::time::Instant::now() > deadline {
            bail!("mitmdump does not listen on {MITM_LISTEN}");
        }
    }
}
