//! The few lines `run` and `config check` say on the terminal besides the log (the warnings an
//! operator must see even with the log filtered, and the line a supervisor waits for): text, or
//! one JSON object per line when the command line said `--json`, so standard error stays one
//! format. The format is the process's, set once at start like the log's subscriber.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses JSON lines (`--json`) for the rest of the process.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// A warning on standard error; under `--json` the log's own warning line says it already.
pub fn warning(message: &str) {
    if !JSON.load(Ordering::Relaxed) {
        eprintln!("tls-inspect: warning: {message}");
    }
}

/// `tls-inspect: running (instance NAME)` on standard output, or its JSON form.
pub fn running(instance: &str) {
    let message = format!("tls-inspect: running (instance {instance})");
    if JSON.load(Ordering::Relaxed) {
        println!("{}", serde_json::json!({ "event": "running", "instance": instance, "message": message }));
    } else {
        println!("{message}");
    }
}
