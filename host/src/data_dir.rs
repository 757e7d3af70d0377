//! The `file:` store's directory: one fjall database that the plugins'
//! store and the broker's ids and history share.
//!
//! fjall (an LSM tree with a write-ahead journal) was measured here against
//! redb: a write that reaches the operating system, which is what survives a
//! killed process, costs about 2 µs in fjall; redb only survives a crash
//! with a synced commit (about 300 µs). So every write is handed to the
//! operating system before it is acknowledged, and the journal is forced to
//! the disk every `fsync_ms` (Redis' `appendfsync everysec`): a SIGKILL
//! loses nothing, a power loss at most that window, and fjall's recovery
//! drops a torn journal tail instead of reading it.
//!
//! The directory carries a marker file, so a foreign or mistyped directory
//! is refused instead of written into, and fjall's lock file keeps a second
//! process out.
//!
//! A full disk is met twice: below `min_free_mib` writes are refused before
//! they reach fjall, and when a write fails anyway (the disk filled faster
//! than the check, or an I/O error), fjall takes no more writes, so the
//! database is closed and opened again (its recovery reads the journal up
//! to the last whole batch) once the disk has space.

use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context as _, bail};
use arc_swap::ArcSwapOption;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};

use crate::config::FileStoreConfig;

/// The file that says "this directory is a madx-pusher store", and which
/// layout it holds.
const MARKER: &str = "MADX-PUSHER-STORE";
const MARKER_TEXT: &str = "madx-pusher file store\nformat 1\n";
/// The database's own folder inside the directory.
const DATABASE: &str = "db";
/// How often the free space of the disk is looked at (and a failed
/// database reopened).
const SPACE_CHECK: Duration = Duration::from_secs(1);
/// Free space a failed database waits for before it is reopened, when
/// `min_free_mib` asks for less.
const REOPEN_FREE_BYTES: u64 = 1 << 20;

/// Why the directory cannot take a write now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiskError {
    /// The disk is (nearly) full: refused until space returns.
    #[error("{0}")]
    Full(String),
    /// A write failed; fjall takes no more writes until the node restarts.
    #[error("{0}")]
    Failed(String),
}

/// The open database and its keyspaces.
pub struct Engine {
    db: Database,
    /// The plugins' key-value store.
    pub store: Keyspace,
    /// The broker's messages, by app and id.
    pub history: Keyspace,
    /// Per-app id floors and the directory's birth time.
    pub meta: Keyspace,
}

impl Engine {
    fn open(path: &Path) -> anyhow::Result<Engine> {
        let db = Database::builder(path.join(DATABASE))
            .open()
            .map_err(|error| match error {
                fjall::Error::Locked => anyhow::anyhow!(
                    "the store {} is in use by another process (one node per directory)",
                    path.display()
                ),
                // The disk or the permissions, not the data.
                fjall::Error::Io(io) => {
                    anyhow::anyhow!("the store {} cannot be opened: {io}", path.display())
                }
                other => anyhow::anyhow!(
                    "the store {} cannot be opened ({other}): it is damaged or not a \
                     madx-pusher store; restore it from a backup or move it aside",
                    path.display()
                ),
            })?;
        let keyspace = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .with_context(|| format!("cannot open {name} in the store {}", path.display()))
        };
        Ok(Engine {
            store: keyspace("store")?,
            history: keyspace("history")?,
            meta: keyspace("meta")?,
            db,
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A graceful stop loses nothing, whatever the fsync window.
        let _ = self.db.persist(PersistMode::SyncAll);
    }
}

/// The open directory. Writes are refused (never half-done) while the disk
/// is short of space or after a write failed.
pub struct DataDir {
    path: PathBuf,
    /// Empty only while a failed database is being reopened.
    engine: ArcSwapOption<Engine>,
    config: FileStoreConfig,
    low_space: AtomicBool,
    /// The failed write that stopped fjall, until it is reopened.
    failure: Mutex<Option<DiskError>>,
    /// How many times the database was reopened: what was counted from
    /// the old one is counted again.
    generation: AtomicU64,
}

impl DataDir {
    /// Open (or create) the store at `path`; refuse a directory that holds
    /// anything but a madx-pusher store, a store another process has open,
    /// or one that fjall cannot read.
    pub fn open(path: &Path, config: FileStoreConfig) -> anyhow::Result<Arc<DataDir>> {
        prepare(path)?;
        let engine = Engine::open(path)?;
        let dir = Arc::new(DataDir {
            path: path.to_owned(),
            engine: ArcSwapOption::from_pointee(engine),
            config,
            low_space: AtomicBool::new(false),
            failure: Mutex::new(None),
            generation: AtomicU64::new(0),
        });
        dir.check_space();
        tokio::spawn(sync_periodically(Arc::downgrade(&dir)));
        tokio::spawn(watch_space(Arc::downgrade(&dir)));
        Ok(dir)
    }

    /// Can a write be taken now? Backs `/readyz` and every write.
    pub fn writable(&self) -> Result<(), DiskError> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        if self.low_space.load(Ordering::Relaxed) {
            return Err(DiskError::Full(format!(
                "the disk of the store {} has less than {} MiB free",
                self.path.display(),
                self.config.min_free_mib
            )));
        }
        Ok(())
    }

    /// The open database, to read from.
    pub fn engine(&self) -> Result<Arc<Engine>, DiskError> {
        self.engine.load_full().ok_or_else(|| {
            DiskError::Failed(format!(
                "the store {} is being reopened after a failed write",
                self.path.display()
            ))
        })
    }

    /// How many times the database was reopened after a failed write.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Write the batch that `fill` makes, atomically: on the operating
    /// system (and, with `fsync_ms = 0`, on the disk) when this returns
    /// `Ok`. A failed commit may still be applied when the database is
    /// reopened (the rest of its batch left in fjall's buffer is written
    /// then): a refusal after a failed write means "maybe".
    pub fn commit(
        &self,
        fill: impl FnOnce(&Engine, &mut OwnedWriteBatch),
    ) -> Result<(), DiskError> {
        self.writable()?;
        self.write(fill)
    }

    /// As [`DataDir::commit`] for deletes: taken while the disk is short
    /// of space too (the reserve is there for them: they let compaction
    /// give space back), refused only after a failed write.
    pub fn commit_deletes(
        &self,
        fill: impl FnOnce(&Engine, &mut OwnedWriteBatch),
    ) -> Result<(), DiskError> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        self.write(fill)
    }

    fn write(&self, fill: impl FnOnce(&Engine, &mut OwnedWriteBatch)) -> Result<(), DiskError> {
        let engine = self.engine()?;
        let mut batch = engine.db.batch();
        fill(&engine, &mut batch);
        let mut written = batch.commit();
        if written.is_ok() && self.config.fsync_ms == 0 {
            written = engine.db.persist(PersistMode::SyncData);
        }
        written.map_err(|error| self.failed(error))
    }

    /// Remember a failed write: fjall takes no more after one.
    fn failed(&self, error: fjall::Error) -> DiskError {
        // A background flush that hit a full disk poisons fjall too: ask
        // the disk rather than trust the error's kind.
        let full = matches!(&error, fjall::Error::Io(io) if io.kind() == ErrorKind::StorageFull)
            || self
                .free_bytes()
                .is_some_and(|free| free < self.reopen_free_bytes());
        let text = if full {
            format!(
                "the disk of the store {} is full; writes resume when it has space again",
                self.path.display()
            )
        } else {
            format!(
                "a write to the store {} failed ({error}); the store is reopened when the disk \
                 answers again",
                self.path.display()
            )
        };
        let failure = if full {
            DiskError::Full(text)
        } else {
            DiskError::Failed(text)
        };
        let mut recorded = self
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if recorded.is_none() {
            tracing::error!(%error, "the file store cannot write: writes are refused until it is reopened");
        }
        recorded.get_or_insert(failure).clone()
    }

    fn failure(&self) -> Option<DiskError> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn free_bytes(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.path).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Free space a failed database waits for before it is reopened.
    fn reopen_free_bytes(&self) -> u64 {
        REOPEN_FREE_BYTES.max(self.config.min_free_mib.saturating_mul(1 << 20))
    }

    /// Look at the disk's free space; below the reserve, writes stop.
    /// Returns the free bytes.
    fn check_space(&self) -> Option<u64> {
        let free = self.free_bytes()?;
        let low = free < self.config.min_free_mib.saturating_mul(1 << 20);
        if self.low_space.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::error!(
                    free_bytes = free,
                    path = %self.path.display(),
                    "the file store's disk is nearly full: writes are refused until space returns"
                );
            } else {
                tracing::info!(free_bytes = free, "the file store's disk has space again");
            }
        }
        Some(free)
    }

    /// After a failed write, once the disk has space: close the database
    /// and open it again (fjall refuses writes after a failed one).
    fn recover(&self, free: u64) {
        if self.failure().is_none() || free < self.reopen_free_bytes() {
            return;
        }
        if let Some(mut old) = self.engine.swap(None) {
            // Calls in flight hold it for microseconds; the lock file is
            // released when the last holder lets go.
            let patience = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(engine) => {
                        drop(engine);
                        break;
                    }
                    Err(shared) if std::time::Instant::now() < patience => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(shared) => {
                        self.engine.store(Some(shared));
                        return;
                    }
                }
            }
        }
        match Engine::open(&self.path) {
            Ok(engine) => {
                self.engine.store(Some(Arc::new(engine)));
                self.generation.fetch_add(1, Ordering::Relaxed);
                *self
                    .failure
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                tracing::info!(path = %self.path.display(), "the file store was reopened and takes writes again");
            }
            Err(error) => tracing::error!(%error, "the file store cannot be reopened yet"),
        }
    }

    /// Bytes the database takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.engine()
            .ok()
            .and_then(|engine| engine.db.disk_space().ok())
            .unwrap_or(0)
    }

    /// Force what was written to the disk.
    pub fn sync(&self) {
        if self.failure().is_some() {
            return;
        }
        let Ok(engine) = self.engine() else { return };
        if let Err(error) = engine.db.persist(PersistMode::SyncData) {
            self.failed(error);
        }
    }
}

/// Create the directory and its marker, or check the marker of one that
/// exists.
fn prepare(path: &Path) -> anyhow::Result<()> {
    let marker = path.join(MARKER);
    match std::fs::read_to_string(&marker) {
        Ok(text) if text == MARKER_TEXT => return Ok(()),
        Ok(_) => bail!(
            "{} is not a store of this madx-pusher version (unknown {MARKER}); refusing to use it",
            path.display()
        ),
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => bail!("cannot read {}: {error}", marker.display()),
    }
    // Private to the node's user: the store holds every token's seed. A
    // directory that already exists keeps the mode its operator gave it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create the store directory {}", path.display()))?;
    let mut entries = std::fs::read_dir(path)
        .with_context(|| format!("cannot read the store directory {}", path.display()))?
        // A fresh filesystem's own folder does not make it foreign.
        .filter(|entry| {
            entry
                .as_ref()
                .map_or(true, |entry| entry.file_name() != "lost+found")
        });
    if entries.next().is_some() {
        bail!(
            "{} is not empty and is not a madx-pusher store (no {MARKER} file); refusing to \
             write into it",
            path.display()
        );
    }
    // The marker is written (and synced) first: a crash right after leaves a
    // store that opens empty, never an unmarked database.
    std::fs::File::create(&marker)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, MARKER_TEXT.as_bytes())?;
            file.sync_all()
        })
        .with_context(|| format!("cannot write {}", marker.display()))
}

async fn sync_periodically(dir: Weak<DataDir>) {
    let every = match dir.upgrade() {
        Some(dir) if dir.config.fsync_ms > 0 => Duration::from_millis(dir.config.fsync_ms),
        _ => return,
    };
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        let Some(dir) = dir.upgrade() else { return };
        // An fsync blocks for a disk round trip: not on a runtime thread.
        if tokio::task::spawn_blocking(move || dir.sync())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn watch_space(dir: Weak<DataDir>) {
    let mut interval = tokio::time::interval(SPACE_CHECK);
    loop {
        interval.tick().await;
        let Some(dir) = dir.upgrade() else { return };
        // statvfs, and a reopen, touch the disk: not on a runtime thread.
        let checked = tokio::task::spawn_blocking(move || {
            if let Some(free) = dir.check_space() {
                dir.recover(free);
            }
        })
        .await;
        if checked.is_err() {
            return;
        }
    }
}
