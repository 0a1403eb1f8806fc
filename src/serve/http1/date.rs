//! The `Date` header an origin server must send (RFC 9110 section 6.6.1), for responses whose
//! service set none (a relayed response keeps its backend's). Formatting a date costs more than
//! the rest of a small response head, so each thread formats it once a second.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The second last formatted, and its IMF-fixdate.
    static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends `date: <now>\r\n` to `out`.
pub(crate) fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            *cache = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(cache.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_current_time_as_an_http_date() {
        let before = SystemTime::now() - std::time::Duration::from_secs(1);
        let mut out = Vec::new();
        write_date(&mut out);
        let line = String::from_utf8(out).unwrap();
        let value = line
            .strip_prefix("date: ")
            .and_then(|l| l.strip_suffix("\r\n"))
            .unwrap();
        assert_eq!(
            value.len(),
            "Sun, 06 Nov 1994 08:49:37 GMT".len(),
            "{value}"
        );
        let parsed = httpdate::parse_http_date(value).unwrap();
        assert!(parsed >= before && parsed <= SystemTime::now(), "{value}");
    }
}
