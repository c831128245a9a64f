//! The `postgres` sink: each record becomes a row of a PostgreSQL table, a
//! column per JSON pointer, one statement and one transaction per batch.
//!
//! ```toml
//! [sinks.db]
//! type = "postgres"
//! url = "host=127.0.0.1 port=5432 user=sluice dbname=flights"  # or postgresql://…
//! password_file = "secrets/pg"     # optional: the password, read at start
//! table = "hourly"                 # or "schema.table"
//! columns = { key = "/key", window_start = "/window_start", delayed = "/delayed" }
//! mode = "upsert"                  # append (default) | upsert
//! key = ["key", "window_start"]    # upsert: the conflict columns (a unique index)
//! create_table = { key = "text", window_start = "timestamptz", delayed = "bigint" }  # optional
//! ```
//!
//! How a batch is written: its rows go to the server as one JSON array in one
//! statement, `INSERT INTO t (cols) SELECT cols FROM
//! jsonb_to_recordset($1::text::jsonb) AS x(col type, …)` — the server
//! converts each value with the column's own type (PostgreSQL docs, "JSON
//! Functions": `jsonb_to_recordset`), so a batch is one round trip and one
//! transaction: all of its rows are in the table, or none. `upsert` adds `ON
//! CONFLICT (key) DO UPDATE SET col = EXCLUDED.col` (PostgreSQL docs,
//! "INSERT … ON CONFLICT"); within a batch, the last row of a key wins.
//!
//! Delivery: a batch the server did not take because the connection failed
//! (the server down or restarting, a network error) is sent again on a new
//! connection, with back-off, until it goes through (see
//! [`super::Retry`]): the pipelines wait meanwhile, nothing is dropped. After a
//! crash, a checkpointed pipeline writes again the rows since its last
//! checkpoint: `upsert` rows converge to the same values (window rows in
//! `update` mode have an exactly-once *effect*); `append` is at-least-once.
//! An error the server gives for the data itself (a constraint, a value the
//! column type refuses) stops the sink with the server's message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use sluice_plugin_sdk::Batch;
use toml::Spanned;

use super::{Built, Output, Resume, Retry, SinkSpec};
use crate::config::{BuildContext, ConfigError};

/// `[sinks.NAME] type = "postgres"`: the kind's own fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection string: libpq's `key=value` form or a `postgresql://` URL
    /// (PostgreSQL docs, "Connection Strings").
    pub url: Option<Spanned<String>>,
    /// A file holding the password (its first line), relative to the config
    /// file: kept out of the config.
    pub password_file: Option<Spanned<PathBuf>>,
    /// The table, `name` or `schema.name` (quoted as identifiers).
    pub table: Option<Spanned<String>>,
    /// Column → JSON pointer (RFC 6901) of the value in the record; a value
    /// the record lacks is NULL.
    pub columns: Option<Spanned<BTreeMap<String, String>>>,
    /// `append` (default) or `upsert`.
    #[serde(default)]
    pub mode: Mode,
    /// `upsert`: the columns of the conflict target (a primary key or unique
    /// index of the table).
    pub key: Option<Spanned<Vec<String>>>,
    /// Column → SQL type: create the table with these columns if it does not
    /// exist (with `upsert`, `key` as its primary key).
    pub create_table: Option<Spanned<BTreeMap<String, String>>>,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `INSERT`: every record a new row.
    #[default]
    Append,
    /// `INSERT … ON CONFLICT (key) DO UPDATE`: a record replaces the row of
    /// its key (window rows in `update` output mode).
    Upsert,
}

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl super::SinkConfig for PostgresConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Built, ConfigError> {
        let need = |field: &str| {
            cx.error_at(
                field,
                format!("sink `{}`: a postgres sink needs `{field}`", cx.name),
            )
        };
        let url = self.url.as_ref().ok_or_else(|| need("url"))?;
        let mut connect: postgres::Config = url.get_ref().parse().map_err(|e| {
            cx.config
                .error(url.span(), format!("not a connection string: {e}"))
        })?;
        if connect.get_connect_timeout().is_none() {
            connect.connect_timeout(CONNECT_TIMEOUT);
        }
        if connect.get_application_name().is_none() {
            connect.application_name("sluice");
        }
        let password_file = self
            .password_file
            .as_ref()
            .map(|p| (crate::config::resolve(cx.base, p.get_ref()), p.span()));
        if let Some((path, span)) = &password_file {
            std::fs::metadata(path).map_err(|e| {
                cx.config
                    .error(span.clone(), format!("cannot read {}: {e}", path.display()))
            })?;
        }
        let table = self.table.as_ref().ok_or_else(|| need("table"))?;
        let quoted_table =
            quote_table(table.get_ref()).map_err(|e| cx.config.error(table.span(), e))?;
        let columns = self.columns.as_ref().ok_or_else(|| need("columns"))?;
        if columns.get_ref().is_empty() {
            return Err(cx.config.error(columns.span(), "`columns` is empty"));
        }
        let mut pointers = Vec::new();
        for (column, pointer) in columns.get_ref() {
            crate::decode::Pointer::parse(pointer).map_err(|e| {
                cx.config
                    .error(columns.span(), format!("column `{column}`: {e}"))
            })?;
            pointers.push((column.clone(), pointer.clone()));
        }
        let key = match (self.mode, &self.key) {
            (Mode::Upsert, None) => return Err(need("key")),
            (Mode::Append, Some(k)) => {
                return Err(cx.config.error(k.span(), "`key` is for mode = \"upsert\""));
            }
            (Mode::Upsert, Some(k)) => {
                if k.get_ref().is_empty() {
                    return Err(cx.config.error(k.span(), "`key` is empty"));
                }
                if let Some(c) = k
                    .get_ref()
                    .iter()
                    .find(|c| !columns.get_ref().contains_key(*c))
                {
                    return Err(cx
                        .config
                        .error(k.span(), format!("key column `{c}` is not in `columns`")));
                }
                k.get_ref().clone()
            }
            (Mode::Append, None) => Vec::new(),
        };
        if let Some(create) = &self.create_table
            && let Some(c) = columns
                .get_ref()
                .keys()
                .find(|c| !create.get_ref().contains_key(*c))
        {
            return Err(cx.config.error(
                create.span(),
                format!("column `{c}` has no type in `create_table`"),
            ));
        }
        let sink = PostgresSink {
            connect,
            password_file: password_file.map(|(p, _)| p),
            table: quoted_table,
            table_text: table.get_ref().clone(),
            columns: pointers,
            mode: self.mode,
            key,
            create_table: self.create_table.as_ref().map(|c| c.get_ref().clone()),
        };
        // Look at the table now when the server answers, so that a missing
        // table or column is a located config error (`validate` too); a
        // server that does not answer is not: the sink retries at start.
        if sink.create_table.is_none() {
            match std::thread::scope(|s| s.spawn(|| sink.probe()).join()) {
                Ok(Ok(Probe::Ok)) => {}
                Ok(Ok(Probe::Wrong(message))) => {
                    return Err(cx.config.error(table.span(), message));
                }
                Ok(Err(e)) => tracing::warn!(
                    sink = cx.name,
                    "cannot check table {} now: {e:#} (the sink connects again when it starts)",
                    table.get_ref()
                ),
                Err(_) => tracing::warn!(sink = cx.name, "the table check panicked"),
            }
        }
        Ok(Built {
            spec: SinkSpec(Arc::new(sink)),
            claims: Vec::new(),
        })
    }
}

/// `name` or `schema.name` as a quoted SQL identifier (`"a""b"` for `a"b`).
fn quote_table(table: &str) -> Result<String, String> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("table {table:?}: use `name` or `schema.name`"));
    }
    Ok(parts.iter().map(|p| quote(p)).collect::<Vec<_>>().join("."))
}

/// A quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A postgres sink, built.
pub struct PostgresSink {
    connect: postgres::Config,
    password_file: Option<PathBuf>,
    /// Quoted.
    table: String,
    /// As configured, for messages.
    table_text: String,
    /// (column, JSON pointer), by column name.
    columns: Vec<(String, String)>,
    mode: Mode,
    key: Vec<String>,
    create_table: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for PostgresSink {
    // The identity of the sink for a config reload, without the password a
    // connection string may hold.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("hosts", &self.connect.get_hosts())
            .field("ports", &self.connect.get_ports())
            .field("user", &self.connect.get_user())
            .field("dbname", &self.connect.get_dbname())
            .field(
                "password",
                &self
                    .connect
                    .get_password()
                    .map(crate::wasm::plugin::content_version),
            )
            .field("password_file", &self.password_file)
            .field("table", &self.table)
            .field("columns", &self.columns)
            .field("mode", &self.mode)
            .field("key", &self.key)
            .field("create_table", &self.create_table)
            .finish()
    }
}

/// What a look at the table found.
enum Probe {
    Ok,
    /// The table or a column is missing: the message says which.
    Wrong(String),
}

impl PostgresSink {
    fn client(&self) -> anyhow::Result<postgres::Client> {
        let mut config = self.connect.clone();
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            config.password(text.lines().next().unwrap_or_default());
        }
        config
            .connect(postgres::NoTls)
            .map_err(|e| anyhow::Error::new(e).context(Retry("cannot connect to PostgreSQL")))
    }

    /// The table's columns and their SQL types (`format_type`); none when the
    /// table does not exist.
    fn table_types(
        &self,
        client: &mut postgres::Client,
    ) -> anyhow::Result<Option<BTreeMap<String, String>>> {
        let exists: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&self.table])?
            .get(0);
        if exists.is_none() {
            return Ok(None);
        }
        let rows = client.query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&self.table],
        )?;
        Ok(Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }

    /// Connects and checks that the table has every column.
    fn probe(&self) -> anyhow::Result<Probe> {
        let mut client = self.client()?;
        let Some(types) = self.table_types(&mut client)? else {
            return Ok(Probe::Wrong(format!(
                "table {} does not exist in database {:?} (create it, or give its columns' types in `create_table`)",
                self.table_text,
                self.connect.get_dbname().unwrap_or_default()
            )));
        };
        let missing: Vec<&str> = (self.columns.iter())
            .map(|(c, _)| c.as_str())
            .filter(|c| !types.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Ok(Probe::Wrong(format!(
                "table {} has no column {} (it has: {})",
                self.table_text,
                missing.join(", "),
                types.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Probe::Ok)
    }

    /// Creates the table if `create_table` asks for it and it is missing.
    fn create(&self, client: &mut postgres::Client) -> anyhow::Result<()> {
        let Some(types) = &self.create_table else {
            return Ok(());
        };
        let mut columns: Vec<String> = types
            .iter()
            .map(|(c, t)| format!("{} {t}", quote(c)))
            .collect();
        if !self.key.is_empty() {
            let key: Vec<String> = self.key.iter().map(|c| quote(c)).collect();
            columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                self.table,
                columns.join(", ")
            ))
            .with_context(|| format!("cannot create table {}", self.table_text))
    }

    /// The statement that writes a batch, given the table's column types.
    fn statement(&self, types: &BTreeMap<String, String>) -> anyhow::Result<String> {
        let mut record = Vec::new();
        for (column, _) in &self.columns {
            let ty = types
                .get(column)
                .with_context(|| format!("table {} has no column `{column}`", self.table_text))?;
            record.push(format!("{} {ty}", quote(column)));
        }
        let names: Vec<String> = self.columns.iter().map(|(c, _)| quote(c)).collect();
        let names = names.join(", ");
        let mut sql = format!(
            "INSERT INTO {} ({names}) SELECT {names} FROM jsonb_to_recordset($1::text::jsonb) AS x({})",
            self.table,
            record.join(", ")
        );
        if self.mode == Mode::Upsert {
            let key: Vec<String> = self.key.iter().map(|c| quote(c)).collect();
            let set: Vec<String> = (self.columns.iter())
                .filter(|(c, _)| !self.key.contains(c))
                .map(|(c, _)| format!("{0} = EXCLUDED.{0}", quote(c)))
                .collect();
            if set.is_empty() {
                sql += &format!(" ON CONFLICT ({}) DO NOTHING", key.join(", "));
            } else {
                sql += &format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    key.join(", "),
                    set.join(", ")
                );
            }
        }
        Ok(sql)
    }
}

impl super::Sink for PostgresSink {
    fn open(&self, _name: &str, _resume: Option<Resume>) -> anyhow::Result<Box<dyn Output>> {
        let sink = PostgresSink {
            connect: self.connect.clone(),
            password_file: self.password_file.clone(),
            table: self.table.clone(),
            table_text: self.table_text.clone(),
            columns: self.columns.clone(),
            mode: self.mode,
            key: self.key.clone(),
            create_table: self.create_table.clone(),
        };
        Ok(Box::new(PostgresOutput {
            sink,
            client: None,
            statement: None,
            text: Vec::new(),
        }))
    }
}

/// A postgres sink's connection; made (again) when a batch comes.
struct PostgresOutput {
    sink: PostgresSink,
    client: Option<postgres::Client>,
    /// The statement for the table's current columns.
    statement: Option<String>,
    /// The rows of the batch being written, as a JSON array.
    text: Vec<u8>,
}

impl PostgresOutput {
    /// The batch's rows as a JSON array of objects (column → value; a value
    /// the record lacks is null). With `upsert`, the last row of each key.
    fn rows(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let mut rows: Vec<serde_json::Map<String, Value>> = Vec::with_capacity(batch.len());
        let mut at: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        for event in batch {
            let value: Value = serde_json::from_slice(event.value()).with_context(|| {
                format!(
                    "a record is not JSON: {}",
                    String::from_utf8_lossy(&event.value()[..event.value().len().min(200)])
                )
            })?;
            let row: serde_json::Map<String, Value> = (self.sink.columns.iter())
                .map(|(c, p)| (c.clone(), value.pointer(p).cloned().unwrap_or(Value::Null)))
                .collect();
            if self.sink.mode == Mode::Upsert {
                let key: Vec<String> = self.sink.key.iter().map(|k| row[k].to_string()).collect();
                if let Some(&i) = at.get(&key) {
                    rows[i] = row;
                    continue;
                }
                at.insert(key, rows.len());
            }
            rows.push(row);
        }
        self.text.clear();
        serde_json::to_writer(&mut self.text, &rows)?;
        Ok(())
    }

    /// A connection, with the table made (if asked) and the statement ready.
    fn connected(&mut self) -> anyhow::Result<&mut postgres::Client> {
        if self.client.as_ref().is_none_or(postgres::Client::is_closed) {
            self.client = None;
            let mut client = self.sink.client()?;
            self.sink.create(&mut client).map_err(retry_if_connection)?;
            let types = self
                .sink
                .table_types(&mut client)
                .map_err(retry_if_connection)?
                .with_context(|| format!("table {} does not exist", self.sink.table_text))?;
            self.statement = Some(self.sink.statement(&types)?);
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected"))
    }
}

/// Marks an error of the connection (not of the data) as one to retry: the
/// server went away or restarts (SQLSTATE class 08, 57P01–57P03), is out of
/// resources (class 53), or a serialization failure or deadlock (40001,
/// 40P01) — PostgreSQL docs, "Appendix A. Error Codes".
fn retry_if_connection(e: anyhow::Error) -> anyhow::Error {
    let Some(pg) = e.downcast_ref::<postgres::Error>() else {
        return e;
    };
    let retry = pg.is_closed()
        || match pg.code() {
            None => true, // an I/O error: no SQLSTATE
            Some(code) => {
                let code = code.code();
                code.starts_with("08")
                    || code.starts_with("53")
                    || ["57P01", "57P02", "57P03", "40001", "40P01"].contains(&code)
            }
        };
    if retry {
        e.context(Retry("the PostgreSQL connection failed"))
    } else {
        e
    }
}

impl Output for PostgresOutput {
    fn write_batch(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.rows(batch)?;
        self.connected()?;
        let client = self.client.as_mut().expect("connected");
        let statement = self.statement.as_deref().expect("prepared");
        let text = std::str::from_utf8(&self.text).expect("JSON text");
        match client.execute(statement, &[&text]) {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = retry_if_connection(anyhow::Error::new(e));
                if super::is_transient(&e) {
                    // A new connection for the next try.
                    self.client = None;
                }
                Err(e.context(format!("cannot write to table {}", self.sink.table_text)))
            }
        }
    }

    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        // Each batch was committed when written.
        Ok(None)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(client) = self.client.take() {
            let _ = client.close();
        }
        Ok(())
    }
}
