//! The session cookie: its name and attributes, how it is read from a request and written back.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::HeaderMap;

use super::SessionId;

/// Attributes of the session cookie.
///
/// Defaults: name `session`, `Path=/`, `HttpOnly`, `Secure`, `SameSite=Lax`, no `Domain`, no
/// `Max-Age` (a browser-session cookie; the server-side expiry still applies).
/// [`host_prefix`](Self::host_prefix) renames it `__Host-<name>` and forces what that prefix
/// requires (`Secure`, `Path=/`, no `Domain`).
///
/// ```
/// use std::time::Duration;
/// use tower_sticky::session::CookieConfig;
///
/// let cookie = CookieConfig::new("sid")
///     .same_site(cookie::SameSite::Strict)
///     .max_age(Some(Duration::from_secs(3600)))
///     .host_prefix();
/// assert_eq!(cookie.name(), "__Host-sid");
/// ```
#[derive(Debug, Clone)]
pub struct CookieConfig {
    name: String,
    path: String,
    domain: Option<String>,
    secure: bool,
    http_only: bool,
    same_site: Option<SameSite>,
    max_age: Option<Duration>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self::new("session")
    }
}

impl CookieConfig {
    /// Default attributes with the given cookie name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            path: "/".into(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: Some(SameSite::Lax),
            max_age: None,
        }
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Path` attribute (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// `Domain` attribute (default none: host-only).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// `Secure` attribute (default on). Turn off only for plain-HTTP development.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// `HttpOnly` attribute (default on).
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// `SameSite` attribute (default `Lax`); `SameSite::None` also needs `Secure` in browsers.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = Some(same_site);
        self
    }

    /// `Max-Age` attribute; `None` (default) makes a browser-session cookie.
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Uses the `__Host-` prefix: the browser then only accepts the cookie if it is `Secure`, has
    /// `Path=/` and no `Domain`, which this sets.
    pub fn host_prefix(mut self) -> Self {
        if !self.name.starts_with("__Host-") {
            self.name = format!("__Host-{}", self.name);
        }
        self.secure = true;
        self.path = "/".into();
        self.domain = None;
        self
    }

    /// Whether the cookie carries `Max-Age` (then it is re-sent whenever the session is saved or
    /// touched, so the browser's expiry follows the server's).
    #[cfg(feature = "axum")]
    pub(crate) fn is_persistent(&self) -> bool {
        self.max_age.is_some()
    }

    /// The first cookie of this name in `headers` whose value is a well-formed session id.
    /// Anything else (non-UTF-8 headers, garbage, oversized or truncated values) is ignored.
    pub fn session_id(&self, headers: &HeaderMap) -> Option<SessionId> {
        crate::headers::cookie_values(headers, &self.name).find_map(SessionId::parse)
    }

    /// The `Set-Cookie` value that gives the client this session id.
    pub fn set_cookie(&self, id: &SessionId) -> String {
        let mut c = self.base(id.as_str().to_owned());
        if let Some(max_age) = self.max_age {
            let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            c.set_max_age(cookie::time::Duration::seconds(secs));
        }
        c.to_string()
    }

    /// The `Set-Cookie` value that removes the session cookie from the client.
    pub fn removal_cookie(&self) -> String {
        let mut c = self.base(String::new());
        c.make_removal();
        c.to_string()
    }

    fn base(&self, value: String) -> Cookie<'static> {
        let mut c = Cookie::new(self.name.clone(), value);
        c.set_path(self.path.clone());
        if let Some(domain) = &self.domain {
            c.set_domain(domain.clone());
        }
        c.set_secure(self.secure);
        c.set_http_only(self.http_only);
        c.set_same_site(self.same_site);
        c
    }
}

#[cfg(test)]
mod tests {
    use http::header::COOKIE;

    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                h.append(COOKIE, v);
            }
        }
        h
    }

    #[test]
    fn finds_the_session_cookie_among_others_and_skips_bad_ones() {
        let cfg = CookieConfig::new("sid");
        let id = SessionId::generate();
        let good = format!("a=1; sid=garbage; sid={id}; b=2");
        let h = headers(&[b"sid=\xff\xfe", good.as_bytes()]);
        assert_eq!(cfg.session_id(&h), Some(id));
        let oversized = format!("sid={}", "a".repeat(100_000));
        assert_eq!(cfg.session_id(&headers(&[oversized.as_bytes()])), None);
        assert_eq!(cfg.session_id(&headers(&[b"other=1"])), None);
    }

    #[test]
    fn set_cookie_carries_the_attributes() {
        let id = SessionId::generate();
        let c = CookieConfig::new("sid")
            .domain("example.com")
            .same_site(SameSite::Strict)
            .max_age(Some(Duration::from_secs(60)))
            .set_cookie(&id);
        for part in [
            format!("sid={id}").as_str(),
            "Path=/",
            "Domain=example.com",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        let host = CookieConfig::new("sid")
            .domain("example.com")
            .secure(false)
            .host_prefix()
            .set_cookie(&id);
        assert!(host.starts_with("__Host-sid="));
        assert!(host.contains("Secure") && !host.contains("Domain"));
        let removal = CookieConfig::new("sid").removal_cookie();
        assert!(removal.contains("Max-Age=0"), "{removal}");
    }

    proptest! {
        // Untrusted header bytes: never panics; a found id is always well-formed.
        #[test]
        fn reading_cookies_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let cfg = CookieConfig::new("sid");
            let mut raw = b"sid=".to_vec();
            raw.extend_from_slice(&bytes);
            if let Some(id) = cfg.session_id(&headers(&[&bytes, &raw])) {
                prop_assert!(SessionId::parse(id.as_str()).is_some());
            }
        }
    }
}
