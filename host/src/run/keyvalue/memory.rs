//! A tenant's entries in this host's memory (a host without a cluster),
//! with exact accounting against its quota.

use std::collections::{BTreeMap, HashMap};

use super::{PAGE, Page, cost};

#[derive(Default)]
pub(super) struct Entries {
    map: BTreeMap<String, Vec<u8>>,
    used: u64,
}

impl Entries {
    /// Bytes in use (keys, values and each entry's overhead).
    pub(super) fn used(&self) -> u64 {
        self.used
    }

    pub(super) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }

    /// Applies `changes` (a value, or `None` to remove) whole, or none of
    /// them when the store would go past `quota`.
    pub(super) fn apply(
        &mut self,
        changes: Vec<(String, Option<Vec<u8>>)>,
        quota: u64,
    ) -> Result<(), String> {
        let mut used = self.used;
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for (key, value) in &changes {
            // A key named twice in one batch: the last value wins, so only
            // the difference to what it replaces counts.
            let before = match seen.get(key.as_str()) {
                Some(cost) => *cost,
                None => self.map.get(key).map_or(0, |old| cost(key, old)),
            };
            let after = value.as_deref().map_or(0, |value| cost(key, value));
            used = used - before + after;
            seen.insert(key, after);
        }
        if used > quota {
            return Err(super::full(used - self.used, self.used, quota));
        }
        for (key, value) in changes {
            match value {
                Some(value) => self.map.insert(key, value),
                None => self.map.remove(&key),
            };
        }
        self.used = used;
        Ok(())
    }

    /// Adds `delta` to the number under `key`, within `quota`.
    pub(super) fn increment(&mut self, key: String, delta: u64, quota: u64) -> Result<u64, String> {
        let next = super::incremented(&key, self.map.get(&key).map(Vec::as_slice), delta)?;
        self.apply(vec![(key, Some(next.to_string().into_bytes()))], quota)?;
        Ok(next)
    }

    pub(super) fn keys(&self, from: usize) -> Page {
        let keys: Vec<String> = self.map.keys().skip(from).take(PAGE).cloned().collect();
        let next = from + keys.len();
        Page {
            cursor: (next < self.map.len()).then_some(next as u64),
            keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ENTRY_OVERHEAD;
    use super::*;

    fn set(entries: &mut Entries, key: &str, value: &str, quota: u64) -> Result<(), String> {
        entries.apply(
            vec![(key.to_string(), Some(value.as_bytes().to_vec()))],
            quota,
        )
    }

    #[test]
    fn the_quota_counts_keys_values_and_entries_and_a_refused_change_changes_nothing() {
        let quota = 2 * ENTRY_OVERHEAD + 10;
        let mut entries = Entries::default();
        set(&mut entries, "a", "1234", quota).unwrap();
        assert_eq!(entries.used(), ENTRY_OVERHEAD + 5);
        // Replacing a value counts only the difference.
        set(&mut entries, "a", "12345678", quota).unwrap();
        assert_eq!(entries.used(), ENTRY_OVERHEAD + 9);
        let why = set(&mut entries, "b", "12", quota).unwrap_err();
        assert!(why.contains("the store is full"), "{why}");
        assert_eq!(entries.get("b"), None);
        // A batch that would not fit stores none of its pairs.
        let batch = vec![
            ("a".to_string(), None),
            ("c".to_string(), Some(vec![0; 200])),
        ];
        assert!(entries.apply(batch, quota).is_err());
        assert_eq!(entries.get("a").as_deref(), Some(&b"12345678"[..]));
        entries.apply(vec![("a".to_string(), None)], quota).unwrap();
        assert_eq!(entries.used(), 0);
    }

    #[test]
    fn increments_count_from_zero_and_refuse_what_is_not_a_number() {
        let mut entries = Entries::default();
        assert_eq!(entries.increment("n".into(), 2, 1 << 20).unwrap(), 2);
        assert_eq!(entries.increment("n".into(), 40, 1 << 20).unwrap(), 42);
        set(&mut entries, "text", "hello", 1 << 20).unwrap();
        assert!(entries.increment("text".into(), 1, 1 << 20).is_err());
        set(&mut entries, "max", &u64::MAX.to_string(), 1 << 20).unwrap();
        let why = entries.increment("max".into(), 1, 1 << 20).unwrap_err();
        assert!(why.contains("overflows"), "{why}");
    }

    #[test]
    fn keys_come_in_pages_with_a_cursor() {
        let mut entries = Entries::default();
        let pairs = (0..PAGE + 5)
            .map(|i| (format!("k{i:05}"), Some(vec![])))
            .collect();
        entries.apply(pairs, 1 << 30).unwrap();
        let first = entries.keys(0);
        assert_eq!(first.keys.len(), PAGE);
        assert_eq!(first.keys[0], "k00000");
        let second = entries.keys(first.cursor.unwrap() as usize);
        assert_eq!(second.keys.len(), 5);
        assert_eq!(second.cursor, None);
        assert!(entries.keys(usize::MAX).keys.is_empty());
    }
}
