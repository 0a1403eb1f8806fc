//! Small readers of request headers shared by strategies.

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

/// Values of the cookies named `name` in the request's `Cookie` headers, in order.
///
/// Header lines that are not valid UTF-8 are skipped, not an error: they come from the client and
/// must never fail the request. Values are returned as sent (no percent-decoding).
pub(crate) fn cookie_values<'h, 'n>(
    headers: &'h HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'h str> + use<'h, 'n> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(move |pair| value_if_named(pair, name))
}

/// The value of one `key=value` pair of a `Cookie` line when its key is `name`.
fn value_if_named<'p>(pair: &'p str, name: &str) -> Option<&'p str> {
    let (key, value) = pair.split_once('=')?;
    (key.trim() == name).then(|| value.trim().trim_matches('"'))
}

/// Removes every cookie named `name` from the request's `Cookie` headers, keeping the others in
/// order; a line left empty goes. Lines that are not valid header text are left as they are.
///
/// This runs on every request of an `indirect` cookie strategy: the check allocates nothing, and
/// the usual single line is rewritten in place (or removed when only our cookie was in it).
pub(crate) fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let is_ours = |pair: &str| value_if_named(pair, name).is_some();
    let mut lines = headers.get_all(COOKIE).iter();
    let (first, second) = (lines.next(), lines.next());
    if let (Some(line), None) = (first, second) {
        // The usual single line: one pass says whether it holds our cookie and anything else;
        // only a line that holds both is rebuilt.
        let Ok(text) = line.to_str() else {
            return;
        };
        let (mut ours, mut others) = (false, false);
        for pair in text.split(';').filter(|p| !p.trim().is_empty()) {
            if is_ours(pair) {
                ours = true;
            } else {
                others = true;
            }
        }
        match (ours, others) {
            (false, _) => {}
            (true, false) => {
                headers.remove(COOKIE);
            }
            (true, true) => {
                // The kept pairs were valid header text and "; " is too.
                if let Ok(value) = HeaderValue::from_str(&without(text, is_ours)) {
                    headers.insert(COOKIE, value);
                }
            }
        }
        return;
    }
    let found = headers
        .get_all(COOKIE)
        .iter()
        .any(|line| line.to_str().is_ok_and(|text| text.split(';').any(is_ours)));
    if !found {
        return;
    }
    let rebuilt: Vec<HeaderValue> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|line| match line.to_str() {
            Err(_) => Some(line.clone()),
            Ok(text) => {
                let kept = without(text, is_ours);
                // The kept pairs were valid header text and "; " is too.
                (!kept.is_empty())
                    .then(|| HeaderValue::from_str(&kept).ok())
                    .flatten()
            }
        })
        .collect();
    headers.remove(COOKIE);
    for line in rebuilt {
        headers.append(COOKIE, line);
    }
}

/// The `;`-separated pairs of `text` that `drop` does not match, joined by `"; "`.
fn without(text: &str, drop: impl Fn(&str) -> bool) -> String {
    let mut kept = String::new();
    for pair in text.split(';').map(str::trim) {
        if pair.is_empty() || drop(pair) {
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn removes_one_cookie_and_keeps_the_rest_in_order() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "a=1; srv=x; b=2".parse().unwrap());
        headers.append(COOKIE, "srv=y".parse().unwrap());
        headers.append(COOKIE, HeaderValue::from_bytes(b"c=\xff").unwrap());
        remove_cookie(&mut headers, "srv");
        let lines: Vec<&[u8]> = headers
            .get_all(COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(lines, [&b"a=1; b=2"[..], &b"c=\xff"[..]]);

        let mut only = HeaderMap::new();
        only.insert(COOKIE, "srv=x".parse().unwrap());
        remove_cookie(&mut only, "srv");
        assert!(only.get(COOKIE).is_none(), "an emptied line goes");

        let mut untouched = HeaderMap::new();
        untouched.insert(COOKIE, "srvx=1;  a=2".parse().unwrap());
        remove_cookie(&mut untouched, "srv");
        assert_eq!(untouched[COOKIE], "srvx=1;  a=2", "no match: not rewritten");
    }

    proptest! {
        #[test]
        fn removing_is_total_and_leaves_no_cookie_of_that_name(
            lines in proptest::collection::vec("[ -~]{0,40}", 0..4),
            name in "[a-z]{1,4}",
        ) {
            let mut headers = HeaderMap::new();
            for line in &lines {
                if let Ok(value) = HeaderValue::from_str(line) {
                    headers.append(COOKIE, value);
                }
            }
            let others_before: Vec<String> = headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|l| l.split(';'))
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty() && p.split_once('=').is_none_or(|(k, _)| k.trim() != name))
                .collect();
            remove_cookie(&mut headers, &name);
            prop_assert_eq!(cookie_values(&headers, &name).count(), 0);
            let others_after: Vec<String> = headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|l| l.split(';'))
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect();
            prop_assert_eq!(others_before, others_after);
        }
    }

    #[test]
    fn finds_cookies_across_lines_and_skips_bad_ones() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "a=1; sid=abc; b=2".parse().unwrap());
        headers.append(
            COOKIE,
            http::HeaderValue::from_bytes(b"sid=\xff\xfe").unwrap(),
        );
        headers.append(COOKIE, "sid=\"second\"".parse().unwrap());
        let found: Vec<&str> = cookie_values(&headers, "sid").collect();
        assert_eq!(found, ["abc", "second"]);
        assert_eq!(cookie_values(&headers, "missing").count(), 0);
    }
}
