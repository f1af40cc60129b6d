//! `reference.config`: the URL prefix of each reference system, so an alert's `references` read
//! as Suricata's EVE writes them (`reference:cve,2021-44228` is
//! `https://cve.mitre.org/cgi-bin/cvename.cgi?name=2021-44228`). The bundled file holds
//! Suricata's default systems; an operator's file replaces it.

use std::collections::HashMap;

/// The bundled reference systems.
pub const BUNDLED: &str = include_str!("../../rules/reference.config");

/// What Suricata puts before the id of a system no file defines.
const UNDEFINED: &str = "undefined";

/// URL prefixes by system name (lowercase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct References(HashMap<String, String>);

impl Default for References {
    fn default() -> Self {
        // The bundled file is checked by a test: it always parses.
        Self::parse(BUNDLED).unwrap_or(Self(HashMap::new()))
    }
}

impl References {
    /// Parses `config reference: system url` lines (`#` comments and blank lines skipped); an
    /// error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (n, t) in super::config_lines(text) {
            let rest = t.strip_prefix("config").map(str::trim_start).and_then(|r| r.strip_prefix("reference")).map(str::trim_start).and_then(|r| r.strip_prefix(':'));
            let Some(rest) = rest else {
                return Err(format!("line {n}: expected 'config reference: system url'"));
            };
            let (system, url) = rest.trim().split_once(char::is_whitespace).ok_or_else(|| format!("line {n}: expected a system and a url"))?;
            let valid = system.starts_with(|c: char| c.is_ascii_alphabetic()) && system.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(format!("line {n}: '{system}' is not a reference system name"));
            }
            map.entry(system.to_ascii_lowercase()).or_insert_with(|| url.trim().to_string());
        }
        Ok(Self(map))
    }

    /// A rule's `reference:system,id` as its alert shows it: the system's URL prefix and the id
    /// (a `scheme://` in the id names its own prefix; an unknown system, Suricata's
    /// `undefined`).
    pub fn resolve(&self, system: &str, id: &str) -> String {
        if let Some(at) = id.find("://") {
            if at > 0 && id[..at].chars().all(|c| c.is_ascii_alphabetic()) {
                return id.to_string();
            }
        }
        let prefix = self.0.get(&system.to_ascii_lowercase()).map_or(UNDEFINED, String::as_str);
        format!("{prefix}{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_file_parses_and_resolves_as_suricata_does() {
        let r = References::parse(BUNDLED).expect("the bundled file");
        assert_eq!(r, References::default());
        assert_eq!(r.resolve("cve", "2021-44228"), "https://cve.mitre.org/cgi-bin/cvename.cgi?name=2021-44228");
        assert_eq!(r.resolve("url", "www.example.com/a"), "https://www.example.com/a");
        assert_eq!(r.resolve("CVE", "2017-5638"), "https://cve.mitre.org/cgi-bin/cvename.cgi?name=2017-5638", "system names are case-insensitive");
        assert_eq!(r.resolve("url", "http://example.com/x"), "http://example.com/x", "a scheme in the id wins");
        assert_eq!(r.resolve("nosuch", "42"), "undefined42");
        assert!(r.0.len() >= 19);
    }

    #[test]
    fn a_bad_line_is_named() {
        assert!(References::parse("config reference: cve\n").unwrap_err().starts_with("line 1"));
        assert!(References::parse("# x\n\nconfig classification: a,b,1\n").unwrap_err().starts_with("line 3"));
        assert!(References::parse("config reference: 9x http://x/\n").is_err());
        let ok = References::parse("config reference: Mine https://a.example/\nconfig reference: mine https://b.example/\n").unwrap();
        assert_eq!(ok.resolve("MINE", "1"), "https://a.example/1", "the first definition wins");
    }
}
