//! The appliance's scope set on disk (`/run/<instance>/state.json`) and the locks that serialise
//! changes. The maps hold what the XDP program needs; this file holds what people need back
//! (descriptions, disabled policies, limits), and every change writes both.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::maps::{Maps, Paths};
use super::scopes::ScopeSet;

/// An exclusive `flock` held until dropped.
pub struct Lock {
    _file: File,
}

impl Lock {
    fn take(path: &Path, wait: bool) -> Result<Option<Self>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening lock {}", path.display()))?;
        match crate::sys::flock_exclusive(&file, wait) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
        Ok(Some(Self { _file: file }))
    }

    /// The lock that says a `run` process owns the instance; fails if another one holds it.
    pub fn daemon(paths: &Paths) -> Result<Self> {
        create_run_dir(paths)?;
        Self::take(&paths.run_dir.join("daemon.lock"), false)?.ok_or_else(|| {
            anyhow::anyhow!(
                "another `tls-inspect run` is active for instance '{}' (stop it first, or pick \
                 another --instance)",
                paths.instance
            )
        })
    }

    /// True when some process holds the daemon lock.
    pub fn daemon_is_running(paths: &Paths) -> Result<bool> {
        if !paths.run_dir.exists() {
            return Ok(false);
        }
        Ok(Self::take(&paths.run_dir.join("daemon.lock"), false)?.is_none())
    }

    /// The lock every scope or policy change holds from reading the state to committing it.
    pub fn changes(paths: &Paths) -> Result<Self> {
        create_run_dir(paths)?;
        Self::take(&paths.run_dir.join("state.lock"), true)?
            .ok_or_else(|| anyhow::anyhow!("could not lock the state"))
    }
}

fn create_run_dir(paths: &Paths) -> Result<()> {
    fs::create_dir_all(&paths.run_dir)
        .with_context(|| format!("creating {}", paths.run_dir.display()))?;
    let mut perms = fs::metadata(&paths.run_dir)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
    fs::set_permissions(&paths.run_dir, perms)?;
    Ok(())
}

pub fn state_path(paths: &Paths) -> std::path::PathBuf {
    paths.run_dir.join("state.json")
}

pub fn read(paths: &Paths) -> Result<ScopeSet> {
    let path = state_path(paths);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is `tls-inspect run` running for instance '{}'?)",
            path.display(),
            paths.instance
        )
    })?;
    let set: ScopeSet =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    set.validate().with_context(|| format!("state in {}", path.display()))?;
    Ok(set)
}

/// Writes the state atomically (a temporary file renamed over the old one).
pub fn write(paths: &Paths, set: &ScopeSet) -> Result<()> {
    let path = state_path(paths);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(set)?;
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Applies a change to the running appliance: under the change lock, reads the current set,
/// lets `change` edit a copy (any error leaves everything as it was), stages the result into the
/// idle table generation, writes the state file, then switches generations. Returns what
/// `change` returned.
pub fn change<T>(paths: &Paths, change: impl FnOnce(&mut ScopeSet) -> Result<T>) -> Result<T> {
    let _lock = Lock::changes(paths)?;
    if !Lock::daemon_is_running(paths)? {
        bail!("no `tls-inspect run` is active for instance '{}'", paths.instance);
    }
    let old = read(paths)?;
    let mut new = old.clone();
    let out = change(&mut new)?;
    new.validate()?;
    let mut maps = Maps::open(paths)?;
    let staged = maps.stage(&new)?;
    write(paths, &new)?;
    if let Err(e) = staged.commit() {
        // The old tables are still live: put the old state back.
        write(paths, &old)?;
        return Err(e);
    }
    Ok(out)
}
