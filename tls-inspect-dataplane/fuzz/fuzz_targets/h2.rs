//! `cargo xtask fuzz --target h2`: the checks are `tls_inspect_dataplane::fuzzing::h2`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tls_inspect_dataplane::fuzzing::h2(data));
