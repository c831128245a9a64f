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
//! How a batch is written, one round trip and one transaction (all of its
//! rows are in the table, or none), the server converting each value with
//! the column's own type:
//! - `append`: `COPY t (cols) FROM STDIN`, the rows in COPY's text format
//!   (PostgreSQL docs, `COPY`, "Text Format": a JSON string is its text, a
//!   number or boolean its JSON text, an object or array its JSON, a null or
//!   missing value `\N`);
//! - `upsert`: the rows as one JSON array in one statement, `INSERT INTO t
//!   (cols) SELECT … FROM jsonb_to_recordset($1::text::jsonb) AS x(col type,
//!   …) ON CONFLICT (key) DO UPDATE SET col = EXCLUDED.col` (PostgreSQL docs,
//!   "JSON Functions" and "INSERT … ON CONFLICT"); within a batch, the last
//!   row of a key wins.
//!
//! Delivery: a batch the server did not take because the connection failed
//! (the server down or restarting, a network error) is sent again on a new
//! connection, with back-off, until it goes through (see
//! [`super::Retry`]): the pipelines wait meanwhile, nothing is dropped. After a
//! crash, a checkpointed pipeline writes again the rows since its last
//! checkpoint: `upsert` rows converge to the same values (window rows in
//! `update` mode have an exactly-once *effect*); `append` is at-least-once.
//! A row the server refuses for its data (SQLSTATE class 22, a value the
//! column's type refuses; class 23, a constraint such as `NOT NULL` or a
//! unique index) goes to the pipeline's dead-letter sink with the server's
//! message, and the others of its batch are written: the batch is written
//! again row by row, each under a savepoint (PostgreSQL docs, `SAVEPOINT`),
//! in one transaction. A record that is not JSON is refused the same way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use sluice_plugin_sdk::Batch;
use toml::Spanned;

use super::{Built, Output, Refused, Resume, Retry, SinkSpec};
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
    /// Exactly-once after a crash, by two-phase commit: the rows between two
    /// checkpoints are one transaction, prepared at the checkpoint and
    /// committed once the checkpoint is saved. Needs a checkpointed pipeline
    /// of its own and `max_prepared_transactions > 0` on the server.
    #[serde(default)]
    pub exactly_once: bool,
    /// How long a connection (its handshake included) or a statement may
    /// take before it counts as a lost connection (and is tried again on a
    /// new one). Default 30s.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::config::de_duration"
    )]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
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
        let mut connect: tokio_postgres::Config = url.get_ref().parse().map_err(|e| {
            cx.config
                .error(url.span(), format!("not a connection string: {e}"))
        })?;
        if connect.get_connect_timeout().is_none() {
            connect.connect_timeout(CONNECT_TIMEOUT);
        }
        if connect.get_application_name().is_none() {
            connect.application_name("sluice");
        }
        if connect.get_options().is_none() {
            // No NOTICE lines in the log ("relation … already exists").
            connect.options("-c client_min_messages=warning");
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
            (Mode::Upsert, None) => {
                return Err(cx.error_at(
                    "mode",
                    format!(
                        "sink `{}`: mode = \"upsert\" needs `key`, the conflict columns (a primary key or unique index)",
                        cx.name
                    ),
                ));
            }
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
            && let Some((c, t)) = create.get_ref().iter().find(|(_, t)| !is_type_name(t))
        {
            return Err(cx.config.error(
                create.span(),
                format!(
                    "column `{c}`: {t:?} is not a type name (letters, digits, _, spaces, (), [], commas)"
                ),
            ));
        }
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
            exactly_once: self.exactly_once,
            name: cx.name.to_string(),
            timeout: self.timeout,
        };
        // Look at the table now when the server answers, so that a missing
        // table or column is a located config error (`validate` too); a
        // server that does not answer is not: the sink retries at start.
        {
            match std::thread::scope(|s| s.spawn(|| sink.probe()).join()) {
                Ok(Ok(Probe::Ok)) => {}
                Ok(Ok(Probe::Wrong(message))) => {
                    return Err(cx.config.error(table.span(), message));
                }
                // The server answered, and refused: a wrong password, a
                // database or role that does not exist.
                Ok(Err(e)) if !super::is_transient(&e) => {
                    return Err(cx.config.error(url.span(), format!("{e:#}")));
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

/// Whether `text` can be an SQL type name (`double precision`,
/// `numeric(10,2)`, `text[]`): nothing that could end the statement.
fn is_type_name(text: &str) -> bool {
    !text.trim().is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _(),[]".contains(c))
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
#[derive(Clone)]
pub struct PostgresSink {
    connect: tokio_postgres::Config,
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
    /// Two-phase commit at checkpoints (see [`PostgresConfig::exactly_once`]).
    exactly_once: bool,
    /// The sink's name, in the names of its prepared transactions.
    name: String,
    /// The longest a connection or a statement may take.
    timeout: Duration,
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
            .field("exactly_once", &self.exactly_once)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A connection, and the runtime its I/O runs on (a current-thread runtime of
/// the sink's own thread): every call is bounded by the sink's `timeout`, so
/// a server that stops answering (stopped, or its machine gone) is a lost
/// connection after that long, not a sink stuck forever.
pub struct Conn {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    timeout: Duration,
}

impl Conn {
    /// Connects (the TCP connection and the startup handshake within
    /// `timeout`).
    ///
    /// # Errors
    /// No answer within `timeout`, or a refusal; marked [`Retry`] unless the
    /// server refused the login or the database (a wrong password, a role or
    /// database that does not exist: SQLSTATE classes 28, 3D).
    fn connect(config: &tokio_postgres::Config, timeout: Duration) -> anyhow::Result<Conn> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The timer is made inside the runtime (it needs its time driver).
        let connected = rt.block_on(async {
            tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls)).await
        });
        let (client, connection) = match connected {
            Err(_) => {
                return Err(
                    anyhow::anyhow!("PostgreSQL did not answer within {timeout:?}")
                        .context(Retry("cannot connect to PostgreSQL")),
                );
            }
            Ok(Err(e)) => {
                let e = retry_if_connection(anyhow::Error::new(e));
                return Err(e.context("cannot connect to PostgreSQL"));
            }
            Ok(Ok(pair)) => pair,
        };
        rt.spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            rt,
            client,
            timeout,
        })
    }

    fn run<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> anyhow::Result<T> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(self.timeout, call).await })
        {
            Ok(result) => Ok(result?),
            Err(_) => Err(
                anyhow::anyhow!("PostgreSQL did not answer within {:?}", self.timeout)
                    .context(Retry("the PostgreSQL connection stalled")),
            ),
        }
    }

    fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> anyhow::Result<tokio_postgres::Row> {
        self.run(self.client.query_one(sql, params))
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> anyhow::Result<Vec<tokio_postgres::Row>> {
        self.run(self.client.query(sql, params))
    }

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> anyhow::Result<u64> {
        self.run(self.client.execute(sql, params))
    }

    fn batch_execute(&mut self, sql: &str) -> anyhow::Result<()> {
        self.run(self.client.batch_execute(sql))
    }

    /// `COPY … FROM STDIN` with `data` (COPY's text format).
    fn copy_in(&mut self, sql: &str, data: &[u8]) -> anyhow::Result<u64> {
        use futures_util::SinkExt as _;
        let client = &self.client;
        self.run(async move {
            let sink = client.copy_in::<_, bytes::Bytes>(sql).await?;
            futures_util::pin_mut!(sink);
            sink.send(bytes::Bytes::copy_from_slice(data)).await?;
            sink.finish().await
        })
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// What a look at the table found.
enum Probe {
    Ok,
    /// The table or a column is missing: the message says which.
    Wrong(String),
}

impl PostgresSink {
    fn client(&self) -> anyhow::Result<Conn> {
        self.client_within(self.timeout)
    }

    /// A connection whose calls each take at most `timeout`.
    fn client_within(&self, timeout: Duration) -> anyhow::Result<Conn> {
        let mut config = self.connect.clone();
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            config.password(text.lines().next().unwrap_or_default());
        }
        Conn::connect(&config, timeout)
    }

    /// The table's columns and their SQL types (`format_type`); none when the
    /// table does not exist.
    fn table_types(&self, client: &mut Conn) -> anyhow::Result<Option<BTreeMap<String, String>>> {
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
        // A server that does not answer holds `validate`, a start or a
        // reload up at most this long.
        let mut client = self.client_within(self.timeout.min(CONNECT_TIMEOUT))?;
        if self.exactly_once {
            let max: String = client
                .query_one("SELECT current_setting('max_prepared_transactions')", &[])?
                .get(0);
            if max.trim() == "0" {
                return Ok(Probe::Wrong(
                    "exactly_once needs prepared transactions, and the server allows none: set max_prepared_transactions (e.g. 16) in postgresql.conf and restart it".into(),
                ));
            }
        }
        let types = self.table_types(&mut client)?;
        if self.create_table.is_some() {
            // Made at start if missing; an existing one must have the columns.
            if types.is_none() {
                return Ok(Probe::Ok);
            }
        }
        let Some(types) = types else {
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
    fn create(&self, client: &mut Conn) -> anyhow::Result<()> {
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
        if self.mode == Mode::Append {
            let names: Vec<String> = self.columns.iter().map(|(c, _)| quote(c)).collect();
            return Ok(format!(
                "COPY {} ({}) FROM STDIN",
                self.table,
                names.join(", ")
            ));
        }
        let mut record = Vec::new();
        for (column, _) in &self.columns {
            let ty = types
                .get(column)
                .with_context(|| format!("table {} has no column `{column}`", self.table_text))?;
            record.push(format!("{} {ty}", quote(column)));
        }
        let names: Vec<String> = self.columns.iter().map(|(c, _)| quote(c)).collect();
        let names = names.join(", ");
        let rows = format!(
            "jsonb_to_recordset($1::text::jsonb) AS x({})",
            record.join(", ")
        );
        let mut sql = if self.mode == Mode::Upsert {
            // The last row of each key in the batch, keys compared as SQL
            // values (`1` and `"1"` into an integer key are one key), so that
            // ON CONFLICT never meets a key twice in one statement.
            let key: Vec<String> = self.key.iter().map(|c| quote(c)).collect();
            let key = key.join(", ");
            format!(
                "INSERT INTO {} ({names}) SELECT DISTINCT ON ({key}) {names} \
                 FROM ROWS FROM (jsonb_to_recordset($1::text::jsonb) AS ({})) \
                 WITH ORDINALITY AS y({names}, \"sluice ordinality\") \
                 ORDER BY {key}, \"sluice ordinality\" DESC",
                self.table,
                record.join(", ")
            )
        } else {
            format!(
                "INSERT INTO {} ({names}) SELECT {names} FROM {rows}",
                self.table
            )
        };
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
    fn open(&self, _name: &str, resume: Option<Resume>) -> anyhow::Result<Box<dyn Output>> {
        // The epoch of the checkpoint resumed from: its prepared transaction
        // and those before it are committed, later ones rolled back.
        let resumed = match resume {
            Some(Resume::CutTo(epoch) | Resume::Keep(Some(epoch))) => Some(epoch),
            Some(Resume::Keep(None)) | None => None,
        };
        Ok(Box::new(PostgresOutput {
            sink: self.clone(),
            client: None,
            statement: None,
            text: Vec::new(),
            spans: Vec::new(),
            refused: Vec::new(),
            two_phase: self.exactly_once.then(|| TwoPhase {
                resumed,
                resolved: false,
                epoch: 0,
                open: false,
                pending: Vec::new(),
                prepared: None,
            }),
        }))
    }

    fn exactly_once(&self) -> bool {
        self.exactly_once
    }
}

/// The state of an `exactly_once` sink's transactions (Flink's
/// `TwoPhaseCommitSinkFunction`, on PostgreSQL's `PREPARE TRANSACTION`): the
/// rows since the last checkpoint are one open transaction; a checkpoint's
/// sync prepares it under the name `sluice:TABLE:SINK:EPOCH` and records
/// EPOCH in the checkpoint; once the checkpoint is saved, `COMMIT PREPARED`.
/// After a crash, the prepared transactions up to the restored checkpoint's
/// epoch are committed and later ones rolled back: each row lands once.
struct TwoPhase {
    /// The epoch of the checkpoint resumed from (none: a fresh start).
    resumed: Option<u64>,
    /// Prepared transactions left by an earlier run have been settled.
    resolved: bool,
    /// The epoch of the open transaction (the last one prepared + 1).
    epoch: u64,
    /// A transaction is open on the connection.
    open: bool,
    /// The batches written in the open transaction (JSON texts): a lost
    /// connection loses the transaction, so they are written again.
    pending: Vec<Vec<u8>>,
    /// Prepared, waiting for its checkpoint to be saved.
    prepared: Option<u64>,
}

/// A postgres sink's connection; made (again) when a batch comes.
struct PostgresOutput {
    sink: PostgresSink,
    client: Option<Conn>,
    /// The statement for the table's current columns.
    statement: Option<String>,
    /// The rows of the batch being written, as a JSON array.
    text: Vec<u8>,
    /// Each row of `text`: its record's index in the batch, and its place.
    spans: Vec<(usize, std::ops::Range<usize>)>,
    /// The records of the batch refused (not JSON; refused by the server).
    refused: Vec<Refused>,
    /// With `exactly_once`.
    two_phase: Option<TwoPhase>,
}

impl PostgresOutput {
    /// The batch's rows as a JSON array of objects (column → value; a value
    /// the record lacks is null), into `text`, with each row's place in it
    /// and its record's index in `rows`; a record that is not JSON is
    /// refused.
    fn rows(&mut self, batch: &Batch) -> anyhow::Result<()> {
        // Written straight into the array's text: no copy of a value, no map
        // per record.
        self.text.clear();
        self.spans.clear();
        let copy = self.sink.mode == Mode::Append;
        if !copy {
            self.text.push(b'[');
        }
        for event in batch {
            let value: Value = match serde_json::from_slice(event.value()) {
                Ok(value) => value,
                Err(e) => {
                    self.refused.push(Refused {
                        index: event.index(),
                        reason: format!("not a JSON record: {e}"),
                    });
                    continue;
                }
            };
            let start = self.text.len();
            if copy {
                for (j, (_, pointer)) in self.sink.columns.iter().enumerate() {
                    if j > 0 {
                        self.text.push(b'\t');
                    }
                    copy_field(&mut self.text, value.pointer(pointer))?;
                }
                self.text.push(b'\n');
                self.spans.push((event.index(), start..self.text.len()));
                continue;
            }
            if !self.spans.is_empty() {
                self.text.push(b',');
            }
            let start = self.text.len();
            self.text.push(b'{');
            for (j, (column, pointer)) in self.sink.columns.iter().enumerate() {
                if j > 0 {
                    self.text.push(b',');
                }
                serde_json::to_writer(&mut self.text, column)?;
                self.text.push(b':');
                serde_json::to_writer(
                    &mut self.text,
                    value.pointer(pointer).unwrap_or(&Value::Null),
                )?;
            }
            self.text.push(b'}');
            self.spans.push((event.index(), start..self.text.len()));
        }
        if !copy {
            self.text.push(b']');
        }
        Ok(())
    }

    /// Writes the batch's rows one by one, each under a savepoint, in the
    /// transaction open on `client`: a row the server refuses for its data
    /// (see [`data_error`]) is rolled back alone and refused with the
    /// server's message. Leaves the accepted rows' JSON array in `text`.
    ///
    /// # Errors
    /// Any other error (the transaction is then lost).
    fn write_row_by_row(&mut self) -> anyhow::Result<()> {
        let client = self.client.as_mut().expect("connected");
        let statement = self.statement.as_deref().expect("prepared");
        let copy = self.sink.mode == Mode::Append;
        let mut accepted = Vec::with_capacity(self.text.len());
        if !copy {
            accepted.push(b'[');
        }
        let mut one = Vec::new();
        for (index, span) in &self.spans {
            let row = &self.text[span.clone()];
            one.clear();
            if copy {
                one.extend_from_slice(row);
            } else {
                one.push(b'[');
                one.extend_from_slice(row);
                one.push(b']');
            }
            client.batch_execute("SAVEPOINT sluice_row")?;
            match write_text(client, copy, statement, &one) {
                Ok(()) => {
                    client.batch_execute("RELEASE SAVEPOINT sluice_row")?;
                    if !copy && accepted.len() > 1 {
                        accepted.push(b',');
                    }
                    accepted.extend_from_slice(row);
                }
                Err(e) => match data_error(&e) {
                    Some(reason) => {
                        client.batch_execute("ROLLBACK TO SAVEPOINT sluice_row")?;
                        self.refused.push(Refused {
                            index: *index,
                            reason: format!("table {}: {reason}", self.sink.table_text),
                        });
                    }
                    None => return Err(e),
                },
            }
        }
        if !copy {
            accepted.push(b']');
        }
        self.text = accepted;
        Ok(())
    }

    /// A connection, with the table made (if asked) and the statement ready.
    fn connected(&mut self) -> anyhow::Result<&mut Conn> {
        if self.client.as_ref().is_none_or(Conn::is_closed) {
            self.client = None;
            let mut client = self.sink.client()?;
            self.sink.create(&mut client).map_err(retry_if_connection)?;
            let types = self
                .sink
                .table_types(&mut client)
                .map_err(retry_if_connection)?
                .with_context(|| format!("table {} does not exist", self.sink.table_text))?;
            self.statement = Some(self.sink.statement(&types)?);
            if let Some(tp) = &mut self.two_phase {
                settle(&self.sink, &mut client, tp).map_err(retry_if_connection)?;
            }
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    /// `exactly_once`: writes the batch in the open transaction (beginning
    /// one, and writing again the batches a lost connection took with it).
    fn write_in_transaction(&mut self) -> anyhow::Result<()> {
        self.connected()?;
        let client = self.client.as_mut().expect("connected");
        let statement = self.statement.as_deref().expect("prepared");
        let tp = self.two_phase.as_mut().expect("two-phase");
        let copy = self.sink.mode == Mode::Append;
        if !tp.open {
            client.batch_execute("BEGIN")?;
            tp.open = true;
            for text in &tp.pending {
                write_text(client, copy, statement, text)?;
            }
        }
        let written = write_text(client, copy, statement, &self.text);
        if let Err(e) = written {
            if data_error(&e).is_none() {
                return Err(e);
            }
            // The statement failed, and the transaction with it: begin it
            // again with the batches before, then this batch row by row.
            client.batch_execute("ROLLBACK")?;
            client.batch_execute("BEGIN")?;
            for text in &tp.pending {
                write_text(client, copy, statement, text)?;
            }
            self.write_row_by_row()?;
        }
        let tp = self.two_phase.as_mut().expect("two-phase");
        tp.pending.push(std::mem::take(&mut self.text));
        Ok(())
    }

    /// Without `exactly_once`: the batch in one statement (its own
    /// transaction); if the server refuses a row for its data, row by row in
    /// one transaction.
    fn write_autocommit(&mut self) -> anyhow::Result<()> {
        self.connected()?;
        let client = self.client.as_mut().expect("connected");
        let statement = self.statement.as_deref().expect("prepared");
        let copy = self.sink.mode == Mode::Append;
        match write_text(client, copy, statement, &self.text) {
            Ok(()) => Ok(()),
            Err(e) if data_error(&e).is_some() => {
                client.batch_execute("BEGIN")?;
                let refused_before = self.refused.len();
                match self.write_row_by_row().and_then(|()| {
                    self.client
                        .as_mut()
                        .expect("connected")
                        .batch_execute("COMMIT")
                }) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        // Nothing of the batch is in: it is written again.
                        self.refused.truncate(refused_before);
                        if let Some(c) = self.client.as_mut() {
                            let _ = c.batch_execute("ROLLBACK");
                        }
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Writes rows: with `copy`, `text` is COPY text for the `COPY` `statement`;
/// else a JSON array, the parameter of `statement`.
fn write_text(client: &mut Conn, copy: bool, statement: &str, text: &[u8]) -> anyhow::Result<()> {
    if copy {
        client.copy_in(statement, text).map(|_| ())
    } else {
        let json = std::str::from_utf8(text).expect("JSON text");
        client.execute(statement, &[&json]).map(|_| ())
    }
}

/// One field in COPY's text format (PostgreSQL docs, `COPY`, "Text
/// Format"): `\N` for a missing or null value, a string's text, any other
/// value's JSON text; backslash, newline, carriage return and tab escaped.
fn copy_field(out: &mut Vec<u8>, value: Option<&Value>) -> anyhow::Result<()> {
    let escape = |out: &mut Vec<u8>, text: &[u8]| {
        for &b in text {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => out.push(b),
            }
        }
    };
    match value {
        None | Some(Value::Null) => out.extend_from_slice(b"\\N"),
        Some(Value::String(s)) => escape(out, s.as_bytes()),
        Some(other) => escape(out, &serde_json::to_vec(other)?),
    }
    Ok(())
}

/// The prepared transactions of `sink` on the server: (epoch, name).
fn prepared(sink: &PostgresSink, client: &mut Conn) -> anyhow::Result<Vec<(u64, String)>> {
    let prefix = gid(sink, 0);
    let prefix = &prefix[..prefix.len() - 1];
    let rows = client.query(
        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1)",
        &[&prefix],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let epoch = name.strip_prefix(prefix)?.parse().ok()?;
            Some((epoch, name))
        })
        .collect())
}

/// The name of the prepared transaction of `epoch`.
fn gid(sink: &PostgresSink, epoch: u64) -> String {
    format!("sluice:{}:{}:{epoch}", sink.table_text, sink.name)
}

/// A quoted SQL string literal (`PREPARE TRANSACTION` takes no parameter).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Settles, on the first connection, what an earlier run left prepared: the
/// transactions up to the resumed checkpoint's epoch are committed (their
/// checkpoint was saved), later ones rolled back (it was not); new epochs
/// start after every epoch seen.
fn settle(sink: &PostgresSink, client: &mut Conn, tp: &mut TwoPhase) -> anyhow::Result<()> {
    if tp.resolved {
        // A new connection after a lost one: the open transaction is gone
        // (its batches are written again), a prepared one survives.
        tp.open = false;
        return Ok(());
    }
    let mut highest = tp.resumed.unwrap_or(0);
    for (epoch, name) in prepared(sink, client)? {
        highest = highest.max(epoch);
        let keep = tp.resumed.is_some_and(|r| epoch <= r);
        let verb = if keep {
            "COMMIT PREPARED"
        } else {
            "ROLLBACK PREPARED"
        };
        tracing::info!(sink = %sink.name, epoch, "{verb} {name} (left by an earlier run)");
        client.batch_execute(&format!("{verb} {}", literal(&name)))?;
    }
    tp.epoch = highest + 1;
    tp.resolved = true;
    Ok(())
}

/// The server's message when `e` is a refusal of the data itself: SQLSTATE
/// class 22 (data exception: a value the column's type refuses) or 23
/// (integrity constraint violation) — PostgreSQL docs, "Appendix A. Error
/// Codes".
fn data_error(e: &anyhow::Error) -> Option<String> {
    let db = e.downcast_ref::<tokio_postgres::Error>()?.as_db_error()?;
    let code = db.code().code();
    if !(code.starts_with("22") || code.starts_with("23")) {
        return None;
    }
    let mut reason = format!("{} (SQLSTATE {code})", db.message());
    if let Some(detail) = db.detail() {
        reason.push_str(": ");
        reason.push_str(detail);
    }
    Some(reason)
}

/// Marks an error of the connection (not of the data) as one to retry: the
/// server went away or restarts (SQLSTATE class 08, 57P01–57P03), is out of
/// resources (class 53), or a serialization failure or deadlock (40001,
/// 40P01) — PostgreSQL docs, "Appendix A. Error Codes".
fn retry_if_connection(e: anyhow::Error) -> anyhow::Error {
    let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() else {
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
        // A batch tried again after a failure starts afresh.
        self.refused.clear();
        if batch.is_empty() {
            return Ok(());
        }
        self.rows(batch)?;
        if self.spans.is_empty() {
            return Ok(());
        }
        let written = if self.two_phase.is_some() {
            self.write_in_transaction()
        } else {
            self.write_autocommit()
        };
        written.map_err(|e| {
            self.refused.clear();
            self.failed(e)
        })
    }

    fn take_refused(&mut self) -> Vec<Refused> {
        std::mem::take(&mut self.refused)
    }

    fn sync(&mut self) -> anyhow::Result<Option<u64>> {
        // Without `exactly_once`, each batch was committed when written.
        if self.two_phase.is_none() {
            return Ok(None);
        }
        if let Err(e) = self.connected() {
            return Err(self.failed(e));
        }
        let client = self.client.as_mut().expect("connected");
        let tp = self.two_phase.as_mut().expect("two-phase");
        if !tp.open {
            // Nothing since the last checkpoint: it stands for this one too.
            return Ok(Some(tp.epoch - 1));
        }
        let name = gid(&self.sink, tp.epoch);
        client
            .batch_execute(&format!("PREPARE TRANSACTION {}", literal(&name)))
            .with_context(|| format!("cannot prepare transaction {name}"))?;
        tp.open = false;
        tp.pending.clear();
        tp.prepared = Some(tp.epoch);
        tp.epoch += 1;
        Ok(Some(tp.epoch - 1))
    }

    fn commits_at_checkpoints(&self) -> bool {
        self.two_phase.is_some()
    }

    fn committed(&mut self) -> anyhow::Result<()> {
        let Some(tp) = &mut self.two_phase else {
            return Ok(());
        };
        let Some(epoch) = tp.prepared.take() else {
            return Ok(());
        };
        let name = gid(&self.sink, epoch);
        let done = self
            .client
            .as_mut()
            .context("no connection")
            .and_then(|c| c.batch_execute(&format!("COMMIT PREPARED {}", literal(&name))));
        if let Err(e) = done {
            // It stays prepared; the next start commits it (its checkpoint
            // is saved), so its rows are late, not lost.
            tracing::warn!(sink = %self.sink.name, "cannot commit {name} now: {e:#}; the next start commits it");
            self.client = None;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        // An open transaction (rows after the last checkpoint) is rolled back
        // with the connection: a resumed run writes them again.
        drop(self.client.take());
        Ok(())
    }
}

impl PostgresOutput {
    /// A write error, marked for a retry when the connection failed (the
    /// connection is then dropped, and a new one made for the next try).
    fn failed(&mut self, e: anyhow::Error) -> anyhow::Error {
        let e = retry_if_connection(e);
        if super::is_transient(&e) {
            self.client = None;
        }
        e.context(format!("cannot write to table {}", self.sink.table_text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn copy_fields_escape_and_null() {
        let field = |v: Option<Value>| {
            let mut out = Vec::new();
            copy_field(&mut out, v.as_ref()).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(field(None), "\\N");
        assert_eq!(field(Some(Value::Null)), "\\N");
        assert_eq!(field(Some(json!("a\tb\nc\\d\re"))), "a\\tb\\nc\\\\d\\re");
        assert_eq!(field(Some(json!(42))), "42");
        assert_eq!(field(Some(json!(true))), "true");
        assert_eq!(
            field(Some(json!({"p50": 1, "s": "x\ty"}))),
            "{\"p50\":1,\"s\":\"x\\\\ty\"}"
        );
    }
}
