//! A node-wide cache of the ConfigMaps and Secrets that running pods' volumes are
//! rewritten from every `--sync-frequency`. Without it, a thousand pods that mount the same
//! object (every pod's `kube-root-ca.crt`, by default) GET it a thousand times a period;
//! with it, once. Reads made to start a pod are always fresh (and fill the cache), as the
//! kubelet's cache-based manager refreshes a pod's objects when the pod is registered.
//! A cached answer is at most one period old, so a change reaches running pods within two
//! periods at worst. A fresh read joins a read of the same object already in flight (it
//! began at most one round trip earlier): a hundred pods that start at once read their
//! namespace's `kube-root-ca.crt` once. Tokens are not cached: each pod's are its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::objects::ObjectSource;
use crate::volumes::VolumeSource;

/// Objects by `(namespace, name)`, each with when it was read (`None`: it did not exist).
struct Entries<T> {
    map: HashMap<(String, String), (Instant, Option<T>)>,
    /// Stale entries are swept when the map grows past this.
    sweep_at: usize,
    /// The reads in flight: told when each has put its answer in `map` (or failed).
    reading: HashMap<(String, String), watch::Sender<bool>>,
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Entries { map: HashMap::new(), sweep_at: 64, reading: HashMap::new() }
    }
}

impl<T: Clone> Entries<T> {
    fn get(&self, ns: &str, name: &str, ttl: Duration) -> Option<Option<T>> {
        let (at, value) = self.map.get(&(ns.to_string(), name.to_string()))?;
        (at.elapsed() < ttl).then(|| value.clone())
    }

    fn put(&mut self, ns: &str, name: &str, value: Option<T>, ttl: Duration) {
        self.map.insert((ns.to_string(), name.to_string()), (Instant::now(), value));
        if self.map.len() > self.sweep_at {
            self.map.retain(|_, (at, _)| at.elapsed() < ttl);
            self.sweep_at = (self.map.len() * 2).max(64);
        }
    }
}

/// The cache, shared by all pods of the node.
pub struct ObjectCache {
    ttl: Duration,
    config_maps: Mutex<Entries<ConfigMap>>,
    secrets: Mutex<Entries<Secret>>,
}

impl ObjectCache {
    /// Answers stay usable for `ttl` (the agent uses `--sync-frequency`).
    pub fn new(ttl: Duration) -> Self {
        ObjectCache { ttl, config_maps: Mutex::default(), secrets: Mutex::default() }
    }

    /// How many objects it holds (answers of absence included).
    #[cfg(test)]
    pub fn objects(&self) -> usize {
        fn count<T>(m: &Mutex<Entries<T>>) -> usize {
            m.lock().map(|e| e.map.len()).unwrap_or(0)
        }
        count(&self.config_maps) + count(&self.secrets)
    }
}

/// Reads `source` through `cache`: `fresh` reads always ask the source.
#[derive(Clone)]
pub struct Cached<S> {
    pub source: S,
    pub cache: Arc<ObjectCache>,
    pub fresh: bool,
}

/// One read through the cache, for either kind.
async fn read<T: Clone>(
    entries: &Mutex<Entries<T>>,
    ttl: Duration,
    fresh: bool,
    (ns, name): (&str, &str),
    fetch: impl Future<Output = Result<Option<T>, kube::Error>>,
) -> Result<Option<T>, kube::Error> {
    let key = (ns.to_string(), name.to_string());
    let lock = || entries.lock().unwrap_or_else(|p| p.into_inner());
    let joined = {
        let mut e = lock();
        if !fresh && let Some(hit) = e.get(ns, name, ttl) {
            return Ok(hit);
        }
        match e.reading.get(&key) {
            Some(reading) => Some(reading.subscribe()),
            None => {
                e.reading.insert(key.clone(), watch::channel(false).0);
                None
            }
        }
    };
    if let Some(mut done) = joined {
        // The answer of the read in flight, once in the map; if that read failed, read anew.
        if done.changed().await.is_ok()
            && *done.borrow()
            && let Some((_, hit)) = lock().map.get(&key)
        {
            return Ok(hit.clone());
        }
        return fetch.await;
    }
    // This read is the one others join: they are told when it ends, however it ends.
    let mut reading = Reading { entries, key: &key, answered: false };
    let got = fetch.await;
    if let Ok(got) = &got {
        lock().put(ns, name, got.clone(), ttl);
        reading.answered = true;
    }
    drop(reading);
    got
}

/// A read in flight that others may join: ended when dropped, telling them whether its
/// answer is in the map (else they read themselves).
struct Reading<'a, T> {
    entries: &'a Mutex<Entries<T>>,
    key: &'a (String, String),
    answered: bool,
}

impl<T> Drop for Reading<'_, T> {
    fn drop(&mut self) {
        let sender = self.entries.lock().unwrap_or_else(|p| p.into_inner()).reading.remove(self.key);
        if let Some(sender) = sender.filter(|_| self.answered) {
            let _ = sender.send(true);
        }
    }
}

impl<S: ObjectSource> ObjectSource for Cached<S> {
    async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        let fetch = self.source.config_map(ns, name);
        read(&self.cache.config_maps, self.cache.ttl, self.fresh, (ns, name), fetch).await
    }

    async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        let fetch = self.source.secret(ns, name);
        read(&self.cache.secrets, self.cache.ttl, self.fresh, (ns, name), fetch).await
    }
}

impl<S: VolumeSource> VolumeSource for Cached<S> {
    async fn token_request(
        &self,
        ns: &str,
        sa: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, kube::Error> {
        self.source.token_request(ns, sa, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::fake::FakeSource;

    fn calls(src: &FakeSource) -> usize {
        src.calls.lock().unwrap().len()
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_share_one_read_per_period_and_starts_read_fresh() {
        let cache = Arc::new(ObjectCache::new(Duration::from_secs(60)));
        let src = FakeSource::default().with_config_map("ns", "ca", &[("ca.crt", "x")]);
        let mut c = Cached { source: src, cache: cache.clone(), fresh: false };
        for _ in 0..1000 {
            assert!(c.config_map("ns", "ca").await.unwrap().is_some());
        }
        assert_eq!(calls(&c.source), 1, "a thousand refreshes, one GET");
        // Absence is cached too, per namespace and name.
        assert!(c.secret("ns", "missing").await.unwrap().is_none());
        assert!(c.secret("ns", "missing").await.unwrap().is_none());
        assert!(c.config_map("other", "ca").await.unwrap().is_none());
        assert_eq!(calls(&c.source), 3);
        // A pod that starts reads fresh, and what it read serves later refreshes.
        c.fresh = true;
        c.config_map("ns", "ca").await.unwrap();
        assert_eq!(calls(&c.source), 4);
        c.fresh = false;
        tokio::time::advance(Duration::from_secs(59)).await;
        c.config_map("ns", "ca").await.unwrap();
        assert_eq!(calls(&c.source), 4);
        // A period later the refresh reads again.
        tokio::time::advance(Duration::from_secs(2)).await;
        c.config_map("ns", "ca").await.unwrap();
        assert_eq!(calls(&c.source), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn starts_at_once_share_the_read_in_flight() {
        let cache = Arc::new(ObjectCache::new(Duration::from_secs(60)));
        let src = FakeSource::default().with_config_map("ns", "ca", &[("ca.crt", "x")]);
        let start = Cached { source: src.slow(Duration::from_millis(5)), cache: cache.clone(), fresh: true };
        let reads = (0..100).map(|_| start.config_map("ns", "ca"));
        let answers = futures::future::join_all(reads).await;
        assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|cm| cm.is_some())));
        assert_eq!(calls(&start.source), 1, "a hundred starts at once, one GET");
        // A start after that read ended reads afresh.
        start.config_map("ns", "ca").await.unwrap();
        assert_eq!(calls(&start.source), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_not_cached_and_stale_entries_are_swept() {
        let cache = Arc::new(ObjectCache::new(Duration::from_secs(60)));
        let src = FakeSource { forbidden: vec!["ns/cfg".into()], ..FakeSource::default() };
        let refresh = Cached { source: src, cache: cache.clone(), fresh: false };
        assert!(refresh.config_map("ns", "cfg").await.is_err());
        assert!(refresh.config_map("ns", "cfg").await.is_err());
        assert_eq!(calls(&refresh.source), 2);
        for i in 0..60 {
            refresh.config_map("ns", &format!("cm-{i}")).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        for i in 0..10 {
            refresh.secret("ns", &format!("s-{i}")).await.unwrap();
        }
        assert_eq!(cache.objects(), 70);
        for i in 60..70 {
            refresh.config_map("ns", &format!("cm-{i}")).await.unwrap();
        }
        // Past 64 config maps the stale ones were swept.
        assert!(cache.objects() < 40, "{}", cache.objects());
    }
}
