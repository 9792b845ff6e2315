//! A map kept in a `Vec` of pairs, for the few keys a pod has (its containers, their
//! slots): one allocation as large as its entries, where a `HashMap` allocates room for at
//! least four (a pod's map of one container entry took 1 KB as a `HashMap`; 10,000 pods
//! hold one each). Lookups scan, so it is only for a handful of keys.

use std::borrow::Borrow;

/// A small map: insertion order, linear lookups.
#[derive(Debug, Clone)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: Eq, V> VecMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn position<Q: Eq + ?Sized>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
    {
        self.0.iter().position(|(k, _)| k.borrow() == key)
    }

    pub fn get<Q: Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.position(key).map(|i| &self.0[i].1)
    }

    pub fn get_mut<Q: Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.position(key).map(|i| &mut self.0[i].1)
    }

    pub fn contains_key<Q: Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.position(key).is_some()
    }

    /// Sets `key` to `value`; the value it had, if any. A new key grows the `Vec` by one
    /// entry only (no spare room kept).
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            None => {
                self.0.reserve_exact(1);
                self.0.push((key, value));
                None
            }
        }
    }

    pub fn remove<Q: Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let i = self.position(key)?;
        Some(self.0.swap_remove(i).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Equal when they map the same keys to equal values, in any order.
impl<K: Eq, V: PartialEq> PartialEq for VecMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Eq, V> FromIterator<(K, V)> for VecMap<K, V> {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut map = VecMap::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map() {
        let mut m: VecMap<String, u32> = VecMap::new();
        assert_eq!(m.insert("a".into(), 1), None);
        assert_eq!(m.insert("b".into(), 2), None);
        assert_eq!(m.insert("a".into(), 3), Some(1), "a key is set once");
        assert_eq!((m.len(), m.get("a"), m.get("c")), (2, Some(&3), None));
        *m.get_mut("b").unwrap() += 1;
        assert_eq!(m.remove("b"), Some(3));
        assert!(!m.contains_key("b") && m.contains_key("a"));
        assert_eq!(m.values().copied().collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn equal_maps_may_differ_in_order() {
        let a: VecMap<u8, u8> = [(1, 1), (2, 2)].into_iter().collect();
        let b: VecMap<u8, u8> = [(2, 2), (1, 1)].into_iter().collect();
        let c: VecMap<u8, u8> = [(1, 1), (2, 3)].into_iter().collect();
        assert!(a == b && a != c);
    }
}
