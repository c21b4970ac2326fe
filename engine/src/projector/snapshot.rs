//! The projector state's stored form: deterministic bytes (hypervisors in id order, facts in
//! key order, bincode) for snapshots and for comparing a replayed state with the live one.
//!
//! Desired state is not stored: decoding rebuilds its index from the facts with the policy in force,
//! so a snapshot stays valid when the policy changes.

use serde::{Deserialize, Serialize};

use super::{Facts, Held, Hypervisor, State, Status};
use crate::config::Policy;
use crate::discovery::SwitchView;
use crate::fact::Fact;
use crate::ids::{HypervisorId, Kind};

/// Version of the stored form; bump (and keep reading the old one) when it changes.
/// 2: hypervisors carry the held mass removal. 3: what each switch saw (`SwitchSaw`).
const FORMAT: u16 = 3;

#[derive(Serialize, Deserialize)]
struct Stored<H> {
    format: u16,
    seq: u64,
    hypervisors: Vec<H>,
    switches: Vec<(String, SwitchView)>,
}

/// Formats 1 and 2: no switch views.
#[derive(Serialize, Deserialize)]
struct StoredV2<H> {
    format: u16,
    seq: u64,
    hypervisors: Vec<H>,
}

#[derive(Serialize, Deserialize)]
struct StoredHypervisor {
    id: HypervisorId,
    kind: Option<Kind>,
    endpoint: String,
    status: Status,
    held: Option<Held>,
    facts: Vec<Fact>,
}

/// Format 1: no held removals (they did not exist as events yet).
#[derive(Serialize, Deserialize)]
struct StoredHypervisorV1 {
    id: HypervisorId,
    kind: Option<Kind>,
    endpoint: String,
    status: Status,
    facts: Vec<Fact>,
}

impl From<StoredHypervisorV1> for StoredHypervisor {
    fn from(h: StoredHypervisorV1) -> Self {
        Self { id: h.id, kind: h.kind, endpoint: h.endpoint, status: h.status, held: None, facts: h.facts }
    }
}

/// A snapshot that cannot be read; says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    #[error("snapshot has format {found}, this build reads format {FORMAT}")]
    Format { found: u16 },
    #[error("snapshot has {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl State {
    /// The state's bytes: equal states give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            format: FORMAT,
            seq: self.seq,
            hypervisors: self
                .sorted_hypervisors()
                .map(|(id, _, h)| StoredHypervisor {
                    id: id.clone(),
                    kind: h.kind,
                    endpoint: h.endpoint.clone(),
                    status: h.status,
                    held: h.held,
                    facts: h.facts.sorted().into_iter().map(|(_, f)| f.to_fact()).collect(),
                })
                .collect(),
            switches: self.switches.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        // Encoding plain owned data into a Vec cannot fail.
        bincode::serde::encode_to_vec(&stored, config()).unwrap_or_default()
    }

    /// A blake3 hash of [`State::encode`]: compare states (live against replay) by it.
    pub fn state_hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// Reads bytes written by [`State::encode`], folding with `policy` from there on.
    pub fn decode(bytes: &[u8], policy: &Policy) -> Result<State, SnapshotError> {
        let decode_err = |e: bincode::error::DecodeError| SnapshotError::Decode(e.to_string());
        let (format, _): (u16, usize) = bincode::serde::decode_from_slice(bytes, config()).map_err(decode_err)?;
        let (stored, used): (Stored<StoredHypervisor>, usize) = match format {
            FORMAT => bincode::serde::decode_from_slice(bytes, config()).map_err(decode_err)?,
            2 => {
                let (s, used): (StoredV2<StoredHypervisor>, usize) =
                    bincode::serde::decode_from_slice(bytes, config()).map_err(decode_err)?;
                (Stored { format: s.format, seq: s.seq, hypervisors: s.hypervisors, switches: Vec::new() }, used)
            }
            1 => {
                let (s, used): (StoredV2<StoredHypervisorV1>, usize) =
                    bincode::serde::decode_from_slice(bytes, config()).map_err(decode_err)?;
                let hypervisors = s.hypervisors.into_iter().map(Into::into).collect();
                (Stored { format: s.format, seq: s.seq, hypervisors, switches: Vec::new() }, used)
            }
            found => return Err(SnapshotError::Format { found }),
        };
        if used != bytes.len() {
            return Err(SnapshotError::Trailing(bytes.len() - used));
        }
        let mut state = State::new(policy);
        state.seq = stored.seq;
        state.switches = stored.switches.into_iter().collect();
        for h in stored.hypervisors {
            let hv = Hypervisor {
                kind: h.kind,
                endpoint: h.endpoint,
                status: h.status,
                held: h.held,
                facts: Facts::default(),
            };
            state.insert_decoded(h.id, hv, &h.facts);
        }
        state.rebuild_index();
        Ok(state)
    }
}
