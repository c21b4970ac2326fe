//! Every log ever written stays readable: records of each old schema, checked in as bytes,
//! decode (upcast) into today's events.

use engine::{
    Change, Event, Fact, HostFact, HypervisorId, Kind, NetworkFact, Recorded, UplinkFact, VlanId, VlanSpec, VnicFact,
};
use store::Record;

/// The records `fixtures/schema1.records` holds, as schema 1 wrote them.
fn schema1() -> Vec<Recorded> {
    let hv = HypervisorId::new("vc-east").unwrap();
    let rec = |at, event| Recorded { at, hypervisor: hv.clone(), event };
    vec![
        rec(1_000, Event::Connected { kind: Kind::VMware, endpoint: "https://vc-east/sdk".into() }),
        rec(
            1_001,
            Event::Learnt {
                changes: vec![
                    Change::Upsert(Fact::Host(HostFact { host: "host-1".into(), name: "esx1".into() })),
                    Change::Upsert(Fact::Uplink(UplinkFact {
                        host: "host-1".into(),
                        nic: "vmnic0".into(),
                        mac: Some("00:50:56:00:00:01".into()),
                        port: Some(engine::SwitchPort::new("tor1", "Ethernet1/1").unwrap()),
                        source: Some(engine::NeighbourSource::Lldp),
                    })),
                    Change::Upsert(Fact::Network(NetworkFact {
                        host: "host-1".into(),
                        network: "pg-120".into(),
                        name: "pg-120".into(),
                        vlan: VlanSpec::Access(VlanId::new(120).unwrap()),
                        uplinks: vec!["vmnic0".into()],
                    })),
                    Change::Upsert(Fact::Vnic(VnicFact {
                        vm: "vm-7".into(),
                        vm_name: "web-7".into(),
                        nic: "4000".into(),
                        mac: "00:50:56:aa:bb:cc".into(),
                        host: "host-1".into(),
                        network: "pg-120".into(),
                        connected: true,
                        powered_on: true,
                    })),
                    Change::Remove(engine::FactKey::Vnic { vm: "vm-8".into(), nic: "4000".into() }),
                ],
            },
        ),
        rec(2_000, Event::Lost { reason: "connection refused".into(), since: 2_000 }),
        rec(3_000, Event::Reestablished { outage_ms: 1_000 }),
        rec(4_000, Event::Lost { reason: "timed out".into(), since: 4_000 }),
        rec(200_000, Event::Expired),
    ]
}

fn read_fixture(name: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    out
}

#[test]
fn schema_1_records_upcast_with_the_loss_dated_at_the_record() {
    let records = read_fixture("schema1.records");
    let want = schema1();
    assert_eq!(records.len(), want.len());
    for (bytes, want) in records.iter().zip(&want) {
        assert_eq!(&Recorded::decode(1, bytes).unwrap(), want);
    }
    // Schema 1 bytes are not schema 2 bytes: read as the newer schema they must fail, so the
    // version in the envelope is what decides.
    let lost = &records[2];
    assert!(Recorded::decode(2, lost).is_err(), "a schema-1 Lost is not a schema-2 record");
    assert!(Recorded::decode(3, lost).unwrap_err().contains("unknown event schema version 3"));
}

#[test]
fn schema_2_records_round_trip() {
    let refused = Recorded {
        at: 5_000,
        hypervisor: HypervisorId::new("vc-east").unwrap(),
        event: Event::Refused {
            refusals: vec![engine::Rejected { what: "vnic vm-9/4000".into(), why: "its network is unknown".into() }],
        },
    };
    for r in schema1().into_iter().chain([refused]) {
        assert_eq!(Recorded::decode(Recorded::SCHEMA, &r.encode().unwrap()).unwrap(), r);
    }
}
