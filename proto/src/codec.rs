//! The codec every generated client and server uses: tonic-prost's, except
//! that a request the server cannot decode (truncated bytes, a wrong wire
//! type, a string that is not UTF-8, nesting past prost's recursion limit)
//! is the caller's fault and answers `INVALID_ARGUMENT` naming the field,
//! not tonic-prost's `INTERNAL`.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

/// [`tonic_prost::ProstCodec`] with decode failures mapped to
/// `INVALID_ARGUMENT` (see the module docs).
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(PhantomData)
    }
}

/// Decodes with prost; see [`ProtoCodec`].
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| malformed(&error))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// `INVALID_ARGUMENT` for an undecodable message. prost's error reads
/// `failed to decode Protobuf message: Inner.field: Outer.field: what`; the
/// field path (`field.field`) leads the message so a caller sees which field
/// was malformed.
fn malformed(error: &prost::DecodeError) -> Status {
    let text = error.to_string();
    let detail = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    let mut path = Vec::new();
    let mut rest = detail;
    while let Some((segment, tail)) = rest.split_once(": ") {
        match segment.split_once('.') {
            Some((message, field))
                if !message.is_empty()
                    && !field.is_empty()
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
            {
                path.push(field);
                rest = tail;
            }
            _ => break,
        }
    }
    // prost lists the innermost field first.
    path.reverse();
    if path.is_empty() {
        Status::invalid_argument(format!("malformed request message: {rest}"))
    } else {
        Status::invalid_argument(format!("{}: malformed field: {rest}", path.join(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_malformed_field() {
        // A top-level string field that is not UTF-8.
        let error =
            crate::account::v1::RegisterRequest::decode([0x0a, 0x02, 0xff, 0xfe].as_slice())
                .unwrap_err();
        let status = malformed(&error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("email: malformed field"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("not UTF-8"),
            "{}",
            status.message()
        );

        // Bytes that are not protobuf at all.
        let error = crate::account::v1::RegisterRequest::decode([0xff; 8].as_slice()).unwrap_err();
        let status = malformed(&error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("malformed request message"),
            "{}",
            status.message()
        );

        // A string field that is not UTF-8, inside a nested message.
        let mut bytes = Vec::new();
        // LineItem { sku (field 1, length-delimited): 0xff 0xfe } as field 2 of PlaceOrderRequest.
        let line = [0x0a, 0x02, 0xff, 0xfe];
        bytes.extend_from_slice(&[0x12, line.len() as u8]);
        bytes.extend_from_slice(&line);
        let error = crate::payment::v1::PlaceOrderRequest::decode(bytes.as_slice()).unwrap_err();
        let status = malformed(&error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("lines.sku: malformed field"),
            "{}",
            status.message()
        );
    }
}
