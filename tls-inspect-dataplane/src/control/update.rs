//! The rule-tuning files suricata-update users keep, with its semantics: `disable.conf`,
//! `enable.conf`, `drop.conf` and `modify.conf`, applied in that order to the rule files' text
//! (commented-out upstream rules, `#alert ...`, included) before the rules are parsed.
//!
//! Matchers, one per line (`#` comments; a trailing ` #...` is cut): `*`; a sid, `gid:sid`,
//! `gid:sid:rev` or comma lists of them; `re:REGEX` (case-insensitive, over the whole rule);
//! `group:NAME` or a bare `NAME.rules` (the rule file's name, `*` globs, with or without
//! `.rules`); `filename:GLOB` (the file's path); `metadata: key value`.

use anyhow::{anyhow, Context, Result};

/// One rule line of a file, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleLine {
    /// The line the rule starts on (1-based).
    pub line: usize,
    pub text: String,
    pub enabled: bool,
    /// The file it came from ("bundled" for the bundled rules).
    pub file: String,
}

#[derive(Debug)]
enum Matcher {
    All,
    Ids(Vec<(u32, u32, Option<u32>)>),
    Re(fancy_regex::Regex),
    Group(String),
    Filename(String),
    Metadata(String, String),
}

impl Matcher {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Matcher::All);
        }
        if let Some(re) = s.strip_prefix("re:") {
            return fancy_regex::RegexBuilder::new(&format!("(?i){re}")).build().map(Matcher::Re).map_err(|e| format!("re:{re}: {e}"));
        }
        if let Some(g) = s.strip_prefix("group:") {
            return Ok(Matcher::Group(g.trim().to_string()));
        }
        if let Some(f) = s.strip_prefix("filename:") {
            return Ok(Matcher::Filename(f.trim().to_string()));
        }
        if let Some(m) = s.strip_prefix("metadata:") {
            let (k, v) = m.trim().split_once(' ').ok_or_else(|| format!("'{s}': metadata: key value"))?;
            return Ok(Matcher::Metadata(k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase()));
        }
        if s.ends_with(".rules") && !s.contains(char::is_whitespace) {
            return Ok(Matcher::Group(s.to_string()));
        }
        let mut ids = Vec::new();
        for part in s.split(',') {
            let nums: Vec<&str> = part.trim().split(':').collect();
            let n = |x: &str| x.trim().parse::<u32>().map_err(|_| format!("'{s}': not a matcher (sid, gid:sid, re:, group:, filename:, metadata:, *)"));
            ids.push(match nums.as_slice() {
                [sid] => (1, n(sid)?, None),
                [gid, sid] => (n(gid)?, n(sid)?, None),
                [gid, sid, rev] => (n(gid)?, n(sid)?, Some(n(rev)?)),
                _ => return Err(format!("'{s}': not a matcher")),
            });
        }
        Ok(Matcher::Ids(ids))
    }

    fn matches(&self, rule: &RuleLine) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Ids(ids) => {
                let (gid, sid, rev) = (option(&rule.text, "gid").unwrap_or(1), option(&rule.text, "sid"), option(&rule.text, "rev"));
                ids.iter().any(|&(g, s, r)| g == gid && Some(s) == sid && r.is_none_or(|r| Some(r) == rev))
            }
            Matcher::Re(re) => re.is_match(&rule.text).unwrap_or(false),
            Matcher::Group(glob) => {
                let base = rule.file.rsplit('/').next().unwrap_or(&rule.file);
                let stem = base.strip_suffix(".rules").unwrap_or(base);
                glob_match(glob, base) || glob_match(glob, stem)
            }
            Matcher::Filename(glob) => glob_match(glob, &rule.file),
            Matcher::Metadata(k, v) => metadata(&rule.text).iter().any(|(mk, mv)| mk == k && mv == v),
        }
    }
}

/// The numeric value of `name:` in a rule's options.
fn option(text: &str, name: &str) -> Option<u32> {
    let needle = format!("{name}:");
    text.split(';').find_map(|o| o.trim().strip_prefix(&needle).and_then(|v| v.trim().parse().ok()))
}

fn metadata(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|o| o.trim().strip_prefix("metadata:"))
        .flat_map(|m| m.split(','))
        .filter_map(|kv| kv.trim().split_once(' ').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase())))
        .collect()
}

/// `*` and `?` globbing.
fn glob_match(glob: &str, s: &str) -> bool {
    fn go(g: &[u8], s: &[u8]) -> bool {
        match g.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((b'?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(glob.as_bytes(), s.as_bytes())
}

/// The lines of a tuning file: comments and blank lines skipped, a trailing ` #...` cut.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.split(" #").next().unwrap_or("").trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn matchers(name: &str, text: &str) -> Result<Vec<Matcher>> {
    lines(text).map(|(n, l)| Matcher::parse(l).map_err(|e| anyhow!("{name}: line {n}: {e}"))).collect()
}

/// The rule lines of a rules file: enabled rules and rules commented out upstream.
pub fn rule_lines(file: &str, text: &str) -> Vec<RuleLine> {
    let is_rule = |t: &str| ["alert ", "drop ", "reject ", "rejectsrc ", "rejectdst ", "rejectboth ", "pass "].iter().any(|a| t.starts_with(a));
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut start = 1;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if pending.is_empty() {
            start = i + 1;
        }
        // A continued line (`\`) belongs to the rule it starts.
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        let t = whole.trim();
        if is_rule(t) {
            out.push(RuleLine { line: start, text: t.to_string(), enabled: true, file: file.to_string() });
        } else if let Some(c) = t.strip_prefix('#') {
            let c = c.trim_start();
            if is_rule(c) && c.ends_with(')') {
                out.push(RuleLine { line: start, text: c.to_string(), enabled: false, file: file.to_string() });
            }
        }
    }
    out
}

/// The operator's tuning files, read and checked.
#[derive(Default)]
pub struct Tuning {
    disable: Vec<Matcher>,
    enable: Vec<Matcher>,
    drop: Vec<Matcher>,
    /// (matcher, from, to).
    modify: Vec<(Matcher, fancy_regex::Regex, String)>,
}

impl Tuning {
    /// Reads the files named (any may be absent); an unreadable file or a bad line is an error
    /// naming the setting, the file and the line.
    pub fn read(disable: Option<&str>, enable: Option<&str>, drop: Option<&str>, modify: Option<&str>) -> Result<Self> {
        let read = |setting: &str, path: Option<&str>| -> Result<Option<(String, String)>> {
            path.map(|p| std::fs::read_to_string(p).map(|t| (format!("{setting}: {p}"), t)).with_context(|| format!("{setting}: reading {p}"))).transpose()
        };
        let mut t = Tuning::default();
        if let Some((name, text)) = read("ips.disable_conf", disable)? {
            t.disable = matchers(&name, &text)?;
        }
        if let Some((name, text)) = read("ips.enable_conf", enable)? {
            t.enable = matchers(&name, &text)?;
        }
        if let Some((name, text)) = read("ips.drop_conf", drop)? {
            t.drop = matchers(&name, &text)?;
        }
        if let Some((name, text)) = read("ips.modify_conf", modify)? {
            t.modify = Self::modifications(&name, &text)?;
        }
        Ok(t)
    }

    fn modifications(name: &str, text: &str) -> Result<Vec<(Matcher, fancy_regex::Regex, String)>> {
        let mut out = Vec::new();
        for (n, line) in lines(text) {
            let tokens = shell_words(line).map_err(|e| anyhow!("{name}: line {n}: {e}"))?;
            let (m, from, to) = match tokens.as_slice() {
                [m, from, to] => (m, from, to),
                // Oinkmaster's form.
                [kw, m, from, bar, to] if kw == "modifysid" && bar == "|" => (m, from, to),
                _ => return Err(anyhow!("{name}: line {n}: expected <match> \"<from>\" \"<to>\"")),
            };
            let matcher = Matcher::parse(m).map_err(|e| anyhow!("{name}: line {n}: {e}"))?;
            let re = fancy_regex::Regex::new(&from.replace("\\$", "$")).map_err(|e| anyhow!("{name}: line {n}: {e}"))?;
            // Python's \1 back-references as the regex crate writes them (Oinkmaster's ${1} is
            // already that).
            let mut to = to.replace("\\$", "$");
            for i in 1..10 {
                to = to.replace(&format!("\\{i}"), &format!("${{{i}}}"));
            }
            out.push((matcher, re, to));
        }
        Ok(out)
    }

    /// No file is configured: rule files are read as they are.
    pub fn is_empty(&self) -> bool {
        self.disable.is_empty() && self.enable.is_empty() && self.drop.is_empty() && self.modify.is_empty()
    }

    /// A rule file's text after tuning: each enabled rule on the line it started on, everything
    /// else blank, so the parser's line numbers are the file's.
    pub fn apply_to_text(&self, file: &str, text: &str) -> String {
        let mut lines = vec![String::new(); text.lines().count()];
        for r in self.apply(rule_lines(file, text)) {
            if let Some(slot) = lines.get_mut(r.line - 1) {
                *slot = r.text;
            }
        }
        lines.join("\n")
    }

    /// Applies the files to `rules`, in suricata-update's order, and returns the enabled rules'
    /// text.
    pub fn apply(&self, rules: Vec<RuleLine>) -> Vec<RuleLine> {
        let mut out = Vec::with_capacity(rules.len());
        for mut r in rules {
            if r.enabled && self.disable.iter().any(|m| m.matches(&r)) {
                r.enabled = false;
            }
            if !r.enabled && self.enable.iter().any(|m| m.matches(&r)) {
                r.enabled = true;
            }
            if !r.enabled {
                continue;
            }
            // drop.conf never converts noalert rules (they set flowbits for others).
            let noalert = r.text.contains("noalert");
            if !noalert && self.drop.iter().any(|m| m.matches(&r)) {
                if let Some(space) = r.text.find(' ') {
                    r.text = format!("drop{}", &r.text[space..]);
                }
            }
            for (m, from, to) in &self.modify {
                if m.matches(&r) {
                    r.text = from.replace_all(&r.text, to.as_str()).into_owned();
                }
            }
            out.push(r);
        }
        out
    }
}

/// Splits a line into words, honouring double and single quotes (as Python's shlex does for
/// these files).
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => match chars.next() {
                Some(n @ ('"' | '\\')) => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => return Err("a line ends in a backslash".into()),
            },
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("an unterminated quote".into());
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    const ET: &str = r#"alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"ET one"; content:"a"; sid:2000001; rev:3; metadata: deployment Perimeter;)
#alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"ET two, off upstream"; content:"b"; sid:2000002; rev:1;)
alert http any any -> any any (msg:"ET three"; content:"c"; flowbits:set,x; flowbits:noalert; sid:2000003; rev:1;)
alert tcp any any -> any any (msg:"ET four, trojan"; content:"d"; classtype:trojan-activity; threshold: type limit, seconds 60, count 1, track by_src; sid:2000004; rev:2;)
"#;

    fn tune(disable: &str, enable: &str, drop: &str, modify: &str) -> Vec<RuleLine> {
        let t = Tuning {
            disable: matchers("d", disable).unwrap(),
            enable: matchers("e", enable).unwrap(),
            drop: matchers("dr", drop).unwrap(),
            modify: Tuning::modifications("m", modify).unwrap(),
        };
        t.apply(rule_lines("/etc/rules/emerging-web.rules", ET))
    }

    fn sids(rules: &[RuleLine]) -> Vec<u32> {
        rules.iter().filter_map(|r| option(&r.text, "sid")).collect()
    }

    #[test]
    fn commented_rules_are_disabled_rules() {
        let lines = rule_lines("f.rules", ET);
        assert_eq!(lines.iter().map(|r| r.enabled).collect::<Vec<_>>(), [true, false, true, true]);
        assert_eq!(sids(&tune("", "", "", "")), [2000001, 2000003, 2000004]);
    }

    #[test]
    fn disable_then_enable_then_drop_then_modify() {
        // disable by sid and by metadata; enable the one commented upstream by gid:sid.
        let out = tune("2000004\nmetadata: deployment perimeter  # old\n", "1:2000002\n", "", "");
        assert_eq!(sids(&out), [2000002, 2000003]);
        // enable wins over disable (it is applied after).
        assert_eq!(sids(&tune("re:ET t", "2000002", "", "")), [2000001, 2000002, 2000004]);
        // drop: by group (the file's name, with or without .rules), never a noalert rule.
        let out = tune("", "", "group:emerging-web\n", "");
        let actions: Vec<&str> = out.iter().map(|r| r.text.split(' ').next().unwrap()).collect();
        assert_eq!(actions, ["drop", "alert", "drop"], "the noalert rule stays an alert");
        assert!(tune("", "", "emerging-w*.rules", "").iter().any(|r| r.text.starts_with("drop ")));
        assert!(tune("", "", "filename:/etc/rules/*", "").iter().any(|r| r.text.starts_with("drop ")));
        assert!(tune("", "", "group:other", "").iter().all(|r| r.text.starts_with("alert ")));
        // modify: a regex with back-references, in both of suricata-update's forms.
        let out = tune("", "", "", "2000004 \"seconds \\d+\" \"seconds 3600\"\nmodifysid re:trojan \"^alert(.*)$\" | \"reject${1}\"\n");
        let four = out.iter().find(|r| option(&r.text, "sid") == Some(2000004)).unwrap();
        assert!(four.text.starts_with("reject tcp") && four.text.contains("seconds 3600"), "{}", four.text);
        let out = tune("", "", "", "re:. \"^alert (\\w+)\" \"drop \\1\"\n");
        assert!(out.iter().all(|r| r.text.starts_with("drop ")), "{out:?}");
    }

    #[test]
    fn tuned_text_keeps_the_files_line_numbers() {
        let t = Tuning { enable: matchers("e", "2000002").unwrap(), ..Tuning::default() };
        let text = t.apply_to_text("f.rules", ET);
        let (rules, errors) = crate::inspect::rules::parse_rules(&text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(rules.iter().map(|r| (r.line, r.sid)).collect::<Vec<_>>(), [(1, 2000001), (2, 2000002), (3, 2000003), (4, 2000004)]);
    }

    #[test]
    fn bad_lines_are_named() {
        assert!(matchers("disable.conf", "2000001\nnot a matcher\n").unwrap_err().to_string().contains("line 2"));
        assert!(matchers("x", "re:(unclosed\n").is_err());
        assert!(Tuning::modifications("modify.conf", "2000001 \"a\"\n").unwrap_err().to_string().contains("line 1"));
        assert!(Tuning::modifications("modify.conf", "2000001 \"(\" \"b\"\n").is_err());
        assert_eq!(shell_words(r#"re:x "a b" 'c d' e"#).unwrap(), ["re:x", "a b", "c d", "e"]);
        assert!(glob_match("emerging-*", "emerging-dos") && !glob_match("emerging-*", "x-emerging"));
    }
}
