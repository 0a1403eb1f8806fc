//! Request extension maps made with room to spare, so the records `Sticky` adds do not regrow
//! them.
//!
//! `http::Extensions` allocates its table on the first insert, with room for three entries, and
//! regrows it (a new table, every entry moved, the old one freed) on the fourth. A request served
//! through [`with_client_addr`](crate::serve::with_client_addr), `Sticky` and an axum router gets
//! four (`ClientAddr`, `Routed`, axum's `MatchedPath` and URL parameters), so it would pay for
//! that regrowth on every request. Cloning a map keeps its table size, empty or not, so a clone of
//! an empty map that was grown once costs the same allocations as a first insert and never
//! regrows afterwards.

use std::sync::OnceLock;

use http::Extensions;

// Zero-sized, so inserting them to grow a map allocates nothing for the values.
#[derive(Clone)]
struct Room0;
#[derive(Clone)]
struct Room1;
#[derive(Clone)]
struct Room2;
#[derive(Clone)]
struct Room3;

/// An empty map whose table holds seven entries before it grows (a request's map: the peer
/// address, `Routed`, what a router or handler adds).
pub(crate) fn for_request() -> Extensions {
    static EMPTY: OnceLock<Extensions> = OnceLock::new();
    EMPTY
        .get_or_init(|| {
            let mut map = Extensions::new();
            // The fourth entry grows the table from four buckets to eight; clearing keeps them.
            map.insert(Room0);
            map.insert(Room1);
            map.insert(Room2);
            map.insert(Room3);
            map.clear();
            map
        })
        .clone()
}

/// Inserts `value` into a request's `extensions`, first giving them room ([`for_request`]) when
/// they have no entries (the usual case for a request fresh from the server).
#[inline]
pub(crate) fn insert_roomy<T: Clone + Send + Sync + 'static>(
    extensions: &mut Extensions,
    value: T,
) {
    if extensions.is_empty() {
        *extensions = for_request();
    }
    extensions.insert(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roomy_maps_start_empty_and_work_as_usual() {
        let mut map = for_request();
        assert!(map.is_empty());
        insert_roomy(&mut map, 7u32);
        insert_roomy(&mut map, "x");
        assert_eq!(map.get::<u32>(), Some(&7));
        assert_eq!(map.get::<&str>(), Some(&"x"));
        assert_eq!(map.len(), 2);
        assert!(for_request().is_empty(), "the shared empty map stays empty");
    }

    #[test]
    fn an_existing_entry_is_kept() {
        let mut map = Extensions::new();
        map.insert(1u8);
        insert_roomy(&mut map, 2u16);
        assert_eq!((map.get::<u8>(), map.get::<u16>()), (Some(&1), Some(&2)));
    }
}
