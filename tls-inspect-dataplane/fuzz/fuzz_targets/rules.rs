//! The rule parser must survive any file: run with
//! `cd tls-inspect-dataplane/fuzz && cargo +nightly fuzz run rules corpus/rules`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/inspect/rules.rs"]
mod rules;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (loaded, errors) = rules::parse_rules(text);
        // Every rule that loads has a sid and a message, and errors point at real lines.
        for r in &loaded {
            assert!(r.sid != 0 && !r.msg.is_empty());
        }
        let lines = text.lines().count().max(1);
        for e in &errors {
            assert!(e.line >= 1 && e.line <= lines);
        }
    }
});
