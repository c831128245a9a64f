//! Splits each event's text into words: one output event per word, keyed by
//! the word, its value `{"word":"…"}`, with the input's event time. The
//! first stage of a word count (examples/socket-wordcount): a window that
//! groups by key and counts then gives each word's count.
//!
//! A word is a run of letters and digits (Unicode); everything else
//! separates words. Words are lower-cased unless `config.lowercase` is
//! `false`. An event whose value is not UTF-8 text is rejected (to the
//! dead-letter sink).

use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};

/// The word splitter.
pub struct SplitWords {
    lowercase: bool,
}

impl Processor for SplitWords {
    fn configure(config: &Config) -> Result<Self, String> {
        Ok(SplitWords {
            lowercase: config.parse("lowercase")?.unwrap_or(true),
        })
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut value = Vec::new();
        for event in batch {
            let Ok(text) = std::str::from_utf8(event.value()) else {
                out.reject(&event, "not UTF-8 text");
                continue;
            };
            for word in words(text) {
                let word = if self.lowercase {
                    word.to_lowercase()
                } else {
                    word.to_string()
                };
                value.clear();
                serde_json::to_writer(&mut value, &serde_json::json!({ "word": word }))
                    .map_err(|e| e.to_string())?;
                out.push(Some(word.as_bytes()), &value, event.timestamp_ms());
            }
        }
        Ok(())
    }
}

/// The words of `text`: its runs of letters and digits.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

export_processor!(SplitWords);

#[cfg(test)]
mod tests {
    use super::*;

    fn split(lines: &[&str], lowercase: bool) -> Vec<(String, String)> {
        let mut batch = Batch::new();
        for line in lines {
            batch.push(None, line.as_bytes(), 7);
        }
        let mut out = Output::new();
        SplitWords { lowercase }.process(&batch, &mut out).unwrap();
        out.events
            .iter()
            .map(|e| {
                assert_eq!(e.timestamp_ms(), 7);
                (
                    String::from_utf8(e.key().unwrap().to_vec()).unwrap(),
                    String::from_utf8(e.value().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn one_event_per_word_keyed_by_it() {
        assert_eq!(
            split(&["To be, or not-to BE:", "", "  Größe 42 "], true),
            [
                ("to", r#"{"word":"to"}"#),
                ("be", r#"{"word":"be"}"#),
                ("or", r#"{"word":"or"}"#),
                ("not", r#"{"word":"not"}"#),
                ("to", r#"{"word":"to"}"#),
                ("be", r#"{"word":"be"}"#),
                ("größe", r#"{"word":"größe"}"#),
                ("42", r#"{"word":"42"}"#),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn case_is_kept_when_told_so() {
        assert_eq!(
            split(&["Hello hello"], false),
            [
                ("Hello".to_string(), r#"{"word":"Hello"}"#.to_string()),
                ("hello".to_string(), r#"{"word":"hello"}"#.to_string()),
            ]
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_rejected() {
        let mut batch = Batch::new();
        batch.push(None, b"ok \xff", 0);
        let mut out = Output::new();
        SplitWords { lowercase: true }
            .process(&batch, &mut out)
            .unwrap();
        assert!(out.events.is_empty());
        assert_eq!(out.rejected.len(), 1);
    }
}
