//! The compile cache: compiled components kept on disk, so a restart or a
//! reload loads a large plugin in milliseconds instead of compiling it
//! again (seconds for a component with an interpreter built in).
//!
//! wasmtime's own cache does the work, in the `wasmtime` directory inside
//! the operator's: entries are keyed by a SHA-256 of the component's bytes
//! and the engine's compile settings, written atomically, zstd-compressed,
//! and trimmed in the background (its trimming deletes whatever else it
//! finds there, hence a directory of its own). An entry that cannot be
//! read or does not fit this engine is compiled again and replaced.
//!
//! What is loaded from the directory is machine code that runs in this
//! process, so it must be as private as the binary: the directory (after
//! resolving links) and all it holds must belong to this user, nobody
//! else may ever have been able to write in it (it is closed to others
//! when it was only readable), and no directory above it may let another
//! user swap it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use wasmtime::{Cache, CacheConfig};

/// Marks a directory as a compile cache, so a directory holding anything
/// else is never handed to wasmtime's trimming.
const MARKER: &str = "MADX-PUSHER-COMPILE-CACHE";
const MARKER_TEXT: &str = "Compiled plugin components of madx-pusher (wasmtime's cache, in wasmtime/).\n\
Only the service's user may write here: what is loaded from it runs in the host.\n";

/// wasmtime's cache in a directory this host has checked.
pub(super) struct CompileCache {
    cache: Cache,
    /// The directory's real path.
    dir: PathBuf,
}

impl CompileCache {
    /// Open (creating it owner-only if missing) the cache at `dir`.
    pub(super) fn open(dir: &Path) -> anyhow::Result<CompileCache> {
        let (cache, dir) = open(dir)?;
        Ok(CompileCache { cache, dir })
    }

    /// What the engine is configured with.
    pub(super) fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Entries loaded so far.
    pub(super) fn hits(&self) -> usize {
        self.cache.cache_hits()
    }

    /// Check the directory again before a load (a reload comes long after
    /// start-up): a cache that is no longer private is not read.
    pub(super) fn recheck(&self) -> anyhow::Result<()> {
        check(&self.dir).map(|_marked| ())
    }
}

/// Everything that makes the directory at real path `dir` safe to load
/// code from, checked before anything is written into it; whether it is
/// marked as a compile cache already (else it is empty).
fn check(dir: &Path) -> anyhow::Result<bool> {
    let shown = dir.display();
    let me = rustix::process::geteuid().as_raw();
    check_private(dir, me)?;
    check_ancestors(dir, me)?;
    // Before the walk below: a directory that is not ours (a home, say)
    // is refused without reading through it.
    let marked = dir.join(MARKER).exists();
    if !marked {
        let empty = fs::read_dir(dir)
            .with_context(|| format!("cannot read the plugin compile cache {shown}"))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "the plugin compile cache {shown} is not empty and is not a madx-pusher \
                 compile cache: give a new or empty directory"
            );
        }
    }
    check_entries(dir, me)?;
    Ok(marked)
}

fn open(dir: &Path) -> anyhow::Result<(Cache, PathBuf)> {
    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot resolve the plugin compile cache {}", dir.display()))?;
    let shown = dir.display();
    match fs::metadata(&dir) {
        Ok(metadata) if !metadata.is_dir() => {
            bail!("the plugin compile cache {shown} is not a directory")
        }
        Ok(_) => {}
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the plugin compile cache {shown}"))?,
    }
    // Checked and used by its real path: a link swapped later changes
    // nothing.
    let dir = fs::canonicalize(&dir)
        .with_context(|| format!("cannot resolve the plugin compile cache {shown}"))?;
    let shown = dir.display();
    if !check(&dir)? {
        write_new(&dir.join(MARKER), MARKER_TEXT.as_bytes())
            .with_context(|| format!("cannot write to the plugin compile cache {shown}"))?;
    }
    let wasmtime_dir = dir.join("wasmtime");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&wasmtime_dir)
        .or_else(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(error),
        })
        .with_context(|| format!("cannot create {}", wasmtime_dir.display()))?;
    // wasmtime skips an entry it cannot write without telling the caller:
    // find out now that the directory takes files.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.subsec_nanos())
        .unwrap_or_default();
    let probe = wasmtime_dir.join(format!(".write-check-{}-{nanos}", std::process::id()));
    let _ = fs::remove_file(&probe);
    let written = write_new(&probe, b"ok");
    let _ = fs::remove_file(&probe);
    written.with_context(|| format!("cannot write to the plugin compile cache {shown}"))?;

    let mut config = CacheConfig::new();
    config.with_directory(&wasmtime_dir);
    let cache = Cache::new(config)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot open the plugin compile cache {shown}"))?;
    Ok((cache, dir))
}

/// The cache directory itself: this user's, nobody else ever able to
/// write in it, and closed to everyone else from now on (so the modes of
/// what wasmtime writes inside do not matter).
fn check_private(dir: &Path, me: u32) -> anyhow::Result<()> {
    let shown = dir.display();
    let metadata = fs::metadata(dir)
        .with_context(|| format!("cannot read the plugin compile cache {shown}"))?;
    if metadata.uid() != me {
        bail!(
            "the plugin compile cache {shown} belongs to user {}, not to this process's user {me}: \
             code loaded from it runs in this process",
            metadata.uid()
        );
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "the plugin compile cache {shown} is writable by other users (mode {mode:o}): \
             code loaded from it runs in this process, and others may have written to it; \
             delete it and let the host create it"
        );
    }
    if mode & 0o077 != 0 {
        // Readable only (systemd's `CacheDirectory=` makes 0755): nobody
        // else could have written in it, so close it rather than refuse.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| {
            format!("cannot make the plugin compile cache {shown} owner-only (mode {mode:o})")
        })?;
        tracing::info!(cache = %shown, was = format!("{mode:o}"), "plugin compile cache made owner-only (700)");
    }
    Ok(())
}

/// Everything under the cache: this user's, no symbolic links, no file
/// with a second hard link. A cache that was once open to others may hold
/// entries they planted.
fn check_entries(dir: &Path, me: u32) -> anyhow::Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let metadata = fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let kind = metadata.file_type();
        // A second hard link is a way into an entry from outside the
        // (closed) directory; wasmtime writes by rename, never links.
        let planted =
            kind.is_symlink() || metadata.uid() != me || (kind.is_file() && metadata.nlink() > 1);
        if planted {
            bail!(
                "the plugin compile cache holds {} (owner {}, mode {:o}{}), which this user \
                 did not write: code loaded from it runs in this process; delete the cache \
                 and let the host create it",
                path.display(),
                metadata.uid(),
                metadata.mode() & 0o7777,
                if kind.is_symlink() {
                    ", a link"
                } else if metadata.nlink() > 1 && kind.is_file() {
                    ", linked from elsewhere"
                } else {
                    ""
                }
            );
        }
        if kind.is_dir() {
            check_entries(&path, me)?;
        }
    }
    Ok(())
}

/// Every directory above the cache: owned by root or this user, and
/// writable by no one else unless sticky (as `/tmp`), so nobody else can
/// rename the cache away and put their own in its place. Group write is
/// this user's alone only for a one-user group (the usual umask 002
/// system) and without an ACL naming others.
fn check_ancestors(dir: &Path, me: u32) -> anyhow::Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let metadata = fs::metadata(ancestor)
            .with_context(|| format!("cannot read {}", ancestor.display()))?;
        let mode = metadata.mode();
        let sticky = mode & 0o1000 != 0;
        let owner_ok = metadata.uid() == 0 || metadata.uid() == me;
        let group_may_write =
            mode & 0o020 != 0 && (has_acl(ancestor) || !user_private_group(me, metadata.gid()));
        let others_may_write = mode & 0o002 != 0;
        if !owner_ok || ((group_may_write || others_may_write) && !sticky) {
            bail!(
                "the plugin compile cache {} sits in {} (owner {}, group {}, mode {:o}), where \
                 another user could replace it: put it in a directory only root or this user \
                 can change",
                dir.display(),
                ancestor.display(),
                metadata.uid(),
                metadata.gid(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}

/// Whether a POSIX ACL is set on `path` (its group bits are then the ACL's
/// mask, and named users may write).
fn has_acl(path: &Path) -> bool {
    rustix::fs::getxattr_query(path, "system.posix_acl_access").is_ok()
}

/// Whether `gid` is the group of user `uid` alone, as `/etc/passwd` and
/// `/etc/group` say: named after the user, no other members, nobody else's
/// primary group. Anything unreadable or unusual counts as shared.
fn user_private_group(uid: u32, gid: u32) -> bool {
    let (Ok(passwd), Ok(groups)) = (
        fs::read_to_string("/etc/passwd"),
        fs::read_to_string("/etc/group"),
    ) else {
        return false;
    };
    // name:password:uid:gid:...
    let users: Vec<Vec<&str>> = passwd
        .lines()
        .map(|line| line.split(':').collect())
        .collect();
    let field = |entry: &[&str], at: usize| entry.get(at).and_then(|text| text.parse::<u32>().ok());
    let Some(user) = users.iter().find(|entry| field(entry, 2) == Some(uid)) else {
        return false;
    };
    let others_primary = users
        .iter()
        .any(|entry| field(entry, 3) == Some(gid) && field(entry, 2) != Some(uid));
    // name:password:gid:member,member
    let group = groups
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|entry| field(entry, 2) == Some(gid));
    match group {
        Some(group) => {
            let members = group.get(3).copied().unwrap_or_default();
            group.first() == user.first()
                && members
                    .split(',')
                    .all(|member| member.is_empty() || Some(&member) == user.first())
                && !others_primary
        }
        None => false,
    }
}

/// Write a file that must not exist yet (a link planted in its place is
/// not followed).
fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents)
}
