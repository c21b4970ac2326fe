//! How events are stored: [`Recorded`] as a [`store::Record`], with its schema version and the
//! upcasters that keep every log ever written readable.

use crate::event::{Envelope, Recorded};

/// bincode configuration used for every record (fixed: changing it changes the bytes on disk).
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Schema 1: `Lost` had no `since` (the loss was dated at the record's time).
mod v1 {
    use serde::Deserialize;

    use crate::fact::Change;
    use crate::ids::{HypervisorId, Kind};

    #[derive(Deserialize)]
    pub struct Recorded {
        at: u64,
        hypervisor: HypervisorId,
        event: Event,
    }

    #[derive(Deserialize)]
    enum Event {
        Connected { kind: Kind, endpoint: String },
        Learnt { changes: Vec<Change> },
        Lost { reason: String },
        Reestablished { outage_ms: u64 },
        Expired,
    }

    impl From<Recorded> for crate::event::Recorded {
        fn from(r: Recorded) -> Self {
            use crate::event::Event as E;
            let event = match r.event {
                Event::Connected { kind, endpoint } => E::Connected { kind, endpoint },
                Event::Learnt { changes } => E::Learnt { changes },
                Event::Lost { reason } => E::Lost { reason, since: r.at },
                Event::Reestablished { outage_ms } => E::Reestablished { outage_ms },
                Event::Expired => E::Expired,
            };
            crate::event::Recorded { at: r.at, hypervisor: r.hypervisor, event }
        }
    }
}

/// Decodes one whole record of type `T` (trailing bytes are an error).
fn whole<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (rec, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes after the record", bytes.len() - used));
    }
    Ok(rec)
}

impl store::Record for Recorded {
    /// 2: `Lost` carries `since`, the last contact. 1: the first schema (upcast on read).
    const SCHEMA: u16 = 2;

    fn encode(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, config()).map_err(|e| e.to_string())
    }

    fn decode(schema: u16, bytes: &[u8]) -> Result<Self, String> {
        match schema {
            2 => whole::<Recorded>(bytes),
            1 => whole::<v1::Recorded>(bytes).map(Into::into),
            other => Err(format!("unknown event schema version {other} (this build reads 1 and 2)")),
        }
    }
}

impl From<store::Entry<Recorded>> for Envelope {
    fn from(e: store::Entry<Recorded>) -> Self {
        Envelope {
            seq: e.seq,
            at: e.record.at,
            hypervisor: e.record.hypervisor,
            schema: e.schema,
            prev: e.prev,
            event: e.record.event,
        }
    }
}
