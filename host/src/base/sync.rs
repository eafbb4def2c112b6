//! Taking a lock whose holder may have panicked.
//!
//! A panic while holding one of the host's mutexes is a bug, but it must
//! not become an outage: every critical section in the host leaves its data
//! consistent at each step (a counter bumped, an entry pushed, a map
//! updated), so the data behind a poisoned lock is still sound, and every
//! later request would otherwise panic on it too. So the host's locks are
//! taken with these, which use a poisoned lock as it is.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `mutex.lock()`, poisoned or not (module docs).
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `rwlock.read()`, poisoned or not.
pub(crate) fn read<T: ?Sized>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock.read().unwrap_or_else(PoisonError::into_inner)
}

/// `rwlock.write()`, poisoned or not.
pub(crate) fn write<T: ?Sized>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_used_as_it_is() {
        let shared = std::sync::Arc::new(Mutex::new(vec![1]));
        let holder = shared.clone();
        let _ = std::thread::spawn(move || {
            let mut held = holder.lock().unwrap();
            held.push(2);
            panic!("a bug while holding the lock");
        })
        .join();
        assert!(shared.is_poisoned());
        assert_eq!(*lock(&shared), [1, 2]);
    }
}
