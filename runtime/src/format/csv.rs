//! `format = "csv"`: each line is a row of comma-separated values (RFC 4180),
//! turned into a JSON object whose member names come from a header row.
//!
//! ```toml
//! [sources.weather]
//! type = "file"
//! path = "weather.csv"
//! format = "csv"
//! timestamp = "/time_hour"          # pointers apply to the produced object
//! # All optional:
//! csv = { delimiter = ",", nulls = ["NA"], columns = { temp = "float", year = "int" } }
//! ```
//!
//! - **Header.** The first line of the input names the fields: of the file
//!   (read again from the file's start when resuming from a checkpoint, and
//!   anew when a followed file is replaced, or each file of a directory), of
//!   stdin. `csv.header = ["a", "b"]` names them in the config instead: then
//!   every line is a row (what a Kafka source needs, whose topic has no first
//!   line).
//! - **Quoting** per RFC 4180 §2: a field may be enclosed in double quotes,
//!   and a quote inside such a field is written twice (`"say ""hi"""`). A
//!   quoted field that holds a line break is not supported: records are lines,
//!   so such a row goes to the dead-letter sink as "unterminated quoted field".
//! - **Types** (`csv.columns`): `string` (the default), `int` (a 64-bit
//!   signed integer), `float` (a finite 64-bit float), `bool` (`true` or
//!   `false`, any case). An empty field of an `int`, `float` or `bool` column
//!   is `null`; a field equal to one of `csv.nulls` is `null` in any column.
//! - A row with another number of fields than the header, a value its
//!   column's type refuses, or bytes that are not UTF-8 goes to the
//!   dead-letter sink with the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The `csv` table of a source: how rows are split and typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// The field separator: one ASCII character other than `"`, CR or LF.
    /// Default `,`.
    #[serde(default)]
    pub delimiter: Option<char>,
    /// The field names, when the input has no header row (every line is
    /// then a row). Default: the input's first line is the header.
    #[serde(default)]
    pub header: Option<Vec<String>>,
    /// Types by column name: `"string"`, `"int"`, `"float"`, `"bool"`.
    /// Columns not listed are strings.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnType>,
    /// Field values that mean null in any column (e.g. `["NA"]`).
    #[serde(default)]
    pub nulls: Vec<String>,
}

/// The JSON type a column's values become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// A JSON string, as written (after unquoting).
    #[default]
    String,
    /// A JSON integer: an `i64` in decimal, optionally signed.
    Int,
    /// A JSON number: a finite `f64` (`1.5`, `-2e3`; not `NaN` or `inf`,
    /// which JSON cannot hold).
    Float,
    /// `true` or `false` (ASCII case ignored).
    Bool,
}

thread_local! {
    /// This thread's csv-core reader and the delimiter it was built for.
    static READER: std::cell::RefCell<Option<(u8, csv_core::Reader)>> =
        const { std::cell::RefCell::new(None) };
}

/// A checked [`CsvOptions`], ready to split rows.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvFormat {
    delimiter: u8,
    columns: BTreeMap<String, ColumnType>,
    nulls: Vec<String>,
    /// The header given in the config, if any.
    fixed: Option<Arc<Header>>,
}

/// The names and types of a CSV input's columns, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    names: Vec<String>,
    types: Vec<ColumnType>,
}

impl Header {
    /// The column names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl CsvFormat {
    /// Checks `options`.
    ///
    /// # Errors
    /// A delimiter that is not one ASCII character or is `"`, CR or LF; a
    /// configured header that is empty or names a column twice; a typed
    /// column that a configured header does not name.
    pub fn new(options: &CsvOptions) -> Result<CsvFormat, String> {
        let delimiter = match options.delimiter {
            None => b',',
            Some(c) if c.is_ascii() && !matches!(c, '"' | '\r' | '\n') => c as u8,
            Some(c) => {
                return Err(format!(
                    "csv delimiter {c:?}: use one ASCII character other than a double quote, CR or LF"
                ));
            }
        };
        let mut format = CsvFormat {
            delimiter,
            columns: options.columns.clone(),
            nulls: options.nulls.clone(),
            fixed: None,
        };
        if let Some(names) = &options.header {
            let header = format.header_of(names.clone())?;
            if let Some(unknown) = options.columns.keys().find(|c| !names.contains(c)) {
                return Err(format!(
                    "csv column `{unknown}` has a type but is not in `header`"
                ));
            }
            format.fixed = Some(Arc::new(header));
        }
        Ok(format)
    }

    /// The header given in the config (`csv.header`), if any: then the
    /// input has no header row.
    pub fn fixed_header(&self) -> Option<&Arc<Header>> {
        self.fixed.as_ref()
    }

    fn header_of(&self, names: Vec<String>) -> Result<Header, String> {
        if names.is_empty() || names.iter().all(String::is_empty) {
            return Err("the CSV header names no column".into());
        }
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("the CSV header names column `{n}` twice"));
            }
        }
        let types = names
            .iter()
            .map(|n| self.columns.get(n).copied().unwrap_or_default())
            .collect();
        Ok(Header { names, types })
    }

    /// Reads a header row.
    ///
    /// # Errors
    /// The row cannot be split (see [`CsvFormat::split`]), names no column, or
    /// names one twice.
    pub fn header(&self, line: &[u8]) -> Result<Header, String> {
        let names = self
            .split(line)
            .map_err(|e| format!("bad CSV header row: {e}"))?;
        let header = self.header_of(names)?;
        let missing: Vec<&str> = self
            .columns
            .keys()
            .filter(|c| !header.names.contains(c))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                "csv columns {missing:?} have a type but are not in the header row {:?}",
                header.names
            );
        }
        Ok(header)
    }

    /// Splits one line into its fields, unquoted (RFC 4180 §2).
    ///
    /// # Errors
    /// A quoted field not closed before the end of the line (a line break
    /// inside quotes is not supported), or a field that is not UTF-8.
    pub fn split(&self, line: &[u8]) -> Result<Vec<String>, String> {
        if line.is_empty() {
            // One empty field (csv-core takes empty input for the end of the data).
            return Ok(vec![String::new()]);
        }
        // Building a reader builds its state machine: one per thread and
        // delimiter, reset for each line. (csv-core's `Clone` of a reader
        // loses the machine's tables, so it is not copied.)
        let split = READER.with_borrow_mut(|cached| {
            let reader = match cached {
                Some((delimiter, reader)) if *delimiter == self.delimiter => {
                    reader.reset();
                    reader
                }
                _ => {
                    let reader = csv_core::ReaderBuilder::new()
                        .delimiter(self.delimiter)
                        .terminator(csv_core::Terminator::Any(b'\n'))
                        .build();
                    &mut cached.insert((self.delimiter, reader)).1
                }
            };
            // Unquoting only shortens: the output fits in the input's length
            // (plus the terminator), and there is at most one field per byte + 1.
            let mut out = vec![0u8; line.len() + 1];
            let mut ends = vec![0usize; line.len() + 2];
            let (r1, _, nout1, nend1) = reader.read_record(line, &mut out, &mut ends);
            let (result, nout, nend) = match r1 {
                csv_core::ReadRecordResult::InputEmpty => {
                    // The end of the line. (csv-core counts `ends` from the
                    // record's start across calls.)
                    let (r2, _, nout2, nend2) =
                        reader.read_record(b"\n", &mut out[nout1..], &mut ends[nend1..]);
                    (r2, nout1 + nout2, nend1 + nend2)
                }
                other => (other, nout1, nend1),
            };
            match result {
                csv_core::ReadRecordResult::Record => {}
                csv_core::ReadRecordResult::InputEmpty => {
                    return Err(
                        "unterminated quoted field (RFC 4180 §2: a field that starts with `\"` ends with `\"`; a line break inside quotes is not supported)"
                            .into(),
                    );
                }
                other => return Err(format!("cannot split the row ({other:?})")),
            }
            Ok((out, nout, ends, nend))
        });
        let (out, nout, ends, nend) = split?;
        let out = &out[..nout];
        let mut fields = Vec::with_capacity(nend);
        let mut start = 0;
        for (i, &end) in ends[..nend].iter().enumerate() {
            let field = std::str::from_utf8(&out[start..end])
                .map_err(|e| format!("field {} is not UTF-8: {e}", i + 1))?;
            fields.push(field.to_string());
            start = end;
        }
        Ok(fields)
    }

    /// Turns a row into a JSON object, its members named by `header`, in
    /// the header's order.
    ///
    /// # Errors
    /// The row cannot be split, has another number of fields than the
    /// header, or holds a value its column's type refuses; the reason names
    /// the column.
    pub fn row(&self, header: &Header, line: &[u8]) -> Result<Map<String, Value>, String> {
        let fields = self.split(line)?;
        if fields.len() != header.names.len() {
            return Err(format!(
                "CSV row has {} fields, the header {} ({})",
                fields.len(),
                header.names.len(),
                header.names.join(",")
            ));
        }
        let mut object = Map::with_capacity(fields.len());
        for ((field, name), ty) in fields.into_iter().zip(&header.names).zip(&header.types) {
            let value = self
                .value(field, *ty)
                .map_err(|e| format!("CSV column `{name}`: {e}"))?;
            object.insert(name.clone(), value);
        }
        Ok(object)
    }

    fn value(&self, field: String, ty: ColumnType) -> Result<Value, String> {
        if self.nulls.contains(&field) {
            return Ok(Value::Null);
        }
        if field.is_empty() && ty != ColumnType::String {
            return Ok(Value::Null);
        }
        match ty {
            ColumnType::String => Ok(Value::String(field)),
            ColumnType::Int => field
                .parse::<i64>()
                .map(Value::from)
                .map_err(|e| format!("{field:?} is not an int: {e}")),
            ColumnType::Float => match field.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::from(f)),
                Ok(_) => Err(format!(
                    "{field:?} is not a finite float (JSON has no NaN or infinity)"
                )),
                Err(e) => Err(format!("{field:?} is not a float: {e}")),
            },
            ColumnType::Bool => {
                if field.eq_ignore_ascii_case("true") {
                    Ok(Value::Bool(true))
                } else if field.eq_ignore_ascii_case("false") {
                    Ok(Value::Bool(false))
                } else {
                    Err(format!("{field:?} is not a bool (true or false)"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plain() -> CsvFormat {
        CsvFormat::new(&CsvOptions::default()).unwrap()
    }

    fn split(line: &str) -> Result<Vec<String>, String> {
        plain().split(line.as_bytes())
    }

    #[test]
    fn splits_plain_fields() {
        assert_eq!(split("aaa,bbb,ccc").unwrap(), ["aaa", "bbb", "ccc"]);
        assert_eq!(split("a,,c").unwrap(), ["a", "", "c"]);
        assert_eq!(split(",").unwrap(), ["", ""]);
        assert_eq!(split("x").unwrap(), ["x"]);
    }

    /// RFC 4180 §2 rules 5 to 7: quoted fields, with the delimiter and a
    /// doubled quote inside.
    #[test]
    fn unquotes_per_rfc_4180() {
        assert_eq!(
            split(r#""aaa","bbb","ccc""#).unwrap(),
            ["aaa", "bbb", "ccc"]
        );
        assert_eq!(split(r#""a,b",c"#).unwrap(), ["a,b", "c"]);
        assert_eq!(
            split(r#""aaa","b""bb","ccc""#).unwrap(),
            ["aaa", r#"b"bb"#, "ccc"]
        );
        assert_eq!(split(r#""""#).unwrap(), [""]);
        assert_eq!(split(r#"a,"""x""""#).unwrap(), ["a", r#""x""#]);
        // Spaces are part of a field (§2 rule 4).
        assert_eq!(split(" a , b ").unwrap(), [" a ", " b "]);
        // A carriage return inside a field is data, not a terminator.
        assert_eq!(split("a\rb,c").unwrap(), ["a\rb", "c"]);
    }

    #[test]
    fn refuses_an_unterminated_quote() {
        let e = split(r#"a,"b,c"#).unwrap_err();
        assert!(e.contains("unterminated quoted field"), "{e}");
    }

    #[test]
    fn refuses_bytes_that_are_not_utf8() {
        let e = plain().split(b"ok,\xff\xfe").unwrap_err();
        assert!(e.contains("field 2 is not UTF-8"), "{e}");
    }

    #[test]
    fn another_delimiter() {
        let f = CsvFormat::new(&CsvOptions {
            delimiter: Some(';'),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.split(b"a;\"b;c\";d,e").unwrap(), ["a", "b;c", "d,e"]);
        for bad in ['"', '\n', 'é'] {
            let e = CsvFormat::new(&CsvOptions {
                delimiter: Some(bad),
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.contains("csv delimiter"), "{e}");
        }
    }

    fn typed() -> CsvFormat {
        CsvFormat::new(&CsvOptions {
            columns: [
                ("n".to_string(), ColumnType::Int),
                ("x".to_string(), ColumnType::Float),
                ("ok".to_string(), ColumnType::Bool),
                ("s".to_string(), ColumnType::String),
            ]
            .into(),
            nulls: vec!["NA".into()],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn rows_become_typed_objects_in_header_order() {
        let f = typed();
        let h = f.header(b"s,n,x,ok,other").unwrap();
        assert_eq!(h.names(), ["s", "n", "x", "ok", "other"]);
        let row = f.row(&h, b"\"hi, there\",-42,2.5,TRUE,7").unwrap();
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"s":"hi, there","n":-42,"x":2.5,"ok":true,"other":"7"}"#
        );
        // Empty typed fields and `nulls` are null; an empty string stays one.
        let row = f.row(&h, b",,,,NA").unwrap();
        assert_eq!(
            Value::Object(row),
            json!({"s": "", "n": null, "x": null, "ok": null, "other": null})
        );
    }

    #[test]
    fn bad_rows_say_why() {
        let f = typed();
        let h = f.header(b"n,x,ok").unwrap();
        let e = f.row(&h, b"1,2").unwrap_err();
        assert_eq!(e, "CSV row has 2 fields, the header 3 (n,x,ok)");
        let e = f.row(&h, b"1,2,3,4").unwrap_err();
        assert!(e.starts_with("CSV row has 4 fields, the header 3"), "{e}");
        let e = f.row(&h, b"1.5,2,true").unwrap_err();
        assert!(
            e.starts_with("CSV column `n`: \"1.5\" is not an int"),
            "{e}"
        );
        let e = f.row(&h, b"1,NaN,true").unwrap_err();
        assert!(
            e.starts_with("CSV column `x`: \"NaN\" is not a finite float"),
            "{e}"
        );
        let e = f.row(&h, b"1,2,yes").unwrap_err();
        assert!(
            e.starts_with("CSV column `ok`: \"yes\" is not a bool"),
            "{e}"
        );
        let e = f.row(&h, b"99999999999999999999,2,true").unwrap_err();
        assert!(e.contains("is not an int"), "{e}");
    }

    #[test]
    fn bad_headers_say_why() {
        let f = plain();
        assert!(f.header(b"a,b,a").unwrap_err().contains("`a` twice"));
        assert!(f.header(b"").unwrap_err().contains("names no column"));
        assert!(
            f.header(b"\"a,b")
                .unwrap_err()
                .starts_with("bad CSV header row")
        );
    }

    #[test]
    fn a_configured_header() {
        let f = CsvFormat::new(&CsvOptions {
            header: Some(vec!["a".into(), "b".into()]),
            columns: [("b".to_string(), ColumnType::Int)].into(),
            ..Default::default()
        })
        .unwrap();
        let h = f.fixed_header().unwrap().clone();
        assert_eq!(
            Value::Object(f.row(&h, b"x,3").unwrap()),
            json!({"a": "x", "b": 3})
        );
        let e = CsvFormat::new(&CsvOptions {
            header: Some(vec!["a".into()]),
            columns: [("b".to_string(), ColumnType::Int)].into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("`b` has a type but is not in `header`"), "{e}");
    }
}
