//! A public ruleset loads as Suricata loads it: a sample of Emerging Threats Open (every 12th
//! enabled tcp/http/tls/ip rule of the April 2024 release, `fixtures/et-open-sample.rules`, BSD
//! licensed) is parsed and compiled with the default `[ips]` settings. The whole release's rate
//! is in docs/ips.md (`tls-inspect rules check`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use tls_inspect_dataplane::inspect::ips::Ruleset;
use tls_inspect_dataplane::inspect::rules::{parse_rules, Action};
use tls_inspect_dataplane::inspect::settings::IpsSettings;

const SAMPLE: &str = include_str!("fixtures/et-open-sample.rules");

#[test]
fn at_least_nine_in_ten_et_open_rules_load_and_keep_their_meaning() {
    let total = SAMPLE.lines().filter(|l| l.starts_with("alert ") || l.starts_with("drop ")).count();
    assert!(total > 1500, "the sample has {total} rules");
    let (rules, errors) = parse_rules(SAMPLE);
    let parsed = rules.len();
    assert_eq!(parsed + errors.len(), total, "every rule is loaded or refused with a reason");
    let (set, refused) = Ruleset::compile(rules, &IpsSettings::default().options().unwrap()).unwrap();
    let loaded = parsed - refused.len();
    let rate = loaded as f64 / total as f64;
    eprintln!("ET Open sample: {loaded} of {total} load ({:.1}%)", rate * 100.0);
    assert!(rate >= 0.90, "{loaded} of {total} load ({:.1}%); refusals: {:?} {:?}", rate * 100.0, &errors[..errors.len().min(5)], &refused[..refused.len().min(5)]);
    // ET's rules alert; nothing in them blocks until the operator says drop.
    assert!(set.rules.iter().all(|r| r.action == Action::Alert));
    // Every refusal says why, by keyword or reason.
    assert!(errors.iter().all(|e| !e.keyword.is_empty() && !e.message.is_empty()));
    assert!(refused.iter().all(|(_, why)| !why.is_empty()));
}
