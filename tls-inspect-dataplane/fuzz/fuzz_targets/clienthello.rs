//! `cargo xtask fuzz --target clienthello`: the checks are `tls_inspect_dataplane::fuzzing::clienthello`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tls_inspect_dataplane::fuzzing::clienthello(data));
