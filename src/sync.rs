//! The one way this crate takes a mutex.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the data even if a thread panicked while holding it. Every mutex here
/// guards data that each change leaves whole (a value replaced, an entry inserted or removed), so a
/// panic elsewhere cannot leave it half-changed, and a request must never fail on a poisoned lock.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
