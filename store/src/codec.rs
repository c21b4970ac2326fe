//! The stored form of a record and the hash chain, shared by every [`crate::Log`].
//!
//! A record's bytes: `[FORMAT: u8][schema: u16 BE][prev: 32 bytes][crc32: u32 BE][payload]`.
//! Records are stored in blocks, one sled entry per block: key = the first record's sequence
//! number, big-endian (sled's order is the log's order); value = `[count: u32 BE]` then, per
//! record, `[len: u32 BE][record bytes]`. A group commit writes its records as a few blocks of
//! at most 6 KiB (ADR 0001), so sled's per-key cost is paid per block, not per event.
//!
//! Two checks, for two threats: the CRC (over the sequence number, header and payload) pins
//! accidental corruption to the exact record; the hash chain makes deliberate edits evident. A
//! record's hash is `blake3(seq BE || value bytes)`, and it is the next record's `prev`; binding
//! the sequence number means a record moved to another place breaks the chain too.

use std::ops::Range;

use rayon::prelude::*;

use crate::{Entry, Error, Hash, Record, Result, Seq};

/// The storage format this build writes and reads.
pub const FORMAT: u8 = 1;
const HEADER: usize = 1 + 2 + 32 + 4;
const CRC_AT: usize = 1 + 2 + 32;

/// The hash of a stored record: the next record's `prev`.
pub fn hash_record(seq: Seq, value: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&seq.to_be_bytes());
    h.update(value);
    *h.finalize().as_bytes()
}

pub(crate) fn key(seq: Seq) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn seq_of(key: &[u8], after: Seq) -> Result<Seq> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| Error::BadKey { after })?;
    Ok(Seq::from_be_bytes(bytes))
}

/// Encodes the stored value of `payload` chained after `prev`.
pub(crate) fn encode_value(seq: Seq, schema: u16, prev: &Hash, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload.len());
    v.push(FORMAT);
    v.extend_from_slice(&schema.to_be_bytes());
    v.extend_from_slice(prev);
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(payload);
    let crc = checksum(seq, &v);
    v[CRC_AT..HEADER].copy_from_slice(&crc.to_be_bytes());
    v
}

/// CRC32 over the sequence number and the value with its CRC field taken as zero. The sequence
/// number and header are hashed from one buffer: a CRC update has a fixed cost per call, which
/// for a record of a hundred bytes is as much as the bytes.
fn checksum(seq: Seq, value: &[u8]) -> u32 {
    let mut head = [0u8; 8 + HEADER];
    head[..8].copy_from_slice(&seq.to_be_bytes());
    head[8..8 + CRC_AT].copy_from_slice(&value[..CRC_AT]);
    let mut h = crc32fast::Hasher::new();
    h.update(&head);
    h.update(&value[HEADER..]);
    h.finalize()
}

/// The header of a stored value, checked, and its payload.
pub(crate) struct Raw<'a> {
    pub schema: u16,
    pub prev: Hash,
    pub payload: &'a [u8],
}

pub(crate) fn split_value(seq: Seq, value: &[u8]) -> Result<Raw<'_>> {
    if value.len() < HEADER {
        return Err(Error::Truncated { seq, len: value.len(), need: HEADER });
    }
    if value[0] != FORMAT {
        return Err(Error::Format { seq, found: value[0], expected: FORMAT });
    }
    let stored = u32::from_be_bytes([value[CRC_AT], value[CRC_AT + 1], value[CRC_AT + 2], value[CRC_AT + 3]]);
    if stored != checksum(seq, value) {
        return Err(Error::Corrupt { seq });
    }
    let schema = u16::from_be_bytes([value[1], value[2]]);
    let mut prev = [0u8; 32];
    prev.copy_from_slice(&value[3..CRC_AT]);
    Ok(Raw { schema, prev, payload: &value[HEADER..] })
}

pub(crate) fn decode_entry<R: Record>(seq: Seq, value: &[u8]) -> Result<Entry<R>> {
    let raw = split_value(seq, value)?;
    let record = R::decode(raw.schema, raw.payload).map_err(|reason| Error::Decode { seq, reason })?;
    Ok(Entry { seq, schema: raw.schema, prev: raw.prev, record })
}

/// Runs of at least this many records are decoded on every core.
const PARALLEL_FROM: usize = 256;

/// Decodes consecutive records, in order, up to and including the first failure. Decoding
/// dominates reading, so a long run is decoded on every core (rayon); the result keeps the log's
/// order.
pub(crate) fn decode_all<R: Record>(records: &[(Seq, &[u8])]) -> Vec<Result<Entry<R>>> {
    let decode = |&(seq, bytes): &(Seq, &[u8])| decode_entry::<R>(seq, bytes);
    let mut out: Vec<_> = if records.len() >= PARALLEL_FROM {
        records.par_iter().map(decode).collect()
    } else {
        records.iter().map(decode).collect()
    };
    if let Some(bad) = out.iter().position(Result::is_err) {
        out.truncate(bad + 1);
    }
    out
}

/// Encodes every record's payload (done by the appender, off the writer's critical path).
pub(crate) fn encode_payloads<R: Record>(batch: &[R]) -> Result<Vec<Vec<u8>>> {
    batch
        .iter()
        .enumerate()
        .map(|(index, rec)| rec.encode().map_err(|reason| Error::Encode { index, reason }))
        .collect()
}

/// Chains encoded payloads after `(head, tip)`: the `(seq, value)` pairs and the new tip.
pub(crate) fn chain(head: Seq, tip: Hash, schema: u16, payloads: &[Vec<u8>]) -> (Vec<(Seq, Vec<u8>)>, Hash) {
    let mut out = Vec::with_capacity(payloads.len());
    let mut prev = tip;
    for (i, payload) in payloads.iter().enumerate() {
        let seq = head + 1 + i as Seq;
        let value = encode_value(seq, schema, &prev, payload);
        prev = hash_record(seq, &value);
        out.push((seq, value));
    }
    (out, prev)
}

/// Walks `(seq, value)` pairs from the first record, checking sequence continuity, decodability
/// and the chain. Returns the head and tip.
pub(crate) fn verify_values<R: Record, V: AsRef<[u8]>>(
    values: impl Iterator<Item = Result<(Seq, V)>>,
    head: Seq,
) -> Result<crate::Verified> {
    let mut expected = 1;
    let mut tip = crate::GENESIS;
    for item in values {
        let (seq, value) = item?;
        if seq != expected {
            return Err(Error::Missing { seq: expected, head });
        }
        let value = value.as_ref();
        let entry = decode_entry::<R>(seq, value)?;
        if entry.prev != tip {
            return Err(Error::Chain { seq });
        }
        tip = hash_record(seq, value);
        expected += 1;
    }
    if expected - 1 < head {
        return Err(Error::Missing { seq: expected, head });
    }
    Ok(crate::Verified { head: expected - 1, tip })
}

/// Decodes up to `max` consecutive records from `from`: the shared body of every log's chunked
/// read. Returns the records before the first failure (a gap or a bad record) and that failure.
pub(crate) fn decode_run<R: Record, V: AsRef<[u8]>>(
    values: impl Iterator<Item = Result<(Seq, V)>>,
    from: Seq,
    max: usize,
    head: Seq,
) -> (Vec<Entry<R>>, Option<Error>) {
    let mut out = Vec::with_capacity(max.min(4096));
    let mut expected = from;
    for item in values.take(max) {
        let entry = item.and_then(|(seq, value)| {
            if seq != expected {
                return Err(Error::Missing { seq: expected, head });
            }
            decode_entry(seq, value.as_ref())
        });
        match entry {
            Ok(e) => out.push(e),
            Err(e) => return (out, Some(e)),
        }
        expected += 1;
    }
    let wanted_last = from.saturating_add(max as Seq).saturating_sub(1).min(head);
    if from <= head && expected <= wanted_last {
        return (out, Some(Error::Missing { seq: expected, head }));
    }
    (out, None)
}

/// Encodes consecutive records into one block.
pub(crate) fn encode_block(values: &[(Seq, Vec<u8>)]) -> Vec<u8> {
    let size = 4 + values.iter().map(|(_, v)| 4 + v.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(values.len() as u32).to_be_bytes());
    for (_, v) in values {
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// Splits a block whose first record is `first` into where each record's bytes lie in it. A
/// length that runs past the end names the record it belongs to.
pub(crate) fn split_block(first: Seq, block: &[u8]) -> Result<Vec<(Seq, Range<usize>)>> {
    let take_u32 = |at: usize, seq: Seq| -> Result<u32> {
        block.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or(Error::Truncated {
            seq,
            len: block.len().saturating_sub(at),
            need: 4,
        })
    };
    let count = take_u32(0, first)? as usize;
    let mut out = Vec::with_capacity(count.min(block.len() / 4));
    let mut at = 4;
    for i in 0..count {
        let seq = first + i as Seq;
        let len = take_u32(at, seq)? as usize;
        at += 4;
        if block.len() - at < len {
            return Err(Error::Truncated { seq, len: block.len() - at, need: len });
        }
        out.push((seq, at..at + len));
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC is the format's: CRC32 of `seq BE || header with a zero CRC field || payload`,
    /// however it is computed.
    #[test]
    fn the_crc_covers_the_seq_the_header_with_its_crc_zeroed_and_the_payload() {
        let value = encode_value(7, 2, &[9; 32], b"a payload of some bytes");
        let mut spelt = 7u64.to_be_bytes().to_vec();
        spelt.extend_from_slice(&value[..CRC_AT]);
        spelt.extend_from_slice(&[0; 4]);
        spelt.extend_from_slice(&value[HEADER..]);
        assert_eq!(value[CRC_AT..HEADER], crc32fast::hash(&spelt).to_be_bytes());
        assert!(split_value(7, &value).is_ok());
        assert!(matches!(split_value(8, &value), Err(Error::Corrupt { seq: 8 })));
    }
}
