//! A stage's `config` values. The host passes every value as a string:
//! strings as they are, numbers and booleans in their TOML text (`15`,
//! `true`), lists and tables in their TOML text (`["/a", "/b"]`,
//! `{ "/a" = "/b" }`), which is also how they are given to `sluice plugin run
//! --config NAME=VALUE`.

use sluice_plugin_sdk::Config;

/// A config value read as a TOML value (a list, a table, a number, …).
///
/// # Errors
/// `config `NAME`: …` when the text is not a TOML value.
pub fn toml_value(name: &str, raw: &str) -> Result<toml::Value, String> {
    #[derive(serde::Deserialize)]
    struct Holder {
        v: toml::Value,
    }
    toml::from_str::<Holder>(&format!("v = {raw}"))
        .map(|h| h.v)
        .map_err(|e| {
            let message = e.message().trim().to_string();
            format!("config `{name}`: cannot read `{raw}` as a TOML value: {message}")
        })
}

/// `name` as a list of strings: a TOML list of strings, or one string (not
/// itself a TOML list) meaning a list of one. Empty when not set.
///
/// # Errors
/// `config `NAME`: …` when it is a list of something else.
pub fn string_list(config: &Config, name: &str) -> Result<Vec<String>, String> {
    let Some(raw) = config.get(name) else {
        return Ok(Vec::new());
    };
    if !raw.trim_start().starts_with('[') {
        return Ok(vec![raw.to_string()]);
    }
    match toml_value(name, raw)? {
        toml::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s),
                other => Err(format!(
                    "config `{name}`: expected a list of strings, found {}",
                    other.type_str()
                )),
            })
            .collect(),
        other => Err(format!(
            "config `{name}`: expected a list of strings, found {}",
            other.type_str()
        )),
    }
}

/// `name` as a table (name → value), in the order of its text's keys as
/// TOML reads them (sorted by name). Empty when not set.
///
/// # Errors
/// `config `NAME`: …` when it is not a TOML table.
pub fn table(config: &Config, name: &str) -> Result<Vec<(String, toml::Value)>, String> {
    let Some(raw) = config.get(name) else {
        return Ok(Vec::new());
    };
    match toml_value(name, raw)? {
        toml::Value::Table(t) => Ok(t.into_iter().collect()),
        other => Err(format!(
            "config `{name}`: expected a table such as {{ \"/a\" = \"b\" }}, found {}",
            other.type_str()
        )),
    }
}

/// A TOML value as JSON text (a date-time becomes its RFC 3339 string).
///
/// # Errors
/// A float that JSON cannot hold (`nan`, `inf`).
pub fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("{f} is not a JSON number"))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .iter()
                .map(toml_to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<serde_json::Map<_, _>, String>>()?,
        ),
    })
}

/// Refuses settings other than `known`, so that a misspelt one is an error
/// rather than silently ignored.
///
/// # Errors
/// `unknown config `NAME` (known: …)`.
pub fn only(config: &Config, known: &[&str]) -> Result<(), String> {
    for (name, _) in config.pairs() {
        if !known.contains(&name) {
            return Err(format!(
                "unknown config `{name}` (known: {})",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_tables_and_errors() {
        let config = Config::from_pairs([
            ("keep", r#"["/a", '/b']"#),
            ("one", "/c"),
            (
                "set",
                r#"{ "/x" = 1, "/y" = "z", "/n" = { a = [true, 1.5] } }"#,
            ),
            ("bad", "[1, 2]"),
            ("notable", "7"),
        ]);
        assert_eq!(string_list(&config, "keep").unwrap(), ["/a", "/b"]);
        assert_eq!(string_list(&config, "one").unwrap(), ["/c"]);
        assert!(string_list(&config, "missing").unwrap().is_empty());
        let err = string_list(&config, "bad").unwrap_err();
        assert!(err.contains("list of strings, found integer"), "{err}");
        let set = table(&config, "set").unwrap();
        let json: Vec<(String, String)> = set
            .iter()
            .map(|(k, v)| (k.clone(), toml_to_json(v).unwrap().to_string()))
            .collect();
        assert_eq!(
            json,
            [
                ("/n".to_string(), r#"{"a":[true,1.5]}"#.to_string()),
                ("/x".to_string(), "1".to_string()),
                ("/y".to_string(), r#""z""#.to_string()),
            ]
        );
        assert!(
            table(&config, "notable")
                .unwrap_err()
                .contains("expected a table")
        );
        assert!(toml_value("x", "[1,").is_err());
        assert!(
            only(&config, &["keep"])
                .unwrap_err()
                .contains("unknown config `one`")
        );
    }
}
