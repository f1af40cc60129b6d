//! What `run` tells the service manager and logrotate: a pid file while it runs, and systemd's
//! notification protocol (`READY=1` once XDP is attached and the workers run, `WATCHDOG=1` while
//! they are well, `STOPPING=1`), through the `sd-notify` crate. Outside systemd (no
//! `NOTIFY_SOCKET`) the notifications are nothing.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use sd_notify::NotifyState;
use tracing::warn;

use crate::control::maps::Paths;

/// `/run/<instance>/tls-inspect.pid`, holding the process id while `run` runs (logrotate's
/// `postrotate` signals it).
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn path(paths: &Paths) -> PathBuf {
        paths.run_dir.join("tls-inspect.pid")
    }

    /// Written while the daemon lock is held, so it names the one `run` of the instance.
    pub fn write(paths: &Paths) -> Result<Self> {
        let path = Self::path(paths);
        std::fs::write(&path, format!("{}\n", std::process::id())).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        warn!(error = %e, "telling systemd failed");
    }
}

/// The appliance steers and inspects: `READY=1`, with the main pid (for `NotifyAccess=main`).
pub fn ready(status: &str) {
    notify(&[NotifyState::MainPid(std::process::id()), NotifyState::Ready, NotifyState::Status(status)]);
}

/// How often to feed the watchdog (half its interval), when systemd set one for this process.
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(10)))
}

/// The appliance is well: `WATCHDOG=1`.
pub fn alive() {
    notify(&[NotifyState::Watchdog]);
}

/// Something is wrong: the status line says what (the watchdog is not fed meanwhile).
pub fn unwell(why: &str) {
    notify(&[NotifyState::Status(&format!("unwell: {why}"))]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}
