//! Locking shared state that stays valid when a holder panicked (the guarded data is
//! only ever replaced whole), so a poisoned mutex is read rather than a second panic.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
