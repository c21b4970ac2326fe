//! `netfold verify`: the log against its head anchor (no acknowledged record lost), the hash
//! chain and the decodability of every record, then replay determinism — a full fold and the
//! latest snapshot plus the tail must give the same state, byte for byte. Every check stops at
//! the head the chain check found, so a log a running agent appends to verifies as of that
//! record ([`History::live`]).

use engine::projector::{SnapshotError, State, SNAPSHOT_FORMAT};
use store::Log;

use crate::history::{History, Progress};
use crate::point::Point;
use crate::{Error, Result};

/// What verification established.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Records checked (the head).
    pub records: u64,
    /// Hash of the last record, hex.
    pub tip: String,
    /// Hash of the state a full fold gives, hex.
    pub state_hash: String,
    /// The snapshot checked against the full fold, if there was one.
    pub snapshot_seq: Option<u64>,
    /// A latest snapshot of an older format (seq, format), not compared: the agent ignores it
    /// too (it folds the log and saves a current one).
    pub older_snapshot: Option<(u64, u16)>,
}

/// Runs every check; the first failure is the error (naming the sequence number involved).
pub fn verify(history: &History, progress: Progress<'_>) -> Result<Report> {
    let verified = history.log().verify().map_err(|e| match (history.loss(), e) {
        (Some(lost), store::Error::Lost(_)) => lost,
        (Some(Error::Lost { loss, discarded, .. }), first) => {
            Error::Lost { loss, first: Some(first.to_string()), discarded }
        }
        (_, e) => Error::Log(e),
    })?;
    let head = verified.head;
    let full = history.fold(Some(Point::Seq(head)), progress)?.state;
    let full_hash = full.state_hash();
    let snapshot = history.log().snapshot_at_or_before(head).map_err(Error::Log)?;
    let mut older_snapshot = None;
    let snapshot_seq = match snapshot {
        None => None,
        Some(snap) => match State::decode(&snap.bytes, history.policy()) {
            Err(SnapshotError::Format { found }) if found < SNAPSHOT_FORMAT => {
                older_snapshot = Some((snap.seq, found));
                None
            }
            decoded => {
                let mut state = decoded.map_err(|e| Error::Snapshot { seq: snap.seq, reason: e.to_string() })?;
                for env in history.events(snap.seq + 1) {
                    let env = env?;
                    if env.seq > head {
                        break;
                    }
                    state.apply(&env);
                }
                if state.state_hash() != full_hash {
                    return Err(Error::NotDeterministic { snapshot: snap.seq });
                }
                Some(snap.seq)
            }
        },
    };
    Ok(Report {
        records: verified.head,
        tip: hex::encode(verified.tip),
        state_hash: hex::encode(full_hash),
        snapshot_seq,
        older_snapshot,
    })
}
