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

/// Every record must be valid under Suricata's own EVE schema (with our `tls_inspect` object).
fn assert_valid_eve(records: &[serde_json::Value]) {
    let mut schema: serde_json::Value = serde_json::from_str(include_str!("fixtures/suricata-eve-schema.json")).unwrap();
    schema["properties"]["tls_inspect"] = serde_json::json!({ "type": "object" });
    let validator = jsonschema::validator_for(&schema).unwrap();
    for v in records {
        let errors: Vec<String> = validator.iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path)).collect();
        assert!(errors.is_empty(), "{v}\n{errors:#?}");
    }
}

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
        let records: Vec<serde_json::Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_valid_eve(&records);
        let ours: BTreeSet<u64> = records
            .iter()
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

/// The `tls` records of a replay carry the JA3 and JA4 fingerprints Suricata logs for the same
/// pcaps (`fixtures/suricata-verify-fingerprints/`: each case's values from its `test.yaml`).
#[test]
fn tls_records_carry_suricatas_ja3_and_ja4() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/suricata-verify-fingerprints");
    let mut cases: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap();
        let set = ruleset(&[], None, Some(Level::Strict)).unwrap();
        let mut out = Vec::new();
        let pcap = std::fs::File::open(case.join("input.pcap")).unwrap();
        replay(std::io::BufReader::new(pcap), set, &mut out).unwrap();
        let records: Vec<serde_json::Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_valid_eve(&records);
        let tls: Vec<serde_json::Value> = records
            .iter()
            .filter(|v| v["event_type"] == "tls")
            .map(|v| v["tls"].clone())
            .collect();
        assert!(!tls.is_empty(), "{}: no tls record", case.display());
        for want in expected["ja3"].as_array().unwrap() {
            let found = tls.iter().any(|t| t["ja3"]["string"] == want[1] && (want[0].is_null() || t["ja3"]["hash"] == want[0]));
            assert!(found, "{}: no tls record with JA3 {want} in {tls:#?}", case.display());
        }
        for want in expected["ja4"].as_array().unwrap() {
            assert!(tls.iter().any(|t| &t["ja4"] == want), "{}: no tls record with JA4 {want} in {tls:#?}", case.display());
        }
    }
}
