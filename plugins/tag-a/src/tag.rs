// Shared by tag-a and tag-b, which differ only in `TAG`.

use sluice_plugin_sdk::{Batch, Config, Output, Processor, export_processor};

/// Appends `"v":TAG` to every event that is a JSON object (`{…}`); refuses others.
pub struct Tag;

impl Processor for Tag {
    fn configure(_config: &Config) -> Result<Self, String> {
        Ok(Tag)
    }

    fn process(&mut self, batch: &Batch, out: &mut Output) -> Result<(), String> {
        let mut value = Vec::new();
        for event in batch {
            let v = event.value();
            if v.len() < 2 || v[0] != b'{' || v[v.len() - 1] != b'}' {
                out.reject(&event, "not a JSON object");
                continue;
            }
            value.clear();
            value.extend_from_slice(&v[..v.len() - 1]);
            if v.len() > 2 {
                value.push(b',');
            }
            value.extend_from_slice(format!("\"v\":\"{TAG}\"}}").as_bytes());
            out.push(event.key(), &value, event.timestamp_ms());
        }
        Ok(())
    }
}

export_processor!(Tag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_objects_and_refuses_the_rest() {
        let batch = Batch::from_lines("{\"n\":1}\n{}\n[1]\n");
        let mut out = Output::new();
        Tag.process(&batch, &mut out).unwrap();
        let got: Vec<&[u8]> = out.events.iter().map(|e| e.value()).collect();
        let one = format!("{{\"n\":1,\"v\":\"{TAG}\"}}");
        let empty = format!("{{\"v\":\"{TAG}\"}}");
        assert_eq!(got, vec![one.as_bytes(), empty.as_bytes()]);
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].index, 2);
    }
}
