//! Reading a request head (RFC 9112 sections 3 and 5-6): request line, header fields, and how the
//! body that follows is framed. The bytes come from clients, so sizes are bounded and anything
//! ambiguous is refused rather than guessed (a guess is how requests get smuggled).

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Uri, Version, request};

use crate::http_backend::h1::decode::{
    Field, content_length, ends_chunked, field_map, keeps_alive, range,
};

/// The largest request head accepted, and the most header fields in it.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// How the request body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) parts: request::Parts,
    pub(crate) framing: Framing,
    /// Whether the client wants the connection kept for another request.
    pub(crate) keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub(crate) expects_continue: bool,
}

/// The client's bytes are not a request this server will pass on; each maps to the status the
/// client is told before the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("malformed request head")]
    Malformed,
    #[error("request head larger than {MAX_HEAD} bytes or {MAX_HEADERS} header fields")]
    TooLarge,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("both Transfer-Encoding and Content-Length: the body's length is ambiguous")]
    AmbiguousLength,
    #[error("Transfer-Encoding whose last coding is not chunked")]
    TransferEncoding,
}

impl HeadError {
    /// The status that tells the client what was wrong.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::TransferEncoding => StatusCode::NOT_IMPLEMENTED,
            Self::Malformed | Self::ContentLength | Self::AmbiguousLength => {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

/// Parses the request head at the start of `buf`, removing it from the buffer (the body, and any
/// pipelined request, stay). `Ok(None)`: the head is not complete yet.
pub(crate) fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, HeadError> {
    // Leading empty lines before a request line are allowed (RFC 9112 section 2.2); some clients
    // send one after a body.
    let blank = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if blank > 0 {
        let _ = buf.split_to(blank);
    }
    let mut fields = [Field::EMPTY; MAX_HEADERS];
    let Some(scanned) = scan(buf, &mut fields)? else {
        return Ok(None);
    };
    let head = buf.split_to(scanned.len).freeze();
    let method =
        Method::from_bytes(&head[range(scanned.method)]).map_err(|_| HeadError::Malformed)?;
    let uri = Uri::from_maybe_shared(head.slice(range(scanned.target)))
        .map_err(|_| HeadError::Malformed)?;
    let version = match scanned.minor {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let headers = field_map(&head, &fields[..scanned.count]).map_err(|()| HeadError::Malformed)?;
    let framing = framing(&headers)?;
    let keep_alive = keeps_alive(version, &headers);
    let expects_continue = version == Version::HTTP_11
        && framing != Framing::Empty
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive,
        expects_continue,
    }))
}

/// RFC 9112 section 6.3 for requests: chunked, a length, or no body at all.
fn framing(headers: &HeaderMap) -> Result<Framing, HeadError> {
    if headers.contains_key(TRANSFER_ENCODING) {
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(HeadError::AmbiguousLength);
        }
        return if ends_chunked(headers) {
            Ok(Framing::Chunked)
        } else {
            Err(HeadError::TransferEncoding)
        };
    }
    Ok(
        match content_length(headers).map_err(|()| HeadError::ContentLength)? {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        },
    )
}

/// Where a part of the head is: start and end offsets (a head is at most `MAX_HEAD` bytes plus
/// one read, so `u32` holds them).
type Span = (u32, u32);

/// A complete head found at the start of a buffer, its parts recorded by position, so the buffer
/// can be split and frozen after the parser's borrow ends (header values then share its memory).
struct Scanned {
    len: usize,
    method: Span,
    target: Span,
    minor: u8,
    /// How many of the fields were filled.
    count: usize,
}

fn scan(buf: &[u8], fields: &mut [Field; MAX_HEADERS]) -> Result<Option<Scanned>, HeadError> {
    // Uninitialised slots, filled by the parser: initialising a hundred empty headers on every
    // request would cost more than parsing the head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_request_with_uninit_headers(&mut req, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let base = buf.as_ptr() as usize;
    // Offsets within `buf`: every part the parser returns is a slice of it.
    let span = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        (start as u32, (start + part.len()) as u32)
    };
    let scanned = Scanned {
        len,
        method: span(req.method.ok_or(HeadError::Malformed)?.as_bytes()),
        target: span(req.path.ok_or(HeadError::Malformed)?.as_bytes()),
        minor: req.version.ok_or(HeadError::Malformed)?,
        count: req.headers.len(),
    };
    for (slot, field) in fields.iter_mut().zip(req.headers.iter()) {
        *slot = Field {
            name: span(field.name.as_bytes()),
            value: span(field.value),
        };
    }
    Ok(Some(scanned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Result<Option<Head>, HeadError> {
        parse_head(&mut BytesMut::from(text))
    }

    #[test]
    fn parses_the_request_line_headers_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            &b"POST /cart?item=1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\nX-A: 1\r\nX-A: 2\r\n\r\nbodyGET"[..],
        );
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri, "/cart?item=1");
        assert_eq!(head.parts.version, Version::HTTP_11);
        assert_eq!(head.parts.headers["host"], "shop");
        assert_eq!(head.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(head.framing, Framing::Length(4));
        assert!(head.keep_alive);
        assert!(!head.expects_continue);
        assert_eq!(&buf[..], b"bodyGET");
    }

    #[test]
    fn an_incomplete_head_waits_and_leading_blank_lines_are_skipped() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let head = parse(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.parts.uri, "/");
    }

    #[test]
    fn framing_and_persistence_follow_rfc_9112() {
        let framing = |text: &str| parse(text.as_bytes()).map(|h| h.map(|h| h.framing));
        assert_eq!(framing("GET / HTTP/1.1\r\n\r\n"), Ok(Some(Framing::Empty)));
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Ok(Some(Framing::Empty))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(Some(Framing::Chunked))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"),
            Ok(Some(Framing::Length(5)))
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
            Err(HeadError::AmbiguousLength)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Err(HeadError::TransferEncoding)
        );
        for bad in ["5, 6", "+5", "5 5", "", "0x5", "99999999999999999999999"] {
            let text = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(framing(&text), Err(HeadError::ContentLength), "{bad:?}");
        }
        let keeps = |text: &str| parse(text.as_bytes()).unwrap().unwrap().keep_alive;
        assert!(!keeps("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.0\r\n\r\n"));
        assert!(keeps("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn expect_continue_only_with_a_body_on_http_1_1() {
        let expects = |text: &str| parse(text.as_bytes()).unwrap().unwrap().expects_continue;
        assert!(expects(
            "PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"
        ));
        assert!(!expects("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"));
        assert!(!expects(
            "PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        ));
    }

    #[test]
    fn rejects_bad_heads_with_the_status_that_says_why() {
        assert_eq!(parse(b"GET\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(parse(b"G@T / HTTP/1.1\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").unwrap_err(),
            HeadError::Malformed
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes()).unwrap_err().status(), 431);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(many.as_bytes()).unwrap_err().status(), 431);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..800)) {
                let mut buf = BytesMut::from(&input[..]);
                let before = buf.len();
                // A parsed head is taken from the buffer; an incomplete one waits for more
                // (only blank lines before it may go).
                match parse_head(&mut buf) {
                    Ok(Some(_)) => prop_assert!(buf.len() < before),
                    Ok(None) => prop_assert!(input.ends_with(&buf)),
                    Err(_) => {}
                }
            }

            #[test]
            fn cut_or_mangled_heads(cut in 0usize..90, at in 0usize..90, byte: u8) {
                let good = b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nCookie: s=1\r\n\r\nabc";
                let mut input = good[..cut.min(good.len())].to_vec();
                if let Some(b) = input.get_mut(at) {
                    *b = byte;
                }
                let _ = parse_head(&mut BytesMut::from(&input[..]));
            }
        }
    }
}
