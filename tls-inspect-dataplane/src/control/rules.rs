//! The running IPS rule set and the operator's changes to it: `rules list`, `enable`, `disable`,
//! `action`, `reset` and `reload` arrive over the control socket. A change builds a new rule set
//! and swaps it in; flows already open keep the one they started with, new flows get the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use arc_swap::ArcSwap;
use serde_json::json;
use tracing::{info, warn};

use crate::inspect::ips::{Override, Ruleset};
use crate::inspect::rules::{parse_rules, Action};
use crate::inspect::settings::IpsSettings;
use crate::inspect::{SharedRules, DEFAULT_RULES};

pub struct RulesControl {
    pub shared: SharedRules,
    settings: IpsSettings,
    disabled: BTreeSet<u32>,
    /// The operator's per-rule actions.
    actions: BTreeMap<u32, Override>,
}

impl RulesControl {
    pub fn start(settings: &IpsSettings) -> Result<Self> {
        let set = build(settings, &BTreeSet::new(), &BTreeMap::new(), true)?;
        info!(rules = set.rules.len(), mode = ?settings.mode, level = ?settings.level, "IPS on");
        Ok(Self {
            shared: Arc::new(ArcSwap::from_pointee(set)),
            settings: settings.clone(),
            disabled: BTreeSet::new(),
            actions: BTreeMap::new(),
        })
    }

    fn current(&self) -> Ruleset {
        Ruleset::clone(&self.shared.load())
    }

    fn known(&self, sid: u32) -> Result<()> {
        if self.shared.load().rules.iter().any(|r| r.sid == sid) {
            Ok(())
        } else {
            bail!("sid {sid}: no such rule")
        }
    }

    pub fn list(&self) -> serde_json::Value {
        let set = self.shared.load();
        let rules: Vec<_> = set
            .rules
            .iter()
            .map(|r| {
                json!({
                    "sid": r.sid, "rev": r.rev, "msg": r.msg, "classtype": r.classtype,
                    "priority": r.priority, "confidence": r.confidence,
                    "enabled": set.is_active(r.sid),
                    "action": set.action_of(r.sid).unwrap_or(r.action).as_str(),
                    "overridden": set.override_of(r.sid) != Override::Own,
                })
            })
            .collect();
        json!({ "rules": rules })
    }

    pub fn set_enabled(&mut self, sid: u32, enabled: bool) -> Result<()> {
        self.known(sid)?;
        let mut set = self.current();
        set.set_enabled(sid, enabled);
        if enabled {
            self.disabled.remove(&sid);
        } else {
            self.disabled.insert(sid);
        }
        self.shared.store(Arc::new(set));
        Ok(())
    }

    pub fn set_action(&mut self, sid: u32, action: Override) -> Result<()> {
        self.known(sid)?;
        let mut set = self.current();
        set.set_override(sid, action);
        match action {
            Override::Own => self.actions.remove(&sid),
            other => self.actions.insert(sid, other),
        };
        self.shared.store(Arc::new(set));
        Ok(())
    }

    /// Restores the defaults: every rule of the level enabled, no per-rule action.
    pub fn reset(&mut self) -> Result<usize> {
        let set = build(&self.settings, &BTreeSet::new(), &BTreeMap::new(), false)?;
        let n = set.rules.len();
        self.disabled.clear();
        self.actions.clear();
        self.shared.store(Arc::new(set));
        Ok(n)
    }

    /// Re-reads the rule files and swaps the compiled databases, keeping the operator's changes.
    /// If the files no longer compile, the running set stays.
    pub fn reload(&mut self) -> Result<usize> {
        let set = build(&self.settings, &self.disabled, &self.actions, false)?;
        let n = set.rules.len();
        self.shared.store(Arc::new(set));
        Ok(n)
    }

    pub fn handle(&mut self, request: &str) -> serde_json::Value {
        let words: Vec<&str> = request.split_whitespace().collect();
        let sid = |i: usize| -> Result<u32> {
            words.get(i).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("a sid is needed"))
        };
        let result = match words.get(1).copied() {
            Some("list") => Ok(self.list()),
            Some("enable") => sid(2).and_then(|s| self.set_enabled(s, true)).map(|_| json!({ "ok": true })),
            Some("disable") => sid(2).and_then(|s| self.set_enabled(s, false)).map(|_| json!({ "ok": true })),
            Some("action") => sid(2).and_then(|s| {
                let action = match words.get(3).copied() {
                    Some("alert") => Override::Set(Action::Alert),
                    Some("drop") => Override::Set(Action::Drop),
                    Some("reject") => Override::Set(Action::Reject),
                    Some("pass") => Override::Set(Action::Pass),
                    Some("default") => Override::Own,
                    other => bail!("action: '{}': alert, drop, reject, pass or default", other.unwrap_or("")),
                };
                self.set_action(s, action)
            })
            .map(|_| json!({ "ok": true })),
            Some("reset") => self.reset().map(|n| json!({ "rules": n })),
            Some("reload") => self.reload().map(|n| json!({ "rules": n })),
            other => Err(anyhow!("unknown rules request '{}'", other.unwrap_or(""))),
        };
        result.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
    }
}

/// Parses the rule sources and compiles them; refused rules are reported (and, at start,
/// printed), never fatal. An unreadable file is.
fn build(s: &IpsSettings, disabled: &BTreeSet<u32>, actions: &BTreeMap<u32, Override>, at_start: bool) -> Result<Ruleset> {
    let mut sources: Vec<(String, String)> = Vec::new();
    if s.default_rules {
        sources.push(("bundled".into(), DEFAULT_RULES.to_string()));
    }
    for path in &s.rules {
        sources.push((path.clone(), std::fs::read_to_string(path).with_context(|| format!("ips.rules: reading {path}"))?));
    }
    // The operator's suricata-update files, read again at every reload.
    let tuning = super::update::Tuning::read(
        s.disable_conf.as_deref(),
        s.enable_conf.as_deref(),
        s.drop_conf.as_deref(),
        s.modify_conf.as_deref(),
    )?;
    let mut rules = Vec::new();
    for (name, text) in &sources {
        let tuned;
        let text = if tuning.is_empty() {
            text
        } else {
            tuned = tuning.apply_to_text(name, text);
            &tuned
        };
        let (r, errors) = parse_rules(text);
        for e in errors {
            warn!(file = %name, "rule refused: {e}");
            if at_start {
                crate::log::console::warning(&format!("{name}: {e}"));
            }
        }
        rules.extend(r);
    }
    let (mut set, refused) = Ruleset::compile(rules, &s.options()?)?;
    for (sid, why) in refused {
        warn!(sid, "rule refused: {why}");
        if at_start {
            crate::log::console::warning(&format!("sid {sid}: {why}"));
        }
    }
    set.dlp = s.dlp.detectors();
    set.whitelist = s
        .whitelist
        .iter()
        .map(|c| c.parse().map_err(|e| anyhow!("ips.whitelist: '{c}': {e}")))
        .collect::<Result<_>>()?;
    for sid in disabled {
        set.set_enabled(*sid, false);
    }
    for (sid, action) in actions {
        set.set_override(*sid, *action);
    }
    Ok(set)
}
