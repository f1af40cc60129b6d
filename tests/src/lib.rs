//! The namespace test bed: a client, the appliance and a server, each in its own network
//! namespace, joined by two veth pairs, on addresses from 198.18.0.0/15 only.
//!
//! ```text
//!  [client ns]            [appliance ns]               [server ns]
//!  eth0 198.18.0.1 <-> inside   (XDP)   outside <-> eth0 198.18.0.2
//! ```
//!
//! The appliance has no address on that path: XDP bridges between `inside` and `outside`.
//! Everything a [`Topology`] creates (namespaces, links, processes, pins, state) is removed when it
//! is dropped, also when a test fails half-way.

use std::borrow::BorrowMut;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub mod pki;
pub mod tlsbed;

pub const CLIENT_IP: &str = "198.18.0.1";
pub const SERVER_IP: &str = "198.18.0.2";
pub const PREFIX_LEN: u8 = 24;
/// Interface names inside the appliance namespace.
pub const INSIDE: &str = "inside";
pub const OUTSIDE: &str = "outside";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Fails loudly (never skips) when not root: these tests need the real kernel path.
pub fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the end-to-end tests create namespaces and load XDP: run them as root (cargo xtask test)");
}

/// The `tls-inspect` binary under test: `TLS_INSPECT_BIN`, or the workspace's debug build.
pub fn appliance_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TLS_INSPECT_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tls-inspect");
    assert!(p.exists(), "{} is missing: build it first (cargo xtask test does)", p.display());
    p
}

/// Polls `f` every 50 ms until it says yes; fails after `timeout` naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f()? {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out waiting for {what}")
}

/// The scripted TCP peers used by the end-to-end tests.
pub fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peer.py")
}

/// Runs a command, returning its output; errors say what ran.
pub fn run(mut cmd: impl BorrowMut<Command>) -> Result<Output> {
    let cmd = cmd.borrow_mut();
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    Ok(out)
}

/// Runs a command that must succeed.
pub fn check(mut cmd: impl BorrowMut<Command>) -> Result<String> {
    let cmd = cmd.borrow_mut();
    let out = run(&mut *cmd)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, by name.
#[derive(Debug, Clone)]
pub struct Netns(pub String);

impl Netns {
    /// A command run inside this namespace (nsenter keeps /sys, so bpffs pins stay visible).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.0)).arg("--").arg(program);
        c
    }

    pub fn sh(&self, script: &str) -> Command {
        let mut c = self.cmd("sh");
        c.arg("-c").arg(script);
        c
    }
}

/// A process in the background, with its output collected line by line.
pub struct Background {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Background {
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            });
        }
        Ok(Self { child, lines })
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a line contains `needle`; fails with everything printed so far otherwise.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.lines().iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                thread::sleep(Duration::from_millis(100)); // let the readers drain
                bail!("exited ({status}) before printing '{needle}':\n{}", self.lines().join("\n"));
            }
            if Instant::now() > deadline {
                bail!("no '{needle}' within {timeout:?}:\n{}", self.lines().join("\n"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits up to `timeout`, then SIGKILL.
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Client, appliance and server namespaces with the appliance's instance name and a scratch
/// directory. Dropping it removes all of them.
pub struct Topology {
    pub id: String,
    pub client: Netns,
    pub appliance: Netns,
    pub server: Netns,
    /// The appliance instance: pins in /sys/fs/bpf/<instance>, state in /run/<instance>.
    pub instance: String,
    pub dir: PathBuf,
    daemon: Option<Background>,
    background: Vec<Background>,
}

impl Topology {
    pub fn new() -> Result<Self> {
        Self::with_queues(1)
    }

    /// A topology whose veth pairs have `queues` receive and transmit queues each, so that the
    /// two directions of a flow can land on different queues of the appliance.
    pub fn with_queues(queues: u32) -> Result<Self> {
        require_root();
        let id = format!("{}x{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::SeqCst));
        let dir = std::env::temp_dir().join(format!("tls-inspect-test-{id}"));
        let topo = Self {
            client: Netns(format!("ti-c-{id}")),
            appliance: Netns(format!("ti-a-{id}")),
            server: Netns(format!("ti-s-{id}")),
            instance: format!("ti-{id}"),
            id,
            dir,
            daemon: None,
            background: Vec::new(),
        };
        // From here on, Drop cleans up whatever part was built.
        topo.build(queues)?;
        Ok(topo)
    }

    fn build(&self, queues: u32) -> Result<()> {
        let q = queues.max(1).to_string();
        std::fs::create_dir_all(&self.dir)?;
        for ns in [&self.client, &self.appliance, &self.server] {
            check(Command::new("ip").args(["netns", "add", &ns.0]))?;
        }
        for (end, ns, peer) in [(&self.client, "eth0", INSIDE), (&self.server, "eth0", OUTSIDE)] {
            check(Command::new("ip").args([
                "link", "add", ns, "netns", &end.0, "numtxqueues", &q, "numrxqueues", &q, "type",
                "veth", "peer", "name", peer, "netns", &self.appliance.0, "numtxqueues", &q,
                "numrxqueues", &q,
            ]))?;
        }
        for (ns, ip) in [(&self.client, CLIENT_IP), (&self.server, SERVER_IP)] {
            check(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]))?;
            check(Command::new("ip").args(["-n", &ns.0, "addr", "add", &format!("{ip}/{PREFIX_LEN}"), "dev", "eth0"]))?;
            check(Command::new("ip").args(["-n", &ns.0, "link", "set", "eth0", "up"]))?;
            // TX checksum offload corrupts TCP through XDP on veth; GRO on the endpoints lets a
            // devmap redirect into their peers be delivered.
            check(ns.cmd("ethtool").args(["-K", "eth0", "tx", "off", "gro", "on"]))?;
        }
        for link in [INSIDE, OUTSIDE, "lo"] {
            check(Command::new("ip").args(["-n", &self.appliance.0, "link", "set", link, "up"]))?;
        }
        Ok(())
    }

    /// The appliance CLI for this instance (run from the root namespace, through the pins).
    pub fn cli(&self) -> Command {
        let mut c = Command::new(appliance_bin());
        c.env("TLS_INSPECT_INSTANCE", &self.instance);
        c
    }

    /// Starts `tls-inspect run` with `config` (TOML text) and waits until it is attached.
    pub fn start_appliance(&mut self, config: &str) -> Result<()> {
        self.start_appliance_with(config, &[])
    }

    /// As [`Topology::start_appliance`], with more arguments for `run`.
    pub fn start_appliance_with(&mut self, config: &str, args: &[&str]) -> Result<()> {
        let path = self.dir.join("config.toml");
        std::fs::write(&path, config)?;
        let mut cmd = self.appliance.cmd(appliance_bin().to_str().context("path")?);
        cmd.env("TLS_INSPECT_INSTANCE", &self.instance)
            .args(["run", "--inside", INSIDE, "--outside", OUTSIDE, "--config"])
            .arg(&path)
            .args(args);
        let mut daemon = Background::spawn(cmd)?;
        // A whole public ruleset compiles for most of a minute (the ET Open release: about 45 s).
        daemon.wait_for("tls-inspect: running", Duration::from_secs(180))?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// Runs `tls-inspect run` with `config` and expects it to fail; returns its output.
    pub fn start_appliance_expecting_failure(&self, config: &str) -> Result<String> {
        let path = self.dir.join("bad-config.toml");
        std::fs::write(&path, config)?;
        let mut cmd = self.appliance.cmd(appliance_bin().to_str().context("path")?);
        cmd.env("TLS_INSPECT_INSTANCE", &self.instance)
            .args(["run", "--inside", INSIDE, "--outside", OUTSIDE, "--config"])
            .arg(&path);
        let out = run(&mut cmd)?;
        if out.status.success() {
            bail!("run succeeded with a bad config");
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    pub fn daemon(&mut self) -> Option<&mut Background> {
        self.daemon.as_mut()
    }

    /// Stops the appliance gracefully and returns how it exited.
    pub fn stop_appliance(&mut self) -> Option<ExitStatus> {
        self.daemon.take().and_then(|mut d| d.stop(Duration::from_secs(10)))
    }

    /// Starts a background process that the topology stops on drop.
    pub fn spawn(&mut self, cmd: Command) -> Result<usize> {
        self.background.push(Background::spawn(cmd)?);
        Ok(self.background.len() - 1)
    }

    pub fn background(&mut self, index: usize) -> &mut Background {
        &mut self.background[index]
    }

    /// Waits until something listens on TCP `port` in the server namespace.
    pub fn wait_listening(&self, ns: &Netns, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = check(ns.cmd("ss").args(["-Hltn", &format!("sport = :{port}")]))?;
            if !out.trim().is_empty() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("nothing listens on port {port} in {}", ns.0)
    }

    /// Starts nginx in the server namespace with `conf` (written to `dir/nginx.conf`, `dir` its
    /// prefix) and waits until it listens on every one of `ports`.
    pub fn start_nginx(&mut self, dir: &Path, conf: &str, ports: &[u16]) -> Result<usize> {
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let mut c = self.server.cmd("nginx");
        c.arg("-c").arg(&path).arg("-p").arg(dir);
        let i = self.spawn(c)?;
        let ns = self.server.clone();
        for &port in ports {
            self.wait_listening(&ns, port)?;
        }
        Ok(i)
    }

    /// Starts `tests/scripts/peer.py server MODE` on the server and waits until it listens.
    pub fn peer_server(&mut self, mode: &str, port: u16, extra: &[&str]) -> Result<usize> {
        let mut c = self.server.cmd("python3");
        c.arg(peer_script()).args(["server", mode, "--host", SERVER_IP, "--port", &port.to_string()]).args(extra);
        let i = self.spawn(c)?;
        self.background(i).wait_for("listening", Duration::from_secs(10))?;
        Ok(i)
    }

    /// Runs `tests/scripts/peer.py client MODE` on the client; returns what it printed.
    pub fn peer_client(&self, mode: &str, port: u16, extra: &[&str]) -> Result<String> {
        let mut c = self.client.cmd("python3");
        c.arg(peer_script()).args(["client", mode, "--host", SERVER_IP, "--port", &port.to_string()]).args(extra);
        check(c)
    }

    /// `tls-inspect stats --json`: the metrics endpoint's families under "metrics".
    pub fn stats(&self) -> Result<serde_json::Value> {
        let out = check(self.cli().args(["stats", "--json"]))?;
        serde_json::from_str(&out).map_err(|e| anyhow!("stats output: {e}: {out}"))
    }

    /// One metric family of `stats --json` (as the metrics endpoint names it), summed over its
    /// samples whose labels include `labels` (over workers, for instance).
    pub fn metric(&self, family: &str, labels: &[(&str, &str)]) -> Result<u64> {
        metric_in(&self.stats()?, family, labels)
    }

    /// What this topology leaves behind if cleanup failed: namespaces, pins, state.
    pub fn leftovers(id: &str, instance: &str) -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if line.split_whitespace().next().is_some_and(|n| n.ends_with(&format!("-{id}"))) {
                    left.push(format!("netns {line}"));
                }
            }
        }
        for p in [format!("/sys/fs/bpf/{instance}"), format!("/run/{instance}")] {
            if Path::new(&p).exists() {
                left.push(p);
            }
        }
        left
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // SIGTERM first: a server such as nginx stops its worker processes on SIGTERM, while
        // SIGKILL to its master leaves them running in a namespace nobody can reach any more.
        for b in &self.background {
            let _ = Command::new("kill").arg("-TERM").arg(b.child.id().to_string()).status();
        }
        for mut b in self.background.drain(..) {
            b.stop(Duration::from_secs(3));
        }
        if let Some(mut d) = self.daemon.take() {
            d.stop(Duration::from_secs(10));
        }
        for ns in [&self.client, &self.appliance, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", &ns.0]).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.instance));
        let _ = std::fs::remove_dir_all(format!("/run/{}", self.instance));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One metric family in a `stats --json` answer, summed over the samples whose labels include
/// `labels`; a family the answer does not have is an error (a misspelt name fails the test).
pub fn metric_in(stats: &serde_json::Value, family: &str, labels: &[(&str, &str)]) -> Result<u64> {
    let f = stats["metrics"].get(family).ok_or_else(|| anyhow!("stats has no metric {family}: {stats}"))?;
    Ok(f["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .filter_map(|s| s["value"].as_u64())
        .sum())
}

/// How many workers a `stats --json` answer has samples for.
pub fn workers_in(stats: &serde_json::Value) -> usize {
    stats["metrics"]["tls_inspect_worker_frames_handled_total"]["samples"].as_array().map_or(0, Vec::len)
}
