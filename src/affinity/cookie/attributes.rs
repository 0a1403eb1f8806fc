//! [`CookieAttributes`]: how the affinity cookie is written (`Set-Cookie`), with the `__Host-` /
//! `__Secure-` prefix rules checked when the strategy is built, and the `Cache-Control` merge that
//! keeps shared caches from handing one client's cookie to everyone.

use std::time::Duration;

use cookie::time::OffsetDateTime;
use cookie::{Cookie, SameSite};
use http::HeaderValue;
use http::header::{CACHE_CONTROL, SET_COOKIE};

use super::CookieConfigError;

/// The attributes of the affinity cookie.
///
/// Defaults: `Path=/`, no `Domain`, a session cookie (no `Max-Age`), not `Secure`, `HttpOnly`,
/// `SameSite=Lax`. A name starting with `__Host-` forces `Secure` and `Path=/` and forbids
/// `Domain`; `__Secure-` forces `Secure`. Conflicting settings are refused by
/// [`build`](super::CookieAffinityBuilder::build) with a [`CookieConfigError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttributes {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) secure: Option<bool>,
    pub(crate) http_only: bool,
    pub(crate) same_site: Option<SameSite>,
    pub(crate) path_set: bool,
}

/// `__Host-`: the browser only accepts it with `Secure`, `Path=/` and no `Domain`.
const HOST_PREFIX: &str = "__Host-";
/// `__Secure-`: the browser only accepts it with `Secure`.
const SECURE_PREFIX: &str = "__Secure-";

impl CookieAttributes {
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            path: "/".to_owned(),
            domain: None,
            max_age: None,
            secure: None,
            http_only: true,
            same_site: Some(SameSite::Lax),
            path_set: false,
        }
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the cookie is sent with `Secure` (explicitly, or forced by a prefix).
    pub fn is_secure(&self) -> bool {
        self.secure.unwrap_or(false) || self.has_prefix()
    }

    fn has_prefix(&self) -> bool {
        self.name.starts_with(HOST_PREFIX) || self.name.starts_with(SECURE_PREFIX)
    }

    /// Checks the name and the prefix rules.
    pub(crate) fn validate(&self) -> Result<(), CookieConfigError> {
        let valid_token = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !valid_token {
            return Err(CookieConfigError::InvalidName(self.name.clone()));
        }
        let value_safe = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';');
        if !self.path.starts_with('/') || !value_safe(&self.path) {
            return Err(CookieConfigError::InvalidAttribute("path"));
        }
        if self
            .domain
            .as_deref()
            .is_some_and(|d| d.is_empty() || !value_safe(d))
        {
            return Err(CookieConfigError::InvalidAttribute("domain"));
        }
        if self.has_prefix() && self.secure == Some(false) {
            return Err(CookieConfigError::PrefixRule {
                name: self.name.clone(),
                rule: "needs Secure",
            });
        }
        if self.name.starts_with(HOST_PREFIX) {
            if self.domain.is_some() {
                return Err(CookieConfigError::PrefixRule {
                    name: self.name.clone(),
                    rule: "forbids Domain",
                });
            }
            if self.path_set && self.path != "/" {
                return Err(CookieConfigError::PrefixRule {
                    name: self.name.clone(),
                    rule: "needs Path=/",
                });
            }
        }
        if self.same_site == Some(SameSite::None) && !self.is_secure() {
            return Err(CookieConfigError::SameSiteNoneNeedsSecure);
        }
        Ok(())
    }

    /// The `Set-Cookie` header value for `value` (already cookie-safe: base64 or percent-encoded).
    pub(crate) fn set_cookie(&self, value: &str) -> Option<HeaderValue> {
        let mut cookie = Cookie::new(self.name.as_str(), value);
        cookie.set_path(self.path.as_str());
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.as_str());
        }
        if let Some(max_age) = self.max_age {
            let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            let max_age = cookie::time::Duration::seconds(secs);
            cookie.set_max_age(max_age);
            // Expires too, for clients that predate Max-Age.
            if let Some(expires) = OffsetDateTime::now_utc().checked_add(max_age) {
                cookie.set_expires(expires);
            }
        }
        cookie.set_secure(self.is_secure());
        cookie.set_http_only(self.http_only);
        cookie.set_same_site(self.same_site);
        HeaderValue::try_from(cookie.to_string()).ok()
    }
}

/// Adds `Set-Cookie` to a response head and makes sure shared caches do not store it.
pub(crate) fn add_set_cookie(head: &mut http::response::Parts, set_cookie: HeaderValue) {
    head.headers.append(SET_COOKIE, set_cookie);
    forbid_shared_caching_of_set_cookie(&mut head.headers);
}

/// `Cache-Control: no-cache="set-cookie"` (RFC 9111 §5.2.2.4: a cache may store the response but
/// must not reuse the `Set-Cookie` field without revalidation). An existing `Cache-Control` is
/// kept and extended, unless it already stops shared caches (`no-store`, `private`, bare
/// `no-cache`).
fn forbid_shared_caching_of_set_cookie(headers: &mut http::HeaderMap) {
    const DIRECTIVE: &str = "no-cache=\"set-cookie\"";
    let existing: Vec<String> = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    if existing.is_empty() {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(DIRECTIVE));
        return;
    }
    let already_safe = existing
        .iter()
        .flat_map(|line| line.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .any(|d| {
            d == "no-store"
                || d == "private"
                || d.starts_with("private=")
                || d == "no-cache"
                || (d.starts_with("no-cache=") && d.contains("set-cookie"))
        });
    if already_safe {
        return;
    }
    let merged = format!("{}, {DIRECTIVE}", existing.join(", "));
    if let Ok(value) = HeaderValue::try_from(merged) {
        headers.insert(CACHE_CONTROL, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(cache_control: &[&str]) -> http::response::Parts {
        let mut b = http::Response::builder();
        for v in cache_control {
            b = b.header(CACHE_CONTROL, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn cache_control(h: &http::response::Parts) -> Vec<&str> {
        h.headers
            .get_all(CACHE_CONTROL)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn cache_control_is_added_or_merged() {
        let v = HeaderValue::from_static("srv=x");
        let mut h = head(&[]);
        add_set_cookie(&mut h, v.clone());
        assert_eq!(cache_control(&h), ["no-cache=\"set-cookie\""]);
        assert_eq!(h.headers.get(SET_COOKIE).unwrap(), "srv=x");

        let mut h = head(&["max-age=60", "public"]);
        add_set_cookie(&mut h, v.clone());
        assert_eq!(
            cache_control(&h),
            ["max-age=60, public, no-cache=\"set-cookie\""]
        );

        for safe in ["no-store", "private, max-age=5", "No-Cache"] {
            let mut h = head(&[safe]);
            add_set_cookie(&mut h, v.clone());
            assert_eq!(cache_control(&h), [safe]);
        }
    }

    #[test]
    fn defaults_and_rendering() {
        let mut a = CookieAttributes::new("srv");
        a.validate().unwrap();
        let s = a.set_cookie("v").unwrap();
        assert_eq!(s, "srv=v; HttpOnly; SameSite=Lax; Path=/");
        a.max_age = Some(Duration::from_secs(3600));
        a.domain = Some("example.com".into());
        a.secure = Some(true);
        let s = a.set_cookie("v").unwrap();
        let s = s.to_str().unwrap();
        for part in [
            "Max-Age=3600",
            "Expires=",
            "Domain=example.com",
            "Secure",
            "HttpOnly",
        ] {
            assert!(s.contains(part), "{s}");
        }
    }

    #[test]
    fn prefix_rules_are_checked() {
        let mut a = CookieAttributes::new("__Host-srv");
        a.validate().unwrap();
        assert!(a.is_secure());
        assert!(
            a.set_cookie("v")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Secure")
        );
        a.domain = Some("example.com".into());
        assert!(matches!(
            a.validate(),
            Err(CookieConfigError::PrefixRule { .. })
        ));
        let mut a = CookieAttributes::new("__Host-srv");
        a.path = "/app".into();
        a.path_set = true;
        assert!(a.validate().is_err());
        let mut a = CookieAttributes::new("__Secure-srv");
        a.secure = Some(false);
        assert!(a.validate().is_err());
        let mut a = CookieAttributes::new("srv");
        a.same_site = Some(SameSite::None);
        assert!(matches!(
            a.validate(),
            Err(CookieConfigError::SameSiteNoneNeedsSecure)
        ));
        for bad in ["", "a b", "a;b", "a=b", "é"] {
            assert!(CookieAttributes::new(bad).validate().is_err(), "{bad:?}");
        }
    }
}
