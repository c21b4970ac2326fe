//! A record type for the store's tests: a number and a label, bincode-encoded, schema 2, with
//! an upcaster from schema 1 (a bare number) so old-version reading is exercised too.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rec {
    pub n: u64,
    pub label: String,
}

impl Rec {
    pub fn new(n: u64) -> Self {
        Self { n, label: format!("record-{n}") }
    }
}

impl store::Record for Rec {
    const SCHEMA: u16 = 2;

    fn encode(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }

    fn decode(schema: u16, bytes: &[u8]) -> Result<Self, String> {
        let cfg = bincode::config::standard();
        match schema {
            1 => bincode::serde::decode_from_slice::<u64, _>(bytes, cfg)
                .map(|(n, _)| Rec { n, label: String::from("(v1)") })
                .map_err(|e| e.to_string()),
            2 => bincode::serde::decode_from_slice::<Rec, _>(bytes, cfg).map(|(r, _)| r).map_err(|e| e.to_string()),
            v => Err(format!("unknown schema {v}")),
        }
    }
}
