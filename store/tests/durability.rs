//! What sled's own recovery cannot hide: a truncated database file, a damaged or deleted blob
//! file, are named against the head anchor (never a silently shorter log), and opening the
//! store for reading never changes a byte of its directory.

mod common;
#[path = "common/tree.rs"]
mod tree;

use std::path::Path;

use common::Rec;
use store::{Error, Log, Loss, OnLoss, Store};
use tree::contents;

/// Ten records, one append (one group, one anchor) each; record `big` (if any) is large enough
/// that sled stores its leaf as a blob file.
async fn ten(dir: &Path, big: Option<u64>) {
    let store = Store::open(dir).unwrap();
    let log = store.log::<Rec>("events").unwrap();
    for n in 1..=10 {
        let mut r = Rec::new(n);
        if Some(n) == big {
            r.label = "x".repeat(300_000);
        }
        assert_eq!(log.append(vec![r]).await.unwrap(), n..=n);
    }
}

/// Opens `dir` read-only and checks the directory is byte-identical afterwards; returns what
/// `verify` said and the loss found.
fn audit(dir: &Path) -> (store::Result<store::Verified>, Option<Loss>, Vec<String>) {
    let before = contents(dir);
    let out = {
        let store = Store::open_read_only(dir).unwrap();
        let log = store.log::<Rec>("events").unwrap();
        (log.verify(), log.loss().cloned(), store.discarded_blobs().to_vec())
    };
    assert!(contents(dir) == before, "opening read-only changed the data directory");
    out
}

#[tokio::test]
async fn a_truncated_database_file_is_named_against_the_anchor_and_refused_for_writing() {
    for percent in [80u64, 60, 40] {
        let dir = tempfile::tempdir().unwrap();
        ten(dir.path(), None).await;
        let db = dir.path().join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len * percent / 100).unwrap();

        let (verified, loss, _) = audit(dir.path());
        let Some(Loss::Truncated { found, acknowledged: 10, .. }) = loss else {
            panic!("{percent}%: no truncation found: {loss:?}")
        };
        assert!(found < 10, "{percent}%");
        let err = verified.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("ends at seq {found} but seq 10 was acknowledged")), "{percent}%: {text}");
        assert!(text.contains(&format!("records {}..=10 are lost", found + 1)), "{text}");

        let store = Store::open(dir.path()).unwrap();
        let refused = store.log::<Rec>("events").err().expect("a read-write open must refuse the loss");
        assert!(matches!(refused, Error::Lost(Loss::Truncated { acknowledged: 10, .. })), "{refused}");
        // Accepting the loss opens it; the next append continues from what is left and
        // re-anchors, after which the log opens normally.
        let log = store.log_on_loss::<Rec>("events", OnLoss::Accept).unwrap();
        assert_eq!(log.loss().map(Loss::acknowledged), Some(10));
        assert_eq!(log.append(vec![Rec::new(99)]).await.unwrap(), (found + 1)..=(found + 1));
        drop(log);
        let log = store.log::<Rec>("events").unwrap();
        assert_eq!(log.verify().unwrap().head, found + 1);
    }
}

#[tokio::test]
async fn a_flipped_byte_in_a_blob_names_the_lost_records_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    ten(dir.path(), Some(5)).await;
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!blobs.is_empty(), "record 5 must have made sled write a blob file");
    for blob in &blobs {
        let mut bytes = std::fs::read(blob).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(blob, bytes).unwrap();
    }
    let (verified, loss, discarded) = audit(dir.path());
    let err = verified.unwrap_err().to_string();
    assert_eq!(loss, Some(Loss::Truncated { log: "events".into(), found: 4, acknowledged: 10 }), "{err}");
    assert!(err.contains("records 5..=10 are lost"), "{err}");
    assert!(!discarded.is_empty(), "sled's discarding of the blob is reported");
    // Still there, never deleted.
    for blob in &blobs {
        assert!(blob.exists());
    }
}

#[tokio::test]
async fn a_deleted_blob_names_the_lost_records() {
    let dir = tempfile::tempdir().unwrap();
    ten(dir.path(), Some(5)).await;
    for e in std::fs::read_dir(dir.path().join("blobs")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let (verified, loss, _) = audit(dir.path());
    // sled recovers around the missing blob: record 5 is a gap, and the tail is gone too.
    let err = verified.unwrap_err();
    assert!(matches!(err, Error::Missing { seq: 5, .. }), "{err}");
    assert!(err.to_string().contains("record 5 is missing"), "{err}");
    assert_eq!(loss.map(|l| l.acknowledged()), Some(10));
}

#[tokio::test]
async fn a_healthy_store_opened_read_only_verifies_refuses_appends_and_stays_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    ten(dir.path(), Some(3)).await;
    let (verified, loss, discarded) = audit(dir.path());
    assert_eq!(verified.unwrap().head, 10);
    assert_eq!((loss, discarded.len()), (None, 0));
    let store = Store::open_read_only(dir.path()).unwrap();
    let log = store.log::<Rec>("events").unwrap();
    assert!(matches!(log.append(vec![Rec::new(11)]).await, Err(Error::ReadOnly(_))));
    assert_eq!(log.read(1).count(), 10);
}

#[tokio::test]
async fn reading_is_refused_while_an_agent_holds_the_database() {
    let dir = tempfile::tempdir().unwrap();
    ten(dir.path(), None).await;
    let _held = Store::open(dir.path()).unwrap();
    assert!(matches!(Store::open_read_only(dir.path()).err(), Some(Error::InUse { .. })));
}
