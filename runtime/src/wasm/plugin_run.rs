//! `sluice plugin run FILE.wasm [--config k=v] < events.ndjson`: runs a plugin
//! over a file of events without a daemon (the `smdk test` / `rpk transform`
//! equivalent), for plugin authors and golden tests.
//!
//! Lines of the input are events (blank lines skipped), cut into batches of
//! `--batch` records, each run through one instance of the plugin under the
//! daemon's sandbox and limits. The output events' values go to stdout, one per
//! line; each rejection and each failed batch is reported on stderr with its
//! input line number; a summary line ends stderr. With `--expect FILE`, the
//! output is compared with FILE line by line instead of being printed.
//!
//! An aggregator component (the `aggregator` world) is run as a window holding
//! every input event: `create`, then `accumulate` once per batch, then `finish`,
//! whose JSON is the one output line. With `--field`, each event's value is the
//! JSON text of that field (null or missing: skipped), as an aggregate's
//! `field` gives it in the daemon.

use std::io::{BufRead, Write};
use std::path::Path;

/// `eprintln!` that does not panic when stderr is closed (`sluice plugin run …
/// 2>&1 >/dev/null | head -1`): the line is dropped instead.
#[macro_export]
macro_rules! eprintln_or_drop {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use sluice_plugin_sdk::Batch;

use crate::decode::Decoder;
use crate::wasm::plugin::{Limits, LogTags, PluginHost};

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Pairs passed to `configure`.
    pub config: Vec<(String, String)>,
    /// Key and event-time extraction (JSON pointers), as a source's.
    pub decoder: Option<Decoder>,
    /// Records per batch (per `process` or `accumulate` call).
    pub batch: usize,
    /// Aggregators: the field whose JSON text each event's value becomes.
    pub field: Option<crate::decode::Pointer>,
    /// Memory limit and deadline of the instance.
    pub limits: Limits,
    /// Keyed processors: what the `tables` import reads (`--table`).
    pub tables: Option<std::sync::Arc<dyn crate::wasm::keyed::TableLookup>>,
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Input lines that are not blank (those `skipped` included), as the
    /// daemon's `records_in` counts lines read.
    pub records_in: u64,
    /// Output events.
    pub records_out: u64,
    /// Events the plugin rejected.
    pub rejected: u64,
    /// Events of batches that failed (trap, timeout, error result).
    pub failed: u64,
    /// Input lines that could not be decoded (`--key`/`--timestamp`): the
    /// daemon would dead-letter them before the plugin.
    pub skipped: u64,
    /// Output events holding a line break: the daemon would dead-letter them
    /// (its sinks write one record per line).
    pub broken: u64,
    /// Output lines, kept when comparing with an expected output.
    pub output: Vec<Vec<u8>>,
}

impl RunReport {
    /// Takes one output value of the plugin's call over `lines` (the input
    /// lines, for the message): written to `out` as a line (or kept, with
    /// `keep_output`), or counted as `broken` when it holds a line break,
    /// which the daemon would dead-letter.
    ///
    /// # Errors
    /// `out` or `diag` cannot be written.
    pub fn emit(
        &mut self,
        value: &[u8],
        lines: &[u64],
        keep_output: bool,
        out: &mut dyn Write,
        diag: &mut dyn Write,
    ) -> std::io::Result<()> {
        if value.contains(&b'\n') {
            self.broken += 1;
            return writeln!(
                diag,
                "broken: an output of {} contains a line break (the daemon dead-letters it)",
                span(lines)
            );
        }
        self.records_out += 1;
        if keep_output {
            self.output.push(value.to_vec());
            Ok(())
        } else {
            out.write_all(value)?;
            out.write_all(b"\n")
        }
    }
}

/// Runs the plugin at `file` over `input`; output values go to `out` (unless
/// `keep_output`), diagnostics to `diag`.
///
/// # Errors
/// The plugin cannot be loaded or configured, or the input cannot be read.
pub fn run(
    host: &PluginHost,
    file: &Path,
    options: &RunOptions,
    input: impl BufRead,
    out: &mut impl Write,
    diag: &mut impl Write,
    keep_output: bool,
) -> anyhow::Result<RunReport> {
    let plugin = host.load(file)?;
    run_loaded(&plugin, options, input, out, diag, keep_output)
}

/// [`run`] for a plugin already loaded.
///
/// # Errors
/// As [`run`]; a keyed processor is refused (its runner,
/// `pipeline::keyed::run_plugin`, is the pipeline's).
pub fn run_loaded(
    plugin: &crate::wasm::plugin::Plugin,
    options: &RunOptions,
    input: impl BufRead,
    out: &mut impl Write,
    diag: &mut impl Write,
    keep_output: bool,
) -> anyhow::Result<RunReport> {
    if plugin.world() == crate::wasm::plugin::World::Aggregator {
        return run_aggregator(plugin, options, input, out, diag, keep_output);
    }
    if plugin.world() == crate::wasm::plugin::World::Keyed {
        // Keyed state is the pipeline's (this module sits below it).
        anyhow::bail!(
            "{} is a keyed processor: run it with sluice::pipeline::keyed::run_plugin",
            plugin.name
        );
    }
    let tags = LogTags::standalone("plugin-run", plugin);
    let mut instance = plugin
        .instantiate(&options.config, options.limits, tags.clone())
        .map_err(|e| anyhow::anyhow!("{} ({}) does not start: {e}", plugin.name, plugin.version))?;
    let mut report = RunReport::default();
    let mut batch = Batch::new();
    // Input line number of each event of the batch.
    let mut lines: Vec<u64> = Vec::new();
    let mut flush = |batch: &mut Batch,
                     lines: &mut Vec<u64>,
                     report: &mut RunReport,
                     out: &mut dyn Write,
                     diag: &mut dyn Write|
     -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        match instance.process(batch) {
            Ok(processed) => {
                for (index, reason) in &processed.rejected {
                    writeln!(diag, "rejected: line {}: {reason}", lines[*index as usize])?;
                }
                report.rejected += processed.rejected.len() as u64;
                for event in &processed.events {
                    report.emit(event.value(), lines, keep_output, out, diag)?;
                }
            }
            Err(e) => {
                writeln!(diag, "failed: {}: {e}", span(lines))?;
                report.failed += batch.len() as u64;
                if e.poisons_instance() {
                    instance = plugin
                        .instantiate(&options.config, options.limits, tags.clone())
                        .map_err(|e| anyhow::anyhow!("cannot restart the plugin: {e}"))?;
                }
            }
        }
        batch.clear();
        lines.clear();
        Ok(())
    };
    for_each_event(
        input,
        options,
        &mut report,
        diag,
        |line_no, key, ts, line, members, report, diag| {
            // With the members the decoder found, as the daemon's parallel
            // decoders hand them to a package 0.3.0 processor.
            if members.is_empty() {
                batch.push(key, line, ts);
            } else {
                batch.push_indexed(key, line, ts, members);
            }
            lines.push(line_no);
            if batch.len() >= options.batch {
                flush(&mut batch, &mut lines, report, out, diag)?;
            }
            Ok(())
        },
    )?;
    flush(&mut batch, &mut lines, &mut report, out, diag)?;
    out.flush()?;
    Ok(report)
}

/// Calls `each(line number, key, event time, line, members, …)` for every
/// event of `input` (blank lines skipped, a final `\r` cut), decoded with the
/// options' `--key`/`--timestamp` (`members`: the line's top-level members
/// the decoder found, see [`Decoder::decode_indexed`]; empty without
/// `--key`/`--timestamp`); a line that does not decode is reported on
/// `diag` and counted as skipped, not passed on.
pub fn for_each_event<D: Write>(
    input: impl BufRead,
    options: &RunOptions,
    report: &mut RunReport,
    diag: &mut D,
    mut each: impl FnMut(
        u64,
        Option<&[u8]>,
        i64,
        &[u8],
        &[u16],
        &mut RunReport,
        &mut D,
    ) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut line_no = 0u64;
    let mut members = Vec::new();
    for line in input.split(b'\n') {
        let mut line = line?;
        line_no += 1;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Every line read, as the daemon's `in` (a skipped one included).
        report.records_in += 1;
        let (key, ts) = match &options.decoder {
            Some(decoder) => match decoder.decode_indexed(&line, Some(&mut members)) {
                Ok(d) => (d.key, d.timestamp_ms.unwrap_or(0)),
                Err(reason) => {
                    writeln!(
                        diag,
                        "skipped: line {line_no}: {reason} (the daemon dead-letters it)"
                    )?;
                    report.skipped += 1;
                    continue;
                }
            },
            None => (None, 0),
        };
        each(line_no, key.as_deref(), ts, &line, &members, report, diag)?;
    }
    Ok(())
}

/// [`run`] for an aggregator: every event in one window, run through the
/// daemon's own aggregator runtime ([`crate::wasm::udaf::Udf`]: the same batching,
/// one-by-one retry and `finish` handling).
fn run_aggregator(
    plugin: &crate::wasm::plugin::Plugin,
    options: &RunOptions,
    input: impl BufRead,
    out: &mut impl Write,
    diag: &mut impl Write,
    keep_output: bool,
) -> anyhow::Result<RunReport> {
    use crate::wasm::udaf::{Udf, UdfSpec};
    let spec = std::sync::Arc::new(UdfSpec {
        label: format!("aggregate:{}", plugin.name),
        slot: crate::wasm::reload::PluginSlot::new(plugin.clone()),
        config: options.config.clone(),
        limits: options.limits,
    });
    let width = usize::from(options.field.is_some());
    let mut udf = Udf::start("plugin-run", 0, options.field.as_ref().map(|_| 0), spec)?;
    let mut state = vec![udf.initial.clone()];
    let mut report = RunReport::default();
    let mut batch = Batch::new();
    // Per event of the batch: its input line and (with --field) the field.
    let mut lines: Vec<u64> = Vec::new();
    let mut values: Vec<Option<serde_json::Value>> = Vec::new();
    let mut flush = |batch: &mut Batch,
                     lines: &mut Vec<u64>,
                     values: &mut Vec<Option<serde_json::Value>>,
                     report: &mut RunReport,
                     diag: &mut dyn Write|
     -> anyhow::Result<()> {
        let pairs: Vec<(u32, usize)> = (0..batch.len()).map(|i| (0, i)).collect();
        for failed in udf.accumulate(&mut state, &pairs, batch, values, width) {
            writeln!(
                diag,
                "failed: line {}: {} (the daemon dead-letters it)",
                lines[failed.event], failed.reason
            )?;
            report.failed += 1;
        }
        batch.clear();
        lines.clear();
        values.clear();
        Ok(())
    };
    let mut row = [None];
    // Without --field, an aggregator that fails on every event is most likely
    // one that takes a field's value: said once, with the first event's fields.
    let mut first_fields: Option<Vec<String>> = None;
    let mut hinted = options.field.is_some();
    let mut hint = |report: &RunReport, fields: &Option<Vec<String>>, diag: &mut dyn Write| {
        if hinted || report.failed == 0 || report.failed < report.records_in - report.skipped {
            return Ok::<_, std::io::Error>(());
        }
        hinted = true;
        let pointers = fields.as_ref().map_or_else(String::new, |f| {
            let list: Vec<String> = f.iter().take(8).map(|k| format!("/{k}")).collect();
            format!(
                " (this input's fields: {}{})",
                list.join(", "),
                if f.len() > 8 { ", …" } else { "" }
            )
        });
        writeln!(
            diag,
            "hint: every event failed, and there is no --field: this aggregator gets each whole \
             event. In the daemon an aggregate gets one field of it (its `field`); give it with \
             --field /NAME{pointers}"
        )
    };
    for (i, line) in input.split(b'\n').enumerate() {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line_no = i as u64 + 1;
        report.records_in += 1;
        let (key, ts) = match &options.decoder {
            Some(decoder) => match decoder.decode(&line) {
                Ok(d) => (d.key, d.timestamp_ms.unwrap_or(0)),
                Err(reason) => {
                    writeln!(diag, "skipped: line {line_no}: {reason}")?;
                    report.skipped += 1;
                    continue;
                }
            },
            None => (None, 0),
        };
        if let Some(field) = &options.field {
            if let Err(reason) = crate::decode::extract_into(&line, &[field], &mut row) {
                writeln!(diag, "skipped: line {line_no}: {reason}")?;
                report.skipped += 1;
                continue;
            }
            values.push(row[0].take());
        }
        if first_fields.is_none()
            && let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&line)
        {
            first_fields = Some(map.keys().cloned().collect());
        }
        batch.push(key.as_deref(), &line, ts);
        lines.push(line_no);
        if batch.len() >= options.batch {
            flush(&mut batch, &mut lines, &mut values, &mut report, diag)?;
            hint(&report, &first_fields, diag)?;
        }
    }
    flush(&mut batch, &mut lines, &mut values, &mut report, diag)?;
    hint(&report, &first_fields, diag)?;
    // As the daemon writes it into a window row: parsed, then compact (null
    // when `finish` fails or returns no JSON; the reason is logged).
    let result = udf.finish(&state).remove(0).to_string();
    report.records_out = 1;
    if keep_output {
        report.output.push(result.into_bytes());
    } else {
        out.write_all(result.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(report)
}

/// `line N` or `lines N-M` of a batch.
fn span(lines: &[u64]) -> String {
    match (lines.first(), lines.last()) {
        (Some(a), Some(b)) if a == b => format!("line {a}"),
        (Some(a), Some(b)) => format!("lines {a}-{b}"),
        _ => "no line".into(),
    }
}

/// Compares `output` with the lines of `expected`; `None` when equal, else a
/// description of the first difference.
pub fn compare(output: &[Vec<u8>], expected: &[u8]) -> Option<String> {
    let want: Vec<&[u8]> = expected
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    for (i, (got, want)) in output.iter().zip(&want).enumerate() {
        if got.as_slice() != *want {
            return Some(format!(
                "line {}: expected {}\n         got      {}",
                i + 1,
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(got)
            ));
        }
    }
    match output.len().cmp(&want.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Less => Some(format!(
            "{} output line(s), {} expected: first missing: {}",
            output.len(),
            want.len(),
            String::from_utf8_lossy(want[output.len()])
        )),
        std::cmp::Ordering::Greater => Some(format!(
            "{} output line(s), {} expected: first extra: {}",
            output.len(),
            want.len(),
            String::from_utf8_lossy(&output[want.len()])
        )),
    }
}
