//! The benchmarks' record: shaped like netfold's commonest event (`#[path]`-included).

use serde::{Deserialize, Serialize};

/// A record shaped like netfold's commonest event, a `Learnt` with one vNIC upsert: a time, the
/// hypervisor, and the vNIC's strings and flags (about 130 bytes encoded).
#[derive(Clone, Serialize, Deserialize)]
pub struct Event {
    at: u64,
    hypervisor: String,
    vm: String,
    vm_name: String,
    nic: String,
    mac: String,
    host: String,
    network: String,
    connected: bool,
    powered_on: bool,
}

impl store::Record for Event {
    const SCHEMA: u16 = 1;
    fn encode(&self) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).map_err(|e| e.to_string())
    }
    fn decode(_: u16, bytes: &[u8]) -> Result<Self, String> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(e, _)| e).map_err(|e| e.to_string())
    }
}

pub fn event(i: u64) -> Event {
    Event {
        at: 1_700_000_000_000 + i,
        hypervisor: "vc-east".into(),
        vm: format!("vm-{i}"),
        vm_name: format!("app-server-{i}.prod.example"),
        nic: "4000".into(),
        mac: format!("00:50:56:{:02x}:{:02x}:{:02x}", (i >> 16) as u8, (i >> 8) as u8, i as u8),
        host: format!("host-{}", i % 1000),
        network: format!("dvportgroup-{}", i % 40),
        connected: true,
        powered_on: !i.is_multiple_of(7),
    }
}
