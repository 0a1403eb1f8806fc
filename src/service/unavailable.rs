//! The 503 that `Sticky` answers itself.

use http::{HeaderValue, Response, StatusCode, header};

use super::TextBody;

use crate::affinity::Unavailable;

/// `503 Service Unavailable` with a one-line plain-text body naming the reason, e.g.
/// `no healthy backend available`.
pub fn unavailable_response<B: TextBody>(why: Unavailable) -> Response<B> {
    let mut res = Response::new(B::from_text(format!(
        "503 Service Unavailable: {}\n",
        why.message()
    )));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.extensions_mut().insert(why);
    res
}
