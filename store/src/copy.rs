//! `netfold store copy`: moves a sled store — every log with its snapshots and checkpoints, and
//! every table — into an empty PostgreSQL database, byte for byte. A record's stored bytes are
//! the same on both back ends (`codec`), so the copy keeps every record's CRC and the whole
//! hash chain; at the end each copied log is verified on PostgreSQL and its head and chain tip
//! must equal the source's. A source log that lost acknowledged records, or that does not
//! verify, is refused before anything is written, and so is a target that holds anything.

use crate::{codec, Error, Log, PgStore, Record, Result, Seq, Store, Verified};

/// Any record, undecoded: the copy moves stored bytes and never appends through a chain of its
/// own (`SCHEMA` is never written).
struct Opaque(Vec<u8>);

impl Record for Opaque {
    const SCHEMA: u16 = 0;

    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        Ok(self.0.clone())
    }

    fn decode(_schema: u16, bytes: &[u8]) -> std::result::Result<Self, String> {
        Ok(Opaque(bytes.to_vec()))
    }
}

/// What a copy moved, each log verified on the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    /// Each log's name and what verifying it on PostgreSQL found (equal to the source's).
    pub logs: Vec<(String, Verified)>,
    pub snapshots: usize,
    pub checkpoints: usize,
    /// Each table's name and its number of entries.
    pub tables: Vec<(String, usize)>,
}

/// Records moved per transaction.
const CHUNK: usize = 4096;

/// Called as records are copied: `(log, records copied, records in the log)`.
pub type Progress<'a> = &'a (dyn Fn(&str, Seq, Seq) + Sync);

/// Copies everything `from` holds into `to`, which must be empty (see the module doc),
/// reporting each chunk of records to `progress`.
pub async fn copy_to_postgres(from: &Store, to: &PgStore, progress: Progress<'_>) -> Result<Copied> {
    if !to.is_empty().await? {
        return Err(Error::NotEmpty("the target PostgreSQL database already holds netfold records or tables".into()));
    }
    let (log_names, table_names) = from.names()?;
    let mut sources = Vec::new();
    for name in &log_names {
        let log = from.log_on_loss::<Opaque>(name, crate::OnLoss::Accept)?;
        if let Some(loss) = log.loss() {
            return Err(Error::Lost(loss.clone()));
        }
        let verified = log.verify()?;
        sources.push((name.clone(), log, verified));
    }
    let mut copied = Copied { logs: Vec::new(), snapshots: 0, checkpoints: 0, tables: Vec::new() };
    for (name, log, verified) in &sources {
        to.import_log(name).await?;
        let mut head: Seq = 0;
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut entries = log.read(1);
        loop {
            let next = entries.next().transpose()?;
            if let Some(e) = &next {
                // The stored bytes again: the encoding is deterministic (same header, same CRC).
                chunk.push((e.seq, codec::encode_value(e.seq, e.schema, &e.prev, &e.record.0)));
            }
            if chunk.len() == CHUNK || (next.is_none() && !chunk.is_empty()) {
                let rows = std::mem::take(&mut chunk);
                let last = rows.last().map_or(head, |(s, _)| *s);
                to.import_records(name, head, rows).await?;
                head = last;
                progress(name, head, verified.head);
            }
            if next.is_none() {
                break;
            }
        }
        let mut snapshots = Vec::new();
        let mut at = log.latest_snapshot()?;
        while let Some(s) = at {
            at = match s.seq.checked_sub(1) {
                Some(before) => log.snapshot_at_or_before(before)?,
                None => None,
            };
            snapshots.push(s);
        }
        copied.snapshots += snapshots.len();
        let checkpoints = log.checkpoints()?;
        copied.checkpoints += checkpoints.len();
        to.import_meta(name, snapshots, checkpoints).await?;
        let target = to.log::<Opaque>(name).await?;
        let found = target.verify()?;
        if found != *verified {
            return Err(Error::Meta {
                what: format!("the copy of log `{name}`"),
                reason: format!(
                    "verified at head {} tip {}, the source at head {} tip {}",
                    found.head,
                    hex(&found.tip),
                    verified.head,
                    hex(&verified.tip)
                ),
            });
        }
        copied.logs.push((name.clone(), found));
    }
    for name in &table_names {
        let entries = from.table(name)?.raw_entries()?;
        copied.tables.push((name.clone(), entries.len()));
        to.table(name).put_raw(entries)?;
    }
    Ok(copied)
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
