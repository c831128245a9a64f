//! Upper-cases the ASCII letters of every payload: touches every byte, allocates
//! nothing per event beyond the output buffer.

use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};

/// The upper-casing processor.
pub struct Uppercase;

impl Processor for Uppercase {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Uppercase)
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut buf = Vec::new();
        for event in batch {
            buf.clear();
            buf.extend(event.value().iter().map(u8::to_ascii_uppercase));
            out.push(event.key(), &buf, event.timestamp_ms());
        }
        Ok(())
    }
}

export_processor!(Uppercase);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uppercases_ascii_only() {
        let batch = Batch::from_lines("{\"carrier\":\"ua\",\"é\":1}");
        let mut out = Output::new();
        Uppercase.process(&batch, &mut out).unwrap();
        let value = std::str::from_utf8(out.events.get(0).unwrap().value()).unwrap();
        assert_eq!(value, "{\"CARRIER\":\"UA\",\"é\":1}");
    }
}
