//! The Debian package (`cargo xtask package`, which `cargo xtask test` builds from the binary
//! under test and names in TLS_INSPECT_DEB): it installs with dpkg, its unit's command line
//! starts the appliance in a namespace without systemd, and it removes and purges cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tls_inspect_tests::{check, run, Background, Topology, INSIDE, OUTSIDE, SERVER_IP};

/// Purges the package when dropped, so a failing test leaves no installation behind.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "tls-inspect"]).output();
    }
}

fn installed() -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "tls-inspect"])).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The package's files that are not conffiles (those stay until a purge).
const FILES: [&str; 6] = [
    "/usr/bin/tls-inspect",
    "/lib/systemd/system/tls-inspect.service",
    "/usr/share/man/man1/tls-inspect.1.gz",
    "/usr/share/man/man1/tls-inspect-run.1.gz",
    "/usr/share/bash-completion/completions/tls-inspect",
    "/usr/share/doc/tls-inspect/deploy.md",
];

const CONFFILES: [&str; 2] = ["/etc/tls-inspect/config.toml", "/etc/logrotate.d/tls-inspect"];

#[test]
fn the_package_installs_its_unit_starts_the_appliance_and_it_purges_cleanly() -> Result<()> {
    let deb = std::env::var("TLS_INSPECT_DEB").context("TLS_INSPECT_DEB: the package to test (cargo xtask test builds it)")?;
    assert!(Path::new(&deb).exists(), "{deb} is missing");
    let _purge = Purge;
    if installed() {
        check(Command::new("dpkg").args(["--purge", "tls-inspect"]))?;
    }
    check(Command::new("dpkg").arg("-i").arg(&deb))?;
    assert!(installed());
    for f in FILES.iter().chain(&CONFFILES) {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    assert_eq!(std::fs::metadata("/etc/tls-inspect/config.toml")?.permissions().mode() & 0o777, 0o600);
    let version = check(Command::new("/usr/bin/tls-inspect").arg("--version"))?;
    assert!(version.starts_with("tls-inspect "), "{version}");
    let page = check(Command::new("sh").args(["-c", "gzip -dc /usr/share/man/man1/tls-inspect-run.1.gz"]))?;
    assert!(page.contains(".TH") && page.contains("inside"), "{page}");
    let completion = std::fs::read_to_string("/usr/share/bash-completion/completions/tls-inspect")?;
    assert!(completion.contains("complete") && completion.contains("scope"), "a bash completion");

    // The unit's own command line, as systemd would run it, in a namespace (with the
    // interfaces there and an instance of the test's own).
    let unit = std::fs::read_to_string("/lib/systemd/system/tls-inspect.service")?;
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/usr/bin/tls-inspect rules reload"), "{unit}");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).context("no ExecStart")?;
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/bin/tls-inspect", "{exec}");
    let t = Topology::new()?;
    // The packaged config passes the appliance's own check there.
    let checked = check(t.appliance.cmd("/usr/bin/tls-inspect").args(["config", "check", "/etc/tls-inspect/config.toml", "--inside", INSIDE, "--outside", OUTSIDE]))?;
    assert!(checked.contains("OK"), "{checked}");
    let mut cmd = t.appliance.cmd(argv[0]);
    cmd.args(&argv[1..]).args(["--inside", INSIDE, "--outside", OUTSIDE]).env("TLS_INSPECT_INSTANCE", &t.instance);
    let mut daemon = Background::spawn(cmd)?;
    daemon.wait_for("tls-inspect: running", Duration::from_secs(30))?;
    check(t.client.cmd("ping").args(["-c", "1", "-W", "2", SERVER_IP]))?;
    let metrics = check(t.appliance.cmd("curl").args(["-sS", "--max-time", "5", "http://127.0.0.1:10095/metrics"]))?;
    assert!(metrics.contains("tls_inspect_build_info{version="), "the unit's metrics address: {metrics}");
    assert!(daemon.stop(Duration::from_secs(10)).is_some_and(|s| s.success()));
    check(Command::new("/usr/bin/tls-inspect").arg("detach").env("TLS_INSPECT_INSTANCE", &t.instance))?;
    drop(t);

    // Removed: the files go, the edited configuration stays (a conffile); purged: it goes too.
    std::fs::write("/etc/tls-inspect/config.toml", std::fs::read_to_string("/etc/tls-inspect/config.toml")? + "\n# edited\n")?;
    check(Command::new("dpkg").args(["-r", "tls-inspect"]))?;
    for f in FILES {
        assert!(!Path::new(f).exists(), "{f} left after dpkg -r");
    }
    for f in CONFFILES {
        assert!(Path::new(f).exists(), "a removed package keeps its conffile {f}");
    }
    check(Command::new("dpkg").args(["--purge", "tls-inspect"]))?;
    assert!(!installed());
    for f in CONFFILES.iter().chain(&["/etc/tls-inspect"]) {
        assert!(!Path::new(f).exists(), "{f} left after the purge");
    }
    Ok(())
}
