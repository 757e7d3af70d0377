//! The one-node broker's messages on disk (the `file:` store): each message
//! is written before it is delivered or acknowledged, and deleted when the
//! history bounds let go of it, so a restarted node finds the same history
//! and hands out ids above every id it handed out before.
//!
//! Layout in the directory's keyspaces:
//! - `history`: `<app> 0x00 <id, 8 bytes big-endian>` -> the message's
//!   streams (count, then each name with its length, 4 bytes big-endian)
//!   followed by its frame.
//! - `meta`: `floor 0x00 <app>` -> the highest id of the app deleted so far
//!   (a recovery from an older id cannot be complete); `born` -> when the
//!   directory was first opened, in microseconds (the floor of an app that
//!   never deleted anything).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};

use super::memory::unix_micros;
use crate::data_dir::{DataDir, DiskError};
use crate::hub::Target;

const BORN: &[u8] = b"born";

/// A message read back from disk.
pub struct Logged {
    pub app: String,
    pub id: u64,
    pub streams: Vec<Target>,
    pub frame: String,
}

/// What the directory held at start-up.
pub struct Loaded {
    /// Every message, oldest (lowest id) first.
    pub messages: Vec<Logged>,
    /// Per app, the highest id no longer on disk.
    pub floors: BTreeMap<String, u64>,
    /// The floor of an app with no floor of its own.
    pub born: u64,
}

/// A message to write: its app-wide id, its streams and its frame.
pub struct Entry<'a> {
    pub id: u64,
    pub streams: &'a [Target],
    pub frame: &'a str,
}

pub struct Journal {
    dir: Arc<DataDir>,
}

impl Journal {
    pub fn new(dir: Arc<DataDir>) -> Journal {
        Journal { dir }
    }

    /// Read everything back (once, at start-up); an unreadable record fails
    /// the start rather than silently losing history.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let engine = self.dir.engine()?;
        let born = match engine.meta.get(BORN)? {
            Some(bytes) => read_u64(&bytes).context("the store's birth time is damaged")?,
            None => {
                let now = unix_micros();
                self.dir
                    .commit(|engine, batch| batch.insert(&engine.meta, BORN, now.to_be_bytes()))
                    .map_err(|error| anyhow!("cannot initialise the store: {error}"))?;
                now
            }
        };
        let mut floors = BTreeMap::new();
        for item in engine.meta.prefix(b"floor\0") {
            let (key, value) = item.into_inner()?;
            let app = String::from_utf8(key[b"floor\0".len()..].to_vec())
                .context("an app name in the store is damaged")?;
            floors.insert(app, read_u64(&value).context("an id floor is damaged")?);
        }
        let mut messages = Vec::new();
        for item in engine.history.iter() {
            let (key, value) = item.into_inner()?;
            messages.push(decode(&key, &value).context("a stored message is damaged")?);
        }
        // Apps interleave by time: replay them in publish order.
        messages.sort_by_key(|message| message.id);
        Ok(Loaded {
            messages,
            floors,
            born,
        })
    }

    /// Write `entries` of `app` in one atomic batch.
    pub fn write(&self, app: &str, entries: &[Entry<'_>]) -> Result<(), DiskError> {
        self.dir.commit(|engine, batch| {
            for entry in entries {
                batch.insert(
                    &engine.history,
                    key(app, entry.id),
                    encode(entry.streams, entry.frame),
                );
            }
        })
    }

    /// Delete messages the bounds let go of, raising each app's floor to
    /// the highest id deleted; `false` when the directory refused (the
    /// caller keeps the ids for the next try). Not acknowledged to anyone:
    /// a delete lost in a crash is made again when the same bounds meet
    /// the message after the restart.
    pub fn forget(
        &self,
        dropped: &BTreeMap<String, Vec<u64>>,
        floors: &BTreeMap<String, u64>,
    ) -> bool {
        if dropped.is_empty() {
            return true;
        }
        let written = self.dir.commit_deletes(|engine, batch| {
            for (app, ids) in dropped {
                for id in ids {
                    batch.remove(&engine.history, key(app, *id));
                }
                if let Some(floor) = floors.get(app) {
                    batch.insert(&engine.meta, floor_key(app), floor.to_be_bytes());
                }
            }
        });
        if let Err(error) = &written {
            tracing::warn!(%error, "history that aged out could not be deleted from the store yet");
        }
        written.is_ok()
    }
}

fn key(app: &str, id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(app.len() + 9);
    key.extend_from_slice(app.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn floor_key(app: &str) -> Vec<u8> {
    [b"floor\0".as_slice(), app.as_bytes()].concat()
}

fn encode(streams: &[Target], frame: &str) -> Vec<u8> {
    let names: Vec<String> = streams.iter().map(Target::stream_name).collect();
    let mut value =
        Vec::with_capacity(frame.len() + 4 + names.iter().map(|n| n.len() + 4).sum::<usize>());
    // Counts and lengths fit in 32 bits: they are bounded by the request
    // body limit long before that.
    value.extend_from_slice(&(names.len() as u32).to_be_bytes());
    for name in &names {
        value.extend_from_slice(&(name.len() as u32).to_be_bytes());
        value.extend_from_slice(name.as_bytes());
    }
    value.extend_from_slice(frame.as_bytes());
    value
}

fn decode(key: &[u8], value: &[u8]) -> Option<Logged> {
    let split = key.len().checked_sub(9)?;
    let (app, id) = key.split_at(split);
    let id = read_u64(id.get(1..)?)?;
    let app = String::from_utf8(app.to_vec()).ok()?;
    let (count, mut rest) = value.split_first_chunk::<4>()?;
    let mut streams = Vec::new();
    for _ in 0..u32::from_be_bytes(*count) {
        let (length, tail) = rest.split_first_chunk::<4>()?;
        let length = usize::try_from(u32::from_be_bytes(*length)).ok()?;
        let (name, tail) = tail.split_at_checked(length)?;
        streams.push(Target::from_stream_name(std::str::from_utf8(name).ok()?)?);
        rest = tail;
    }
    Some(Logged {
        app,
        id,
        streams,
        frame: String::from_utf8(rest.to_vec()).ok()?,
    })
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_damage_is_seen() {
        let streams = [Target::Channel("news".into()), Target::User("ann".into())];
        let frame = r#"{"type":"message","id":"7"}"#;
        let value = encode(&streams, frame);
        let logged = decode(&key("app-1", 7), &value).unwrap();
        assert_eq!(
            (logged.app.as_str(), logged.id, logged.frame.as_str()),
            ("app-1", 7, frame)
        );
        assert_eq!(logged.streams, streams);
        assert!(decode(&key("app-1", 7), &value[..9]).is_none());
        assert!(decode(b"short", &value).is_none());
    }
}
