//! The appliance as an operator's tools drive it: logrotate's recipe (`docs/logrotate/`) with
//! the real `logrotate`, and systemd's notification protocol and journal priorities as the unit
//! (`docs/systemd/`) uses them, with the socket and variables systemd would give it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tls_inspect_tests::tlsbed::Bed;
use tls_inspect_tests::{appliance_bin, check, wait_until, Topology, INSIDE, OUTSIDE};

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The ports of the flows in an EVE file's `tls` records.
fn flow_ports(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["event_type"] == "tls")
        .filter_map(|r| r["src_port"].as_u64())
        .collect()
}

#[test]
fn logrotate_s_recipe_rotates_the_eve_log_and_the_appliance_writes_on_in_the_new_file() -> Result<()> {
    let mut b = Bed::new("")?;
    b.nginx()?;
    let ca = b.ca.to_str().context("path")?.to_string();
    let request = |b: &Bed, port: u16| {
        let o = b.curl(&["--local-port", &port.to_string(), "--cacert", &ca, "https://server.test/"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    request(&b, 31001);
    wait_until("the first flow's record", Duration::from_secs(10), || Ok(flow_ports(&b.eve).contains(&31001)))?;

    // The shipped file, with this bed's log and this instance's pid file in place of the
    // defaults; run as cron runs it, forced (it is not a day old).
    let pid_file = format!("/run/{}/tls-inspect.pid", b.t.instance);
    let pid: u32 = std::fs::read_to_string(&pid_file).with_context(|| pid_file.clone())?.trim().parse()?;
    let daemon_pid = b.t.daemon().context("running")?.child.id();
    assert_eq!(pid, daemon_pid, "the pid file names the running appliance");
    let shipped = repo_file("docs/logrotate/tls-inspect");
    assert!(shipped.contains("/var/log/tls-inspect/eve.json") && shipped.contains("/run/tls-inspect/tls-inspect.pid"));
    let conf = shipped.replace("/var/log/tls-inspect/eve.json", b.eve.to_str().context("path")?).replace("/run/tls-inspect/tls-inspect.pid", &pid_file);
    let conf_path = b.t.dir.join("logrotate.conf");
    std::fs::write(&conf_path, conf)?;
    let state = b.t.dir.join("logrotate.state");
    check(Command::new("logrotate").arg("-f").arg("-s").arg(&state).arg(&conf_path))?;
    let rotated = b.eve.with_extension("json.1");
    assert_eq!(flow_ports(&rotated), [31001], "the first flow's record moved with the file");
    // The signal reopened the file by its name: a new, empty one (delaycompress keeps .1 plain).
    wait_until("a new eve.json", Duration::from_secs(5), || Ok(b.eve.exists()))?;

    request(&b, 31002);
    wait_until("the second flow's record in the new file", Duration::from_secs(10), || Ok(flow_ports(&b.eve).contains(&31002)))?;
    assert_eq!(flow_ports(&b.eve), [31002]);
    assert_eq!(flow_ports(&rotated), [31001], "nothing more went to the rotated file");
    let d = b.t.daemon().context("running")?;
    assert!(d.child.try_wait()?.is_none(), "SIGHUP must not stop the appliance");
    assert!(d.lines().iter().any(|l| l.contains("SIGHUP: reopening the log files")), "{:?}", d.lines());
    // A graceful stop still works, and the pid file goes with the process.
    assert!(b.t.stop_appliance().context("exits")?.success());
    assert!(!Path::new(&pid_file).exists(), "the pid file is removed at exit");
    Ok(())
}

/// The appliance started as systemd starts a `Type=notify` unit with `WatchdogSec`: a
/// notification socket, `WATCHDOG_USEC`, and standard error connected to "the journal" (here a
/// file whose device and inode `JOURNAL_STREAM` names).
struct Notified {
    child: Child,
    socket: UnixDatagram,
    output: std::path::PathBuf,
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Notified {
    /// The next notification, if one comes within `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).ok()?;
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Waits for a notification containing `line`; returns it and how many others came first.
    fn wait_for(&self, line: &str, timeout: Duration) -> Result<(String, Vec<String>)> {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(n) if n.lines().any(|l| l == line) => return Ok((n, before)),
                Some(n) => before.push(n),
                None => break,
            }
        }
        bail!("no {line} within {timeout:?}; got {before:?}; output:\n{}", std::fs::read_to_string(&self.output).unwrap_or_default())
    }
}

#[test]
fn systemd_hears_ready_once_attached_then_the_watchdog_and_the_journal_gets_priorities() -> Result<()> {
    let t = Topology::new()?;
    let socket_path = t.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    let output = t.dir.join("journal.txt");
    let out = std::fs::File::create(&output)?;
    let meta = out.metadata()?;
    // systemd names the watched process in WATCHDOG_PID: the shell exports its own pid, then
    // becomes nsenter, which becomes the appliance (neither forks).
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", "nsenter"])
        .arg(format!("--net=/run/netns/{}", t.appliance.0))
        .arg("--")
        .arg(appliance_bin())
        // Two workers on one queue: a warning, to see its priority.
        .args(["run", "--inside", INSIDE, "--outside", OUTSIDE, "--workers", "2"])
        .env("TLS_INSPECT_INSTANCE", &t.instance)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let n = Notified { child: cmd.spawn()?, socket, output: output.clone() };

    let (ready, _) = n.wait_for("READY=1", Duration::from_secs(30))?;
    // Ready means steering: both programs attached and the workers' counters published.
    for link in [INSIDE, OUTSIDE] {
        let shown = check(t.appliance.cmd("ip").args(["link", "show", link]))?;
        assert!(shown.contains("xdp"), "READY=1 before XDP was attached on {link}: {shown}");
    }
    assert!(Path::new(&format!("/run/{}/workers.json", t.instance)).exists(), "READY=1 before the workers ran");
    assert!(ready.lines().any(|l| l == format!("MAINPID={}", n.child.id())), "{ready:?}");
    assert!(ready.lines().any(|l| l.starts_with("STATUS=running")), "{ready:?}");

    // Fed every 100 ms (half of WATCHDOG_USEC) while the workers run.
    let began = Instant::now();
    let mut pings = 0;
    while began.elapsed() < Duration::from_secs(1) {
        if n.next(Duration::from_millis(500)).is_some_and(|m| m.lines().any(|l| l == "WATCHDOG=1")) {
            pings += 1;
        }
    }
    assert!((5..=15).contains(&pings), "{pings} watchdog pings in a second");

    // Every log line carries its priority; the warning is a warning, the rest info.
    let text = std::fs::read_to_string(&output)?;
    let logged: Vec<&str> = text.lines().filter(|l| !l.starts_with("tls-inspect: running")).collect();
    assert!(!logged.is_empty() && logged.iter().all(|l| l.starts_with('<')), "{text}");
    assert!(logged.iter().any(|l| l.starts_with("<4>") && l.contains("more workers than queues")), "{text}");
    assert!(logged.iter().any(|l| l.starts_with("<6>") && l.contains("workers started")), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes in the journal: {text}");

    check(Command::new("kill").args(["-TERM", &n.child.id().to_string()]))?;
    n.wait_for("STOPPING=1", Duration::from_secs(10))?;
    let mut n = n;
    let status = n.child.wait()?;
    assert!(status.success(), "{status}");
    drop(n);
    check(Command::new(appliance_bin()).env("TLS_INSPECT_INSTANCE", &t.instance).arg("detach"))?;
    Ok(())
}

/// The HTTP/1.1 request URIs and HTTP/2 `:path`s tshark reads in `capture`, with `keylog`.
fn decrypted_paths(capture: &Path, keylog: Option<&Path>) -> Result<Vec<String>> {
    let mut c = Command::new("tshark");
    c.arg("-r").arg(capture);
    if let Some(k) = keylog {
        c.arg("-o").arg(format!("tls.keylog_file:{}", k.display()));
    }
    c.args(["-Y", "http.request or http2.headers.path", "-T", "fields", "-e", "http.request.uri", "-e", "http2.headers.path"]);
    let out = check(c)?;
    Ok(out.split_whitespace().flat_map(|f| f.split(',')).map(str::to_string).collect())
}

#[test]
fn the_key_log_lets_tshark_decrypt_captures_of_both_legs() -> Result<()> {
    let keylog_dir = std::env::temp_dir().join(format!("tls-inspect-keylog-e2e-{}", std::process::id()));
    let keylog = keylog_dir.join("keys.log");
    let mut b = Bed::with_log("", &format!("keylog = \"{}\"", keylog.display()))?;
    let _cleanup = RemoveOnDrop(keylog_dir.clone());
    b.nginx()?;
    let d = b.t.daemon().context("running")?;
    assert!(d.lines().iter().any(|l| l.contains("log.keylog") && l.contains("warning")), "a warning at start: {:?}", d.lines());
    assert_eq!(std::fs::metadata(&keylog)?.mode() & 0o777, 0o600, "the key log is 0600");

    // A capture on each leg: the client's side (the forged session) and the server's (the
    // appliance's own session to it).
    let mut captures = Vec::new();
    for (ns, name) in [(b.t.client.clone(), "client"), (b.t.server.clone(), "server")] {
        let file = b.t.dir.join(format!("{name}.pcapng"));
        // dumpcap (tshark's capture engine) writes every packet out when it stops on SIGTERM.
        let mut c = ns.cmd("dumpcap");
        c.args(["-q", "-i", "eth0", "-f", "tcp port 443", "-w"]).arg(&file);
        let i = b.t.spawn(c)?;
        b.t.background(i).wait_for("Capturing on", Duration::from_secs(20))?;
        captures.push((i, file));
    }
    // dumpcap says "Capturing on" as it opens the interface; under load (CI runs the other tests
    // beside this one) the first packets after it were once missing from the server's capture.
    std::thread::sleep(Duration::from_secs(1));
    let ca = b.ca.to_str().context("path")?.to_string();
    for (version, path) in [("--http1.1", "/h1-request"), ("--http2", "/h2-request")] {
        let o = b.curl(&[version, "--cacert", &ca, &format!("https://server.test{path}")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    wait_until("two flow records", Duration::from_secs(10), || Ok(b.eve().len() >= 2))?;
    // libpcap hands packets over a block of its ring at a time, when the block fills or its
    // timeout passes; a dumpcap stopped before then drops the packets of the open block.
    std::thread::sleep(Duration::from_secs(2));
    for (i, _) in &captures {
        b.t.background(*i).stop(Duration::from_secs(10));
    }
    let text = std::fs::read_to_string(&keylog)?;
    assert!(text.lines().all(|l| l.split(' ').count() == 3), "{text}");
    assert!(text.contains("CLIENT_TRAFFIC_SECRET_0 ") && text.contains("SERVER_TRAFFIC_SECRET_0 "), "{text}");
    for (_, file) in &captures {
        let without = decrypted_paths(file, None)?;
        assert!(without.is_empty(), "{} without the keys: {without:?}", file.display());
        let with = decrypted_paths(file, Some(&keylog))?;
        assert!(with.contains(&"/h1-request".to_string()) && with.contains(&"/h2-request".to_string()), "{}: {with:?}", file.display());
    }
    Ok(())
}

/// Removes a directory when dropped (the key log lives outside the bed's own directory, as an
/// operator's would).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What tshark reads in the pcap files of `dir`, with the flows' port 443 decoded as `proto`
/// (Wireshark takes 443 for TLS; the files hold the plaintext): the HTTP/1.1 request URIs and
/// HTTP/2 `:path`s.
fn pcap_paths(dir: &Path, proto: &str) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let file = entry?.path();
        let out = check(Command::new("tshark").arg("-r").arg(&file).args([
            "-d",
            &format!("tcp.port==443,{proto}"),
            "-Y",
            "http.request or http2.headers.path",
            "-T",
            "fields",
            "-e",
            "http.request.uri",
            "-e",
            "http2.headers.path",
        ]))?;
        seen.extend(out.split_whitespace().flat_map(|f| f.split(',')).map(str::to_string));
    }
    Ok(seen)
}

#[test]
fn the_decrypted_pcap_holds_inspected_flows_as_tcp_that_tshark_follows() -> Result<()> {
    let pcap_dir = std::env::temp_dir().join(format!("tls-inspect-pcap-e2e-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(pcap_dir.clone());
    let mut b = Bed::with_log("", &format!("pcap = {{ dir = \"{}\", max_size = 1048576 }}", pcap_dir.display()))?;
    b.nginx()?;
    let ca = b.ca.to_str().context("path")?.to_string();
    for (version, path, port) in [("--http1.1", "/h1-in-pcap", "31101"), ("--http2", "/h2-in-pcap", "31102")] {
        let o = b.curl(&[version, "--local-port", port, "--cacert", &ca, &format!("https://server.test{path}")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    wait_until("two flow records", Duration::from_secs(10), || Ok(b.eve().len() >= 2))?;
    // Stopping closes the files.
    assert!(b.t.stop_appliance().context("exits")?.success());
    let files: Vec<_> = std::fs::read_dir(&pcap_dir)?.collect::<Result<_, _>>()?;
    assert!(!files.is_empty());
    for f in &files {
        assert_eq!(f.metadata()?.mode() & 0o777, 0o600, "{:?}", f.path());
    }
    let h1 = pcap_paths(&pcap_dir, "http")?;
    assert!(h1.contains(&"/h1-in-pcap".to_string()), "{h1:?}");
    let h2 = pcap_paths(&pcap_dir, "http2")?;
    assert!(h2.contains(&"/h2-in-pcap".to_string()), "{h2:?}");
    // The flows' own addresses and ports, and TCP that tshark follows: each stream's bytes are
    // the request and the response, whole.
    let conv = check(Command::new("tshark").arg("-r").arg(files[0].path()).args(["-q", "-z", "conv,tcp"]))?;
    assert!(conv.contains("198.18.0.1:31101") && conv.contains("198.18.0.2:443") && conv.contains("198.18.0.1:31102"), "{conv}");
    let followed = check(Command::new("tshark").arg("-r").arg(files[0].path()).args(["-q", "-z", "follow,tcp,ascii,198.18.0.1:31101,198.18.0.2:443"]))?;
    assert!(followed.contains("GET /h1-in-pcap HTTP/1.1") && followed.contains("HTTP/1.1 404 Not Found") && followed.contains("</html>"), "{followed}");
    let bad = check(Command::new("tshark").arg("-r").arg(files[0].path()).args(["-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE", "-Y", "tcp.checksum.status == 2 or ip.checksum.status == 2"]))?;
    assert!(bad.trim().is_empty(), "bad checksums: {bad}");
    Ok(())
}
