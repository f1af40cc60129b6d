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
fn at_least_95_percent_of_et_open_rules_load_and_keep_their_meaning() {
    let total = SAMPLE.lines().filter(|l| l.starts_with("alert ") || l.starts_with("drop ")).count();
    assert!(total > 1500, "the sample has {total} rules");
    let (rules, errors) = parse_rules(SAMPLE);
    let parsed = rules.len();
    assert_eq!(parsed + errors.len(), total, "every rule is loaded or refused with a reason");
    let (set, refused) = Ruleset::compile(rules, &IpsSettings::default().options().unwrap()).unwrap();
    let loaded = parsed - refused.len();
    let rate = loaded as f64 / total as f64;
    eprintln!("ET Open sample: {loaded} of {total} load ({:.1}%)", rate * 100.0);
    assert!(rate >= 0.955, "{loaded} of {total} load ({:.1}%); refusals: {:?} {:?}", rate * 100.0, &errors[..errors.len().min(5)], &refused[..refused.len().min(5)]);
    // ET's rules alert; nothing in them blocks until the operator says drop.
    assert!(set.rules.iter().all(|r| r.action == Action::Alert));
    // Every refusal says why, by keyword or reason.
    assert!(errors.iter().all(|e| !e.keyword.is_empty() && !e.message.is_empty()));
    assert!(refused.iter().all(|(_, why)| !why.is_empty()));
}

/// The whole release, where the operator has it: `ET_RULES=/path/emerging-all.rules cargo test
/// -p tls-inspect-dataplane --test et_open -- --ignored --nocapture` prints the load rate and the
/// most frequent refusals (the rate in docs/ips.md comes from here).
#[test]
#[ignore = "needs ET_RULES, a file of Emerging Threats rules"]
fn the_whole_et_open_release_load_rate() {
    let Ok(path) = std::env::var("ET_RULES") else {
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let total = text.lines().filter(|l| l.starts_with("alert ") || l.starts_with("drop ")).count();
    let (rules, errors) = parse_rules(&text);
    let parsed = rules.len();
    let (_, refused) = Ruleset::compile(rules, &IpsSettings::default().options().unwrap()).unwrap();
    let loaded = parsed - refused.len();
    eprintln!("{path}: {loaded} of {total} load ({:.1}%)", loaded as f64 * 100.0 / total as f64);
    let mut why: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for e in &errors {
        *why.entry(format!("parse: {}", e.keyword)).or_default() += 1;
    }
    for (_, w) in &refused {
        let short: String = w.split([':', '/']).next().unwrap_or("").chars().take(60).collect();
        *why.entry(format!("engine: {short}")).or_default() += 1;
    }
    let mut why: Vec<(String, usize)> = why.into_iter().collect();
    why.sort_by_key(|w| std::cmp::Reverse(w.1));
    for (w, n) in why.iter().take(25) {
        eprintln!("{n:6} {w}");
    }
    // ET_WHY=keyword: every refusal that names it, in full.
    if let Ok(kw) = std::env::var("ET_WHY") {
        errors.iter().filter(|e| e.keyword == kw).for_each(|e| eprintln!("{e}"));
        refused.iter().filter(|(_, w)| w.contains(&kw)).for_each(|(sid, w)| eprintln!("sid {sid}: {w}"));
    }
}
