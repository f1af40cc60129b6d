//! `cargo xtask fuzz --target http1`: the checks are `tls_inspect_dataplane::fuzzing::http1`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tls_inspect_dataplane::fuzzing::http1(data));
