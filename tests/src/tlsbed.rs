//! The TLS test bed: a topology, a test PKI the appliance trusts upstream, a trial CA, and the
//! appliance inspecting ports 443 and 8443-9499, with real servers (nginx, openssl s_server).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::pki::{Pair, TestPki};
use crate::{appliance_bin, check, run, wait_until, Topology, SERVER_IP};

pub const TRIAL_ISSUER: &str = "tls-inspect trial CA";

/// A port of the bed's nginx that no scope covers (bridged in XDP, never inspected).
pub const DIRECT_PORT: u16 = 10443;

pub struct Bed {
    pub t: Topology,
    pub pki: TestPki,
    pub ca: PathBuf,
    pub eve: PathBuf,
    pub server: Pair,
    /// More lines for the `[log]` table.
    log_extra: String,
}

impl Bed {
    /// A topology, a test PKI, a trial CA, and the appliance inspecting ports 443 and 8443-9499.
    pub fn new(tls_extra: &str) -> Result<Self> {
        Self::new_with(tls_extra, &[])
    }

    /// As [`Bed::new`], with more arguments for `tls-inspect run`.
    pub fn new_with(tls_extra: &str, run_args: &[&str]) -> Result<Self> {
        Self::with_policy("", tls_extra, run_args)
    }

    /// As [`Bed::new_with`], with more lines for the `[[policy]]` table (`quic = "pass"`, ...).
    pub fn with_policy(policy_extra: &str, tls_extra: &str, run_args: &[&str]) -> Result<Self> {
        Self::build(policy_extra, tls_extra, "", run_args)
    }

    /// As [`Bed::new`], with more lines for the `[log]` table (`keylog = ...`).
    pub fn with_log(tls_extra: &str, log_extra: &str) -> Result<Self> {
        Self::build("", tls_extra, log_extra, &[])
    }

    fn build(policy_extra: &str, tls_extra: &str, log_extra: &str, run_args: &[&str]) -> Result<Self> {
        let t = Topology::new()?;
        let pki = TestPki::new(&t.dir)?;
        let server = pki.server("server", &["server.test", "passthrough.test", SERVER_IP], "root", None)?;
        let ca_dir = t.dir.join("ca");
        check(Command::new(appliance_bin()).args(["ca", "--dir"]).arg(&ca_dir).arg("trial"))?;
        let eve = t.dir.join("eve.json");
        let mut bed = Self { t, pki, ca: ca_dir.join("ca.crt"), eve, server, log_extra: log_extra.to_string() };
        let config = bed.config(policy_extra, tls_extra);
        bed.t.start_appliance_with(&config, run_args)?;
        Ok(bed)
    }

    /// The bed's configuration with these extra lines.
    fn config(&self, policy_extra: &str, tls_extra: &str) -> String {
        format!(
            r#"
[[policy]]
id = 3
{policy_extra}
  [[policy.scope]]
  id = 30
  src = ["198.18.0.0/24"]
  sport = ["1024/65535"]
  dst = ["198.18.0.2"]
  dport = ["443/443", "8443/9499"]
[tls]
inspect = true
ca_dir = "{}"
extra_roots = ["{}"]
{tls_extra}
[log]
eve = "{}"
{}
"#,
            self.ca.parent().unwrap_or(&self.t.dir).display(),
            self.pki.root.display(),
            self.eve.display(),
            self.log_extra
        )
    }

    /// Stops the appliance and starts it again with other extra lines (same CA, PKI and log).
    pub fn restart(&mut self, policy_extra: &str, tls_extra: &str) -> Result<()> {
        self.t.stop_appliance();
        check(self.t.cli().arg("detach"))?;
        let config = self.config(policy_extra, tls_extra);
        self.t.start_appliance(&config)
    }

    pub fn s_server(&mut self, port: u16, pair: &Pair, extra: &[&str]) -> Result<usize> {
        let mut c = self.t.server.cmd("openssl");
        c.args(["s_server", "-accept", &format!("{SERVER_IP}:{port}"), "-www", "-key"])
            .arg(&pair.key)
            .arg("-cert")
            .arg(&pair.cert)
            .args(extra);
        let i = self.t.spawn(c)?;
        self.t.wait_listening(&self.t.server.clone(), port)?;
        Ok(i)
    }

    /// [`nginx`] with the bed's server certificate.
    pub fn nginx(&mut self) -> Result<()> {
        nginx(&mut self.t, &self.server)
    }

    /// Runs curl in the client namespace (every name resolves to the server).
    pub fn curl(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.t.client.cmd("curl");
        // Every name goes to the server's address, on the port asked for.
        c.args(["-sS", "-v", "--max-time", "10", "--connect-to", "::198.18.0.2:"]).args(args);
        run(c).unwrap_or_else(|e| panic!("curl could not run: {e}"))
    }

    /// The flow records written so far.
    /// The EVE records the tests count: `tls` (one per flow), `alert`, `dlp`, `tls_exclusion`;
    /// not the `flow` and `http` records that come with them (`eve_all` has those too).
    pub fn eve(&self) -> Vec<Value> {
        self.eve_all().into_iter().filter(|r| r["event_type"] != "flow" && r["event_type"] != "http").collect()
    }

    /// Every EVE record, in order.
    pub fn eve_all(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.eve)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for `n` records (as `eve` counts them); every record written so far must be valid
    /// under Suricata's own EVE schema.
    pub fn wait_records(&self, n: usize) -> Result<Vec<Value>> {
        wait_until(&format!("{n} flow records"), Duration::from_secs(10), || Ok(self.eve().len() >= n))
            .map_err(|e| anyhow::anyhow!("{e}: have {:?}; stats {}", self.eve(), self.t.stats().unwrap_or_default()))?;
        check_eve_schema(&self.eve_all())?;
        Ok(self.eve())
    }
}

/// nginx with h2 on the server's port 443 under `server`'s certificate: `/` answers "hello from
/// nginx" (to any method), `/big` is 30 MB of random bytes, `/post/...` is proxied to a backend
/// so that nginx reads a request's whole body before it answers. The same server also listens
/// on [`DIRECT_PORT`], which no scope of the bed covers: what a client gets without the appliance.
pub fn nginx(t: &mut Topology, server: &Pair) -> Result<()> {
    let d = t.dir.join("nginx");
    std::fs::create_dir_all(d.join("tmp"))?;
    std::fs::create_dir_all(d.join("www"))?;
    let mut big = vec![0u8; 30_000_000];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut big)?;
    std::fs::write(d.join("www/big"), &big)?;
    let conf = format!(
        "worker_processes 1; daemon off; user root; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{ access_log {d}/access.log; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
           fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp; default_type text/plain;\n\
           server {{ listen {SERVER_IP}:443 ssl http2; listen {SERVER_IP}:{DIRECT_PORT} ssl http2; ssl_certificate {}; ssl_certificate_key {};\n\
             ssl_protocols TLSv1.2 TLSv1.3; root {d}/www; location = / {{ return 200 \"hello from nginx\\n\"; }}\n\
             location /post/ {{ proxy_pass http://{SERVER_IP}:8081; }} }}\n\
           server {{ listen {SERVER_IP}:8081; location / {{ return 200 \"posted\\n\"; }} }} }}\n",
        server.cert.display(),
        server.key.display(),
        d = d.display()
    );
    t.start_nginx(&d, &conf, &[443, DIRECT_PORT]).map(drop)
}

/// The bundled rules' samples, `tls-inspect-dataplane/tests/fixtures/bundled-samples.json` (the
/// dataplane's in-process test reads the same file): `cases`, each `{sid, positive, near_miss}`,
/// and `benign`; each sample an exact HTTP/1.1 request, one character per byte.
pub fn bundled_samples() -> Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tls-inspect-dataplane/tests/fixtures/bundled-samples.json");
    let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Checks records against Suricata's `etc/schema.json` (the copy in the dataplane's test
/// fixtures), with one addition: the appliance's own `tls_inspect` object.
pub fn check_eve_schema(records: &[Value]) -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tls-inspect-dataplane/tests/fixtures/suricata-eve-schema.json");
    let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    schema["properties"]["tls_inspect"] = serde_json::json!({ "type": "object" });
    let validator = jsonschema::validator_for(&schema).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for r in records {
        let errors: Vec<String> = validator.iter_errors(r).map(|e| format!("{e} at {}", e.instance_path)).collect();
        if !errors.is_empty() {
            anyhow::bail!("an EVE record Suricata's schema refuses: {r}\n{}", errors.join("\n"));
        }
    }
    Ok(())
}
