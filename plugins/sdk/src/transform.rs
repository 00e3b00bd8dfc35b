//! The transform traits: an encoder and a decoder per stored object.

use crate::{Metadata, Plugin, Result};

pub use crate::bindings::transform::exports::runner::plugin0_2_0::transform::ObjectInfo;

/// A transform: checksum, compression, encryption, … One encoder (or decoder) is created
/// per stored object; the host pushes input and pulls output in bounded chunks.
pub trait Transform: Plugin {
    type Encoder: Encoder;
    type Decoder: Decoder;

    fn encoder(&self, object: &ObjectInfo) -> Result<Self::Encoder>;
    /// `params` is what the encoder's `finish` returned for this object.
    fn decoder(&self, object: &ObjectInfo, params: &Metadata) -> Result<Self::Decoder>;
}

/// Encodes one object. Output goes to `output`; the SDK hands it to the host in pieces
/// no larger than the host asks for. Keep output roughly proportional to input.
pub trait Encoder: 'static {
    fn push(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()>;
    /// `push`, given the input itself: a stage that passes bytes on unchanged (a
    /// checksum) moves `input` into an empty `output` instead of copying it. The SDK calls
    /// this one; by default it is `push`.
    fn push_owned(&mut self, input: Vec<u8>, output: &mut Vec<u8>) -> Result<()> {
        self.push(&input, output)
    }
    /// End of input: flush what is buffered and return the decoder's parameters.
    fn finish(&mut self, output: &mut Vec<u8>) -> Result<Metadata>;
}

/// Adds `bytes` to a push's `output`: moved when `output` is empty, as it is when the host
/// pulled everything since the last push, copied after what is there otherwise. For a
/// stage whose output comes as whole buffers (a pass-through, a sealed segment).
pub fn append_output(output: &mut Vec<u8>, bytes: Vec<u8>) {
    if output.is_empty() {
        *output = bytes;
    } else {
        output.extend_from_slice(&bytes);
    }
}

/// Decodes one object; `finish` is where truncation and digest mismatches are reported.
pub trait Decoder: 'static {
    fn push(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()>;
    /// As [`Encoder::push_owned`].
    fn push_owned(&mut self, input: Vec<u8>, output: &mut Vec<u8>) -> Result<()> {
        self.push(&input, output)
    }
    fn finish(&mut self, output: &mut Vec<u8>) -> Result<()>;
}
