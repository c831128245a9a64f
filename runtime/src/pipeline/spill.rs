//! The disk tier of a keyed stage's state: where a partition's key states
//! go when they pass `state_memory` (RocksDB plays this part in Flink's
//! `EmbeddedRocksDBStateBackend` and in Kafka Streams' state stores).
//!
//! One [`Spill`] per partition's [`super::keyed::KeyedState`], created on
//! its first eviction: a redb database in an unnamed temporary file (Linux
//! `O_TMPFILE`) in `STATE_DIR/spill/` (see [`set_dir`]; the system's
//! temporary folder when no daemon set it), so it disappears with the
//! process, even after a `kill -9`. It is a cache of states evicted from
//! memory, not a durable store: checkpoints and the Kafka changelog still
//! save the whole state (memory and disk tiers merged), and a restart
//! restores from them.
//!
//! A row is `key → written_ms (8 bytes, little-endian) ++ state bytes`.
//! redb's page cache is bounded ([`CACHE_BYTES`]), so what the spilled
//! states cost in memory stays small whatever their number.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Context as _;
use redb::{
    ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition,
};

const TABLE: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("states");

/// One write transaction in this many is durable (see [`Spill::write`]).
const DURABLE_EVERY: u64 = 16;

/// redb's page cache per spill file, bytes.
pub const CACHE_BYTES: usize = 4 << 20;

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sets where spill files go (the daemon: `STATE_DIR/spill`); the first
/// call wins. Without it they go to the system's temporary folder.
pub fn set_dir(dir: PathBuf) {
    let _ = DIR.set(dir);
}

/// A partition's spilled key states.
pub struct Spill {
    db: redb::Database,
    keys: u64,
    /// Write transactions so far.
    writes: u64,
    /// Tests: writes after this many fail (a full disk).
    #[cfg(test)]
    pub(crate) fail_after: Option<u64>,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill").field("keys", &self.keys).finish()
    }
}

/// One spilled state: (value, when it was last written, ms since the epoch).
pub type Spilled = (Vec<u8>, i64);

fn encode(value: &[u8], written_ms: i64) -> Vec<u8> {
    let mut row = Vec::with_capacity(8 + value.len());
    row.extend_from_slice(&written_ms.to_le_bytes());
    row.extend_from_slice(value);
    row
}

fn decode(row: &[u8]) -> Spilled {
    let (time, value) = row.split_at(8.min(row.len()));
    let mut t = [0u8; 8];
    t[..time.len()].copy_from_slice(time);
    (value.to_vec(), i64::from_le_bytes(t))
}

impl Spill {
    /// A new, empty spill file.
    ///
    /// # Errors
    /// The folder or the file cannot be made, or redb cannot set it up.
    pub fn open() -> anyhow::Result<Self> {
        let dir = DIR.get().cloned().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the spill folder {}", dir.display()))?;
        let file = tempfile::tempfile_in(&dir)
            .with_context(|| format!("cannot create a spill file in {}", dir.display()))?;
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(redb::backends::FileBackend::new(file)?)
            .context("cannot set up a spill file")?;
        Ok(Spill {
            db,
            keys: 0,
            writes: 0,
            #[cfg(test)]
            fail_after: None,
        })
    }

    /// Keys held on disk.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The states of `keys` found on disk, in their order.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn get_many<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> anyhow::Result<Vec<Option<Spilled>>> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Ok(keys.into_iter().map(|_| None).collect());
            }
            Err(e) => return Err(e.into()),
        };
        keys.into_iter()
            .map(|k| Ok(table.get(k)?.map(|row| decode(row.value()))))
            .collect()
    }

    /// Writes `puts` (key, value, written ms) and deletes `deletes`, in one
    /// transaction.
    ///
    /// # Errors
    /// The file cannot be written (a full disk): nothing of it is applied.
    pub fn write<'k>(
        &mut self,
        puts: impl IntoIterator<Item = (&'k [u8], &'k [u8], i64)>,
        deletes: impl IntoIterator<Item = &'k [u8]>,
    ) -> anyhow::Result<()> {
        #[cfg(test)]
        if self.fail_after.is_some_and(|n| self.writes >= n) {
            anyhow::bail!("No space left on device (os error 28) (injected by a test)");
        }
        let mut tx = self.db.begin_write()?;
        // Nothing here must outlive the process: commits skip the fsync,
        // but for one in DURABLE_EVERY, which lets redb reuse the pages
        // freed since (it frees pages only at a durable commit).
        self.writes += 1;
        if !self.writes.is_multiple_of(DURABLE_EVERY) {
            tx.set_durability(redb::Durability::None)?;
        }
        {
            let mut table = tx.open_table(TABLE)?;
            for (key, value, written_ms) in puts {
                table.insert(key, encode(value, written_ms).as_slice())?;
            }
            for key in deletes {
                table.remove(key)?;
            }
            self.keys = table.len()?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Calls `each` with every spilled state, in key order.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn for_each(&self, mut each: impl FnMut(&[u8], Spilled)) -> anyhow::Result<()> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for row in table.iter()? {
            let (key, value) = row?;
            each(key.value(), decode(value.value()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_gets_deletes_and_iterates_in_key_order() {
        let mut spill = Spill::open().unwrap();
        assert_eq!(spill.get_many([b"a".as_slice()]).unwrap(), [None]);
        spill
            .write(
                [
                    (b"b".as_slice(), b"2".as_slice(), 20),
                    (b"a".as_slice(), b"1".as_slice(), -10),
                ],
                [],
            )
            .unwrap();
        assert_eq!(spill.keys(), 2);
        assert_eq!(
            spill
                .get_many([b"a".as_slice(), b"c".as_slice(), b"b".as_slice()])
                .unwrap(),
            [Some((b"1".to_vec(), -10)), None, Some((b"2".to_vec(), 20))]
        );
        spill
            .write([(b"c".as_slice(), b"".as_slice(), 0)], [b"a".as_slice()])
            .unwrap();
        let mut all = Vec::new();
        spill
            .for_each(|k, (v, t)| all.push((k.to_vec(), v, t)))
            .unwrap();
        assert_eq!(
            all,
            [
                (b"b".to_vec(), b"2".to_vec(), 20),
                (b"c".to_vec(), Vec::new(), 0)
            ]
        );
        assert_eq!(spill.keys(), 2);
    }
}
