//! The stage's `config` table, as the host passes it to `configure`.

use std::str::FromStr;

/// A stage's configuration: the `config = { … }` table of its entry in the
/// pipeline's `processors`, as (name, value) string pairs.
///
/// Values are always strings: TOML numbers and booleans arrive in their TOML text
/// form (`15`, `true`); parse them with [`Config::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl Config {
    /// Builds a config from (name, value) pairs; a later pair with the same name
    /// wins.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Config {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The raw value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` parsed as `T`, or `None` when it is not set.
    ///
    /// # Errors
    /// `"config `NAME`: cannot parse `VALUE`: REASON"` when the value does not
    /// parse.
    pub fn parse<T>(&self, name: &str) -> Result<Option<T>, String>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| format!("config `{name}`: cannot parse `{raw}`: {e}")),
        }
    }

    /// All pairs, in the order the host gave them (sorted by name).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reports_name_and_value() {
        let config = Config::from_pairs([("min_delay", "fifteen"), ("limit", "3")]);
        assert_eq!(config.parse::<i64>("limit"), Ok(Some(3)));
        assert_eq!(config.parse::<i64>("missing"), Ok(None));
        let err = config.parse::<i64>("min_delay").unwrap_err();
        assert!(
            err.contains("min_delay") && err.contains("fifteen"),
            "{err}"
        );
    }
}
