//! The offline replay against Suricata: each vendored OISF/suricata-verify case
//! (`fixtures/suricata-verify/<case>/`: its pcap, its rules, the sids its checks expect) is
//! replayed with every rule active, and the sids that alert must be Suricata's. The whole
//! comparison, which needs the suricata-verify repository, is `tests/scripts/suricata_verify.py`
//! (numbers in docs/ips.md).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeSet;
use std::path::Path;

use tls_inspect_dataplane::inspect::ips::Level;
use tls_inspect_dataplane::replay::{replay, ruleset};

fn sids(v: &serde_json::Value, key: &str) -> BTreeSet<u64> {
    v[key].as_array().expect(key).iter().map(|s| s.as_u64().expect("a sid")).collect()
}

#[test]
fn vendored_suricata_verify_cases_alert_the_sids_suricata_alerts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/suricata-verify");
    let mut cases: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    assert!(cases.len() >= 5, "{} cases in {}", cases.len(), root.display());
    let mut failures = Vec::new();
    for case in &cases {
        let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap();
        let set = ruleset(&[case.join("test.rules")], None, Some(Level::Strict)).unwrap();
        let mut out = Vec::new();
        let pcap = std::fs::File::open(case.join("input.pcap")).unwrap();
        let summary = replay(std::io::BufReader::new(pcap), set, &mut out).unwrap();
        let ours: BTreeSet<u64> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event_type"] == "alert")
            .map(|v| v["alert"]["signature_id"].as_u64().unwrap())
            .collect();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let (want, never) = (sids(&expected, "alert_sids"), sids(&expected, "no_alert_sids"));
        if ours != want || !ours.is_disjoint(&never) {
            failures.push(format!("{name}: Suricata alerts {want:?} (never {never:?}), we alert {ours:?} ({summary})"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
