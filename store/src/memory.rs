//! The in-memory twin of [`crate::SledLog`]: same stored form, same chain, same errors, no
//! disk. For tests and the demo's throw-away runs.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::subscribe::Source;
use crate::{codec, retention};
use crate::{Entry, Error, Hash, Log, Record, Result, Seq, Snapshot, Subscription, Verified, GENESIS};

#[derive(Default)]
struct Shared {
    values: Vec<Vec<u8>>,
    tip: Option<Hash>,
    snapshots: BTreeMap<Seq, Vec<u8>>,
    checkpoints: BTreeMap<String, Seq>,
}

struct Inner {
    shared: Mutex<Shared>,
    head: watch::Sender<Seq>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave `Shared` half-updated (every update is
        // a single push or insert), so a poisoned lock is still consistent.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn values(&self, from: Seq, head: Seq) -> Vec<Result<(Seq, Vec<u8>)>> {
        let g = self.lock();
        (from.max(1)..=head).map(|seq| Ok((seq, g.values[(seq - 1) as usize].clone()))).collect()
    }
}

/// A [`Log`] held in memory.
pub struct MemoryLog<R> {
    inner: Arc<Inner>,
    _record: PhantomData<fn() -> R>,
}

/// Another handle on the same log (what reopening a durable log gives: the same records).
impl<R> Clone for MemoryLog<R> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _record: PhantomData }
    }
}

impl<R: Record> Default for MemoryLog<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Record> MemoryLog<R> {
    pub fn new() -> Self {
        let (head, _) = watch::channel(0);
        Self { inner: Arc::new(Inner { shared: Mutex::default(), head }), _record: PhantomData }
    }

    /// Overwrites the stored bytes of record `seq` (tests of tamper detection).
    pub fn tamper(&self, seq: Seq, f: impl FnOnce(&mut Vec<u8>)) {
        let mut g = self.inner.lock();
        if let Some(v) = g.values.get_mut((seq.max(1) - 1) as usize) {
            f(v);
        }
    }
}

impl<R: Record> Source<R> for Inner {
    fn read_chunk(&self, from: Seq, max: usize) -> (Vec<Entry<R>>, Option<Error>) {
        let head = *self.head.borrow();
        let last = from.saturating_add(max as Seq).saturating_sub(1).min(head);
        codec::decode_run(self.values(from, last).into_iter(), from, max, head)
    }
}

impl<R: Record> MemoryLog<R> {
    /// Appends `batch` only while `fence`'s lease is held in `leases` with its token, checked
    /// and appended with no lease change in between (the twin of `Log::append_fenced` on PostgreSQL).
    pub async fn append_fenced_by(
        &self,
        batch: Vec<R>,
        leases: &crate::MemoryLeases,
        fence: &crate::Fence,
    ) -> Result<RangeInclusive<Seq>> {
        let payloads = codec::encode_payloads(&batch)?;
        leases.while_valid(fence, || self.push(&payloads))
    }

    fn push(&self, payloads: &[Vec<u8>]) -> RangeInclusive<Seq> {
        let mut g = self.inner.lock();
        let head = g.values.len() as Seq;
        let (values, tip) = codec::chain(head, g.tip.unwrap_or(GENESIS), R::SCHEMA, payloads);
        g.values.extend(values.into_iter().map(|(_, v)| v));
        g.tip = Some(tip);
        let new_head = g.values.len() as Seq;
        // Published under the lock: two appenders publishing after unlocking could do so out of
        // order and move the head back.
        self.inner.head.send_replace(new_head);
        drop(g);
        (head + 1)..=new_head
    }
}

impl<R: Record> Log<R> for MemoryLog<R> {
    async fn append(&self, batch: Vec<R>) -> Result<RangeInclusive<Seq>> {
        let payloads = codec::encode_payloads(&batch)?;
        Ok(self.push(&payloads))
    }

    fn head(&self) -> Seq {
        *self.inner.head.borrow()
    }

    fn read(&self, from: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_> {
        let values = self.inner.values(from, self.head());
        let mut failed = false;
        Box::new(values.into_iter().map_while(move |item| {
            if failed {
                return None;
            }
            let out = item.and_then(|(seq, v)| codec::decode_entry(seq, &v));
            failed = out.is_err();
            Some(out)
        }))
    }

    fn subscribe(&self, from: Seq) -> Subscription<R> {
        Subscription::new(from, self.inner.head.subscribe(), self.inner.clone())
    }

    fn verify(&self) -> Result<Verified> {
        let head = self.head();
        codec::verify_values::<R, _>(self.inner.values(1, head).into_iter(), head)
    }

    fn save_snapshot(&self, seq: Seq, bytes: Vec<u8>) -> Result<()> {
        let mut g = self.inner.lock();
        g.snapshots.insert(seq, bytes);
        // Thinned as the durable logs thin theirs, so a test of history queries sees the same.
        let seqs: Vec<Seq> = g.snapshots.keys().copied().collect();
        for seq in retention::pruned(&seqs) {
            g.snapshots.remove(&seq);
        }
        Ok(())
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>> {
        Ok(self.inner.lock().snapshots.iter().next_back().map(|(s, b)| Snapshot { seq: *s, bytes: b.clone() }))
    }

    fn snapshot_at_or_before(&self, seq: Seq) -> Result<Option<Snapshot>> {
        let g = self.inner.lock();
        Ok(g.snapshots.range(..=seq).next_back().map(|(s, b)| Snapshot { seq: *s, bytes: b.clone() }))
    }

    fn checkpoint(&self, name: &str) -> Result<Option<Seq>> {
        Ok(self.inner.lock().checkpoints.get(name).copied())
    }

    fn set_checkpoint(&self, name: &str, seq: Seq) -> Result<()> {
        self.inner.lock().checkpoints.insert(name.to_string(), seq);
        Ok(())
    }
}
