//! The head anchor: the last acknowledged `(seq, chain tip)` of a log, kept outside sled so that
//! sled's own recovery (a rolled-back tail, a discarded blob, a truncated file) cannot take it
//! along.
//!
//! One small file per log, `anchors/<log name>` in the store's directory, with two fixed slots
//! of `["NFA1"][writes u64 BE][seq u64 BE][tip 32 B][crc32 u32 BE]` at offsets 0 and 512
//! (separate sectors). Each group commit writes the slot that does *not* hold the latest anchor,
//! with `writes` one more than it, and `fdatasync`s the file before acknowledging; reading takes
//! the valid slot with the higher `writes` (not the higher `seq`: after an accepted loss the
//! head moves back). A write
//! torn by a power cut damages only the slot being written, whose commit was not yet
//! acknowledged; the other slot still holds the last acknowledged head.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Error, Hash, Result, Seq};

const MAGIC: &[u8; 4] = b"NFA1";
const LEN: usize = 4 + 8 + 8 + 32 + 4;
const CRC_AT: usize = LEN - 4;
const SLOTS: [u64; 2] = [0, 512];

/// The last acknowledged head of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub seq: Seq,
    pub tip: Hash,
}

fn encode(writes: u64, a: &Anchor) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4..12].copy_from_slice(&writes.to_be_bytes());
    out[12..20].copy_from_slice(&a.seq.to_be_bytes());
    out[20..52].copy_from_slice(&a.tip);
    let crc = crc32fast::hash(&out[..CRC_AT]);
    out[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// `(writes, anchor)` of a valid slot.
fn decode(b: &[u8]) -> Option<(u64, Anchor)> {
    if b.len() < LEN || &b[..4] != MAGIC || crc32fast::hash(&b[..CRC_AT]).to_be_bytes() != b[CRC_AT..LEN] {
        return None;
    }
    let u64_at = |at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_be_bytes(x)
    };
    let mut tip = [0u8; 32];
    tip.copy_from_slice(&b[20..52]);
    Some((u64_at(4), Anchor { seq: u64_at(12), tip }))
}

/// Where the anchor of log `name` lives in the store directory `dir`.
pub(crate) fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join("anchors").join(name)
}

/// Which slot holds the latest anchor, its write count, and that anchor. `None`: no anchor file
/// (a new log, or one written before anchors existed). Both slots damaged is an error.
fn latest(path: &Path) -> Result<Option<(usize, u64, Anchor)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { context: "reading the head anchor", path: path.into(), source }),
    };
    let found = SLOTS
        .iter()
        .enumerate()
        .filter_map(|(i, &at)| bytes.get(at as usize..).and_then(decode).map(|(w, a)| (i, w, a)))
        .max_by_key(|(_, writes, _)| *writes);
    match found {
        Some(f) => Ok(Some(f)),
        None if bytes.is_empty() => Ok(None),
        None => Err(Error::Meta {
            what: format!("the head anchor {}", path.display()),
            reason: "neither slot holds a valid anchor".into(),
        }),
    }
}

/// Reads the last acknowledged head of a log.
pub(crate) fn read(path: &Path) -> Result<Option<Anchor>> {
    Ok(latest(path)?.map(|(_, _, a)| a))
}

/// The writer's handle on its log's anchor file.
pub(crate) struct AnchorFile {
    file: File,
    path: PathBuf,
    /// The slot the next write goes to.
    next: usize,
    /// Writes so far (the latest slot's count).
    writes: u64,
}

impl AnchorFile {
    /// Opens (creating, with its directory, durably) the anchor file at `path`.
    pub fn open(path: PathBuf) -> Result<Self> {
        let err = |context| {
            let p = path.clone();
            move |source| Error::Io { context, path: p, source }
        };
        let (next, writes) = match latest(&path)? {
            Some((slot, writes, _)) => (1 - slot, writes),
            None => (0, 0),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(err("creating the anchor directory"))?;
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err("opening the head anchor"))?;
        if !existed {
            // Both slots written up front (real blocks, not a hole), so later writes never
            // allocate or change the file's size.
            file.write_all_at(&[0u8; 4096], 0).map_err(err("sizing the head anchor"))?;
            file.sync_all().map_err(err("syncing the head anchor"))?;
            let sync = |d: &Path| File::open(d).and_then(|d| d.sync_all());
            sync(dir).map_err(err("syncing the anchor directory"))?;
            if created {
                sync(dir.parent().unwrap_or(Path::new("."))).map_err(err("syncing the store directory"))?;
            }
        }
        Ok(Self { file, path, next, writes })
    }

    /// Records `anchor` durably (`pwrite` + `fdatasync`).
    pub fn write(&mut self, anchor: Anchor) -> Result<()> {
        let path = &self.path;
        let err = |context| move |source| Error::Io { context, path: path.clone(), source };
        let bytes = encode(self.writes + 1, &anchor);
        self.file.write_all_at(&bytes, SLOTS[self.next]).map_err(err("writing the head anchor"))?;
        self.file.sync_data().map_err(err("syncing the head anchor"))?;
        self.next = 1 - self.next;
        self.writes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_valid_slot_wins_and_a_torn_slot_leaves_the_previous_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "events");
        assert_eq!(read(&p).unwrap(), None);
        let mut f = AnchorFile::open(p.clone()).unwrap();
        for seq in 1..=5 {
            f.write(Anchor { seq, tip: [seq as u8; 32] }).unwrap();
            assert_eq!(read(&p).unwrap(), Some(Anchor { seq, tip: [seq as u8; 32] }));
        }
        // Seq 5 went to slot 0; tear it: seq 4 (slot 1) is what was acknowledged before.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read(&p).unwrap().unwrap().seq, 4);
        // A reopened writer overwrites the torn slot, not the good one.
        let mut f = AnchorFile::open(p.clone()).unwrap();
        f.write(Anchor { seq: 6, tip: [6; 32] }).unwrap();
        assert_eq!(read(&p).unwrap().unwrap().seq, 6);
        bytes = std::fs::read(&p).unwrap();
        assert_eq!(decode(&bytes[512..]).unwrap().1.seq, 4);
        // After an accepted loss the head moves back: the later write wins, not the higher seq.
        f.write(Anchor { seq: 2, tip: [2; 32] }).unwrap();
        assert_eq!(read(&p).unwrap().unwrap().seq, 2);
        assert_eq!(AnchorFile::open(p.clone()).unwrap().next, 0, "slot 1 holds the latest");
        // Both slots damaged: an error, never "no anchor".
        std::fs::write(&p, vec![7u8; 600]).unwrap();
        assert!(read(&p).is_err());
    }
}
