//! Decoding a `Transfer-Encoding: chunked` response body (RFC 9112 section 7.1), incrementally:
//! the bytes arrive in whatever pieces the socket gives, so every state can stop at any byte and
//! go on when more come.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use super::decode::header_map;

/// The longest chunk-size line (size, extensions) and trailer section accepted: more is an attack
/// or a broken server, not a response.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder is between two calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` so far.
    Size { size: u64, digits: u8 },
    /// After the size: extensions (ignored) up to the line's end; `seen` bytes so far.
    Extension { size: u64, seen: usize },
    /// Expecting the `\n` of a size line's `\r\n`.
    SizeLf { size: u64 },
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the `\r` after a chunk's data.
    DataCr,
    /// Expecting the `\n` after a chunk's data.
    DataLf,
    /// After the last (zero-size) chunk: the trailer section, up to an empty line.
    Trailers,
    /// The body is over.
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] produced.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    /// Body bytes (never empty).
    Data(Bytes),
    /// The trailer fields; the body is over.
    Trailers(HeaderMap),
    /// The body is over, without trailers.
    Done,
    /// The buffer holds no complete next piece: read more.
    NeedMore,
}

/// The bytes are not a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    #[error("invalid chunk size")]
    Size,
    #[error("chunk size line too long")]
    LineTooLong,
    #[error("missing CRLF after chunk")]
    Delimiter,
    #[error("invalid or oversized trailer section")]
    Trailers,
}

/// An incremental chunked-body decoder.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

impl ChunkedDecoder {
    /// Consumes from `buf` what it can and says what that gave.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::Trailers => return self.trailers(buf),
                _ => {}
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.state = match (self.state, byte) {
                (State::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
                    // 16 hex digits fill a u64: one more would overflow.
                    if digits >= 16 {
                        return Err(ChunkError::Size);
                    }
                    let value = u64::from(hex_value(b));
                    State::Size {
                        size: size << 4 | value,
                        digits: digits + 1,
                    }
                }
                (State::Size { digits: 0, .. }, _) => return Err(ChunkError::Size),
                (State::Size { size, .. }, b'\r') => State::SizeLf { size },
                (State::Size { size, .. }, b';' | b' ' | b'\t') => {
                    State::Extension { size, seen: 1 }
                }
                (State::Size { .. }, _) => return Err(ChunkError::Size),
                (State::Extension { size, .. }, b'\r') => State::SizeLf { size },
                (State::Extension { .. }, b'\n') => return Err(ChunkError::Delimiter),
                (State::Extension { size, seen }, _) => {
                    if seen >= MAX_LINE {
                        return Err(ChunkError::LineTooLong);
                    }
                    State::Extension {
                        size,
                        seen: seen + 1,
                    }
                }
                (State::SizeLf { size: 0 }, b'\n') => State::Trailers,
                (State::SizeLf { size }, b'\n') => State::Data(size),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { size: 0, digits: 0 },
                (State::SizeLf { .. } | State::DataCr | State::DataLf, _) => {
                    return Err(ChunkError::Delimiter);
                }
                // Handled before a byte is taken: never reached.
                (State::Data(_) | State::Trailers | State::Done, _) => {
                    return Err(ChunkError::Delimiter);
                }
            };
        }
    }

    /// The trailer section: nothing but the final `\r\n`, or header lines ending in an empty one.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        if buf.len() < 2 {
            return Ok(Decoded::NeedMore);
        }
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Decoded::Done);
        }
        let Some(end) = find(buf, b"\r\n\r\n") else {
            if buf.len() > MAX_TRAILERS {
                return Err(ChunkError::Trailers);
            }
            return Ok(Decoded::NeedMore);
        };
        let section = buf.split_to(end + 4).freeze();
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let parsed = match httparse::parse_headers(&section, &mut fields) {
            Ok(httparse::Status::Complete((_, parsed))) => parsed,
            _ => return Err(ChunkError::Trailers),
        };
        let map = header_map(&section, parsed).map_err(|_| ChunkError::Trailers)?;
        self.state = State::Done;
        Ok(Decoded::Trailers(map))
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Where `needle` first starts in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the data and the trailers.
    fn decode_in_steps(
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(bytes) => {
                    assert!(!bytes.is_empty());
                    data.extend_from_slice(&bytes);
                }
                Decoded::Trailers(map) => return Ok((data, Some(map))),
                Decoded::Done => return Ok((data, None)),
                Decoded::NeedMore => {
                    if fed >= input.len() {
                        return Err(ChunkError::Delimiter);
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers_in_any_split() {
        let body = b"5\r\nhello\r\n7;name=value\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n";
        for step in 1..body.len() {
            let (data, trailers) = decode_in_steps(body, step).unwrap();
            assert_eq!(data, b"hello, world", "step {step}");
            assert_eq!(trailers.unwrap()["x-sum"], "12");
        }
        let (data, trailers) = decode_in_steps(b"A\r\n0123456789\r\n0\r\n\r\n", 3).unwrap();
        assert_eq!(data, b"0123456789");
        assert!(trailers.is_none());
    }

    #[test]
    fn what_follows_the_body_stays_in_the_buffer() {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\n\r\nNEXT"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from("a")))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::Done));
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Done),
            "over means over"
        );
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn rejects_what_is_not_chunked() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(decode_in_steps(bad, 4).is_err(), "{bad:?}");
        }
        let long = [b"1;".as_slice(), &[b'a'; MAX_LINE + 1]].concat();
        assert_eq!(decode_in_steps(&long, 64), Err(ChunkError::LineTooLong));
    }

    mod props {
        use proptest::prelude::*;

        use super::super::super::encode::{write_chunk, write_last_chunk};
        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Whatever a backend sends, the decoder answers (data, end or error) and never
            /// panics or loops.
            #[test]
            fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..600), step in 1usize..64) {
                let _ = decode_in_steps(&input, step);
            }

            /// Any body the encoder writes decodes to the same bytes and trailers, however the
            /// socket splits it.
            #[test]
            fn what_the_encoder_writes_decodes_back(
                chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
                trailer in proptest::option::of("[a-z]{1,8}"),
                step in 1usize..97,
            ) {
                let mut wire = Vec::new();
                for chunk in &chunks {
                    write_chunk(&Bytes::from(chunk.clone()), &mut wire);
                }
                let trailers = trailer.as_ref().map(|value| {
                    let mut map = HeaderMap::new();
                    map.insert("x-check", value.parse().unwrap());
                    map
                });
                write_last_chunk(trailers.as_ref(), &mut wire);
                let (data, decoded_trailers) = decode_in_steps(&wire, step).unwrap();
                prop_assert_eq!(data, chunks.concat());
                prop_assert_eq!(decoded_trailers, trailers);
            }
        }
    }
}
