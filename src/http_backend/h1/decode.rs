//! Reading a response head (RFC 9112 sections 4-6): status line, header fields, and how the body
//! that follows is framed. The bytes come from a backend, which is trusted no more than a client:
//! sizes are bounded and anything malformed is an error, never a guess.

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, response};

/// The largest response head accepted, and the most header fields in it.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (a response to HEAD, 204, 304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) parts: response::Parts,
    pub(crate) framing: Framing,
    /// Whether the connection can carry another exchange once this body has been read.
    pub(crate) keep_alive: bool,
}

/// The backend's bytes are not an HTTP/1.x response head this proxy will pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("malformed response head")]
    Malformed,
    #[error("response head larger than {MAX_HEAD} bytes or {MAX_HEADERS} fields")]
    TooLarge,
    #[error("invalid Content-Length in response")]
    ContentLength,
    #[error("the backend switched protocols, which this proxy does not relay")]
    SwitchingProtocols,
}

/// Parses the next final response head at the start of `buf`, removing it (and any 1xx interim
/// responses before it) from the buffer. `Ok(None)`: the head is not complete yet.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<Head>, HeadError> {
    loop {
        let mut fields = [Field::EMPTY; MAX_HEADERS];
        let Some(parsed) = scan(buf, &mut fields)? else {
            return Ok(None);
        };
        let head = buf.split_to(parsed.len).freeze();
        let status = StatusCode::from_u16(parsed.code).map_err(|_| HeadError::Malformed)?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(HeadError::SwitchingProtocols);
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: interim answers; the final one follows.
            continue;
        }
        let version = match parsed.minor {
            0 => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let mut headers = HeaderMap::with_capacity(parsed.count);
        for field in &fields[..parsed.count] {
            let name = HeaderName::from_bytes(&head[range(field.name)])
                .map_err(|_| HeadError::Malformed)?;
            let value = HeaderValue::from_maybe_shared(head.slice(range(field.value)))
                .map_err(|_| HeadError::Malformed)?;
            headers.append(name, value);
        }
        let keep_alive = keeps_alive(version, &headers);
        let (framing, keep_alive) = framing(status, head_request, &mut headers, keep_alive)?;
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(Head {
            parts,
            framing,
            keep_alive,
        }));
    }
}

/// Where a field's name and value are in the head: start and end offsets (a head is at most
/// `MAX_HEAD` bytes, so `u32` holds them).
#[derive(Debug, Clone, Copy)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

impl Field {
    const EMPTY: Self = Self {
        name: (0, 0),
        value: (0, 0),
    };
}

fn range((start, end): (u32, u32)) -> std::ops::Range<usize> {
    start as usize..end as usize
}

/// A complete head found at the start of a buffer, its fields recorded by position, so the buffer
/// can be split and frozen after the parser's borrow of it ends (header values then share its
/// memory: no copy per field, and the head is parsed once).
struct Scanned {
    len: usize,
    code: u16,
    minor: u8,
    /// How many of the fields were filled.
    count: usize,
}

fn scan(buf: &[u8], fields: &mut [Field; MAX_HEADERS]) -> Result<Option<Scanned>, HeadError> {
    // Uninitialised slots (safe to make, filled by the parser): initialising a hundred empty
    // headers on every response cost more than parsing the head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut res, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let base = buf.as_ptr() as usize;
    // Offsets within `buf`, which is shorter than `MAX_HEAD` + one read.
    let offsets = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        (start as u32, (start + part.len()) as u32)
    };
    let scanned = Scanned {
        len,
        code: res.code.ok_or(HeadError::Malformed)?,
        minor: res.version.ok_or(HeadError::Malformed)?,
        count: res.headers.len(),
    };
    for (slot, field) in fields.iter_mut().zip(res.headers.iter()) {
        *slot = Field {
            name: offsets(field.name.as_bytes()),
            value: offsets(field.value),
        };
    }
    Ok(Some(scanned))
}

/// The header fields `httparse` found in `base`, as a map whose values share `base`'s memory.
pub(crate) fn header_map(base: &Bytes, fields: &[httparse::Header<'_>]) -> Result<HeaderMap, ()> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| ())?;
        let value = HeaderValue::from_maybe_shared(base.slice_ref(field.value)).map_err(|_| ())?;
        map.append(name, value);
    }
    Ok(map)
}

/// RFC 9112 section 9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// RFC 9112 section 6.3, in order. Returns the framing and whether the connection stays usable.
fn framing(
    status: StatusCode,
    head_request: bool,
    headers: &mut HeaderMap,
    keep_alive: bool,
) -> Result<(Framing, bool), HeadError> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, keep_alive));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // Transfer-Encoding wins over Content-Length, which must not reach the client (it would
        // describe the encoded length); a message with both is a smuggling attempt or a broken
        // server, so the connection is not trusted for another exchange.
        let both = headers.remove(CONTENT_LENGTH).is_some();
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => {
                (Framing::Chunked, keep_alive && !both)
            }
            // A final coding other than chunked: the body runs to the connection's end.
            _ => (Framing::UntilClose, false),
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        // Repeated fields (or a list) must all agree.
        for item in value
            .to_str()
            .map_err(|_| HeadError::ContentLength)?
            .split(',')
        {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::ContentLength);
            }
            let n: u64 = item.parse().map_err(|_| HeadError::ContentLength)?;
            if length.is_some_and(|seen| seen != n) {
                return Err(HeadError::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, keep_alive),
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::UntilClose, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, head_request: bool) -> Result<Option<Head>, HeadError> {
        parse_head(&mut BytesMut::from(text.as_bytes()), head_request)
    }

    fn framing_of(text: &str) -> (Framing, bool) {
        let head = parse(text, false).unwrap().unwrap();
        (head.framing, head.keep_alive)
    }

    #[test]
    fn parses_status_headers_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello"[..],
        );
        let head = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(head.parts.status, StatusCode::CREATED);
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(head.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!((head.framing, head.keep_alive), (Framing::Length(5), true));
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn an_incomplete_head_waits_and_interim_responses_are_skipped() {
        assert!(
            parse("HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .is_none()
        );
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let head = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(head.parts.status, StatusCode::OK);
        assert!(head.parts.headers.get("link").is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            (Framing::Chunked, true)
        );
        let smuggled = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (smuggled.framing, smuggled.keep_alive),
            (Framing::Chunked, false)
        );
        assert!(smuggled.parts.headers.get(CONTENT_LENGTH).is_none());
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\n\r\n"),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            framing_of("HTTP/1.1 204 No Content\r\n\r\n"),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nConnection: close\r\n\r\n"),
            (Framing::Length(7), false)
        );
        assert_eq!(
            framing_of("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing_of("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"),
            (Framing::Length(1), true)
        );
        let head = parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(
            head.framing,
            Framing::Empty,
            "a response to HEAD has no body"
        );
    }

    #[test]
    fn rejects_bad_heads() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad, false).unwrap_err(),
                HeadError::ContentLength,
                "{bad}"
            );
        }
        assert_eq!(
            parse("SMTP ready\r\n\r\n", false).unwrap_err(),
            HeadError::Malformed
        );
        assert_eq!(
            parse(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\n\r\n",
                false
            )
            .unwrap_err(),
            HeadError::SwitchingProtocols
        );
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD + 1));
        assert_eq!(parse(&huge, false).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        assert_eq!(
            parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).unwrap_err(),
            HeadError::TooLarge
        );
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Arbitrary bytes from a backend give a head, "need more" or an error; never a
            /// panic.
            #[test]
            fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..800), head_request: bool) {
                let _ = parse_head(&mut BytesMut::from(&input[..]), head_request);
            }

            /// Mangled heads (a valid one with bytes replaced) never panic either, and a head cut
            /// anywhere short of its end is "need more", not an error.
            #[test]
            fn cut_or_mangled_heads(cut in 0usize..80, at in 0usize..80, byte: u8) {
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Id: b\r\n\r\nabc";
                let head_len = head.len() - 3;
                if cut < head_len {
                    prop_assert!(parse_head(&mut BytesMut::from(&head[..cut]), false).unwrap().is_none());
                }
                let mut mangled = head.to_vec();
                if at < mangled.len() {
                    mangled[at] = byte;
                }
                let _ = parse_head(&mut BytesMut::from(&mangled[..]), false);
            }
        }
    }
}
