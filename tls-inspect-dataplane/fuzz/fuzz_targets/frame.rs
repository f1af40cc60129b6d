//! `cargo xtask fuzz --target frame`: the checks are `tls_inspect_dataplane::fuzzing::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tls_inspect_dataplane::fuzzing::frame(data));
