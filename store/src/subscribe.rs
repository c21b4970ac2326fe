//! Subscriptions: catch up from any sequence number, then tail live appends.
//!
//! A subscription remembers the next sequence number it owes the caller and reads forward from
//! it in chunks; once caught up it waits for the durable head to move. Because it reads by
//! sequence number against a head that is only published after a flush, it can neither skip
//! nor repeat a record, however busy the writers are.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use crate::{Entry, Record, Result, Seq};

/// How many records a subscription reads per chunk while catching up.
const CHUNK: usize = 4096;

/// Where a subscription reads from: the log it came from.
pub(crate) trait Source<R>: Send + Sync {
    /// Up to `max` records starting at `from` (all `<= head`), and the error that cut the
    /// chunk short, if one did.
    fn read_chunk(&self, from: Seq, max: usize) -> (Vec<Entry<R>>, Option<crate::Error>);
}

/// A live, ordered stream of records from some sequence number on.
pub struct Subscription<R> {
    next: Seq,
    buffer: VecDeque<Entry<R>>,
    head: watch::Receiver<Seq>,
    source: Arc<dyn Source<R>>,
    /// An error met while reading ahead, returned once the records before it are.
    pending: Option<crate::Error>,
    failed: bool,
}

impl<R: Record> Subscription<R> {
    pub(crate) fn new(from: Seq, head: watch::Receiver<Seq>, source: Arc<dyn Source<R>>) -> Self {
        Self { next: from.max(1), buffer: VecDeque::new(), head, source, pending: None, failed: false }
    }

    /// The sequence number of the record the next call returns.
    pub fn position(&self) -> Seq {
        self.next
    }

    /// The log's durable head as this process learns it: it changes with every append anyone
    /// makes (for a shared log, once this process hears of it).
    pub fn heads(&self) -> watch::Receiver<Seq> {
        self.head.clone()
    }

    /// The next record: immediately if it is in the log, else once it is appended. `None` once
    /// the log is closed and everything in it was returned, or after an error was returned.
    pub async fn next(&mut self) -> Option<Result<Entry<R>>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.next = e.seq + 1;
                return Some(Ok(e));
            }
            if let Some(e) = self.pending.take() {
                self.failed = true;
                return Some(Err(e));
            }
            let head = *self.head.borrow_and_update();
            if self.next <= head {
                let want = usize::try_from(head - self.next + 1).unwrap_or(CHUNK).min(CHUNK);
                let (chunk, error) = self.source.read_chunk(self.next, want);
                self.buffer.extend(chunk);
                self.pending = error;
                continue;
            }
            if self.head.changed().await.is_err() {
                // Writer gone: drain whatever became durable before it stopped.
                let head = *self.head.borrow();
                if self.next > head {
                    return None;
                }
            }
        }
    }
}
