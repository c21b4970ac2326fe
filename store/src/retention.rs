//! Which snapshots a log keeps, shared by every durable back end: the most recent few, all of
//! them, and older ones thinned out to about one per 1/256 of the span they cover (the oldest
//! always), so history queries ([`crate::Log::snapshot_at_or_before`]) stay spread over the whole
//! log in bounded space. 1/256: with the engine's snapshot every 10,000 events, no two retained
//! snapshots of a 10M-event log are more than about 60k events apart, so `why --at` any seq
//! folds at most that after decoding one snapshot (`replay/benches/why_at.rs`: 84–110 ms for
//! the worst seq at 50,000 VMs on the 2-core test machine, the fold of those 60k events about
//! half of it), for about 230 snapshots on disk (3.6–4.1 MB each at 50,000 VMs, about 0.9 GB).

use crate::Seq;

/// The most recent snapshots, all kept.
pub(crate) const KEEP_SNAPSHOTS: usize = 3;
/// About how many older snapshots are kept for history queries.
pub(crate) const KEEP_HISTORY: u64 = 256;

/// Of the snapshots at `seqs` (ascending), those to remove.
pub(crate) fn pruned(seqs: &[Seq]) -> Vec<Seq> {
    let older = &seqs[..seqs.len().saturating_sub(KEEP_SNAPSHOTS)];
    let mut out = Vec::new();
    if let (Some(&first), Some(&last)) = (older.first(), older.last()) {
        let spacing = (last - first) / KEEP_HISTORY;
        let mut kept = first;
        for &seq in &older[1..] {
            if seq - kept < spacing {
                out.push(seq);
            } else {
                kept = seq;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_and_the_oldest_stay_and_the_middle_is_thinned() {
        let seqs: Vec<Seq> = (1..=1000).map(|i| i * 10).collect();
        let gone = pruned(&seqs);
        assert!(!gone.contains(&10) && !gone.iter().any(|s| *s >= 9980), "{gone:?}");
        assert!(gone.len() > 500, "thinned: {}", gone.len());
        assert!(seqs.len() - gone.len() <= KEEP_SNAPSHOTS + KEEP_HISTORY as usize + 1, "bounded");
        assert!(pruned(&[1, 2, 3]).is_empty());
    }
}
