//! [`PgLog`]: a [`Log`] in PostgreSQL, with sled's semantics (ADR 0008).
//!
//! - **Group commit.** Appends queue for one writer task per log. It takes every request queued
//!   since its last commit, chains them after its head and writes them all in one statement —
//!   one transaction, one multi-row insert (`unnest` of the sequence numbers and stored bytes) —
//!   then acknowledges them once PostgreSQL has committed (with `synchronous_commit = on`: the
//!   commit record is flushed to the server's WAL; ADR 0008 says what that means with replicas).
//! - **Gapless sequence, whoever appends.** The same statement moves the log's row in
//!   `netfold_logs` from the head it chained after to the new head and tip, and inserts the
//!   records only if that row still held the old head. A second writer (another process) that
//!   chained after a stale head changes nothing; it then writes the group in a transaction that
//!   locks the row (`FOR UPDATE`) and chains after the head it holds, which cannot be lost to
//!   a third writer: no gap, no duplicate, no fork in the chain, no writer starved. The
//!   `(log, seq)` primary key is the backstop.
//! - **Head.** [`Log::head`] is the cached durable head: the writer publishes it after each
//!   commit, and a listener task moves it on the `netfold_log` notifications every commit sends
//!   (`LISTEN/NOTIFY`), with a poll of the row every [`POLL`] as the fallback (a lost listener
//!   connection, or notifications not delivered).
//! - **Reads** page through the records in chunks of [`CHUNK`] on the store's runtime and decode
//!   them on the caller's thread (long runs on every core, as sled's do).

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::{from_sql, to_sql, PgInner};
use crate::codec;
use crate::lease::Fence;
use crate::subscribe::Source;
use crate::{retention, Entry, Error, Hash, Log, Loss, Record, Result, Seq, Snapshot, Subscription, Verified};

/// Requests waiting for the writer; beyond this appenders wait (backpressure).
const QUEUE: usize = 4096;
/// Most records one group commit takes.
const MAX_GROUP: usize = 1 << 16;
/// Records fetched per query while reading.
const CHUNK: usize = 4096;
/// How often the head is polled besides the notifications.
const POLL: Duration = Duration::from_millis(500);
/// How long dropping a log waits for its writer to finish what was queued.
const WRITER_EXIT: Duration = Duration::from_secs(10);

pub(super) const APPEND: &str = "WITH moved AS (
        UPDATE netfold_logs SET head = $3, tip = $4 WHERE name = $1 AND head = $2 RETURNING name
    )
    INSERT INTO netfold_records (log, seq, value)
    SELECT moved.name, r.seq, r.value FROM moved, unnest($5::bigint[], $6::bytea[]) AS r(seq, value)";
/// [`APPEND`] made only while the lease `$7` is held with token `$8` and not expired: its row
/// read `FOR SHARE` in the same statement, so a takeover (an `UPDATE` of that row) waits for
/// this append's commit, as in [`Writer::commit_locked`].
const APPEND_FENCED: &str = "WITH held AS (
        SELECT name FROM netfold_leases WHERE name = $7 AND token = $8 AND expires_at > now() FOR SHARE
    ), moved AS (
        UPDATE netfold_logs SET head = $3, tip = $4 WHERE name = $1 AND head = $2 AND EXISTS (SELECT 1 FROM held)
        RETURNING name
    )
    INSERT INTO netfold_records (log, seq, value)
    SELECT moved.name, r.seq, r.value FROM moved, unnest($5::bigint[], $6::bytea[]) AS r(seq, value)";
const HEAD: &str = "SELECT head, tip FROM netfold_logs WHERE name = $1";
const HEAD_LOCKED: &str = "SELECT head, tip FROM netfold_logs WHERE name = $1 FOR UPDATE";
const RANGE: &str = "SELECT seq, value FROM netfold_records WHERE log = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq";

struct Request {
    payloads: Vec<Vec<u8>>,
    /// The lease the append is made under, checked in its transaction (ADR 0009).
    fence: Option<Fence>,
    reply: oneshot::Sender<Result<RangeInclusive<Seq>>>,
}

/// What the log's tasks and readers share.
struct Shared {
    inner: Arc<PgInner>,
    name: String,
    /// The durable head as this process knows it: published by the writer, the listener and
    /// [`Log::current_head`]; read by readers and subscriptions.
    head: Arc<watch::Sender<Seq>>,
}

/// A [`Log`] in a PostgreSQL database. Dropping it lets the writer commit what was queued and
/// waits for it (up to [`WRITER_EXIT`]).
pub struct PgLog<R> {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    /// Disconnected when the writer returns (in a mutex only to make the log `Sync`).
    writer_done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    listener: tokio::task::JoinHandle<()>,
    _record: PhantomData<fn() -> R>,
}

impl<R> Drop for PgLog<R> {
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.requests, closed));
        self.listener.abort();
        let done = self.writer_done.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(WRITER_EXIT) {
            tracing::error!(log = %self.shared.name, "the PostgreSQL log writer did not finish within 10 s; leaving it");
        }
    }
}

/// Publishes `head` if it is ahead of what readers see (the writer and the listener both
/// publish; the head never moves back).
fn publish(tx: &watch::Sender<Seq>, head: Seq) {
    tx.send_if_modified(|h| {
        let ahead = head > *h;
        if ahead {
            *h = head;
        }
        ahead
    });
}

fn tip_of(bytes: &[u8]) -> Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| Error::Meta { what: "a log's tip".into(), reason: format!("{} bytes, expected 32", bytes.len()) })
}

async fn head_and_tip(client: &tokio_postgres::Client, name: &str) -> Result<(Seq, Hash)> {
    let row = client.query_opt(HEAD, &[&name]).await.map_err(Error::pg("reading the log head"))?;
    let row = row.ok_or_else(|| Error::NoLog(name.to_string()))?;
    Ok((from_sql("the log head", row.get(0))?, tip_of(row.get(1))?))
}

impl<R: Record> PgLog<R> {
    pub(crate) async fn open(inner: Arc<PgInner>, name: &str) -> Result<Self> {
        let (head, tip) = {
            let name = name.to_string();
            let read_only = inner.read_only;
            inner
                .with_client(move |c| async move {
                    // A read-only store creates no log: a missing one is `NoLog`.
                    if !read_only {
                        c.execute("INSERT INTO netfold_logs (name) VALUES ($1) ON CONFLICT DO NOTHING", &[&name])
                            .await
                            .map_err(Error::pg("creating the log"))?;
                    }
                    head_and_tip(&c, &name).await
                })
                .await?
        };
        let head_tx = Arc::new(watch::Sender::new(head));
        let shared = Arc::new(Shared { inner: inner.clone(), name: name.to_string(), head: head_tx.clone() });
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<()>(0);
        let writer = Writer {
            inner: inner.clone(),
            name: name.to_string(),
            head,
            tip,
            schema: R::SCHEMA,
            published: head_tx.clone(),
        };
        inner.rt.spawn(async move {
            writer.run(rx).await;
            drop(done_tx);
        });
        let listener = inner.rt.spawn(listen(inner.clone(), name.to_string(), head_tx));
        Ok(Self { shared, requests: tx, writer_done: std::sync::Mutex::new(done_rx), listener, _record: PhantomData })
    }
}

impl<R: Record> PgLog<R> {
    /// Hands `batch` to the writer (a group commit), under `fence` if given, and waits for its
    /// answer. An empty batch is a no-op at the head.
    async fn send(&self, batch: Vec<R>, fence: Option<Fence>) -> Result<RangeInclusive<Seq>> {
        if batch.is_empty() {
            let head = self.head();
            return Ok((head + 1)..=head);
        }
        let payloads = codec::encode_payloads(&batch)?;
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { payloads, fence, reply })
            .await
            .map_err(|_| Error::Closed("the writer has stopped".into()))?;
        answer.await.map_err(|_| Error::Closed("the writer stopped before answering".into()))?
    }
}

/// The writer of one log in this process.
struct Writer {
    inner: Arc<PgInner>,
    name: String,
    /// The head and tip this writer last committed or learnt from the database.
    head: Seq,
    tip: Hash,
    schema: u16,
    published: Arc<watch::Sender<Seq>>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.recv().await {
            if self.inner.read_only {
                let _ = first.reply.send(Err(Error::ReadOnly(self.name.clone())));
                continue;
            }
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
            match self.commit(&group).await {
                Ok(outcomes) => {
                    for (req, outcome) in group.into_iter().zip(outcomes) {
                        let _ = req.reply.send(outcome);
                    }
                }
                Err(e) => {
                    tracing::error!(log = %self.name, error = %e, "a group commit failed; its appenders got the error");
                    for req in group {
                        let _ = req.reply.send(Err(e.again()));
                    }
                }
            }
        }
    }

    /// The chained rows of the requests `admitted`, each one's range, and the new head and tip.
    #[allow(clippy::type_complexity)] // the rows, then what the caller needs after the insert
    fn chain(
        &self,
        group: &[Request],
        admitted: &[bool],
    ) -> Result<(Vec<i64>, Vec<Vec<u8>>, Vec<Option<RangeInclusive<Seq>>>, Seq, Hash)> {
        let (mut head, mut tip) = (self.head, self.tip);
        let (mut seqs, mut values, mut ranges) = (Vec::new(), Vec::new(), Vec::with_capacity(group.len()));
        for (req, &ok) in group.iter().zip(admitted) {
            if !ok {
                ranges.push(None);
                continue;
            }
            let (chained, new_tip) = codec::chain(head, tip, self.schema, &req.payloads);
            for (seq, value) in chained {
                seqs.push(to_sql(seq)?);
                values.push(value);
            }
            ranges.push(Some((head + 1)..=(head + req.payloads.len() as Seq)));
            head += req.payloads.len() as Seq;
            tip = new_tip;
        }
        Ok((seqs, values, ranges, head, tip))
    }

    /// Commits a group. When no request carries a fence, or all carry the same one, the
    /// uncontended path is one statement chained after the cached head ([`APPEND`], or
    /// [`APPEND_FENCED`] checking the lease in the same statement). If it changed nothing
    /// (another writer moved the head, or the lease is not held), or the group's fences differ,
    /// the group is written by [`Self::commit_locked`], which cannot lose that race and tells
    /// each request whether its fence held.
    async fn commit(&mut self, group: &[Request]) -> Result<Vec<Result<RangeInclusive<Seq>>>> {
        let mut client = self.inner.client().await?;
        let first = group.first().and_then(|r| r.fence.as_ref());
        if group.iter().all(|r| r.fence.as_ref() == first) {
            let all = vec![true; group.len()];
            let (seqs, values, ranges, head, tip) = self.chain(group, &all)?;
            let (from, to) = (to_sql(self.head)?, to_sql(head)?);
            let tip_bytes = &tip[..];
            let inserted = match first {
                None => {
                    let append = client.prepare_cached(APPEND).await.map_err(Error::pg("preparing the append"))?;
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                        [&self.name, &from, &to, &tip_bytes, &seqs, &values];
                    client.execute(&append, &params).await.map_err(Error::pg("appending"))?
                }
                Some(fence) => {
                    let append =
                        client.prepare_cached(APPEND_FENCED).await.map_err(Error::pg("preparing the append"))?;
                    let token = to_sql(fence.token)?;
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
                        [&self.name, &from, &to, &tip_bytes, &seqs, &values, &fence.lease, &token];
                    client.execute(&append, &params).await.map_err(Error::pg("appending"))?
                }
            };
            if inserted as usize == seqs.len() {
                self.advance(head, tip);
                return Ok(ranges.into_iter().map(|r| Ok(r.expect("every request is admitted"))).collect());
            }
            tracing::debug!(log = %self.name, ours = self.head, "appended elsewhere, or the lease is not held; under the log's lock");
        }
        self.commit_locked(&mut client, group).await
    }

    /// One transaction that locks the log's row (`FOR UPDATE`: another writer's commit waits for
    /// this one, and this one for theirs), learns the head and tip from it, checks every fence
    /// (holding the lease rows `FOR SHARE`, so a takeover waits for this commit), then chains
    /// and appends the requests whose fence holds; the others get [`Error::Fenced`]. With the
    /// row held the append cannot miss the head, so there is no retry to run out of.
    async fn commit_locked(
        &mut self,
        client: &mut deadpool_postgres::Object,
        group: &[Request],
    ) -> Result<Vec<Result<RangeInclusive<Seq>>>> {
        let append = client.prepare_cached(APPEND).await.map_err(Error::pg("preparing the append"))?;
        let tx = client.transaction().await.map_err(Error::pg("appending"))?;
        let row = tx.query_one(HEAD_LOCKED, &[&self.name]).await.map_err(Error::pg("locking the log head"))?;
        let (h, t) = (from_sql("the log head", row.get(0))?, tip_of(row.get(1))?);
        if h != self.head {
            self.advance(h, t);
        }
        let fences: std::collections::BTreeSet<&Fence> = group.iter().filter_map(|r| r.fence.as_ref()).collect();
        let mut valid = std::collections::BTreeSet::new();
        for f in fences {
            let held = tx
                .query_opt(super::lease::HELD, &[&f.lease, &to_sql(f.token)?])
                .await
                .map_err(Error::pg("checking a lease"))?;
            if held.is_some() {
                valid.insert(f);
            }
        }
        let admitted: Vec<bool> = group.iter().map(|r| r.fence.as_ref().is_none_or(|f| valid.contains(f))).collect();
        let (seqs, values, ranges, head, tip) = self.chain(group, &admitted)?;
        if !seqs.is_empty() {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&self.name, &to_sql(self.head)?, &to_sql(head)?, &&tip[..], &seqs, &values];
            let inserted = tx.execute(&append, &params).await.map_err(Error::pg("appending"))?;
            if inserted as usize != seqs.len() {
                return Err(Error::Unavailable(format!(
                    "the log `{}` moved from seq {} while its row was locked: something besides netfold writes it",
                    self.name, self.head
                )));
            }
        }
        tx.commit().await.map_err(Error::pg("appending"))?;
        self.advance(head, tip);
        Ok(group
            .iter()
            .zip(ranges)
            .map(|(req, range)| {
                range.ok_or_else(|| {
                    let f = req.fence.as_ref().expect("only fenced requests are refused");
                    Error::Fenced { lease: f.lease.clone(), token: f.token }
                })
            })
            .collect())
    }

    /// Takes `head` and `tip` as this writer's, and publishes the head.
    fn advance(&mut self, head: Seq, tip: Hash) {
        self.head = head;
        self.tip = tip;
        publish(&self.published, head);
    }
}

/// Moves the published head on every commit anyone makes: `LISTEN netfold_log`, with a poll of
/// the log's row every [`POLL`] (and a reconnect attempt while the listener is down).
async fn listen(inner: Arc<PgInner>, name: String, head: Arc<watch::Sender<Seq>>) {
    let poll = |inner: Arc<PgInner>, name: String, head: Arc<watch::Sender<Seq>>| async move {
        let polled = async {
            let c = inner.client().await?;
            head_and_tip(&c, &name).await
        };
        match polled.await {
            Ok((h, _)) => publish(&head, h),
            Err(e) => tracing::debug!(log = %name, error = %e, "cannot poll the log head"),
        }
    };
    loop {
        let (notices, mut notified) = mpsc::unbounded_channel();
        let listener = match inner.tls.connect(&inner.config, Some(notices)).await {
            Ok(c) => match c.batch_execute("LISTEN netfold_log").await {
                Ok(()) => Some(c),
                Err(e) => {
                    tracing::warn!(log = %name, error = %e, "cannot LISTEN for appends; polling the head");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(log = %name, error = %e, "cannot connect to LISTEN for appends; polling the head");
                None
            }
        };
        // Whatever committed before the LISTEN took effect.
        poll(inner.clone(), name.clone(), head.clone()).await;
        loop {
            let next = async {
                match &listener {
                    Some(_) => notified.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                n = next => match n {
                    Some(n) => {
                        let mut words = n.payload().rsplitn(2, ' ');
                        let at = words.next().and_then(|h| h.parse::<Seq>().ok());
                        if let (Some(h), Some(log)) = (at, words.next()) {
                            if log == name {
                                publish(&head, h);
                            }
                        }
                    }
                    None => {
                        tracing::warn!(log = %name, "the LISTEN connection closed; polling the head and reconnecting");
                        break;
                    }
                },
                () = tokio::time::sleep(POLL) => {
                    poll(inner.clone(), name.clone(), head.clone()).await;
                    if listener.is_none() {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Up to `max` stored records from `from` (those `<= last`), raw.
fn fetch(inner: &Arc<PgInner>, name: &str, from: Seq, last: Seq) -> Result<Vec<(Seq, Vec<u8>)>> {
    if from > last {
        return Ok(Vec::new());
    }
    let (inner2, name) = (inner.clone(), name.to_string());
    inner.rt.block(async move {
        let c = inner2.client().await?;
        let stmt = c.prepare_cached(RANGE).await.map_err(Error::pg("preparing a read"))?;
        let rows =
            c.query(&stmt, &[&name, &to_sql(from)?, &to_sql(last)?]).await.map_err(Error::pg("reading records"))?;
        rows.iter().map(|r| Ok((from_sql("a record's seq", r.get(0))?, r.get::<_, Vec<u8>>(1)))).collect()
    })
}

impl Shared {
    /// Records `from..=last` decoded, up to the first failure (a gap or a bad record) and it.
    fn chunk<R: Record>(&self, from: Seq, last: Seq, head: Seq) -> (Vec<Entry<R>>, Option<Error>) {
        let rows = match fetch(&self.inner, &self.name, from, last) {
            Ok(rows) => rows,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let contiguous = rows.iter().zip(from..).take_while(|((seq, _), want)| seq == want).count();
        let refs: Vec<(Seq, &[u8])> = rows[..contiguous].iter().map(|(s, v)| (*s, v.as_slice())).collect();
        let mut out = Vec::with_capacity(contiguous);
        for d in codec::decode_all::<R>(&refs) {
            match d {
                Ok(e) => out.push(e),
                Err(e) => return (out, Some(e)),
            }
        }
        let next = from + contiguous as Seq;
        if next <= last {
            return (out, Some(Error::Missing { seq: next, head }));
        }
        (out, None)
    }
}

impl<R: Record> Source<R> for Shared {
    fn read_chunk(&self, from: Seq, max: usize) -> (Vec<Entry<R>>, Option<Error>) {
        let head = *self.head.borrow();
        let from = from.max(1);
        let last = from.saturating_add(max as Seq).saturating_sub(1).min(head);
        self.chunk(from, last, head)
    }
}

/// Raw stored records `1..=head`, fetched a chunk at a time (for [`Log::verify`]).
struct Raw<'a> {
    shared: &'a Shared,
    next: Seq,
    head: Seq,
    buffer: VecDeque<(Seq, Vec<u8>)>,
    failed: bool,
}

impl Iterator for Raw<'_> {
    type Item = Result<(Seq, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.buffer.is_empty() && self.next <= self.head {
            let last = self.next.saturating_add(CHUNK as Seq - 1).min(self.head);
            match fetch(&self.shared.inner, &self.shared.name, self.next, last) {
                Ok(rows) => self.buffer.extend(rows),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
            // Past a gap, the next fetch starts after what this one found (or after `last`).
            self.next = self.buffer.back().map_or(last, |(s, _)| (*s).max(last)) + 1;
        }
        self.buffer.pop_front().map(Ok)
    }
}

impl<R: Record> Log<R> for PgLog<R> {
    async fn append(&self, batch: Vec<R>) -> Result<RangeInclusive<Seq>> {
        self.send(batch, None).await
    }

    /// Checked in the statement or transaction that inserts the records ([`APPEND_FENCED`],
    /// `commit_locked`): a deposed holder's append fails with [`Error::Fenced`] (ADR 0009).
    async fn append_fenced(&self, batch: Vec<R>, fence: &Fence) -> Result<RangeInclusive<Seq>> {
        self.send(batch, Some(fence.clone())).await
    }

    /// Read from the log's row, and published: reads and subscriptions then reach it.
    async fn current_head(&self) -> Result<Seq> {
        let name = self.shared.name.clone();
        let (head, _) = self.shared.inner.with_client(move |c| async move { head_and_tip(&c, &name).await }).await?;
        publish(&self.shared.head, head);
        Ok(head)
    }

    fn head(&self) -> Seq {
        *self.shared.head.borrow()
    }

    fn read(&self, from: Seq) -> Box<dyn Iterator<Item = Result<Entry<R>>> + Send + '_> {
        let head = self.head();
        let mut next = from.max(1);
        let mut buffer: VecDeque<Result<Entry<R>>> = VecDeque::new();
        let mut done = false;
        Box::new(std::iter::from_fn(move || loop {
            if let Some(item) = buffer.pop_front() {
                return Some(item);
            }
            if done || next > head {
                return None;
            }
            let last = next.saturating_add(CHUNK as Seq - 1).min(head);
            let (entries, error) = self.shared.chunk::<R>(next, last, head);
            next = last + 1;
            buffer.extend(entries.into_iter().map(Ok));
            if let Some(e) = error {
                buffer.push_back(Err(e));
                done = true;
            }
        }))
    }

    fn subscribe(&self, from: Seq) -> Subscription<R> {
        Subscription::new(from, self.shared.head.subscribe(), self.shared.clone())
    }

    /// Walks the whole log as the database holds it now, and checks its last record against
    /// the tip its row in `netfold_logs` holds (a consistent rewrite of the last record is
    /// [`Error::Lost`] with [`Loss::Rewritten`]).
    fn verify(&self) -> Result<Verified> {
        let name = self.shared.name.clone();
        let (head, tip) =
            self.shared.inner.with_client_blocking(move |c| async move { head_and_tip(&c, &name).await })?;
        let raw = Raw { shared: &self.shared, next: 1, head, buffer: VecDeque::new(), failed: false };
        let verified = codec::verify_values::<R, _>(raw, head)?;
        if verified.tip != tip {
            return Err(Error::Lost(Loss::Rewritten { log: self.shared.name.clone(), seq: head }));
        }
        Ok(verified)
    }

    fn save_snapshot(&self, seq: Seq, bytes: Vec<u8>) -> Result<()> {
        let name = self.shared.name.clone();
        self.shared.inner.with_client_blocking(move |mut c| async move {
            let tx = c.transaction().await.map_err(Error::pg("saving a snapshot"))?;
            tx.execute(
                "INSERT INTO netfold_snapshots (log, seq, bytes) VALUES ($1, $2, $3) \
                 ON CONFLICT (log, seq) DO UPDATE SET bytes = EXCLUDED.bytes",
                &[&name, &to_sql(seq)?, &bytes],
            )
            .await
            .map_err(Error::pg("saving a snapshot"))?;
            let rows = tx
                .query("SELECT seq FROM netfold_snapshots WHERE log = $1 ORDER BY seq", &[&name])
                .await
                .map_err(Error::pg("listing snapshots"))?;
            let seqs = rows.iter().map(|r| from_sql("a snapshot's seq", r.get(0))).collect::<Result<Vec<_>>>()?;
            let gone = retention::pruned(&seqs).into_iter().map(to_sql).collect::<Result<Vec<_>>>()?;
            if !gone.is_empty() {
                tx.execute("DELETE FROM netfold_snapshots WHERE log = $1 AND seq = ANY($2)", &[&name, &gone])
                    .await
                    .map_err(Error::pg("pruning snapshots"))?;
            }
            tx.commit().await.map_err(Error::pg("saving a snapshot"))
        })
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>> {
        self.snapshot_at_or_before(Seq::MAX >> 1)
    }

    fn snapshot_at_or_before(&self, seq: Seq) -> Result<Option<Snapshot>> {
        let name = self.shared.name.clone();
        let seq = to_sql(seq.min(i64::MAX as Seq))?;
        self.shared.inner.with_client_blocking(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT seq, bytes FROM netfold_snapshots WHERE log = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1",
                    &[&name, &seq],
                )
                .await
                .map_err(Error::pg("reading snapshots"))?;
            row.map(|r| Ok(Snapshot { seq: from_sql("a snapshot's seq", r.get(0))?, bytes: r.get(1) })).transpose()
        })
    }

    fn checkpoint(&self, cname: &str) -> Result<Option<Seq>> {
        let (name, cname) = (self.shared.name.clone(), cname.to_string());
        self.shared.inner.with_client_blocking(move |c| async move {
            let row = c
                .query_opt("SELECT seq FROM netfold_checkpoints WHERE log = $1 AND name = $2", &[&name, &cname])
                .await
                .map_err(Error::pg("reading a checkpoint"))?;
            row.map(|r| from_sql("a checkpoint", r.get(0))).transpose()
        })
    }

    fn set_checkpoint(&self, cname: &str, seq: Seq) -> Result<()> {
        let (name, cname) = (self.shared.name.clone(), cname.to_string());
        self.shared.inner.with_client_blocking(move |c| async move {
            c.execute(
                "INSERT INTO netfold_checkpoints (log, name, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (log, name) DO UPDATE SET seq = EXCLUDED.seq",
                &[&name, &cname, &to_sql(seq)?],
            )
            .await
            .map_err(Error::pg("saving a checkpoint"))?;
            Ok(())
        })
    }
}
