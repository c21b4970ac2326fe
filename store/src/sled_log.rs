//! The sled-backed log: one [`Store`] (a sled database) holds any number of named logs, each
//! with its own sequence, chain, snapshots and checkpoints, plus small [`Table`]s.
//!
//! Appends go through one writer thread per log. It takes every request queued since its last
//! flush, chains and inserts them in one sled batch, flushes once, then acknowledges them all:
//! group commit. The head other readers see moves only after the flush, so nothing that is not
//! durable is ever read. Reads hand out slices of the stored blocks, and decode long runs of
//! records on every core.

use std::marker::PhantomData;
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::codec::{self, key, seq_of};
use crate::subscribe::Source;
use crate::{Entry, Error, Hash, Log, Record, Result, Seq, Snapshot, Subscription, Table, Verified, GENESIS};

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
/// Snapshots kept per log (older ones are pruned on save).
const KEEP_SNAPSHOTS: usize = 3;
/// How long opening waits for the database's lock file. sled releases it from background
/// threads shortly *after* its last handle is dropped, so reopening in the same process can
/// find it held for a few milliseconds; another process holding it is reported after this.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Opens the raw sled database in `path`, waiting up to [`LOCK_WAIT`] for its lock. For tools
/// (and tests) that inspect or repair trees below the log format; netfold itself uses [`Store`].
pub fn open_db(path: &Path) -> Result<sled::Db> {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(path).open() {
            // sled reports a held lock only as an IO error with this text.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(Error::InUse { path: path.to_path_buf() });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => return opened.map_err(Error::db("opening the database")),
        }
    }
}

/// One sled database holding netfold's logs and tables.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (creating if needed) the database in directory `path`.
    /// A database another process holds is [`Error::InUse`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self { db: open_db(path.as_ref())? })
    }

    /// A throw-away database in a temporary directory, removed on drop (tests, dry runs).
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open().map_err(Error::db("opening a temporary database"))?;
        Ok(Self { db })
    }

    /// The log named `name` (trees `<name>.log`, `<name>.snapshots`, `<name>.checkpoints`).
    /// Open each log once per process: its writer thread owns the sequence.
    pub fn log<R: Record>(&self, name: &str) -> Result<SledLog<R>> {
        SledLog::open(self.db.clone(), name)
    }

    /// The durable key-value table named `name`.
    pub fn table(&self, name: &str) -> Result<Table> {
        let tree = self.db.open_tree(format!("{name}.table")).map_err(Error::db("opening a table"))?;
        Ok(Table::new(self.db.clone(), tree))
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(Error::db("flushing"))
    }
}

struct Request {
    payloads: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<RangeInclusive<Seq>>>,
}

struct Trees {
    db: sled::Db,
    log: sled::Tree,
    snapshots: sled::Tree,
    checkpoints: sled::Tree,
    head: watch::Receiver<Seq>,
}

/// A [`Log`] in a sled database.
///
/// Dropping it lets the writer finish what was queued, then waits for it: once the drop
/// returns, every acknowledged append is on disk and the database can be reopened.
pub struct SledLog<R> {
    trees: Arc<Trees>,
    requests: mpsc::Sender<Request>,
    writer: Option<std::thread::JoinHandle<()>>,
    _record: PhantomData<fn() -> R>,
}

impl<R> Drop for SledLog<R> {
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.requests, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl<R: Record> SledLog<R> {
    fn open(db: sled::Db, name: &str) -> Result<Self> {
        let open = |suffix: &str| db.open_tree(format!("{name}.{suffix}")).map_err(Error::db("opening a log tree"));
        let log = open("log")?;
        let (head, tip) = match log.last().map_err(Error::db("reading the log head"))? {
            None => (0, GENESIS),
            Some((k, block)) => {
                let first = seq_of(&k, 0)?;
                let records = codec::split_block(first, &block)?;
                match records.last() {
                    Some((seq, at)) => (*seq, codec::hash_record(*seq, &block[at.clone()])),
                    None => return Err(Error::Truncated { seq: first, len: block.len(), need: 8 }),
                }
            }
        };
        let (head_tx, head_rx) = watch::channel(head);
        let trees = Arc::new(Trees {
            db: db.clone(),
            log: log.clone(),
            snapshots: open("snapshots")?,
            checkpoints: open("checkpoints")?,
            head: head_rx,
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer { db, log, head, tip, schema: R::SCHEMA, published: head_tx };
        let writer = std::thread::Builder::new()
            .name(format!("log-writer-{name}"))
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Closed(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { trees, requests: tx, writer: Some(writer), _record: PhantomData })
    }
}

/// The single writer of one log: owns the head and the chain tip.
struct Writer {
    db: sled::Db,
    log: sled::Tree,
    head: Seq,
    tip: Hash,
    schema: u16,
    published: watch::Sender<Seq>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
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
            if let Err(e) = self.commit(group) {
                tracing::error!(error = %e, "log writer stopped after a failed commit");
                rx.close();
                while let Ok(r) = rx.try_recv() {
                    let _ = r.reply.send(Err(Error::Closed(format!("a previous commit failed: {e}"))));
                }
                return;
            }
        }
    }

    /// Writes and flushes one group; on failure every request of the group gets the error and
    /// the writer stops (what is on disk is then unknown until the log is reopened).
    fn commit(&mut self, group: Vec<Request>) -> std::result::Result<(), String> {
        let mut batch = sled::Batch::default();
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
        for block in blocks(&values) {
            batch.insert(&key(block[0].0), codec::encode_block(block));
        }
        let written = self.log.apply_batch(batch).and_then(|()| self.db.flush().map(|_| ()));
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
                let msg = e.to_string();
                for req in group {
                    let _ = req.reply.send(Err(Error::Db { context: "appending", source: e.clone() }));
                }
                Err(msg)
            }
        }
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
        // The block holding `from` starts at or before it.
        let start = match self.log.range(..=key(from)).next_back() {
            Some(Ok((k, _))) => k.to_vec(),
            _ => key(from).to_vec(),
        };
        let mut last = from - 1;
        Box::new(self.log.range(start..=key(head).to_vec()).filter_map(move |item| {
            let block = (|| {
                let (k, bytes) = item.map_err(Error::db("reading the log"))?;
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
    /// parallel. A gap (including records missing before `last`) or a bad record ends the runs
    /// with its error.
    fn runs<R: Record>(
        &self,
        from: Seq,
        last: Seq,
        head: Seq,
    ) -> impl Iterator<Item = Vec<Result<Entry<R>>>> + Send + '_ {
        let mut blocks = self.blocks_from(from, last);
        let mut expected = from.max(1);
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let mut run: Vec<Block> = Vec::new();
            let mut records = 0;
            let mut error = None;
            while records < READ_RUN {
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
        let head = self.head();
        Box::new(self.trees.runs(from, head, head).flatten())
    }

    fn subscribe(&self, from: Seq) -> Subscription<R> {
        Subscription::new(from, self.trees.head.clone(), self.trees.clone())
    }

    fn verify(&self) -> Result<Verified> {
        let head = self.head();
        codec::verify_values::<R, _>(self.trees.values_from(1, head), head)
    }

    fn save_snapshot(&self, seq: Seq, bytes: Vec<u8>) -> Result<()> {
        let t = &self.trees.snapshots;
        t.insert(key(seq), bytes).map_err(Error::db("saving a snapshot"))?;
        let stale: Vec<_> = t
            .iter()
            .keys()
            .rev()
            .skip(KEEP_SNAPSHOTS)
            .collect::<std::result::Result<_, _>>()
            .map_err(Error::db("listing snapshots"))?;
        for k in stale {
            t.remove(k).map_err(Error::db("pruning snapshots"))?;
        }
        self.trees.db.flush().map(|_| ()).map_err(Error::db("flushing a snapshot"))
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>> {
        match self.trees.snapshots.last().map_err(Error::db("reading snapshots"))? {
            None => Ok(None),
            Some((k, v)) => {
                let seq = seq_of(&k, 0)
                    .map_err(|_| Error::Meta { what: "a snapshot key".into(), reason: "not 8 bytes".into() })?;
                Ok(Some(Snapshot { seq, bytes: v.to_vec() }))
            }
        }
    }

    fn checkpoint(&self, name: &str) -> Result<Option<Seq>> {
        match self.trees.checkpoints.get(name).map_err(Error::db("reading a checkpoint"))? {
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
        self.trees.checkpoints.insert(name, &key(seq)).map_err(Error::db("saving a checkpoint"))?;
        self.trees.db.flush().map(|_| ()).map_err(Error::db("flushing a checkpoint"))
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
