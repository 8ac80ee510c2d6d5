//! The embedded store's cache of records in use: the sealed bytes (and version) of recently read
//! records, by key, so that reading a grant an agent keeps using costs a hash lookup and an
//! AES-GCM open whatever the size of the database, instead of a walk down a B-tree whose pages
//! stop fitting in the CPU's caches as the store grows. Values stay sealed here as they are on
//! disk (and in redb's page cache): every read still opens them under the key, with the record
//! key and version as associated data.
//!
//! Coherence, with redb as the only truth: a write drops its key and marks the key's shard busy
//! before its transaction begins, until it ends (committed or not). A reader that missed
//! notes the shard's write count before reading the database and caches what it read only if no
//! write to that shard began or ended in between and none is under way, so a value read before a
//! commit is never cached after it; while a write is under way its key is not cached at all, so
//! reads go to the database and see the commit when it lands. The cache never answers "absent".
//! Bounded in records and in bytes: a full shard drops arbitrary entries for a new one, and a
//! record too large for its share of the room is not kept.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 16;

/// Records kept at most, over all shards: the grants and references a deployment keeps using.
pub(super) const CAPACITY: usize = 8_192;

/// Sealed bytes kept at most, over all shards (a grant is about a kilobyte; a provider's large
/// tokens take more room, never more memory than this).
pub(super) const BYTES: usize = 16 << 20;

pub(super) struct HotRecords {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Records and sealed bytes each shard keeps at most.
    per_shard: usize,
    bytes_per_shard: usize,
}

/// A record's version and its sealed bytes.
pub(super) type Sealed = (u64, Arc<[u8]>);

#[derive(Default)]
struct Shard {
    records: HashMap<Box<[u8]>, Sealed>,
    /// The sealed bytes of `records`.
    bytes: usize,
    /// Writes begun or ended on this shard's keys, ever.
    writes: u64,
    /// Writes under way on this shard's keys.
    writing: usize,
}

/// A read that missed: where to put what the database answered, if nothing was written since.
#[derive(Debug)]
pub(super) struct Miss {
    shard: usize,
    writes: u64,
}

impl HotRecords {
    pub(super) fn new(capacity: usize, bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            bytes_per_shard: bytes.div_ceil(SHARDS),
        }
    }

    fn index(&self, key: &[u8]) -> usize {
        // Truncation is the point: a shard from the hash's low bits.
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the shard is picked by the low bits"
        )]
        let i = self.hasher.hash_one(key) as usize;
        i % SHARDS
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic under this lock leaves the map whole (no update is half done): keep using it.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached (version, sealed bytes) of `key`, or what a database read must hand `fill`.
    pub(super) fn get(&self, key: &[u8]) -> Result<Sealed, Miss> {
        let i = self.index(key);
        let shard = self.shard(i);
        match shard.records.get(key) {
            Some((version, sealed)) => Ok((*version, sealed.clone())),
            None => Err(Miss {
                shard: i,
                writes: shard.writes,
            }),
        }
    }

    /// Caches what the database answered after `miss`, unless a write to the shard began or
    /// ended since, or is under way.
    pub(super) fn fill(&self, miss: Miss, key: &[u8], version: u64, sealed: &[u8]) {
        // A record larger than a sixteenth of the shard's room is read from the database.
        if sealed.len() > self.bytes_per_shard / 16 {
            return;
        }
        let mut shard = self.shard(miss.shard);
        if shard.writing > 0 || shard.writes != miss.writes {
            return;
        }
        shard.remove(key);
        while shard.records.len() >= self.per_shard
            || shard.bytes + sealed.len() > self.bytes_per_shard
        {
            let Some(victim) = shard.records.keys().next().cloned() else {
                break;
            };
            shard.remove(&victim);
        }
        shard.bytes += sealed.len();
        shard.records.insert(key.into(), (version, sealed.into()));
    }

    /// Marks `keys` as being written until the returned guard drops (after the transaction,
    /// whatever its outcome).
    pub(super) fn writing(&self, keys: &[&[u8]]) -> Writing<'_> {
        let shards = keys
            .iter()
            .map(|key| {
                let i = self.index(key);
                let mut shard = self.shard(i);
                shard.writing += 1;
                shard.writes += 1;
                shard.remove(key);
                i
            })
            .collect();
        Writing { hot: self, shards }
    }

    /// Records and sealed bytes cached.
    #[cfg(test)]
    pub(super) fn size(&self) -> (usize, usize) {
        (0..SHARDS)
            .map(|i| {
                let s = self.shard(i);
                (s.records.len(), s.bytes)
            })
            .fold((0, 0), |(n, b), (sn, sb)| (n + sn, b + sb))
    }
}

impl Shard {
    fn remove(&mut self, key: &[u8]) {
        if let Some((_, sealed)) = self.records.remove(key) {
            self.bytes -= sealed.len();
        }
    }
}

/// Writes under way on some keys: while it lives, those keys are neither cached nor served from
/// the cache.
pub(super) struct Writing<'a> {
    hot: &'a HotRecords,
    /// The shard of each key (none of them is cached while the write is under way).
    shards: Vec<usize>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        for &i in &self.shards {
            let mut shard = self.hot.shard(i);
            shard.writing -= 1;
            shard.writes += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_raced_a_write_is_not_cached() {
        let hot = HotRecords::new(64, 1 << 20);
        // Read before the write began, answered after it ended.
        let miss = hot.get(b"k").unwrap_err();
        drop(hot.writing(&[&b"k"[..]]));
        hot.fill(miss, b"k", 1, b"old");
        assert!(
            hot.get(b"k").is_err(),
            "a value read before a write was cached after it"
        );

        // Read while the write is under way.
        let writing = hot.writing(&[&b"k"[..]]);
        let miss = hot.get(b"k").unwrap_err();
        hot.fill(miss, b"k", 1, b"old");
        assert!(hot.get(b"k").is_err(), "cached while a write was under way");
        drop(writing);

        // Read after: cached.
        let miss = hot.get(b"k").unwrap_err();
        hot.fill(miss, b"k", 2, b"new");
        let (version, sealed) = hot.get(b"k").unwrap();
        assert_eq!((version, &*sealed), (2, &b"new"[..]));

        // A write drops the cached value when it begins.
        let writing = hot.writing(&[&b"k"[..]]);
        assert!(hot.get(b"k").is_err());
        drop(writing);
    }

    #[test]
    fn stays_within_its_capacity_in_records_and_bytes() {
        let fill = |hot: &HotRecords, sealed: &[u8]| {
            for i in 0..1_000_u32 {
                let key = i.to_be_bytes();
                let miss = hot.get(&key).unwrap_err();
                hot.fill(miss, &key, 1, sealed);
            }
        };
        // 64 records over 16 shards: 4 each.
        let hot = HotRecords::new(64, 1 << 20);
        fill(&hot, b"sealed");
        assert_eq!(hot.size(), (64, 64 * 6));
        // 32 KiB over 16 shards: 2 KiB each, twenty 100-byte records.
        let hot = HotRecords::new(1_000, 32 << 10);
        fill(&hot, &[7; 100]);
        assert_eq!(hot.size(), (320, 32_000));
        // A record over a sixteenth of a shard's room (128 bytes) is not kept.
        let hot = HotRecords::new(1_000, 32 << 10);
        fill(&hot, &[7; 129]);
        assert_eq!(hot.size(), (0, 0));
    }
}
