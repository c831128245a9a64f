//! Lookup tables (`[tables.NAME]`): a CSV (with a header row) or NDJSON file
//! held in memory as key → JSON object, for the `join` stage
//! (`pipeline::builtin::Join`).
//!
//! ```toml
//! [tables.airports]
//! path = "../data/airports.csv"   # relative to the config file
//! key = "faa"                     # CSV: a column; NDJSON: a JSON pointer ("/faa")
//! ```
//!
//! The file is watched (as plugin files are: [`crate::wasm::reload::watch_file`])
//! and, when it changes, read again and swapped in whole ([`ArcSwap`]): a
//! partition sees the old table or the new one for a whole batch, never a
//! mix. A file that cannot be read or parsed keeps the old table running, and
//! the reason is logged and counted ([`TableSlot::failed_reloads`]). A later
//! row with the same key replaces an earlier one (as a compacted topic
//! would).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::config::{ComponentTable, ConfigError, ConfigSource};
use crate::format::csv::{CsvFormat, CsvOptions};

/// How a table file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Comma-separated values with a header row (RFC 4180; see
    /// [`crate::format::csv`]); every row an object of its columns.
    Csv,
    /// One JSON object per line.
    Json,
}

/// `[tables.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The file, relative to the config file. A `.gz` file is not read.
    pub path: Spanned<PathBuf>,
    /// `csv` or `json`. Default: `csv` for a `.csv` file, else `json`.
    pub format: Option<Spanned<TableFormat>>,
    /// The key of each row: a column name (CSV) or a JSON pointer (NDJSON,
    /// e.g. `/faa`). A string key is its text, another value its JSON text.
    pub key: Spanned<String>,
    /// CSV only: column types and null values, as a source's `csv` table
    /// (a header row is required: `header` cannot be given).
    #[serde(default)]
    pub csv: Option<CsvOptions>,
}

/// What a table is read with, checked.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The table's name.
    pub name: String,
    /// The file, absolute or relative to the daemon's folder.
    pub path: PathBuf,
    /// How it is read.
    pub format: TableFormat,
    /// Column name (CSV) or JSON pointer (NDJSON).
    pub key: String,
    /// CSV options.
    pub csv: CsvOptions,
}

/// A table in memory: key → the row as JSON object text.
#[derive(Debug, Default)]
pub struct Table {
    rows: HashMap<String, Box<str>>,
}

impl Table {
    /// The row of `key`, as JSON object text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.rows.get(key).map(|r| &**r)
    }

    /// Rows (distinct keys).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it has no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Why a table file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The key column is not in the CSV header (the message names the
    /// columns there are).
    Key(String),
    /// The file cannot be read, or a line cannot be parsed (`line N: …`).
    File(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Key(m) | LoadError::File(m) => f.write_str(m),
        }
    }
}

/// The key text of a JSON value: a string is its content, null none, another
/// value its JSON text (the rule of a source's `key`).
pub fn key_text(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        other => Some(std::borrow::Cow::Owned(other.to_string())),
    }
}

impl TableSpec {
    /// Reads `[tables.NAME]` and loads its file once, so that `sluice
    /// validate` finds a missing file, a broken line or a missing key column.
    ///
    /// # Errors
    /// A located error: at `path` when the file cannot be read or parsed, at
    /// `key` when the key column is not in the header.
    pub fn build(
        table: &ComponentTable,
        source: &ConfigSource,
        base: &Path,
    ) -> Result<(TableSpec, Table), ConfigError> {
        let (_, own) = table.split(&[]);
        let config: TableConfig = crate::config::deserialize_table(own, source, &[])?;
        let path = crate::config::resolve(base, config.path.get_ref());
        let format = match &config.format {
            Some(f) => *f.get_ref(),
            None if path.extension().is_some_and(|e| e == "csv") => TableFormat::Csv,
            None => TableFormat::Json,
        };
        let csv = config.csv.clone().unwrap_or_default();
        if let Some(options) = &config.csv {
            if format != TableFormat::Csv {
                return Err(table_error(table, source, "csv", "`csv` is for CSV tables"));
            }
            if options.header.is_some() {
                return Err(table_error(
                    table,
                    source,
                    "csv",
                    "a table file needs its header row: `csv.header` cannot be given",
                ));
            }
        }
        if format == TableFormat::Json {
            crate::decode::Pointer::parse(config.key.get_ref())
                .map_err(|e| source.error(config.key.span(), e))?;
        }
        let spec = TableSpec {
            name: table.name.clone(),
            path,
            format,
            key: config.key.get_ref().clone(),
            csv,
        };
        let loaded = spec.load().map_err(|e| match e {
            LoadError::Key(m) => source.error(config.key.span(), m),
            LoadError::File(m) => source.error(
                config.path.span(),
                format!("table `{}`: {}: {m}", spec.name, spec.path.display()),
            ),
        })?;
        Ok((spec, loaded))
    }

    /// Reads the file into a [`Table`].
    ///
    /// # Errors
    /// See [`LoadError`].
    pub fn load(&self) -> Result<Table, LoadError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| LoadError::File(format!("cannot read: {e}")))?;
        match self.format {
            TableFormat::Csv => self.load_csv(&text),
            TableFormat::Json => self.load_json(&text),
        }
    }

    fn load_csv(&self, text: &str) -> Result<Table, LoadError> {
        let format = CsvFormat::new(&self.csv).map_err(LoadError::File)?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, first) = lines
            .next()
            .ok_or_else(|| LoadError::File("empty: no header row".into()))?;
        let header = format
            .header(first.as_bytes())
            .map_err(|e| LoadError::File(format!("line 1 (the header): {e}")))?;
        if !header.names().iter().any(|n| n == &self.key) {
            return Err(LoadError::Key(format!(
                "key column `{}` is not in the header of {} (columns: {})",
                self.key,
                self.path.display(),
                header.names().join(", ")
            )));
        }
        let mut rows = HashMap::new();
        for (i, line) in lines {
            let row = format
                .row(&header, line.as_bytes())
                .map_err(|e| LoadError::File(format!("line {}: {e}", i + 1)))?;
            let key = row
                .get(&self.key)
                .and_then(key_text)
                .ok_or_else(|| {
                    LoadError::File(format!(
                        "line {}: no value in key column `{}`",
                        i + 1,
                        self.key
                    ))
                })?
                .into_owned();
            let json = serde_json::to_string(&row).expect("a JSON object serializes");
            rows.insert(key, json.into_boxed_str());
        }
        Ok(Table { rows })
    }

    fn load_json(&self, text: &str) -> Result<Table, LoadError> {
        let mut rows = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line)
                .map_err(|e| LoadError::File(format!("line {}: invalid JSON: {e}", i + 1)))?;
            if !value.is_object() {
                return Err(LoadError::File(format!(
                    "line {}: a table row must be a JSON object",
                    i + 1
                )));
            }
            let key = value
                .pointer(&self.key)
                .and_then(key_text)
                .ok_or_else(|| {
                    LoadError::File(format!("line {}: no value at key `{}`", i + 1, self.key))
                })?
                .into_owned();
            rows.insert(key, line.into());
        }
        Ok(Table { rows })
    }
}

fn table_error(
    table: &ComponentTable,
    source: &ConfigSource,
    field: &str,
    message: &str,
) -> ConfigError {
    source.error(
        table.field_span(field).unwrap_or(table.span.clone()),
        message,
    )
}

/// The daemon's lookup tables by name, as stages and plugins read them.
pub type TableSet = std::collections::BTreeMap<String, Arc<TableSlot>>;

impl crate::wasm::keyed::TableLookup for TableSet {
    fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, String> {
        let slot = self.get(table).ok_or_else(|| {
            let known: Vec<&str> = self.keys().map(String::as_str).collect();
            format!(
                "no table `{table}` (the daemon's tables: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        })?;
        Ok(slot.current().get(key).map(str::to_string))
    }
}

/// A table that runs: the current [`Table`], swapped whole when its file
/// changes. Shared by every `join` stage that reads it.
#[derive(Debug)]
pub struct TableSlot {
    /// How it is read.
    pub spec: TableSpec,
    current: ArcSwap<Table>,
    /// Loads that replaced the table (the first one not counted).
    pub reloads: AtomicU64,
    /// Loads that failed and kept the old table.
    pub failed_reloads: AtomicU64,
}

impl TableSlot {
    /// A slot holding `table`, loaded from `spec`.
    pub fn new(spec: TableSpec, table: Table) -> Arc<Self> {
        Arc::new(TableSlot {
            spec,
            current: ArcSwap::from_pointee(table),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
        })
    }

    /// The table now (held for a whole batch).
    pub fn current(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// Reads the file again; swaps the new table in when it loads, keeps the
    /// old one and logs why when it does not. Returns whether it swapped.
    pub fn reload(&self) -> bool {
        match self.spec.load() {
            Ok(table) => {
                let rows = table.len();
                self.current.store(Arc::new(table));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(table = %self.spec.name, rows, "lookup table reloaded");
                true
            }
            Err(e) => {
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    table = %self.spec.name,
                    path = %self.spec.path.display(),
                    "lookup table file cannot be loaded, the old table stays: {e}"
                );
                false
            }
        }
    }

    /// Watches the file and reloads the table when it changes, until the
    /// watcher returned is dropped.
    ///
    /// # Errors
    /// The file's folder cannot be watched.
    pub fn watch(self: &Arc<Self>) -> notify::Result<notify::RecommendedWatcher> {
        let slot = self.clone();
        crate::wasm::reload::watch_file(&self.spec.path, move || {
            slot.reload();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &Path, format: TableFormat, key: &str) -> TableSpec {
        TableSpec {
            name: "t".into(),
            path: path.to_path_buf(),
            format,
            key: key.into(),
            csv: CsvOptions::default(),
        }
    }

    #[test]
    fn a_csv_table_is_keyed_by_its_column_and_rows_are_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(
            &file,
            "faa,name,alt\nJFK,John F Kennedy Intl,13\r\nLGA,\"La Guardia, NY\",22\n",
        )
        .unwrap();
        let table = spec(&file, TableFormat::Csv, "faa").load().unwrap();
        assert_eq!(table.len(), 2);
        let row: Value = serde_json::from_str(table.get("LGA").unwrap()).unwrap();
        assert_eq!(
            row,
            serde_json::json!({"faa": "LGA", "name": "La Guardia, NY", "alt": "22"})
        );
        assert!(table.get("EWR").is_none());
        match spec(&file, TableFormat::Csv, "code").load() {
            Err(LoadError::Key(m)) => assert!(m.contains("columns: faa, name, alt"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_ndjson_table_is_keyed_by_a_pointer_and_later_rows_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.ndjson");
        std::fs::write(
            &file,
            "{\"id\":{\"n\":7},\"v\":1}\n\n{\"id\":{\"n\":\"x\"},\"v\":2}\n{\"id\":{\"n\":7},\"v\":3}\n",
        )
        .unwrap();
        let table = spec(&file, TableFormat::Json, "/id/n").load().unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(table.get("7"), Some("{\"id\":{\"n\":7},\"v\":3}"));
        assert_eq!(table.get("x"), Some("{\"id\":{\"n\":\"x\"},\"v\":2}"));
        std::fs::write(&file, "{\"id\":{\"n\":1}}\n[1]\n").unwrap();
        assert_eq!(
            spec(&file, TableFormat::Json, "/id/n").load().unwrap_err(),
            LoadError::File("line 2: a table row must be a JSON object".into())
        );
    }

    #[test]
    fn a_broken_file_keeps_the_old_table_and_a_good_one_swaps_in() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(&file, "k,v\na,1\n").unwrap();
        let spec = spec(&file, TableFormat::Csv, "k");
        let slot = TableSlot::new(spec.clone(), spec.load().unwrap());
        let before = slot.current();
        std::fs::write(&file, "k,v\nb,\"2\n").unwrap();
        assert!(!slot.reload());
        assert!(Arc::ptr_eq(&before, &slot.current()), "the old table stays");
        assert_eq!(slot.failed_reloads.load(Ordering::Relaxed), 1);
        std::fs::write(&file, "k,v\nb,2\n").unwrap();
        assert!(slot.reload());
        assert!(slot.current().get("a").is_none());
        assert!(slot.current().get("b").is_some());
        // A batch holding the old table still reads it whole.
        assert!(before.get("a").is_some());
    }

    #[test]
    fn the_watcher_swaps_the_table_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(&file, "k,v\na,1\n").unwrap();
        let spec = spec(&file, TableFormat::Csv, "k");
        let slot = TableSlot::new(spec.clone(), spec.load().unwrap());
        let _watcher = slot.watch().unwrap();
        // Written elsewhere and renamed over, as editors and `mv` do.
        let tmp = dir.path().join("a.csv.tmp");
        std::fs::write(&tmp, "k,v\nz,9\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while slot.current().get("z").is_none() {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(slot.current().get("a").is_none());
    }
}
