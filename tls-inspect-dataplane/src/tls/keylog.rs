//! `[log] keylog`: the secrets of both legs of every inspected session, in the NSS key log
//! format (`LABEL <client random hex> <secret hex>`, one line each) that Wireshark, tshark and
//! Zeek read, so that a capture of either side can be decrypted. Opt-in, written 0600.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// The key log file, shared by every worker (a line is one write, under a lock: this is a
/// debugging aid, not the fast path).
#[derive(Debug)]
pub struct KeyLogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl KeyLogFile {
    /// Opens `path` for appending, creating it 0600; an existing file is made 0600 too.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("log.keylog: creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("log.keylog: opening {}", path.display()))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).with_context(|| format!("log.keylog: chmod 0600 {}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One key log line.
fn line(label: &str, client_random: &[u8], secret: &[u8]) -> String {
    let mut s = String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
    s.push_str(label);
    s.push(' ');
    for b in client_random {
        let _ = write!(s, "{b:02x}");
    }
    s.push(' ');
    for b in secret {
        let _ = write!(s, "{b:02x}");
    }
    s.push('\n');
    s
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let text = line(label, client_random, secret);
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(text.as_bytes());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn lines_are_nss_key_log_lines_and_the_file_is_0600() {
        assert_eq!(line("CLIENT_RANDOM", &[0xab, 0x01], &[0xff]), "CLIENT_RANDOM ab01 ff\n");
        let dir = std::env::temp_dir().join(format!("tls-inspect-keylog-{}", std::process::id()));
        let path = dir.join("keys.log");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let k = KeyLogFile::open(&path).unwrap();
        rustls::KeyLog::log(&k, "SERVER_HANDSHAKE_TRAFFIC_SECRET", &[1; 32], &[2; 48]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("SERVER_HANDSHAKE_TRAFFIC_SECRET {} {}\n", "01".repeat(32), "02".repeat(48)));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
