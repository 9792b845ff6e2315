//! Turns by key: an async lock per key (an image reference, a module digest), so that work
//! on one key runs one at a time while work on other keys goes on. A key's lock exists
//! while someone holds or waits for it: the map stays as small as the work in hand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

type Lock = Arc<tokio::sync::Mutex<()>>;

/// The locks, by key.
#[derive(Debug, Default)]
pub struct Turns(Mutex<HashMap<String, Lock>>);

/// One caller's turn on a key; the next waiting caller gets it when this is dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    turns: &'a Turns,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    /// Waits for `key`'s turn.
    pub async fn take(&self, key: &str) -> Turn<'_> {
        let lock = Arc::clone(self.map().entry(key.to_string()).or_default());
        let guard = lock.lock_owned().await;
        Turn { turns: self, key: key.to_string(), guard: Some(guard) }
    }

    /// How many keys have a lock (held, waited for, or left by a waiter that gave up).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Lock>> {
        // A poisoned map only means another thread panicked while inserting; it is intact.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else { return };
        let lock = Arc::clone(OwnedMutexGuard::mutex(&guard));
        drop(guard);
        // Clones of a key's lock are only made under the map's lock: when the map's and
        // this one are the last, nobody waits and nobody can start to.
        let mut map = self.turns.map();
        if map.get(&self.key).is_some_and(|l| Arc::ptr_eq(l, &lock)) && Arc::strong_count(&lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_takes_turns_and_other_keys_do_not_wait() {
        let turns = Turns::default();
        let held = turns.take("a").await;
        let quick = Duration::from_millis(50);
        assert!(
            tokio::time::timeout(quick, turns.take("a")).await.is_err(),
            "the same key waits for its turn"
        );
        assert!(tokio::time::timeout(quick, turns.take("b")).await.is_ok(), "another key does not");
        drop(held);
        assert!(tokio::time::timeout(quick, turns.take("a")).await.is_ok(), "a released key is free");
    }

    #[tokio::test]
    async fn a_key_is_forgotten_once_nobody_holds_or_waits_for_it() {
        let turns = Arc::new(Turns::default());
        let first = turns.take("a").await;
        let waiter = tokio::spawn({
            let turns = Arc::clone(&turns);
            async move {
                let _turn = turns.take("a").await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        while Arc::strong_count(turns.map().get("a").unwrap()) < 3 {
            tokio::task::yield_now().await;
        }
        drop(first);
        assert_eq!(turns.len(), 1, "kept while another caller waits");
        waiter.await.unwrap();
        assert_eq!(turns.len(), 0, "gone once the last caller is done");
    }
}
