//! Interning: each distinct value (a fact's string key, a switch port) gets a dense `u32` id
//! once, so the projector's indexes hash and compare small integers instead of strings.
//!
//! Strings are kept as [`CompactString`]s: the short ids hypervisors use (`vm-42`, a MAC, a
//! uuid) sit inline in the table slot, so a lookup compares them without another cache miss.
//!
//! Ids are private to the state that made them: they never reach the snapshot bytes, which are
//! written from the facts themselves in key order.

use std::borrow::Borrow;
use std::hash::Hash;

use compact_str::CompactString;
use rustc_hash::FxHashMap as HashMap;

/// How an interner makes its own copy of a borrowed value.
pub(crate) trait Own<Q: ?Sized> {
    fn own(v: &Q) -> Self;
}

impl<T: Clone> Own<T> for T {
    fn own(v: &T) -> Self {
        v.clone()
    }
}

impl Own<str> for CompactString {
    fn own(v: &str) -> Self {
        CompactString::from(v)
    }
}

/// Interned values, each with a dense id (ids are never reused while the interner lives).
#[derive(Clone, Debug)]
pub(crate) struct Interner<T> {
    ids: HashMap<T, u32>,
    values: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self { ids: HashMap::default(), values: Vec::new() }
    }
}

impl<T: Hash + Eq + Clone> Interner<T> {
    /// The id of `v`, giving it the next id when new.
    pub(crate) fn intern<Q>(&mut self, v: &Q) -> u32
    where
        T: Borrow<Q> + Own<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(&i) = self.ids.get(v) {
            return i;
        }
        let i = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        let owned = T::own(v);
        self.values.push(owned.clone());
        self.ids.insert(owned, i);
        i
    }

    /// The id of `v`, if it was interned.
    pub(crate) fn get<Q>(&self, v: &Q) -> Option<u32>
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.ids.get(v).copied()
    }

    /// The value of an id this interner gave.
    pub(crate) fn value(&self, i: u32) -> &T {
        &self.values[i as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_an_id_and_ids_resolve_back() {
        let mut i: Interner<CompactString> = Interner::default();
        let a = i.intern("a");
        let b = i.intern("b");
        assert_ne!(a, b);
        assert_eq!(i.intern("a"), a);
        assert_eq!(i.get("b"), Some(b));
        assert_eq!(i.get("c"), None);
        assert_eq!(i.value(a), "a");
    }
}
