//! Writing a response head and choosing how its body is framed (RFC 9112 sections 4, 6 and 9).
//! The header map was validated by `http` (no CR or LF in a name or value), so what is written is
//! exactly one response.

use std::io::Write;

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version, response};
use http_body::SizeHint;

use super::date::write_date;
use crate::http_backend::h1::decode::content_length;
use crate::http_backend::h1::encode::write_field;

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body is written (a response to HEAD, 1xx, 204, 304): the head's fields stay as the
    /// service set them, since they describe the body a GET would have had.
    None,
    /// No body is written (a response to HEAD), but `Content-Length` says how long the body the
    /// service returned anyway is, as for a GET (the service set no length of its own).
    HeadOf(u64),
    /// `Content-Length` of this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body runs to the connection's end (HTTP/1.0 clients, which cannot read chunks).
    UntilClose,
}

/// The framing of a response with `parts` and a body that says it is at its end (`empty`) or
/// announces `hint`, to a request with `version` (`head`: the request was HEAD).
pub(crate) fn framing(
    parts: &response::Parts,
    empty: bool,
    hint: &SizeHint,
    version: Version,
    head: bool,
) -> Framing {
    let status = parts.status;
    if head && !parts.headers.contains_key(CONTENT_LENGTH) {
        // A HEAD-aware service returns an empty body: then nothing is announced.
        if let Some(n) = hint.exact().filter(|&n| n > 0 && !empty) {
            return Framing::HeadOf(n);
        }
    }
    if head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Framing::None;
    }
    if empty {
        return Framing::Length(0);
    }
    if let Some(n) = hint.exact() {
        return Framing::Length(n);
    }
    // A streaming body whose length the service announced (a relayed response, say).
    if !parts.headers.contains_key(TRANSFER_ENCODING) {
        if let Ok(Some(n)) = content_length(&parts.headers) {
            return Framing::Length(n);
        }
    }
    if version == Version::HTTP_10 {
        Framing::UntilClose
    } else {
        Framing::Chunked
    }
}

/// Whether the service asked for the connection to close after this response.
pub(crate) fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// Appends the status line and header block of `parts` to `out`, with the framing headers for
/// `framing` (replacing the service's own) and the connection's fate: `close`, or kept alive for
/// an HTTP/1.0 client that asked (`version`).
pub(crate) fn write_head(
    parts: &response::Parts,
    framing: Framing,
    close: bool,
    version: Version,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let replaces_framing = matches!(framing, Framing::Length(_) | Framing::Chunked);
    for (name, value) in &parts.headers {
        if name == CONNECTION
            || (replaces_framing && (name == CONTENT_LENGTH || name == TRANSFER_ENCODING))
            || (framing == Framing::UntilClose && name == TRANSFER_ENCODING)
        {
            continue;
        }
        write_field(name, value, out);
    }
    if !parts.headers.contains_key(DATE) {
        write_date(out);
    }
    match framing {
        // Writing to a Vec cannot fail.
        Framing::Length(n) | Framing::HeadOf(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete response telling the client what was wrong with its request, before the connection
/// closes.
pub(crate) fn write_error(status: StatusCode, message: &str, out: &mut Vec<u8>) {
    let body = format!(
        "{}: {message}\n",
        status.canonical_reason().unwrap_or("error")
    );
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("Unknown"),
    );
    write_date(out);
    let _ = write!(
        out,
        "content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(status: u16, headers: &[(&str, &str)]) -> response::Parts {
        let mut builder = http::Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn head(parts: &response::Parts, framing: Framing, close: bool, version: Version) -> String {
        let mut out = Vec::new();
        write_head(parts, framing, close, version, &mut out);
        without_date(String::from_utf8(out).unwrap())
    }

    /// The text with its one `date` line (checked to be there) taken out: the rest is fixed.
    fn without_date(text: String) -> String {
        let start = text.find("\r\ndate: ").expect("a date line") + 2;
        let end = start + text[start..].find("\r\n").unwrap() + 2;
        let line = &text[start..end];
        assert!(
            httpdate::parse_http_date(&line[6..line.len() - 2]).is_ok(),
            "{line}"
        );
        format!("{}{}", &text[..start], &text[end..])
    }

    #[test]
    fn framing_follows_the_body_the_status_and_the_client() {
        let unknown = SizeHint::default();
        let ok = parts(200, &[]);
        let v11 = Version::HTTP_11;
        assert_eq!(framing(&ok, true, &unknown, v11, false), Framing::Length(0));
        assert_eq!(
            framing(&ok, false, &SizeHint::with_exact(7), v11, false),
            Framing::Length(7)
        );
        assert_eq!(framing(&ok, false, &unknown, v11, false), Framing::Chunked);
        assert_eq!(
            framing(&ok, false, &unknown, Version::HTTP_10, false),
            Framing::UntilClose
        );
        assert_eq!(
            framing(
                &parts(200, &[("content-length", "9")]),
                false,
                &unknown,
                v11,
                false
            ),
            Framing::Length(9)
        );
        assert_eq!(
            framing(
                &parts(200, &[("content-length", "x")]),
                false,
                &unknown,
                v11,
                false
            ),
            Framing::Chunked
        );
        assert_eq!(framing(&ok, false, &unknown, v11, true), Framing::None);
        let seven = SizeHint::with_exact(7);
        assert_eq!(framing(&ok, false, &seven, v11, true), Framing::HeadOf(7));
        assert_eq!(
            framing(&ok, true, &SizeHint::with_exact(0), v11, true),
            Framing::None
        );
        let announced = parts(200, &[("content-length", "9")]);
        assert_eq!(framing(&announced, false, &seven, v11, true), Framing::None);
        for status in [101, 204, 304] {
            let p = parts(status, &[]);
            assert_eq!(framing(&p, false, &unknown, v11, false), Framing::None);
        }
    }

    #[test]
    fn the_head_carries_our_framing_and_the_connections_fate() {
        let p = parts(
            200,
            &[
                ("content-type", "text/plain"),
                ("content-length", "99"),
                ("transfer-encoding", "chunked"),
                ("connection", "keep-alive"),
            ],
        );
        assert_eq!(
            head(&p, Framing::Length(3), false, Version::HTTP_11),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(
            head(&p, Framing::Chunked, true, Version::HTTP_11),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\
             connection: close\r\n\r\n"
        );
        // A HEAD response keeps the length a GET would have had.
        let p = parts(404, &[("content-length", "12")]);
        assert_eq!(
            head(&p, Framing::None, false, Version::HTTP_10),
            "HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\nconnection: keep-alive\r\n\r\n"
        );
        assert_eq!(
            head(
                &parts(599, &[]),
                Framing::Length(0),
                false,
                Version::HTTP_11
            ),
            "HTTP/1.1 599 Unknown\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(asks_to_close(
            &parts(200, &[("connection", "Upgrade, Close")]).headers
        ));
        assert!(!asks_to_close(&parts(200, &[]).headers));
    }

    #[test]
    fn error_responses_are_whole_and_close() {
        let mut out = Vec::new();
        write_error(StatusCode::BAD_REQUEST, "malformed request head", &mut out);
        let text = without_date(String::from_utf8(out).unwrap());
        let body = "Bad Request: malformed request head\n";
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        );
    }
}
