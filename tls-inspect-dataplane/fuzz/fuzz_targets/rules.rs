//! `cargo xtask fuzz --target rules`: the checks are `tls_inspect_dataplane::fuzzing::rules`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tls_inspect_dataplane::fuzzing::rules(data));
