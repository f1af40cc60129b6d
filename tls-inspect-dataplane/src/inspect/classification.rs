//! `classification.config`: a rule's classtype gives the alert its category (the description)
//! and its severity (the classtype's priority, unless the rule sets `priority:`), as in
//! Suricata. The bundled file holds Suricata's default classtypes; an operator's file replaces it.

use std::collections::HashMap;

/// The bundled classifications.
pub const BUNDLED: &str = include_str!("../../rules/classification.config");

/// Severity of a rule with neither a classtype nor a priority (Suricata's default).
pub const DEFAULT_SEVERITY: u8 = 3;

/// One classtype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    pub description: String,
    pub priority: u8,
}

/// Classtypes by short name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classifications(HashMap<String, Class>);

impl Default for Classifications {
    fn default() -> Self {
        // The bundled file is checked by a test: it always parses.
        Self::parse(BUNDLED).unwrap_or(Self(HashMap::new()))
    }
}

impl Classifications {
    /// Parses `config classification: shortname,description,priority` lines (`#` comments and
    /// blank lines skipped); an error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (n, t) in super::config_lines(text) {
            let rest = t
                .strip_prefix("config classification:")
                .ok_or_else(|| format!("line {n}: expected 'config classification: name,description,priority'"))?;
            // The description may hold commas: the first comma ends the name, the last one
            // starts the priority.
            let (name, rest) = rest.split_once(',').ok_or_else(|| format!("line {n}: expected three comma-separated fields"))?;
            let (description, priority) = rest.rsplit_once(',').ok_or_else(|| format!("line {n}: expected three comma-separated fields"))?;
            let (name, description, priority) = (name.trim().to_ascii_lowercase(), description.trim(), priority.trim());
            let priority: u8 = priority.parse().ok().filter(|p| *p >= 1).ok_or_else(|| format!("line {n}: priority '{priority}' is not 1 to 255"))?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("line {n}: '{name}' is not a classtype name"));
            }
            // As in Suricata, the first definition of a name wins.
            if map.contains_key(&name) {
                continue;
            }
            map.insert(name, Class { description: description.to_string(), priority });
        }
        Ok(Self(map))
    }

    /// A classtype by name (names are case-insensitive, as in Suricata).
    pub fn get(&self, name: &str) -> Option<&Class> {
        self.0.get(&name.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_file_parses_and_names_suricatas_classtypes() {
        let c = Classifications::parse(BUNDLED).expect("the bundled file");
        assert_eq!(c, Classifications::default());
        let web = c.get("web-application-attack").expect("web-application-attack");
        assert_eq!((web.description.as_str(), web.priority), ("Web Application Attack", 1));
        assert_eq!(c.get("tcp-connection").map(|k| k.priority), Some(4));
        assert!(c.get("data-leak").is_some());
        assert!(c.0.len() >= 40);
    }

    #[test]
    fn a_bad_line_is_named() {
        assert!(Classifications::parse("config classification: a,b\n").unwrap_err().starts_with("line 1"));
        assert!(Classifications::parse("# x\n\nconfig classification: a,b,zero\n").unwrap_err().starts_with("line 3"));
        assert!(Classifications::parse("classification: a,b,1\n").is_err());
        let ok = Classifications::parse("config classification: My-Class, My Class, with a comma ,2\nconfig classification: my-class,Second,1\n").unwrap();
        assert_eq!(ok.get("my-class").map(|c| (c.description.as_str(), c.priority)), Some(("My Class, with a comma", 2)), "the first definition wins");
        assert_eq!(ok.get("MY-CLASS").map(|c| c.priority), Some(2));
    }
}
