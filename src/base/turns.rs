//! Turns by key: an async lock per key (an image reference, a module digest), made on first
//! use, so that work on one key runs one at a time while work on other keys goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The locks, by key.
#[derive(Debug, Default)]
pub struct Turns(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// The lock of `key` (the same one for every caller until [`Turns::forget`]).
    pub fn of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned map only means another thread panicked while inserting; it is intact.
        let mut turns = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(turns.entry(key.to_string()).or_default())
    }

    /// Forgets the lock of `key`: callers holding it or waiting for it keep it, and the
    /// next caller gets a new one (for work whose result later callers find without a turn).
    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_takes_turns_and_other_keys_do_not_wait() {
        let turns = Turns::default();
        let a = turns.of("a");
        let _held = a.lock().await;
        assert!(turns.of("a").try_lock().is_err(), "the same key waits for its turn");
        assert!(turns.of("b").try_lock().is_ok(), "another key does not");
        turns.forget("a");
        assert!(turns.of("a").try_lock().is_ok(), "a forgotten key starts anew");
    }
}
