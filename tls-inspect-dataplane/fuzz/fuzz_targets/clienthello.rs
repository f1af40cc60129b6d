//! The ClientHello parser must survive any bytes: run with
//! `cd tls-inspect-dataplane/fuzz && cargo +nightly fuzz run clienthello corpus/clienthello`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser is one self-contained file; the fuzz crate compiles it directly.
#[allow(dead_code)]
#[path = "../../src/tls/clienthello.rs"]
mod clienthello;

fuzz_target!(|data: &[u8]| {
    if let clienthello::Sniff::Hello(hello) = clienthello::sniff(data) {
        // Everything derived from a parsed hello must be computable too.
        let _ = hello.ja4();
        let _ = hello.max_version();
        assert!(hello.record_len <= data.len());
    }
});
