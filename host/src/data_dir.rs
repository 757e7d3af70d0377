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

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context as _, bail};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};

use crate::config::FileStoreConfig;

/// The file that says "this directory is a madx-pusher store", and which
/// layout it holds.
const MARKER: &str = "MADX-PUSHER-STORE";
const MARKER_TEXT: &str = "madx-pusher file store\nformat 1\n";
/// The database's own folder inside the directory.
const DATABASE: &str = "db";
/// How often the free space of the disk is looked at.
const SPACE_CHECK: Duration = Duration::from_secs(1);

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

/// The open directory. Writes are refused (never half-done) while the disk
/// is short of space or after a write failed.
pub struct DataDir {
    path: PathBuf,
    db: Database,
    /// The plugins' key-value store.
    pub store: Keyspace,
    /// The broker's messages, by app and id.
    pub history: Keyspace,
    /// Per-app id floors and the directory's birth time.
    pub meta: Keyspace,
    config: FileStoreConfig,
    low_space: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl DataDir {
    /// Open (or create) the store at `path`; refuse a directory that holds
    /// anything but a madx-pusher store, a store another process has open,
    /// or one that fjall cannot read.
    pub fn open(path: &Path, config: FileStoreConfig) -> anyhow::Result<Arc<DataDir>> {
        prepare(path)?;
        let db = Database::builder(path.join(DATABASE))
            .open()
            .map_err(|error| match error {
                fjall::Error::Locked => anyhow::anyhow!(
                    "the store {} is in use by another process (one node per directory)",
                    path.display()
                ),
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
        let dir = Arc::new(DataDir {
            path: path.to_owned(),
            store: keyspace("store")?,
            history: keyspace("history")?,
            meta: keyspace("meta")?,
            db,
            config,
            low_space: AtomicBool::new(false),
            failure: Mutex::new(None),
        });
        dir.check_space();
        tokio::spawn(sync_periodically(Arc::downgrade(&dir)));
        tokio::spawn(watch_space(Arc::downgrade(&dir)));
        Ok(dir)
    }

    /// Can a write be taken now? Backs `/readyz` and every write.
    pub fn writable(&self) -> Result<(), DiskError> {
        if let Some(failure) = self.failure_text() {
            return Err(DiskError::Failed(failure));
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

    /// Write `batch` atomically: on the operating system (and, with
    /// `fsync_ms = 0`, on the disk) when this returns `Ok`.
    pub fn commit(&self, fill: impl FnOnce(&mut OwnedWriteBatch)) -> Result<(), DiskError> {
        self.writable()?;
        let mut batch = self.db.batch();
        fill(&mut batch);
        let mut written = batch.commit();
        if written.is_ok() && self.config.fsync_ms == 0 {
            written = self.db.persist(PersistMode::SyncData);
        }
        written.map_err(|error| self.failed(error))
    }

    /// Remember a failed write: fjall takes no more after one.
    fn failed(&self, error: fjall::Error) -> DiskError {
        let full = matches!(&error, fjall::Error::Io(io) if io.kind() == ErrorKind::StorageFull);
        let text = if full {
            format!(
                "the disk of the store {} is full; the node takes writes again after a restart \
                 with free space",
                self.path.display()
            )
        } else {
            format!(
                "a write to the store {} failed ({error}); restart the node",
                self.path.display()
            )
        };
        tracing::error!(%error, "the file store cannot write");
        let mut failure = self
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let text = failure.get_or_insert(text).clone();
        if full {
            DiskError::Full(text)
        } else {
            DiskError::Failed(text)
        }
    }

    fn failure_text(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Look at the disk's free space; below the reserve, writes stop.
    fn check_space(&self) {
        let Ok(stat) = rustix::fs::statvfs(&self.path) else {
            return;
        };
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
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
    }

    /// Force what was written to the disk.
    fn sync(&self) {
        if let Err(error) = self.db.persist(PersistMode::SyncData) {
            self.failed(error);
        }
    }

    /// Bytes the database takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        // A graceful stop loses nothing, whatever the fsync window.
        let _ = self.db.persist(PersistMode::SyncAll);
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
    std::fs::create_dir_all(path)
        .with_context(|| format!("cannot create the store directory {}", path.display()))?;
    let mut entries = std::fs::read_dir(path)
        .with_context(|| format!("cannot read the store directory {}", path.display()))?;
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
        dir.check_space();
    }
}
