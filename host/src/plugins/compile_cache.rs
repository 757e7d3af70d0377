//! The compile cache: compiled components kept on disk, so a restart or a
//! reload loads a large plugin in milliseconds instead of compiling it
//! again (seconds for a component with an interpreter built in).
//!
//! wasmtime's own cache does the work: entries are keyed by a SHA-256 of
//! the component's bytes and the engine's compile settings, written
//! atomically, zstd-compressed, and trimmed in the background. An entry
//! that cannot be read or does not fit this engine is compiled again and
//! replaced. What is loaded from the directory is machine code that runs
//! in this process, so the directory must be as private as the binary:
//! it is refused when another user owns it or may write to it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use wasmtime::{Cache, CacheConfig};

/// Open (creating it owner-only if missing) the cache at `dir`.
pub(super) fn open(dir: &Path) -> anyhow::Result<Cache> {
    let dir = std::path::absolute(dir)
        .with_context(|| format!("cannot resolve the plugin compile cache {}", dir.display()))?;
    let shown = dir.display();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create the plugin compile cache {shown}"))?;
    let metadata = fs::metadata(&dir)
        .with_context(|| format!("cannot read the plugin compile cache {shown}"))?;
    if !metadata.is_dir() {
        bail!("the plugin compile cache {shown} is not a directory");
    }
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        bail!(
            "the plugin compile cache {shown} belongs to user {}, not to this process's user {me}: \
             code loaded from it runs in this process",
            metadata.uid()
        );
    }
    if metadata.mode() & 0o022 != 0 {
        bail!(
            "the plugin compile cache {shown} is writable by other users (mode {:o}): \
             code loaded from it runs in this process; `chmod go-w` it",
            metadata.mode() & 0o7777
        );
    }
    // wasmtime skips an entry it cannot write without saying so to the
    // caller: find out now that the directory takes files.
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    let written = fs::File::create(&probe).and_then(|mut file| file.write_all(b"ok"));
    let _ = fs::remove_file(&probe);
    written.with_context(|| format!("cannot write to the plugin compile cache {shown}"))?;

    let mut config = CacheConfig::new();
    config.with_directory(&dir);
    Cache::new(config)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot open the plugin compile cache {shown}"))
}
