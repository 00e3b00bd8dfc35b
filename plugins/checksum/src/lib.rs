//! The `checksum` transform: passes bytes through and records their sha256 and length;
//! the decoder fails when either differs. The host computes the sha256 (`digest` service).

use runner_sdk::digest::Sha256;
use runner_sdk::{
    Decoder, Encoder, Error, Metadata, MetadataExt, NoConfig, ObjectInfo, Plugin, Result, Transform,
};

struct Checksum;

impl Plugin for Checksum {
    const NAME: &'static str = "checksum";
    const DESCRIPTION: &'static str = "sha256 content digest, checked on restore";
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self> {
        Ok(Checksum)
    }
}

#[derive(Default)]
struct Hashing {
    hasher: Sha256,
    len: u64,
}

impl Hashing {
    fn count(&mut self, input: &[u8]) {
        self.hasher.update(input);
        self.len += input.len() as u64;
    }

    fn pass(&mut self, input: &[u8], output: &mut Vec<u8>) {
        self.count(input);
        output.extend_from_slice(input);
    }

    /// The bytes go on as they came, moved rather than copied.
    fn pass_owned(&mut self, input: Vec<u8>, output: &mut Vec<u8>) {
        self.count(&input);
        runner_sdk::append_output(output, input);
    }

    fn digest(&mut self) -> String {
        hex(&self.hasher.finalize())
    }
}

struct ChecksumDecoder {
    hashing: Hashing,
    expected_sha256: String,
    expected_len: u64,
}

impl Transform for Checksum {
    type Encoder = Hashing;
    type Decoder = ChecksumDecoder;

    fn encoder(&self, _: &ObjectInfo) -> Result<Hashing> {
        Ok(Hashing::default())
    }

    fn decoder(&self, _: &ObjectInfo, params: &Metadata) -> Result<ChecksumDecoder> {
        Ok(ChecksumDecoder {
            hashing: Hashing::default(),
            expected_sha256: params.require("sha256")?,
            expected_len: params.require("size")?,
        })
    }
}

impl Encoder for Hashing {
    fn push(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        self.pass(input, output);
        Ok(())
    }

    fn push_owned(&mut self, input: Vec<u8>, output: &mut Vec<u8>) -> Result<()> {
        self.pass_owned(input, output);
        Ok(())
    }

    fn finish(&mut self, _: &mut Vec<u8>) -> Result<Metadata> {
        Ok(vec![
            ("sha256".into(), self.digest()),
            ("size".into(), self.len.to_string()),
        ])
    }
}

impl Decoder for ChecksumDecoder {
    fn push(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        self.hashing.pass(input, output);
        Ok(())
    }

    fn push_owned(&mut self, input: Vec<u8>, output: &mut Vec<u8>) -> Result<()> {
        self.hashing.pass_owned(input, output);
        Ok(())
    }

    fn finish(&mut self, _: &mut Vec<u8>) -> Result<()> {
        let (len, digest) = (self.hashing.len, self.hashing.digest());
        if len != self.expected_len || digest != self.expected_sha256 {
            return Err(Error::corrupt(format!(
                "sha256 mismatch: expected {} ({} bytes), got {digest} ({len} bytes)",
                self.expected_sha256, self.expected_len
            )));
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

runner_sdk::export_transform!(Checksum);
