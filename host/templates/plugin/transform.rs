//! {{name}}: a transform that passes bytes through unchanged and proves on restore that
//! none were lost — replace `push` and `finish` with your encoding.

use runner_sdk::{Decoder, Encoder, Error, Metadata, MetadataExt, ObjectInfo, Plugin, Result, Transform};
use serde::Deserialize;

/// The stage's options, as written in the pipeline (`[[transform]]` table).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

pub struct {{Struct}};

impl Plugin for {{Struct}} {
    const NAME: &'static str = "{{name}}";
    const DESCRIPTION: &'static str = "{{description}}";
    type Config = Config;

    fn new(_config: Config) -> Result<Self> {
        Ok({{Struct}})
    }
}

impl Transform for {{Struct}} {
    type Encoder = Counter;
    type Decoder = Checker;

    fn encoder(&self, _object: &ObjectInfo) -> Result<Counter> {
        Ok(Counter { bytes: 0 })
    }

    fn decoder(&self, _object: &ObjectInfo, params: &Metadata) -> Result<Checker> {
        // What the encoder's `finish` returned for this object, kept in the manifest.
        Ok(Checker { expected: params.require("bytes")?, bytes: 0 })
    }
}

pub struct Counter {
    bytes: u64,
}

impl Encoder for Counter {
    fn push(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        self.bytes += input.len() as u64;
        output.extend_from_slice(input);
        Ok(())
    }

    fn finish(&mut self, _output: &mut Vec<u8>) -> Result<Metadata> {
        Ok(vec![("bytes".to_string(), self.bytes.to_string())])
    }
}

pub struct Checker {
    expected: u64,
    bytes: u64,
}

impl Decoder for Checker {
    fn push(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        self.bytes += input.len() as u64;
        output.extend_from_slice(input);
        Ok(())
    }

    fn finish(&mut self, _output: &mut Vec<u8>) -> Result<()> {
        if self.bytes != self.expected {
            return Err(Error::corrupt(format!("{} bytes decoded, {} were encoded", self.bytes, self.expected)));
        }
        Ok(())
    }
}

runner_sdk::export_transform!({{Struct}});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_it_encoded_and_notices_a_lost_byte() {
        let transform = {{Struct}}::new(Config {}).unwrap();
        let object = ObjectInfo { id: "test".into(), size_hint: None };
        let mut encoder = transform.encoder(&object).unwrap();
        let mut encoded = Vec::new();
        encoder.push(b"hello, ", &mut encoded).unwrap();
        encoder.push(b"world", &mut encoded).unwrap();
        let params = encoder.finish(&mut encoded).unwrap();

        let mut decoder = transform.decoder(&object, &params).unwrap();
        let mut decoded = Vec::new();
        decoder.push(&encoded, &mut decoded).unwrap();
        decoder.finish(&mut decoded).unwrap();
        assert_eq!(decoded, b"hello, world");

        let mut short = transform.decoder(&object, &params).unwrap();
        short.push(&encoded[1..], &mut Vec::new()).unwrap();
        assert!(short.finish(&mut Vec::new()).is_err());
    }
}
