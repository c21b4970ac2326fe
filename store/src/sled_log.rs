//! The sled-backed log: one [`Store`] (a sled database) holds any number of named logs, each
//! with its own sequence, chain, snapshots and checkpoints, plus small [`Table`]s.
//!
//! Appends go through one writer thread per log. It takes every request queued since its last
//! flush, chains them and writes them to sled in one atomic write (one insert for a single
//! block, one batch for several), flushes once, then acknowledges them all: group commit. The
//! head other readers see moves only after the flush, so nothing that is not durable is ever
//! read. Reads hand out slices of the stored blocks, and decode long runs of records on every
//! core; a read longer than one run ([`Log::read`]) decodes on a thread of its own, up to
//! [`READ_AHEAD`] runs ahead of its reader, so the reader's work (a fold) overlaps the decoding
//! of what comes next.

use std::marker::PhantomData;
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::anchor::{self, Anchor, AnchorFile};
use crate::codec::{self, key, seq_of};
use crate::db::{write_atomically, Inner, Mode, Open};
use crate::retention;
use crate::subscribe::Source;
use crate::{Entry, Error, Hash, Log, Loss, Record, Result, Seq, Snapshot, Store, Subscription, Verified, GENESIS};

/// Requests waiting for the writer; beyond this appenders wait (backpressure).
const QUEUE: usize = 4096;
/// Most records one group commit takes, so one flush never grows without bound.
const MAX_GROUP: usize = 1 << 16;
/// Most bytes per stored block: a large group is written as several blocks, and a record larger
/// than this gets a block of its own. sled keeps up to 16 entries per leaf and stores a leaf over
/// ~128 KiB as a separate "blob" file that it reads back whole, CRC and all, every time the
/// database opens; keeping leaves under that keeps opening independent of the log's size
/// (ADR 0001).
const MAX_BLOCK_BYTES: usize = 6 * 1024;
/// Records a read gathers (from consecutive blocks) before decoding them together.
const READ_RUN: usize = 4096;
/// Records in a read's first run: runs start short and double up to [`READ_RUN`], so a reader
/// that stops after a few records (a history query at an early seq) does not decode thousands
/// it never looks at.
const FIRST_RUN: usize = 16;

/// What to do when a log opened for writing has lost acknowledged records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLoss {
    /// Fail with [`Error::Lost`].
    Refuse,
    /// Open anyway; [`SledLog::loss`] says what was lost and the next append re-anchors the
    /// head (the caller should make that append a record of the loss).
    Accept,
}

impl Store {
    /// The log named `name` (trees `<name>.log`, `<name>.snapshots`, `<name>.checkpoints`; head
    /// anchor `anchors/<name>`). Open each log once per process: its writer thread owns the
    /// sequence. On a read-write store, a log that lost acknowledged records is
    /// [`Error::Lost`]; on a read-only one it opens and [`SledLog::loss`] reports it.
    pub fn log<R: Record>(&self, name: &str) -> Result<SledLog<R>> {
        SledLog::open(self.inner.clone(), name, OnLoss::Refuse)
    }

    /// Like [`Store::log`], with a choice of what to do about lost acknowledged records.
    pub fn log_on_loss<R: Record>(&self, name: &str, on_loss: OnLoss) -> Result<SledLog<R>> {
        SledLog::open(self.inner.clone(), name, on_loss)
    }
}

struct Request {
    payloads: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<RangeInclusive<Seq>>>,
}

struct Trees {
    inner: Arc<Inner>,
    /// The log's name and its trees' names.
    name: String,
    log: String,
    snapshots: String,
    checkpoints: String,
    head: watch::Receiver<Seq>,
}

impl Trees {
    fn log_tree(&self) -> Result<sled::Tree> {
        self.inner.with(|o| o.tree(&self.log))
    }
}

/// A [`Log`] in a sled database.
///
/// Dropping it lets the writer finish what was queued, then waits for it (up to
/// [`WRITER_EXIT`]): once the drop returns, every acknowledged append is on disk and the
/// database can be reopened.
pub struct SledLog<R> {
    trees: Arc<Trees>,
    requests: mpsc::Sender<Request>,
    writer: Option<std::thread::JoinHandle<()>>,
    loss: Option<Loss>,
    _record: PhantomData<fn() -> R>,
}

/// How long dropping a log waits for its writer to finish. A writer stuck in sled (whose
/// flush can wait forever after some failed writes) is left behind rather than hang shutdown;
/// nothing it holds was acknowledged.
const WRITER_EXIT: std::time::Duration = std::time::Duration::from_secs(10);

impl<R> Drop for SledLog<R> {
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.requests, closed));
        if let Some(writer) = self.writer.take() {
            let deadline = std::time::Instant::now() + WRITER_EXIT;
            while !writer.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if writer.is_finished() {
                let _ = writer.join();
            } else {
                tracing::error!(log = %self.trees.name, "the log writer did not finish within 10 s; leaving it");
            }
        }
    }
}

/// The head and chain tip of a log tree, from its last block.
fn head_of(log: &sled::Tree) -> Result<(Seq, Hash)> {
    match log.last().map_err(Error::db("reading the log head"))? {
        None => Ok((0, GENESIS)),
        Some((k, block)) => {
            let first = seq_of(&k, 0)?;
            let records = codec::split_block(first, &block)?;
            match records.last() {
                Some((seq, at)) => Ok((*seq, codec::hash_record(*seq, &block[at.clone()]))),
                None => Err(Error::Truncated { seq: first, len: block.len(), need: 8 }),
            }
        }
    }
}

/// The hash of record `seq`, if the log holds it readably.
fn hash_at(log: &sled::Tree, seq: Seq) -> Option<Hash> {
    let (k, block) = log.range(..=key(seq)).next_back()?.ok()?;
    let records = codec::split_block(seq_of(&k, 0).ok()?, &block).ok()?;
    let (_, at) = records.into_iter().find(|(s, _)| *s == seq)?;
    Some(codec::hash_record(seq, &block[at]))
}

/// What the log lost against its anchor, if anything.
fn loss_against(name: &str, log: &sled::Tree, head: Seq, anchored: Option<Anchor>) -> Option<Loss> {
    let a = anchored.filter(|a| a.seq > 0)?;
    if head < a.seq {
        return Some(Loss::Truncated { log: name.to_string(), found: head, acknowledged: a.seq });
    }
    (hash_at(log, a.seq) != Some(a.tip)).then(|| Loss::Rewritten { log: name.to_string(), seq: a.seq })
}

impl<R: Record> SledLog<R> {
    fn open(inner: Arc<Inner>, name: &str, on_loss: OnLoss) -> Result<Self> {
        let open = inner.current()?;
        let log = open.tree(&format!("{name}.log"))?;
        let (head, tip) = head_of(&log)?;
        let anchor_path = inner.dir.as_deref().map(|d| anchor::path(d, name));
        let anchored = anchor_path.as_deref().map(anchor::read).transpose()?.flatten();
        let loss = loss_against(name, &log, head, anchored);
        if let Some(l) = &loss {
            if inner.mode == Mode::ReadWrite && on_loss == OnLoss::Refuse {
                return Err(Error::Lost(l.clone()));
            }
            tracing::warn!(log = name, loss = %l, "opening a log that lost acknowledged records");
        }
        for suffix in ["snapshots", "checkpoints"] {
            open.tree(&format!("{name}.{suffix}"))?;
        }
        drop((log, open));
        let (head_tx, head_rx) = watch::channel(head);
        let trees = Arc::new(Trees {
            inner: inner.clone(),
            name: name.to_string(),
            log: format!("{name}.log"),
            snapshots: format!("{name}.snapshots"),
            checkpoints: format!("{name}.checkpoints"),
            head: head_rx,
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = match inner.mode {
            Mode::ReadOnly => None,
            Mode::ReadWrite => {
                let mut anchor = anchor_path.map(AnchorFile::open).transpose()?;
                // A log from before anchors, or one whose last durable group was not yet
                // anchored when the process died: anchor what is there. After an accepted loss
                // the anchor stays ahead until the caller's next append records the loss.
                if let (Some(a), None) = (&mut anchor, &loss) {
                    if anchored != Some(Anchor { seq: head, tip }) {
                        a.write(Anchor { seq: head, tip })?;
                    }
                }
                let writer = Writer { trees: trees.clone(), head, tip, schema: R::SCHEMA, published: head_tx, anchor };
                let thread = std::thread::Builder::new()
                    .name(format!("log-writer-{name}"))
                    .spawn(move || writer.run(rx))
                    .map_err(|e| Error::Closed(format!("cannot start the writer thread: {e}")))?;
                Some(thread)
            }
        };
        Ok(Self { trees, requests: tx, writer, loss, _record: PhantomData })
    }

    /// The acknowledged records this log has lost, found against its head anchor when it was
    /// opened (only a read-only or loss-accepting open gets this far with a loss).
    pub fn loss(&self) -> Option<&Loss> {
        self.loss.as_ref()
    }

    /// Anchors the log at its current head, durably, so a loss accepted by the operator is not
    /// found again at the next open (an append anchors too: use this for a log the caller has
    /// nothing to append to).
    pub async fn anchor_head(&self) -> Result<()> {
        self.writable()?;
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { payloads: Vec::new(), reply })
            .await
            .map_err(|_| Error::Closed("the writer has stopped".into()))?;
        answer.await.map_err(|_| Error::Closed("the writer stopped before answering".into()))?.map(|_| ())
    }
}

/// The same failure again, for the other requests of a failed group (errors are not `Clone`);
/// it stays retryable if the original was.
fn again(e: &Error) -> Error {
    match e {
        Error::Db { context, source } => Error::Db { context, source: source.clone() },
        Error::Io { context, path, source } => {
            Error::Io { context, path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        Error::NoSpace { path, free, need } => Error::NoSpace { path: path.clone(), free: *free, need: *need },
        other => Error::Unavailable(other.to_string()),
    }
}

/// The single writer of one log: owns the head and the chain tip.
struct Writer {
    trees: Arc<Trees>,
    head: Seq,
    tip: Hash,
    schema: u16,
    published: watch::Sender<Seq>,
    /// `None` for a temporary store (nothing durable to anchor).
    anchor: Option<AnchorFile>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        // Set after a failed commit: the database must be reopened and the tail checked first.
        let mut broken = false;
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            let mut records = group[0].payloads.len();
            while records < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => {
                        records += r.payloads.len();
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            if broken {
                if let Err(e) = self.recover() {
                    tracing::warn!(log = %self.trees.name, error = %e, "the log cannot be appended yet");
                    for req in group {
                        let _ = req.reply.send(Err(again(&e)));
                    }
                    continue;
                }
                tracing::info!(log = %self.trees.name, head = self.head, "the log is writable again");
                broken = false;
            }
            if let Err(e) = self.commit(group) {
                tracing::error!(log = %self.trees.name, error = %e, "a group commit failed; its appenders got the error");
                broken = true;
            }
        }
    }

    /// Writes one group, makes it durable (sled flush, `fdatasync`, the anchor), then
    /// acknowledges it. On failure every request of the group gets the error and nothing is
    /// acknowledged.
    fn commit(&mut self, group: Vec<Request>) -> Result<()> {
        let (mut head, mut tip) = (self.head, self.tip);
        let mut ranges = Vec::with_capacity(group.len());
        let mut values = Vec::new();
        for req in &group {
            let (chained, new_tip) = codec::chain(head, tip, self.schema, &req.payloads);
            values.extend(chained);
            ranges.push((head + 1)..=(head + req.payloads.len() as Seq));
            head += req.payloads.len() as Seq;
            tip = new_tip;
        }
        let writes: Vec<_> = blocks(&values).map(|b| (key(b[0].0).to_vec(), Some(codec::encode_block(b)))).collect();
        let bytes = values.iter().map(|(_, v)| v.len() + 4).sum();
        let written = self.trees.inner.with(|open: &Open| {
            open.room_for(bytes)?;
            write_atomically(&open.tree(&self.trees.log)?, writes).map_err(Error::db("appending"))?;
            open.sync()
        });
        let written = written.and_then(|()| match &mut self.anchor {
            Some(a) => a.write(Anchor { seq: head, tip }),
            None => Ok(()),
        });
        match written {
            Ok(()) => {
                self.head = head;
                self.tip = tip;
                self.published.send_replace(head);
                for (req, range) in group.into_iter().zip(ranges) {
                    let _ = req.reply.send(Ok(range));
                }
                Ok(())
            }
            Err(e) => {
                for req in group {
                    let _ = req.reply.send(Err(again(&e)));
                }
                Err(e)
            }
        }
    }

    /// After a failed commit: reopens the database if it is still the failed one, and makes
    /// the log end exactly at the last acknowledged record again. Records of failed groups that
    /// reached the disk anyway were never acknowledged (their appenders got an error and did
    /// not apply them), so they are removed; fewer records than acknowledged is a loss.
    fn recover(&mut self) -> Result<()> {
        self.trees.inner.with(|open: &Open| {
            let log = open.tree(&self.trees.log)?;
            let (mut head, mut tip) = head_of(&log)?;
            if head > self.head {
                let mut batch = sled::Batch::default();
                for k in log.range(key(self.head + 1)..).keys() {
                    batch.remove(k.map_err(Error::db("reading the log tail"))?);
                }
                log.apply_batch(batch).map_err(Error::db("removing unacknowledged records"))?;
                open.sync()?;
                tracing::warn!(
                    log = %self.trees.name,
                    from = self.head + 1,
                    to = head,
                    "removed records of failed appends that reached the disk (never acknowledged)"
                );
                (head, tip) = head_of(&log)?;
            }
            if head < self.head {
                return Err(Error::Lost(Loss::Truncated {
                    log: self.trees.name.clone(),
                    found: head,
                    acknowledged: self.head,
                }));
            }
            if tip != self.tip {
                return Err(Error::Lost(Loss::Rewritten { log: self.trees.name.clone(), seq: head }));
            }
            Ok(())
        })?;
        if let Some(a) = &mut self.anchor {
            a.write(Anchor { seq: self.head, tip: self.tip })?;
        }
        Ok(())
    }
}

/// `values` cut into consecutive blocks of at most [`MAX_BLOCK_BYTES`] bytes (or one record, if
/// that alone is larger).
fn blocks(values: &[(Seq, Vec<u8>)]) -> impl Iterator<Item = &[(Seq, Vec<u8>)]> {
    let mut rest = values;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|(_, v)| {
                bytes += 4 + v.len();
                bytes <= MAX_BLOCK_BYTES
            })
            .count()
            .max(1);
        let (block, tail) = rest.split_at(n);
        rest = tail;
        Some(block)
    })
}

/// A record's stored bytes: a slice of the block that holds it, shared, not copied.
struct Stored {
    block: sled::IVec,
    at: Range<usize>,
}

impl AsRef<[u8]> for Stored {
    fn as_ref(&self) -> &[u8] {
        &self.block[self.at.clone()]
    }
}

/// One stored block and where its wanted records lie in it (never none).
struct Block {
    bytes: sled::IVec,
    records: Vec<(Seq, Range<usize>)>,
}

impl Trees {
    /// The blocks holding records `from..=head`, each with only those records.
    fn blocks_from(&self, from: Seq, head: Seq) -> Box<dyn Iterator<Item = Result<Block>> + Send + '_> {
        let from = from.max(1);
        if from > head {
            return Box::new(std::iter::empty());
        }
        let log = match self.log_tree() {
            Ok(t) => t,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        // The block holding `from` starts at or before it.
        let start = match log.range(..=key(from)).next_back() {
            Some(Ok((k, _))) => k.to_vec(),
            _ => key(from).to_vec(),
        };
        let mut last = from - 1;
        Box::new(log.range(start..=key(head).to_vec()).filter_map(move |item| {
            let block = (|| {
                let (k, bytes) = item.map_err(|source| Error::Unreadable { after: last, source })?;
                let first = seq_of(&k, last)?;
                let mut records = codec::split_block(first, &bytes)?;
                last = first + records.len() as Seq - 1;
                records.retain(|(seq, _)| (from..=head).contains(seq));
                Ok(Block { bytes, records })
            })();
            match block {
                Ok(b) if b.records.is_empty() => None,
                other => Some(other),
            }
        }))
    }

    /// Records `from..=last` of a log whose head is `head`, decoded, as runs: blocks are small (a
    /// few KiB), so records are gathered across blocks into runs long enough to decode in
    /// parallel (the first runs shorter: [`FIRST_RUN`]). A gap (including records missing before
    /// `last`) or a bad record ends the runs with its error.
    fn runs<R: Record>(
        &self,
        from: Seq,
        last: Seq,
        head: Seq,
    ) -> impl Iterator<Item = Vec<Result<Entry<R>>>> + Send + '_ {
        let mut blocks = self.blocks_from(from, last);
        let mut expected = from.max(1);
        let mut done = false;
        let mut want = FIRST_RUN;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let mut run: Vec<Block> = Vec::new();
            let mut records = 0;
            let mut error = None;
            let target = want;
            want = (want * 2).min(READ_RUN);
            while records < target {
                match blocks.next() {
                    None if expected <= last => error = Some(Error::Missing { seq: expected, head }),
                    None => done = true,
                    Some(Err(e)) => error = Some(e),
                    Some(Ok(b)) if b.records[0].0 != expected => error = Some(Error::Missing { seq: expected, head }),
                    Some(Ok(b)) => {
                        expected += b.records.len() as Seq;
                        records += b.records.len();
                        run.push(b);
                        continue;
                    }
                }
                break;
            }
            let slices: Vec<(Seq, &[u8])> =
                run.iter().flat_map(|b| b.records.iter().map(|(seq, at)| (*seq, &b.bytes[at.clone()]))).collect();
            let mut out = codec::decode_all::<R>(&slices);
            if out.last().is_some_and(Result::is_err) {
                done = true;
            } else if let Some(e) = error {
                out.push(Err(e));
                done = true;
            }
            (!out.is_empty()).then_some(out)
        })
    }

    /// Records `from..=head` as `(seq, bytes)`.
    fn values_from(&self, from: Seq, head: Seq) -> impl Iterator<Item = Result<(Seq, Stored)>> + Send + '_ {
        self.blocks_from(from, head).flat_map(|block| match block {
            Ok(Block { bytes, records }) => {
                records.into_iter().map(|(seq, at)| Ok((seq, Stored { block: bytes.clone(), at }))).collect()
            }
            Err(e) => vec![Err(e)],
        })
    }
}

/// How many decoded runs a [`ReadAhead`] holds ready beyond the one being consumed: up to 64Ki
/// records, so a read started before its consumer is ready (a history query decoding its
/// snapshot, start-up decoding the latest one) has the next snapshot interval's records decoded
/// by the time the consumer comes to them.
const READ_AHEAD: usize = 16;

/// Records `from..=last`, read and decoded on a thread of its own ([`Trees::runs`]), at most
/// [`READ_AHEAD`] runs ahead of the consumer: the consumer's work overlaps the decoding.
/// Dropping it stops the thread (after the run it is decoding) and waits for it, so nothing
/// reads the database once the reader is gone.
struct ReadAhead<R> {
    runs: Option<std::sync::mpsc::Receiver<Vec<Result<Entry<R>>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<R: Record> ReadAhead<R> {
    fn start(trees: Arc<Trees>, from: Seq, last: Seq, head: Seq) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
        let spawned = std::thread::Builder::new().name(format!("log-read-{}", trees.name)).spawn(move || {
            for run in trees.runs::<R>(from, last, head) {
                if tx.send(run).is_err() {
                    return;
                }
            }
        });
        match spawned {
            Ok(thread) => Self { runs: Some(rx), thread: Some(thread) },
            Err(e) => {
                // No thread: the one error is the whole read.
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let _ = tx.send(vec![Err(Error::Closed(format!("cannot start the log reader thread: {e}")))]);
                Self { runs: Some(rx), thread: None }
            }
        }
    }
}

impl<R> Iterator for ReadAhead<R> {
    type Item = Vec<Result<Entry<R>>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.runs.as_ref()?.recv() {
            Ok(run) => Some(run),
            Err(_) => {
                // Every run was sent, or the thread panicked: that panic is the reader's.
                self.runs = None;
                if let Some(Err(panic)) = self.thread.take().map(std::thread::JoinHandle::join) {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

impl<R> Drop for ReadAhead<R> {
    fn drop(&mut self) {
        // The thread's next send fails once the receiver is gone; then it returns.
        drop(self.runs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<R: Record> Source<R> for Trees {
    fn read_chunk(&self, from: Seq, max: usize) -> (Vec<Entry<R>>, Option<Error>) {
        let head = *self.head.borrow();
        let last = from.max(1).saturating_add(max as Seq).saturating_sub(1).min(head);
        let mut out = Vec::with_capacity(max.min(READ_RUN));
        for entry in self.runs(from, last, head).flatten() {
            match entry {
                Ok(e) => out.push(e),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }
}

impl<R: Record> Log<R> for SledLog<R> {
    async fn append(&self, batch: Vec<R>) -> Result<RangeInclusive<Seq>> {
        if batch.is_empty() {
            let head = self.head();
            return Ok((head + 1)..=head);
        }
        self.writable()?;
        let payloads = codec::encode_payloads(&batch)?;
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { payloads, reply })
            .await
            .map_err(|_| Error::Closed("the writer has stopped".into()))?;
        answer.await.map_err(|_| Error::Closed("the writer stopped before answering".into()))?
    }

    fn head(&self) -> Seq {
        *self.trees.head.borrow()
    }

    fn read(&self, from: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_> {
        self.read_to(from, Seq::MAX)
    }

    fn read_to(&self, from: Seq, last: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_> {
        let head = self.head();
        let last = last.min(head);
        // A read of at most one run (the engine reading back what it just appended, a tail)
        // decodes here: a thread of its own would cost more than it overlaps.
        if last.saturating_sub(from.max(1)) < READ_RUN as Seq {
            return Box::new(self.trees.runs::<R>(from, last, head).flatten());
        }
        Box::new(ReadAhead::start(self.trees.clone(), from, last, head).flatten())
    }

    fn subscribe(&self, from: Seq) -> Subscription<R> {
        Subscription::new(from, self.trees.head.clone(), self.trees.clone())
    }

    /// Also checks the log against its head anchor: a log that lost acknowledged records is
    /// [`Error::Lost`] even when what is left chains.
    fn verify(&self) -> Result<Verified> {
        let head = self.head();
        let verified = codec::verify_values::<R, _>(self.trees.values_from(1, head), head)?;
        match &self.loss {
            Some(loss) => Err(Error::Lost(loss.clone())),
            None => Ok(verified),
        }
    }

    fn save_snapshot(&self, seq: Seq, bytes: Vec<u8>) -> Result<()> {
        self.writable()?;
        self.trees.inner.with(|open| {
            open.room_for(bytes.len())?;
            let t = open.tree(&self.trees.snapshots)?;
            t.insert(key(seq), bytes).map_err(Error::db("saving a snapshot"))?;
            let keys: Vec<_> =
                t.iter().keys().collect::<std::result::Result<_, _>>().map_err(Error::db("listing snapshots"))?;
            let seqs: Vec<Seq> = keys.iter().filter_map(|k| seq_of(k, 0).ok()).collect();
            for seq in retention::pruned(&seqs) {
                t.remove(key(seq)).map_err(Error::db("pruning snapshots"))?;
            }
            open.sync()
        })
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>> {
        let last =
            self.trees.inner.with(|o| o.tree(&self.trees.snapshots)?.last().map_err(Error::db("reading snapshots")))?;
        match last {
            None => Ok(None),
            Some((k, v)) => {
                let seq = seq_of(&k, 0)
                    .map_err(|_| Error::Meta { what: "a snapshot key".into(), reason: "not 8 bytes".into() })?;
                Ok(Some(Snapshot { seq, bytes: v.to_vec() }))
            }
        }
    }

    fn snapshot_at_or_before(&self, seq: Seq) -> Result<Option<Snapshot>> {
        let found = self.trees.inner.with(|o| {
            o.tree(&self.trees.snapshots)?
                .range(..=key(seq))
                .next_back()
                .transpose()
                .map_err(Error::db("reading snapshots"))
        })?;
        match found {
            None => Ok(None),
            Some((k, v)) => {
                let seq = seq_of(&k, 0)
                    .map_err(|_| Error::Meta { what: "a snapshot key".into(), reason: "not 8 bytes".into() })?;
                Ok(Some(Snapshot { seq, bytes: v.to_vec() }))
            }
        }
    }

    fn checkpoint(&self, name: &str) -> Result<Option<Seq>> {
        let stored = self
            .trees
            .inner
            .with(|o| o.tree(&self.trees.checkpoints)?.get(name).map_err(Error::db("reading a checkpoint")))?;
        match stored {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| Error::Meta {
                    what: format!("checkpoint `{name}`"),
                    reason: format!("{} bytes, expected 8", v.len()),
                })?;
                Ok(Some(Seq::from_be_bytes(bytes)))
            }
        }
    }

    fn set_checkpoint(&self, name: &str, seq: Seq) -> Result<()> {
        self.writable()?;
        self.trees.inner.with(|open| {
            open.tree(&self.trees.checkpoints)?.insert(name, &key(seq)).map_err(Error::db("saving a checkpoint"))?;
            open.sync()
        })
    }
}

impl<R> SledLog<R> {
    /// Every consumer checkpoint of the log, by name.
    pub fn checkpoints(&self) -> Result<Vec<(String, Seq)>> {
        let stored = self.trees.inner.with(|o| {
            o.tree(&self.trees.checkpoints)?
                .iter()
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::db("reading checkpoints"))
        })?;
        stored
            .into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8_lossy(&k).into_owned();
                let seq = seq_of(&v, 0).map_err(|_| Error::Meta {
                    what: format!("checkpoint `{name}`"),
                    reason: format!("{} bytes, expected 8", v.len()),
                })?;
                Ok((name, seq))
            })
            .collect()
    }

    fn writable(&self) -> Result<()> {
        match self.trees.inner.mode {
            Mode::ReadWrite => Ok(()),
            Mode::ReadOnly => Err(Error::ReadOnly(self.trees.name.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(lens: &[usize]) -> Vec<(Seq, Vec<u8>)> {
        lens.iter().enumerate().map(|(i, &n)| (i as Seq + 1, vec![0; n])).collect()
    }

    #[test]
    fn blocks_keep_order_and_respect_the_size_cap() {
        let values = sized(&[1000; 20]);
        let cut: Vec<_> = blocks(&values).collect();
        assert!(cut.iter().all(|b| b.iter().map(|(_, v)| 4 + v.len()).sum::<usize>() <= MAX_BLOCK_BYTES));
        assert_eq!(cut.iter().map(|b| b.len()).sum::<usize>(), 20);
        assert_eq!(cut.concat(), values, "every record once, in order");
        assert_eq!(cut[0].len(), MAX_BLOCK_BYTES / 1004, "a block is filled up to the cap");
    }

    #[test]
    fn a_record_larger_than_a_block_gets_a_block_of_its_own() {
        let values = sized(&[10, MAX_BLOCK_BYTES * 3, 10]);
        let cut: Vec<_> = blocks(&values).map(|b| b.len()).collect();
        assert_eq!(cut, [1, 1, 1]);
    }
}
