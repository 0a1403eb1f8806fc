//! Writing a request head and framing its body (RFC 9112 sections 3, 6 and 7). The header map has
//! been validated by `http` (no CR or LF can be in a name or value), so what is written here is
//! exactly one request.

use std::io::Write;

use bytes::Bytes;
use http::Method;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http_body::SizeHint;

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length` of this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked` (length not known in advance).
    Chunked,
}

impl BodyFraming {
    /// The framing of a body that says it is at its end (`empty`) or announces `hint`.
    pub(crate) fn of(empty: bool, hint: &SizeHint) -> Self {
        match hint.exact() {
            _ if empty => Self::Empty,
            Some(0) => Self::Empty,
            Some(n) => Self::Length(n),
            None => Self::Chunked,
        }
    }
}

/// Methods whose empty body is announced with `Content-Length: 0` (RFC 9110 section 8.6: a body is
/// expected, so saying there is none keeps the backend from waiting).
fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// Appends the request line and header block of `parts` to `out`, with the framing headers for
/// `framing` (whatever framing headers the client's request had are replaced).
pub(crate) fn write_head(parts: &Parts, framing: BodyFraming, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Empty if expects_body(&parts.method) => {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        BodyFraming::Empty => {}
        BodyFraming::Length(n) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body (never an empty one: that would end the body).
pub(crate) fn write_chunk(data: &Bytes, out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the end of a chunked body, with its trailer fields if any.
pub(crate) fn write_last_chunk(trailers: Option<&http::HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(req: http::Request<()>, framing: BodyFraming) -> String {
        let mut out = Vec::new();
        write_head(&req.into_parts().0, framing, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_the_origin_form_and_replaces_framing_headers() {
        let req = http::Request::get("/a?b=1")
            .header("host", "10.0.0.1:80")
            .header("x-user", "alice")
            .header("content-length", "99")
            .body(())
            .unwrap();
        assert_eq!(
            head(req, BodyFraming::Empty),
            "GET /a?b=1 HTTP/1.1\r\nhost: 10.0.0.1:80\r\nx-user: alice\r\n\r\n"
        );
        let post = http::Request::post("/up").body(()).unwrap();
        assert_eq!(
            head(post, BodyFraming::Empty),
            "POST /up HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
        let put = http::Request::put("/up")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        assert_eq!(
            head(put, BodyFraming::Length(12)),
            "PUT /up HTTP/1.1\r\ncontent-length: 12\r\n\r\n"
        );
        let stream = http::Request::post("/s").body(()).unwrap();
        assert_eq!(
            head(stream, BodyFraming::Chunked),
            "POST /s HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn chunks_and_trailers() {
        let mut out = Vec::new();
        write_chunk(&Bytes::from_static(b"hello, world!!"), &mut out);
        write_chunk(&Bytes::new(), &mut out);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", "9".parse().unwrap());
        write_last_chunk(Some(&trailers), &mut out);
        assert_eq!(out, b"e\r\nhello, world!!\r\n0\r\nx-sum: 9\r\n\r\n");
        assert_eq!(
            BodyFraming::of(true, &SizeHint::with_exact(5)),
            BodyFraming::Empty
        );
        assert_eq!(
            BodyFraming::of(false, &SizeHint::with_exact(5)),
            BodyFraming::Length(5)
        );
        assert_eq!(
            BodyFraming::of(false, &SizeHint::new()),
            BodyFraming::Chunked
        );
    }
}
