//! A Unix socket in the run directory through which control commands reach state that lives
//! only in the running process (the TLS exclusion cache). One request line, one JSON answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::maps::Paths;
use super::rules::RulesControl;
use crate::tls::policy::TlsPolicy;

pub fn socket_path(paths: &Paths) -> PathBuf {
    paths.run_dir.join("control.sock")
}

pub struct ControlSocket {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    path: PathBuf,
}

fn answer(request: &str, policy: Option<&TlsPolicy>, rules: &mut Option<RulesControl>) -> serde_json::Value {
    if request.trim_start().starts_with("rules ") {
        return match rules.as_mut() {
            Some(r) => r.handle(request),
            None => json!({ "error": "the IPS is off ([ips] enabled = false)" }),
        };
    }
    let Some(policy) = policy else {
        return json!({ "error": "TLS inspection is off ([tls] inspect = false)" });
    };
    match request.trim() {
        "bypass list" => {
            let entries: Vec<_> = policy
                .exclusions()
                .into_iter()
                .map(|e| {
                    json!({
                        "server": e.server.to_string(),
                        "sni": e.sni,
                        "clients": e.client.map_or_else(|| "all".to_string(), |c| c.to_string()),
                        "reason": e.reason.as_str(),
                        "expires_in": e.expires_in.as_secs(),
                    })
                })
                .collect();
            json!({ "bypass": entries, "evicted": policy.exclusions_evicted() })
        }
        "bypass clear" => json!({ "cleared": policy.clear_exclusions() }),
        other => json!({ "error": format!("unknown request '{other}'") }),
    }
}

impl ControlSocket {
    pub fn start(paths: &Paths, policy: Option<Arc<TlsPolicy>>, rules: Option<RulesControl>) -> Result<Self> {
        let mut rules = rules;
        let path = socket_path(paths);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("control".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut line = String::new();
                        let mut reader = BufReader::new(&conn);
                        if reader.read_line(&mut line).is_ok() {
                            let reply = answer(&line, policy.as_deref(), &mut rules);
                            let _ = writeln!(&conn, "{reply}");
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
        Ok(Self { stop, thread, path })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one request to the running appliance and returns its answer.
pub fn request(paths: &Paths, line: &str) -> Result<serde_json::Value> {
    let path = socket_path(paths);
    let mut conn = UnixStream::connect(&path)
        .map_err(|e| anyhow!("cannot reach the running appliance at {}: {e}", path.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    writeln!(conn, "{line}")?;
    let mut reply = String::new();
    BufReader::new(&conn).read_line(&mut reply)?;
    let v: serde_json::Value = serde_json::from_str(&reply).context("the appliance's answer")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("{e}");
    }
    Ok(v)
}
