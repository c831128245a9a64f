//! The `jq` stock plugin: a jq program from the stage's config, run on every
//! record, by [jaq](https://github.com/01mf02/jaq) compiled into the
//! component. Reference: `docs/plugins/stock/jq.md`.
//!
//! Config:
//! - `program` (required): the jq program, e.g.
//!   `select(.carrier == "UA") | .route = .origin + "-" + .dest`. Compiled
//!   once per instance in `configure`: a syntax error refuses the config
//!   (`sluice validate` reports it at the stage's line).
//! - `args` (optional): a table of variables, `{ carrier = "UA" }` → `$carrier`.
//!
//! Per record: zero outputs drop it (a filter), one replaces it (a map),
//! several replace it in order (a flat-map); each output keeps the record's
//! key, event time and headers. An error (jq's `error`, a type error, input
//! that is not JSON, an output JSON cannot hold such as `nan`) rejects the
//! record with the message — and none of its outputs is emitted.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;
use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};
use stock_common::settings;

type Data = data::JustLut<Val>;

/// A compiled jq program and its variables.
pub struct Jq {
    filter: jaq_core::Filter<Data>,
    vars: Vec<Val>,
}

impl Processor for Jq {
    fn configure(config: &Config) -> Result<Self, String> {
        settings::only(config, &["program", "args"])?;
        let program = config.get("program").ok_or(
            "config `program` is required: a jq program, e.g. `select(.carrier == \"UA\")`",
        )?;
        let args = settings::table(config, "args")?;
        let mut names = Vec::with_capacity(args.len());
        let mut vars = Vec::with_capacity(args.len());
        for (name, value) in &args {
            let json = settings::toml_to_json(value)
                .map_err(|e| format!("config `args`: `{name}`: {e}"))?
                .to_string();
            let val = jaq_json::read::parse_single(json.as_bytes())
                .map_err(|e| format!("config `args`: `{name}`: {e}"))?;
            names.push(format!("${name}"));
            vars.push(val);
        }
        let filter = compile(program, &names)?;
        Ok(Jq { filter, vars })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut buf = Vec::with_capacity(256);
        let mut ends = Vec::new();
        for event in batch {
            buf.clear();
            ends.clear();
            match self.run(event.value(), &mut buf, &mut ends) {
                Ok(()) => {
                    let mut start = 0;
                    for &end in &ends {
                        stock_common::emit(out, &event, &buf[start..end]);
                        start = end;
                    }
                }
                Err(reason) => out.reject(&event, reason),
            }
        }
        Ok(())
    }
}

impl Jq {
    /// Runs the program on `json`; its outputs' JSON texts go to `buf`, each
    /// ending at the offset pushed to `ends`.
    fn run(&self, json: &[u8], buf: &mut Vec<u8>, ends: &mut Vec<usize>) -> Result<(), String> {
        let input = jaq_json::read::parse_single(json).map_err(|e| format!("invalid JSON: {e}"))?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new(self.vars.iter().cloned()));
        for (n, result) in self.filter.id.run((ctx, input)).enumerate() {
            let value = result.map_err(|exn| match exn.get_err() {
                Ok(error) => match error.into_val() {
                    Val::TStr(text) => format!("jq: {}", String::from_utf8_lossy(&text)),
                    other => format!("jq: {other} (not a string)"),
                },
                Err(exn) => match exn.get_halt() {
                    Ok(code) => format!("jq: halt with exit code {code}"),
                    Err(_) => "jq: the program stopped unexpectedly".to_string(),
                },
            })?;
            json_only(&value).map_err(|what| format!("jq: output {n} is not JSON: {what}"))?;
            let start = buf.len();
            jaq_json::write::write(buf, &jaq_json::write::Pp::default(), 0, &value)
                .map_err(|e| e.to_string())?;
            if std::str::from_utf8(&buf[start..]).is_err() {
                return Err(format!("jq: output {n} is not JSON: a string is not UTF-8"));
            }
            ends.push(buf.len());
        }
        Ok(())
    }
}

/// Whether `value` is one that JSON holds: no `nan` or infinite number, no
/// byte string, no object key that is not a string.
fn json_only(value: &Val) -> Result<(), &'static str> {
    match value {
        Val::Num(jaq_json::Num::Float(f)) if !f.is_finite() => {
            Err("a number that is nan or infinite")
        }
        Val::BStr(_) => Err("a byte string"),
        Val::Arr(items) => items.iter().try_for_each(json_only),
        Val::Obj(members) => members.iter().try_for_each(|(k, v)| match k {
            Val::TStr(_) => json_only(v),
            _ => Err("an object key that is not a string"),
        }),
        _ => Ok(()),
    }
}

/// Compiles `program` with jaq's standard library and the variables `vars`
/// (`$name`).
///
/// # Errors
/// Each syntax or compile error with its line and column in the program.
pub fn compile(program: &str, vars: &[String]) -> Result<jaq_core::Filter<Data>, String> {
    let arena = Arena::default();
    let loader = Loader::new(
        jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs()),
    );
    let modules = loader
        .load(
            &arena,
            File {
                code: program,
                path: (),
            },
        )
        .map_err(|errs| load_errors(program, errs))?;
    jaq_core::load::import(&modules, |_| {
        Err("a jq program in a plugin cannot import files".to_string())
    })
    .map_err(|errs| load_errors(program, errs))?;
    Compiler::default()
        .with_funs(
            jaq_core::funs::<Data>()
                .chain(jaq_std::funs::<Data>())
                .chain(jaq_json::funs::<Data>()),
        )
        .with_global_vars(vars.iter().map(String::as_str))
        .compile(modules)
        .map_err(|errs| {
            let messages: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, errs)| errs)
                .map(|(found, undefined)| {
                    at(program, found, &format!("undefined {}", undefined.as_str()))
                })
                .collect();
            format!("jq program: {}", messages.join("; "))
        })
}

/// Syntax (lex, parse) and import errors, located in `program`.
fn load_errors(program: &str, errs: jaq_core::load::Errors<&str, ()>) -> String {
    use jaq_core::load::Error;
    let mut messages = Vec::new();
    for (_, err) in errs {
        match err {
            Error::Io(errs) => {
                for (path, e) in errs {
                    messages.push(at(program, path, &format!("cannot import {path}: {e}")));
                }
            }
            Error::Lex(errs) => {
                for (expected, found) in errs {
                    let found =
                        &found[..found.char_indices().nth(1).map_or(found.len(), |(i, _)| i)];
                    messages.push(at(
                        program,
                        found,
                        &format!("expected {}", expected.as_str()),
                    ));
                }
            }
            Error::Parse(errs) => {
                for (expected, found) in errs {
                    messages.push(at(
                        program,
                        found,
                        &format!("expected {}", expected.as_str()),
                    ));
                }
            }
        }
    }
    format!("jq program: {}", messages.join("; "))
}

/// `message` with the line and column in `program` where `part` (a slice
/// of it) starts, and what is there.
fn at(program: &str, part: &str, message: &str) -> String {
    let start = (part.as_ptr() as usize)
        .checked_sub(program.as_ptr() as usize)
        .filter(|&s| s <= program.len())
        .unwrap_or(program.len());
    let before = &program[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let found: String = part.chars().take(20).collect();
    if found.is_empty() {
        format!("{message} at line {line}, column {column}, found the end of the program")
    } else {
        format!("{message} at line {line}, column {column}, found `{found}`")
    }
}

export_processor!(Jq);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(program: &str, lines: &[&str]) -> (Vec<String>, Vec<(u32, String)>) {
        let mut p = Jq::configure(&Config::from_pairs([("program", program)])).unwrap();
        let mut batch = Batch::new();
        for (i, line) in lines.iter().enumerate() {
            batch.push(Some(b"k"), line.as_bytes(), 1000 + i as i64);
            batch.push_header("h", b"v");
        }
        let mut out = Output::new();
        p.process(&batch, &mut out).unwrap();
        for e in out.events.iter() {
            assert_eq!(e.key(), Some(&b"k"[..]));
            assert!(e.timestamp_ms() >= 1000);
            assert_eq!(e.headers().collect::<Vec<_>>(), [("h", &b"v"[..])]);
        }
        (
            out.events
                .iter()
                .map(|e| String::from_utf8(e.value().to_vec()).unwrap())
                .collect(),
            out.rejected
                .into_iter()
                .map(|r| (r.index, r.reason))
                .collect(),
        )
    }

    #[test]
    fn filter_map_flat_map() {
        let lines = [
            r#"{"carrier":"UA","origin":"EWR","dest":"IAH","d":1.50}"#,
            r#"{"carrier":"AA","origin":"JFK","dest":"MIA","d":-0}"#,
        ];
        let (out, rejected) = run(
            r#"select(.carrier == "UA") | .route = .origin + "-" + .dest"#,
            &lines,
        );
        assert_eq!(
            out,
            [r#"{"carrier":"UA","origin":"EWR","dest":"IAH","d":1.50,"route":"EWR-IAH"}"#]
        );
        assert!(rejected.is_empty());
        let (out, _) = run(".origin, .dest", &lines);
        assert_eq!(out, [r#""EWR""#, r#""IAH""#, r#""JFK""#, r#""MIA""#]);
        let (out, _) = run("{c: .carrier, n: (.d * 2)}", &lines);
        // jaq reads `-0` as the integer 0; a float times an integer is a float.
        assert_eq!(out, [r#"{"c":"UA","n":3.0}"#, r#"{"c":"AA","n":0}"#]);
    }

    #[test]
    fn errors_reject_the_record_and_emit_none_of_its_outputs() {
        let (out, rejected) = run(
            r#"1, (if .x == 2 then error("two!") else . end), (.x | tostring)"#,
            &[r#"{"x":1}"#, r#"{"x":2}"#, "nope", r#"{"x":3}"#],
        );
        assert_eq!(
            out,
            ["1", r#"{"x":1}"#, r#""1""#, "1", r#"{"x":3}"#, r#""3""#]
        );
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0], (1, "jq: two!".to_string()));
        assert_eq!(rejected[1].0, 2);
        assert!(
            rejected[1].1.starts_with("invalid JSON: "),
            "{}",
            rejected[1].1
        );
        let (_, rejected) = run(".x + 1", &[r#"{"x":"a"}"#]);
        assert!(
            rejected[0].1.starts_with("jq: cannot "),
            "{}",
            rejected[0].1
        );
        let (_, rejected) = run("nan, infinite", &["{}"]);
        assert_eq!(
            rejected[0].1,
            "jq: output 0 is not JSON: a number that is nan or infinite"
        );
        let (_, rejected) = run("{(1): 2}", &["{}"]);
        assert!(
            rejected[0].1.contains("not JSON") || rejected[0].1.starts_with("jq: "),
            "{}",
            rejected[0].1
        );
    }

    #[test]
    fn args_and_config_errors() {
        let mut p = Jq::configure(&Config::from_pairs([
            ("program", "select(.c == $carrier) | .n = $n"),
            ("args", r#"{ carrier = "UA", n = [1, 2] }"#),
        ]))
        .unwrap();
        let mut out = Output::new();
        p.process(
            &Batch::from_lines("{\"c\":\"UA\"}\n{\"c\":\"AA\"}"),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.events.len(), 1);
        assert_eq!(
            out.events.get(0).unwrap().value(),
            br#"{"c":"UA","n":[1,2]}"#
        );

        let err = |program: &str| {
            Jq::configure(&Config::from_pairs([("program", program)]))
                .err()
                .unwrap()
        };
        assert_eq!(
            err("select(.a ==)"),
            "jq program: expected term at line 1, column 13, found `)`"
        );
        assert_eq!(
            err(".a |\n  nosuchfn(1)"),
            "jq program: undefined filter at line 2, column 3, found `nosuchfn`"
        );
        assert_eq!(
            err("\"abc"),
            "jq program: expected closing quote at line 1, column 5, found the end of the program"
        );
        assert!(err("$x").contains("undefined variable"), "{}", err("$x"));
        assert!(
            err("import \"a\" as $a; .").contains("cannot import"),
            "{}",
            err("import \"a\" as $a; .")
        );
        let missing = Jq::configure(&Config::from_pairs::<&str, &str>([]))
            .err()
            .unwrap();
        assert!(missing.contains("`program` is required"), "{missing}");
    }
}
