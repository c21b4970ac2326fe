//! How events are stored: [`Recorded`] as a [`store::Record`], with its schema version and the
//! upcasters that keep every log ever written readable.

use crate::event::{Envelope, Recorded};

/// bincode configuration used for every record (fixed: changing it changes the bytes on disk).
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl store::Record for Recorded {
    const SCHEMA: u16 = 1;

    fn encode(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, config()).map_err(|e| e.to_string())
    }

    fn decode(schema: u16, bytes: &[u8]) -> Result<Self, String> {
        match schema {
            1 => {
                let (rec, used) =
                    bincode::serde::decode_from_slice::<Recorded, _>(bytes, config()).map_err(|e| e.to_string())?;
                if used != bytes.len() {
                    return Err(format!("{} trailing bytes after the record", bytes.len() - used));
                }
                Ok(rec)
            }
            other => Err(format!("unknown event schema version {other} (this build reads 1)")),
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
