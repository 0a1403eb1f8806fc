//! Authenticated cookie values: [`CookieKeys`] (rotation: the first key seals, all open) and the
//! codec that seals and opens values with the `cookie` crate's signed (HMAC-SHA256) or private
//! (AES-256-GCM) jars.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cookie::{Cookie, CookieJar, Key};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::CookieConfigError;

/// Longest cookie value the codec will look at. Browsers cap a cookie at about 4 KiB; anything
/// longer is hostile or broken and is refused before any cryptography runs.
pub(crate) const MAX_VALUE_LEN: usize = 4096;

/// Length of the base64 HMAC-SHA256 digest the signed jar puts in front of the value.
const DIGEST_LEN: usize = 44;

/// The keys that authenticate affinity cookies: the first seals new cookies, every key opens
/// them, so a key can be rotated without moving anyone (add the new key first, keep the old one
/// until the old cookies have expired, then drop it).
///
/// Keys are [`cookie::Key`]s (64 bytes: 32 for HMAC-SHA256 signing, 32 for AES-256-GCM). They
/// are never printed: `Debug` shows only how many there are.
///
/// ```
/// use tower_sticky::affinity::cookie::{CookieKeys, Key};
///
/// # fn main() -> Result<(), tower_sticky::affinity::cookie::CookieConfigError> {
/// let old = Key::generate();
/// let new = Key::generate();
/// let keys = CookieKeys::new(new).verify_also(old);
/// assert_eq!(keys.len(), 2);
/// assert_eq!(format!("{keys:?}"), "CookieKeys { keys: \"<2 redacted>\" }");
///
/// // From bytes, e.g. read from a key file (at least 64 bytes of random data).
/// let keys = CookieKeys::from_bytes(&[7u8; 64])?;
/// # let _ = keys;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CookieKeys {
    keys: Vec<Key>,
}

impl CookieKeys {
    /// One key that seals and opens.
    pub fn new(key: Key) -> Self {
        Self { keys: vec![key] }
    }

    /// A key made from at least 64 bytes of secret random data.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CookieConfigError> {
        Key::try_from(bytes)
            .map(Self::new)
            .map_err(|_| CookieConfigError::KeyTooShort { len: bytes.len() })
    }

    /// A fresh random key. Cookies it seals are only understood by this process: balancer
    /// replicas and restarts need a shared, configured key.
    pub fn generate() -> Result<Self, CookieConfigError> {
        Key::try_generate()
            .map(Self::new)
            .ok_or(CookieConfigError::NoRandomness)
    }

    /// Adds a key that opens cookies but never seals new ones (the previous key during rotation).
    pub fn verify_also(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always `false`: there is at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl From<Key> for CookieKeys {
    fn from(key: Key) -> Self {
        Self::new(key)
    }
}

impl fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieKeys")
            .field("keys", &format!("<{} redacted>", self.keys.len()))
            .finish()
    }
}

/// How an affinity cookie's value is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protection {
    /// HMAC-SHA256 over the cookie name and value: readable by the client, not forgeable.
    #[default]
    Signed,
    /// AES-256-GCM with the cookie name as associated data: neither readable nor forgeable
    /// (the backend id is hidden). About twice as long as a signed value.
    Private,
}

/// A value opened by the codec: a signed value's payload is a slice of the value itself (no
/// copy on the request path), a private one's is decrypted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Opened<'v> {
    pub(crate) payload: std::borrow::Cow<'v, str>,
    /// Opened with a key other than the sealing one: re-seal so rotation completes.
    pub(crate) stale_key: bool,
}

type HmacSha256 = Hmac<Sha256>;

/// Seals and opens cookie values for one cookie name.
///
/// Signed values have the `cookie` crate's signed-jar format, `base64(HMAC-SHA256(text)) ||
/// text`, over the text `{name}={payload}` (the name is left out of the value sent). The HMAC is
/// computed here with the same primitives and the same [`Key::signing`] half, with the keyed state
/// prepared once per key instead of per request: opening a value costs one short HMAC and no
/// allocation besides the payload. Private values go through the `cookie` crate's private jar.
#[derive(Clone)]
pub(crate) struct Codec {
    keys: Arc<[Key]>,
    /// `macs[i]` is HMAC-SHA256 keyed with `keys[i].signing()`, ready to clone.
    macs: Arc<[HmacSha256]>,
    protection: Protection,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("keys", &format!("<{} redacted>", self.keys.len()))
            .field("protection", &self.protection)
            .finish()
    }
}

impl Codec {
    pub(crate) fn new(keys: CookieKeys, protection: Protection) -> Self {
        let macs = keys
            .keys
            .iter()
            .filter_map(|k| HmacSha256::new_from_slice(k.signing()).ok())
            .collect();
        Self {
            keys: keys.keys.into(),
            macs,
            protection,
        }
    }

    /// Seals `payload` for the cookie `name`. `None` only if there is no key or the jar
    /// misbehaves (it cannot with valid input); the caller then sets no cookie rather than
    /// failing the request.
    pub(crate) fn seal(&self, name: &str, payload: &str) -> Option<String> {
        match self.protection {
            Protection::Signed => {
                let mut mac = self.macs.first()?.clone();
                mac.update(name.as_bytes());
                mac.update(b"=");
                mac.update(payload.as_bytes());
                let mut sealed = STANDARD.encode(mac.finalize().into_bytes());
                sealed.push_str(payload);
                Some(sealed)
            }
            Protection::Private => {
                let mut jar = CookieJar::new();
                jar.private_mut(self.keys.first()?)
                    .add(Cookie::new(name.to_owned(), payload.to_owned()));
                Some(jar.get(name)?.value().to_owned())
            }
        }
    }

    /// Opens a value sent by the client; `None` for anything not sealed by one of our keys for
    /// this name (missing, truncated, altered, too long, another key, another cookie name).
    pub(crate) fn open<'v>(&self, name: &str, value: &'v str) -> Option<Opened<'v>> {
        if value.len() > MAX_VALUE_LEN || value.is_empty() {
            return None;
        }
        match self.protection {
            Protection::Signed => {
                let digest = value.get(..DIGEST_LEN)?;
                let payload = value.get(DIGEST_LEN..)?;
                let mut expected = [0u8; 33];
                let len = STANDARD.decode_slice(digest, &mut expected).ok()?;
                let expected = expected.get(..len)?;
                let index = self.macs.iter().position(|keyed| {
                    let mut mac = keyed.clone();
                    mac.update(name.as_bytes());
                    mac.update(b"=");
                    mac.update(payload.as_bytes());
                    // Constant-time comparison (hmac uses `subtle`).
                    mac.verify_slice(expected).is_ok()
                })?;
                Some(Opened {
                    payload: std::borrow::Cow::Borrowed(payload),
                    stale_key: index != 0,
                })
            }
            Protection::Private => {
                let jar = CookieJar::new();
                let candidate = Cookie::new(name.to_owned(), value.to_owned());
                self.keys.iter().enumerate().find_map(|(index, key)| {
                    let opened = jar.private(key).decrypt(candidate.clone())?;
                    Some(Opened {
                        payload: std::borrow::Cow::Owned(opened.value().to_owned()),
                        stale_key: index != 0,
                    })
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(protection: Protection) -> Codec {
        Codec::new(CookieKeys::new(Key::from(&[1u8; 64])), protection)
    }

    #[test]
    fn round_trips_and_refuses_tampering() {
        for protection in [Protection::Signed, Protection::Private] {
            let c = codec(protection);
            let sealed = c.seal("srv", "P1.x").unwrap();
            assert_eq!(c.open("srv", &sealed).unwrap().payload, "P1.x");
            // Another cookie name: refused (name bound in both modes).
            assert!(c.open("other", &sealed).is_none());
            // Truncated.
            assert!(c.open("srv", &sealed[..sealed.len() - 1]).is_none());
            // One character changed anywhere.
            for i in 0..sealed.len() {
                let mut bytes = sealed.clone().into_bytes();
                bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
                let altered = String::from_utf8(bytes).unwrap();
                if altered != sealed {
                    assert!(c.open("srv", &altered).is_none(), "{protection:?} at {i}");
                }
            }
        }
    }

    #[test]
    fn signed_values_do_not_show_the_cookie_name() {
        let sealed = codec(Protection::Signed).seal("srv", "P1.x").unwrap();
        assert!(sealed.ends_with("P1.x"));
        assert!(!sealed.contains("srv"));
    }

    #[test]
    fn rotation_opens_old_values_and_flags_them() {
        let old = Key::from(&[1u8; 64]);
        let new = Key::from(&[2u8; 64]);
        let before = Codec::new(CookieKeys::new(old.clone()), Protection::Signed);
        let after = Codec::new(CookieKeys::new(new).verify_also(old), Protection::Signed);
        let sealed = before.seal("srv", "v").unwrap();
        let opened = after.open("srv", &sealed).unwrap();
        assert!(opened.stale_key);
        let resealed = after.seal("srv", "v").unwrap();
        assert!(!after.open("srv", &resealed).unwrap().stale_key);
        assert!(before.open("srv", &resealed).is_none());
    }

    /// Our signed values are the `cookie` crate's signed-jar values over `{name}={payload}`, with
    /// the `{name}=` left out: each side opens what the other sealed.
    #[test]
    fn signed_values_match_the_cookie_crate_signed_jar() {
        let key = Key::from(&[3u8; 64]);
        let c = Codec::new(CookieKeys::new(key.clone()), Protection::Signed);
        let mut jar = CookieJar::new();
        jar.signed_mut(&key)
            .add(Cookie::new("srv", "srv=P1.payload"));
        let by_jar = jar.get("srv").unwrap().value().to_owned();
        let ours = c.seal("srv", "P1.payload").unwrap();
        assert_eq!(by_jar.replacen("srv=", "", 1), ours);
        let verified = jar
            .signed(&key)
            .verify(Cookie::new("srv", by_jar.clone()))
            .unwrap();
        assert_eq!(verified.value(), "srv=P1.payload");
        assert_eq!(c.open("srv", &ours).unwrap().payload, "P1.payload");
    }

    #[test]
    fn short_keys_are_a_clear_error() {
        assert!(matches!(
            CookieKeys::from_bytes(&[0u8; 10]),
            Err(CookieConfigError::KeyTooShort { len: 10 })
        ));
    }
}
