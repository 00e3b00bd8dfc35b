//! The `zstd` transform: streaming Zstandard compression (C zstd built for wasm).

use runner_sdk::{Decoder, Encoder, Error, Metadata, ObjectInfo, Plugin, Result, Transform};
use serde::Deserialize;
use zstd::stream::raw::{self, InBuffer, Operation, OutBuffer};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// 1 (fast) ..= 22 (small); 3 is zstd's default.
    level: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config { level: 3 }
    }
}

struct Zstd {
    level: i32,
}

impl Plugin for Zstd {
    const NAME: &'static str = "zstd";
    const DESCRIPTION: &'static str = "Zstandard compression (level 1-22)";
    type Config = Config;

    fn new(config: Config) -> Result<Self> {
        if !(1..=22).contains(&config.level) {
            return Err(Error::config_field(
                "level",
                format!("must be between 1 and 22, found {}", config.level),
            ));
        }
        Ok(Zstd {
            level: config.level,
        })
    }
}

/// Output grows in steps of this size while zstd has more to say.
const OUT_STEP: usize = 128 * 1024;

/// Runs `op` over all of `input`, appending to `output`; returns zstd's last size hint
/// (0 when a frame just ended).
fn run(op: &mut impl Operation, input: &[u8], output: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut src = InBuffer::around(input);
    let mut hint = 1;
    while src.pos < input.len() {
        hint = with_spare(output, |out| op.run(&mut src, out))?;
    }
    Ok(hint)
}

/// Calls `f` with an `OutBuffer` over `output`'s spare capacity and keeps what it wrote.
fn with_spare(
    output: &mut Vec<u8>,
    f: impl FnOnce(&mut OutBuffer<'_, Vec<u8>>) -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    if output.capacity() - output.len() < OUT_STEP {
        output.reserve(OUT_STEP);
    }
    let mut out = OutBuffer::around_pos(output, output.len());
    f(&mut out)
}

struct ZstdEncoder(raw::Encoder<'static>);

struct ZstdDecoder {
    inner: raw::Decoder<'static>,
    /// No input yet, or the last frame ended exactly at the end of the input seen so far.
    frame_complete: bool,
    seen_input: bool,
}

impl Transform for Zstd {
    type Encoder = ZstdEncoder;
    type Decoder = ZstdDecoder;

    fn encoder(&self, _: &ObjectInfo) -> Result<ZstdEncoder> {
        raw::Encoder::new(self.level)
            .map(ZstdEncoder)
            .map_err(|e| Error::internal(format!("zstd: {e}")))
    }

    fn decoder(&self, _: &ObjectInfo, _: &Metadata) -> Result<ZstdDecoder> {
        let inner = raw::Decoder::new().map_err(|e| Error::internal(format!("zstd: {e}")))?;
        Ok(ZstdDecoder {
            inner,
            frame_complete: false,
            seen_input: false,
        })
    }
}

impl Encoder for ZstdEncoder {
    fn push(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        run(&mut self.0, input, output).map_err(|e| Error::internal(format!("zstd: {e}")))?;
        Ok(())
    }

    fn finish(&mut self, output: &mut Vec<u8>) -> Result<Metadata> {
        loop {
            let remaining = with_spare(output, |out| self.0.finish(out, true))
                .map_err(|e| Error::internal(format!("zstd: {e}")))?;
            if remaining == 0 {
                break;
            }
        }
        // The level is informational: decoding needs no parameter.
        Ok(Vec::new())
    }
}

impl Decoder for ZstdDecoder {
    fn push(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        self.seen_input = true;
        let hint = run(&mut self.inner, input, output)
            .map_err(|e| Error::corrupt(format!("zstd: {e}")))?;
        self.frame_complete = hint == 0;
        Ok(())
    }

    fn finish(&mut self, output: &mut Vec<u8>) -> Result<()> {
        // Drain what zstd still holds internally for a frame whose input is all in.
        loop {
            let before = output.len();
            let hint = with_spare(output, |out| {
                self.inner.run(&mut InBuffer::around(&[]), out)
            })
            .map_err(|e| Error::corrupt(format!("zstd: {e}")))?;
            if hint == 0 {
                self.frame_complete = true;
            }
            if output.len() == before {
                break;
            }
        }
        if !self.seen_input || !self.frame_complete {
            return Err(Error::corrupt(
                "zstd: truncated stream (the frame does not end)",
            ));
        }
        Ok(())
    }
}

runner_sdk::export_transform!(Zstd);
