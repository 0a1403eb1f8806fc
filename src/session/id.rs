//! Session ids: 128 bits from a CSPRNG, written as 32 lowercase hex digits (URL- and cookie-safe).

use std::fmt;

/// Number of random bytes in a session id (128 bits).
const ID_BYTES: usize = 16;
/// Length of the text form: two hex digits per byte.
const ID_CHARS: usize = ID_BYTES * 2;

/// A session id: 128 bits from the thread-local CSPRNG (ChaCha, seeded and reseeded from the OS).
///
/// Ids are only ever minted by the server ([`SessionId::generate`]). [`SessionId::parse`] accepts
/// only the exact text form (32 lowercase hex digits), so an oversized, truncated or garbage
/// cookie is rejected before it reaches a store. A well-formed id that the store does not know is
/// never adopted: the request gets a new session with a new id.
///
/// `Debug` shows only the first 8 digits: an id is a bearer credential and must not end up whole
/// in logs.
///
/// ```
/// use tower_sticky::session::SessionId;
///
/// let id = SessionId::generate();
/// assert_eq!(id.as_str().len(), 32);
/// assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
/// assert_eq!(SessionId::parse("not-an-id"), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(Box<str>);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        rand::fill(&mut bytes[..]);
        let mut text = String::with_capacity(ID_CHARS);
        for b in bytes {
            text.push(hex_digit(b >> 4));
            text.push(hex_digit(b & 0x0f));
        }
        Self(text.into_boxed_str())
    }

    /// Parses the text form; `None` unless `text` is exactly 32 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == ID_CHARS
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(text.into()))
    }

    /// The text form (what goes into the cookie and the store key).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.get(..8).unwrap_or("");
        write!(f, "SessionId({shown}…)")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_are_distinct_and_parse_back() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| SessionId::generate()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids {
            assert_eq!(SessionId::parse(id.as_str()).as_ref(), Some(&id));
        }
    }

    #[test]
    fn rejects_wrong_shapes() {
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdeg",
            "ééééééééééééééé0",
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_does_not_leak_the_whole_id() {
        let id = SessionId::generate();
        let shown = format!("{id:?}");
        assert!(!shown.contains(id.as_str()));
    }

    proptest! {
        // Untrusted cookie text: never panics, accepts only the canonical form.
        #[test]
        fn parse_never_panics_and_is_canonical(s in ".{0,80}") {
            if let Some(id) = SessionId::parse(&s) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert_eq!(s.len(), 32);
            }
        }
    }
}
