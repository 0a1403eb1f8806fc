//! [`BackendId`]: the stable name of one backend.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The stable, string-like name of one backend (`"a"`, `"eu-west-1"`, `"10.0.0.7:8080"`).
///
/// Routing never depends on a backend's position in a list, only on its id: rings are built from
/// ids and weights, pinned cookies name the id, and two balancer replicas that know the same ids
/// route the same way. Cloning is cheap (an `Arc<str>`).
///
/// ```
/// use tower_sticky::BackendId;
/// let id = BackendId::from("a");
/// assert_eq!(id.as_str(), "a");
/// assert_eq!(id.to_string(), "a");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(Arc<str>);

impl BackendId {
    /// Makes an id from anything string-like.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for BackendId {
    fn from(id: &str) -> Self {
        Self(id.into())
    }
}

impl From<String> for BackendId {
    fn from(id: String) -> Self {
        Self(id.into())
    }
}

impl From<&String> for BackendId {
    fn from(id: &String) -> Self {
        Self(id.as_str().into())
    }
}

impl From<Arc<str>> for BackendId {
    fn from(id: Arc<str>) -> Self {
        Self(id)
    }
}

impl AsRef<str> for BackendId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for BackendId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for BackendId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for BackendId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}
