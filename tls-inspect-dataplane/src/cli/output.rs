//! What a command prints, in one place: each command returns a [`Report`] that holds the same
//! facts as JSON (for programs) and as text (for people); the global `--json` picks which one
//! goes to standard output. Warnings go to standard error either way (and into the JSON), and
//! an error under `--json` is also a JSON object on standard output, so a script that pipes
//! into `jq` always reads JSON.

use serde_json::{json, Value};

/// How the answers are printed (`--json` or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    pub fn new(json: bool) -> Self {
        if json {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// The answer of one command.
#[derive(Debug)]
pub struct Report {
    json: Value,
    text: String,
    warnings: Vec<String>,
    failure: Option<String>,
}

impl Report {
    /// An answer whose JSON is `json` and whose text is `text` (one or more lines).
    pub fn new(json: Value, text: impl Into<String>) -> Self {
        Self { json, text: text.into(), warnings: Vec::new(), failure: None }
    }

    /// Marks the answer as a failure: it is printed all the same (with `"error"` in the JSON),
    /// then the command exits with `message` and status 1 (`rules check` with refused rules).
    pub fn fail(mut self, message: Option<String>) -> Self {
        self.failure = message;
        self
    }

    /// The failure, if the command failed after all.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Adds warnings: printed on standard error, and as `"warnings"` in the JSON.
    pub fn warn(mut self, warnings: impl IntoIterator<Item = String>) -> Self {
        self.warnings.extend(warnings);
        self
    }

    /// What goes to standard output in `format` (without the warnings).
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.text.trim_end_matches('\n').to_string(),
            Format::Json => {
                let mut v = self.json.clone();
                if let Some(obj) = v.as_object_mut() {
                    if !self.warnings.is_empty() {
                        obj.insert("warnings".into(), json!(self.warnings));
                    }
                    if let Some(f) = &self.failure {
                        obj.insert("error".into(), json!(f));
                    }
                }
                serde_json::to_string_pretty(&v).unwrap_or_else(|e| format!("{{\"error\": \"encoding the answer: {e}\"}}"))
            }
        }
    }

    /// Prints the answer.
    pub fn print(&self, format: Format) {
        for w in &self.warnings {
            eprintln!("tls-inspect: warning: {w}");
        }
        let out = self.render(format);
        if !out.is_empty() {
            println!("{out}");
        }
    }
}

/// The JSON printed on standard output for a command that failed under `--json`.
pub fn error_json(e: &anyhow::Error) -> String {
    json!({ "error": format!("{e:#}") }).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn one_report_prints_as_text_or_json_with_its_warnings() {
        let r = Report::new(json!({ "scope": 3 }), "scope 3 added\n").warn(["weak key".to_string()]);
        assert_eq!(r.render(Format::Text), "scope 3 added");
        let v: Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(v, json!({ "scope": 3, "warnings": ["weak key"] }));
        let plain: Value = serde_json::from_str(&Report::new(json!({ "ok": true }), "").render(Format::Json)).unwrap();
        assert_eq!(plain, json!({ "ok": true }));
        let e: Value = serde_json::from_str(&error_json(&anyhow::anyhow!("policy 9: no such policy"))).unwrap();
        assert_eq!(e["error"], "policy 9: no such policy");
    }
}
