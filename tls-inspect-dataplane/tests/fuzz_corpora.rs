//! Every committed fuzz corpus input goes through its target's checks (the same functions the
//! fuzzer runs), so that a regression on a seed or on a past finding fails `cargo test`, not
//! only a fuzzing session. The corpora live in `fuzz/corpus/<target>/`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::path::Path;

use tls_inspect_dataplane::fuzzing::TARGETS;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, check) in TARGETS {
        let dir = root.join(name);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            // Each input whole, and each of its prefixes of a few sizes (a truncated input is
            // an input too).
            check(&data);
            for cut in [1, 5, 9, data.len() / 2] {
                check(&data[..cut.min(data.len())]);
            }
            inputs += 1;
        }
        assert!(inputs >= 3, "{name}: at least three seeds, found {inputs}");
    }
}
