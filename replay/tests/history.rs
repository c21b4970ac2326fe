//! Audit answers checked against a known history written to a real data directory: `why` with
//! provenance and `since`, state at a point, diff between points, and `verify` catching a
//! tampered log.

use engine::{
    Change, Event, Fact, HostFact, HypervisorId, Kind, NetworkFact, Recorded, SwitchPort, UplinkFact, VlanId, VlanSpec,
    VnicFact,
};
use replay::history::DiffChange;
use replay::{History, Point};
use store::layout::{db_path, EVENTS_LOG};
use store::{Log, Store};

fn hv() -> HypervisorId {
    HypervisorId::new("vc-east").unwrap()
}

fn vnic(vm: &str) -> Fact {
    Fact::Vnic(VnicFact {
        vm: vm.into(),
        vm_name: format!("{vm}-name").into(),
        nic: "4000".into(),
        mac: "00:50:56:00:00:01".into(),
        host: "host-1".into(),
        network: "pg120".into(),
        connected: true,
        powered_on: true,
    })
}

/// seq 1 Connected; 2 host+uplink+network+vm1; 3 vm2; 4 vm1 removed; 5 Lost; 6 Expired.
async fn write_history(dir: &std::path::Path) {
    let store = Store::open(db_path(dir)).unwrap();
    let log = store.log::<Recorded>(EVENTS_LOG).unwrap();
    let rec = |at, event| Recorded { at, hypervisor: hv(), event };
    let learnt = |changes| Event::Learnt { changes };
    log.append(vec![
        rec(1_000, Event::Connected { kind: Kind::VMware, endpoint: "https://vc/sdk".into() }),
        rec(
            2_000,
            learnt(vec![
                Change::Upsert(Fact::Host(HostFact { host: "host-1".into(), name: "esx-01".into() })),
                Change::Upsert(Fact::Uplink(UplinkFact {
                    host: "host-1".into(),
                    nic: "vmnic0".into(),
                    mac: None,
                    port: Some(SwitchPort::new("tor1", "eth1").unwrap()),
                    source: Some(engine::NeighbourSource::Lldp),
                })),
                Change::Upsert(Fact::Network(NetworkFact {
                    host: "host-1".into(),
                    network: "pg120".into(),
                    name: "web".into(),
                    vlan: VlanSpec::Access(VlanId::new(120).unwrap()),
                    uplinks: vec!["vmnic0".into()],
                })),
                Change::Upsert(vnic("vm-1")),
            ]),
        ),
        rec(3_000, learnt(vec![Change::Upsert(vnic("vm-2"))])),
        rec(4_000, learnt(vec![Change::Remove(vnic("vm-1").key())])),
        rec(5_000, Event::Lost { reason: "connection refused".into(), since: 5_000 }),
        rec(200_000, Event::Expired),
    ])
    .await
    .unwrap();
}

fn port() -> SwitchPort {
    SwitchPort::new("tor1", "eth1").unwrap()
}

fn vlan() -> VlanId {
    VlanId::new(120).unwrap()
}

const NO_PROGRESS: &dyn Fn(u64, u64) = &|_, _| {};

#[tokio::test]
async fn why_names_the_reasons_the_events_behind_them_and_since_when() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path()).await;
    let h = History::open(dir.path()).unwrap();

    let at3 = h.why(&port(), vlan(), Some(Point::Seq(3)), NO_PROGRESS).unwrap();
    let vms: Vec<_> = at3.reasons.iter().map(|e| e.reason.vnic.as_ref().unwrap().vm.clone()).collect();
    assert_eq!(vms, ["vm-1", "vm-2"]);
    assert_eq!(at3.since, Some((2, 2_000)));

    let at4 = h.why(&port(), vlan(), Some(Point::Seq(4)), NO_PROGRESS).unwrap();
    assert_eq!(at4.reasons.len(), 1);
    let learnt: Vec<_> = at4.reasons[0].learnt.iter().map(|l| (l.fact.as_str(), l.seq)).collect();
    assert_eq!(learnt, [("vnic vm-2/4000", 3), ("network pg120 on host-1", 2), ("uplink host-1/vmnic0", 2)]);
    assert_eq!(at4.since, Some((2, 2_000)), "the VLAN stayed while one reason held");

    // By time: 3.5 s is after seq 3 and before seq 4.
    let by_time = h.why(&port(), vlan(), Some(Point::Time(3_500)), NO_PROGRESS).unwrap();
    assert_eq!(by_time.reasons.len(), 2);
    assert_eq!(by_time.at, Some((3, 3_000)));

    let now = h.why(&port(), vlan(), None, NO_PROGRESS).unwrap();
    assert!(now.reasons.is_empty(), "expired: the VLAN has no reason left");
    assert_eq!(now.since, None);
}

#[tokio::test]
async fn state_at_a_point_and_diff_between_points() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path()).await;
    let h = History::open(dir.path()).unwrap();
    assert!(h.fold(Some(Point::Seq(1)), NO_PROGRESS).unwrap().state.desired().ports.is_empty());
    let at5 = h.fold(Some(Point::Seq(5)), NO_PROGRESS).unwrap().state;
    assert_eq!(at5.desired().vlans_for("tor1")["eth1"].iter().map(|v| v.get()).collect::<Vec<_>>(), [120]);

    let added = h.diff(Point::Seq(1), Point::Seq(3), NO_PROGRESS).unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].change, DiffChange::Added { reasons: 2 });
    let fewer = h.diff(Point::Seq(3), Point::Seq(4), NO_PROGRESS).unwrap();
    assert_eq!(fewer[0].change, DiffChange::Reasons { before: 2, after: 1 });
    let removed = h.diff(Point::Seq(4), Point::Seq(6), NO_PROGRESS).unwrap();
    assert_eq!(removed[0].change, DiffChange::Removed { reasons: 1 });
    assert!(h.diff(Point::Seq(5), Point::Seq(5), NO_PROGRESS).unwrap().is_empty());
}

#[tokio::test]
async fn verify_passes_then_names_a_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path()).await;
    {
        let h = History::open(dir.path()).unwrap();
        let report = replay::verify::verify(&h, NO_PROGRESS).unwrap();
        assert_eq!(report.records, 6);
        // A snapshot from the state at seq 3, as the agent would save: snapshot + tail agrees.
        let at3 = h.fold(Some(Point::Seq(3)), NO_PROGRESS).unwrap().state;
        assert!(h.log().save_snapshot(3, at3.encode()).is_err(), "a history is read-only");
        drop(h);
        let store = Store::open(db_path(dir.path())).unwrap();
        store.log::<engine::Recorded>(EVENTS_LOG).unwrap().save_snapshot(3, at3.encode()).unwrap();
    }
    {
        let h = History::open(dir.path()).unwrap();
        assert_eq!(replay::verify::verify(&h, NO_PROGRESS).unwrap().snapshot_seq, Some(3));
    }
    // Tamper: flip a byte inside record 2 (the only block holds records 1..=6).
    {
        let db = store::open_db(&db_path(dir.path())).unwrap();
        let tree = db.open_tree(format!("{EVENTS_LOG}.log")).unwrap();
        let (k, v) = tree.first().unwrap().unwrap();
        let mut v = v.to_vec();
        let len1 = u32::from_be_bytes(v[4..8].try_into().unwrap()) as usize;
        let second = 8 + len1 + 4; // record 2's bytes start here
        v[second + 60] ^= 1;
        tree.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let h = History::open(dir.path()).unwrap();
    let err = replay::verify::verify(&h, NO_PROGRESS).unwrap_err();
    assert!(err.to_string().contains("record 2"), "{err}");
}

/// Saves as the snapshot at seq 3 the state the log folds to there plus `marker`, a hypervisor
/// no record names: a state the log does not give, visible wherever the snapshot is used.
fn save_marked_snapshot_at_3(dir: &std::path::Path, marker: &HypervisorId) {
    let mut at3 = History::open(dir).unwrap().fold(Some(Point::Seq(3)), NO_PROGRESS).unwrap().state;
    at3.apply(&engine::Envelope {
        seq: 3,
        at: 3_000,
        hypervisor: marker.clone(),
        schema: <Recorded as store::Record>::SCHEMA,
        prev: [0; 32],
        event: Event::Connected { kind: Kind::VMware, endpoint: "https://marker".into() },
    });
    let store = Store::open(db_path(dir)).unwrap();
    store.log::<Recorded>(EVENTS_LOG).unwrap().save_snapshot(3, at3.encode()).unwrap();
}

/// A snapshot whose state is not what the log folds to at its seq — as a projection that does
/// not fold deterministically, or an altered snapshot, would leave — fails `verify`.
#[tokio::test]
async fn verify_fails_when_snapshot_plus_tail_differs_from_the_full_fold() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path()).await;
    save_marked_snapshot_at_3(dir.path(), &HypervisorId::new("not-in-the-log").unwrap());
    let h = History::open(dir.path()).unwrap();
    let err = replay::verify::verify(&h, NO_PROGRESS).unwrap_err();
    assert!(matches!(err, replay::Error::NotDeterministic { snapshot: 3 }), "{err}");
    assert!(err.to_string().contains("snapshot at record 3"), "{err}");
}

/// State (and so `why`) at a point after a retained snapshot starts from it; before it, from
/// the start: a snapshot holding a hypervisor the log never names shows which.
#[tokio::test]
async fn a_point_after_a_snapshot_is_folded_from_it_and_one_before_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path()).await;
    let marker = HypervisorId::new("only-in-the-snapshot").unwrap();
    save_marked_snapshot_at_3(dir.path(), &marker);
    let h = History::open(dir.path()).unwrap();
    let from = |n| h.state_at(Some(Point::Seq(n)), NO_PROGRESS).unwrap().state.endpoint(&marker).is_some();
    assert!(from(3) && from(5) && from(6), "folded from the snapshot");
    assert!(!from(2), "folded from the start");
}

/// A snapshot of an older format (before provenance) is not compared, and says so; the rest
/// of `verify` still runs.
#[tokio::test]
async fn verify_passes_over_a_snapshot_of_an_older_format_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path()).await;
    let mut bytes = History::open(dir.path()).unwrap().fold(Some(Point::Seq(3)), NO_PROGRESS).unwrap().state.encode();
    bytes[0] = 2; // the format leads the stored form
    {
        let store = Store::open(db_path(dir.path())).unwrap();
        store.log::<Recorded>(EVENTS_LOG).unwrap().save_snapshot(3, bytes).unwrap();
    }
    let h = History::open(dir.path()).unwrap();
    let report = replay::verify::verify(&h, NO_PROGRESS).unwrap();
    assert_eq!((report.snapshot_seq, report.older_snapshot), (None, Some((3, 2))));
    // History at a point after it folds from the start instead.
    assert_eq!(
        h.state_at(Some(Point::Seq(5)), NO_PROGRESS).unwrap().state.state_hash(),
        h.fold(Some(Point::Seq(5)), NO_PROGRESS).unwrap().state.state_hash()
    );
}

#[test]
fn a_directory_without_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = History::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("not a netfold data directory"), "{err}");
}

#[tokio::test]
async fn state_and_diff_from_a_retained_snapshot_match_a_full_fold() {
    let dir = tempfile::tempdir().unwrap();
    write_history(dir.path()).await;
    let at3 = History::open(dir.path()).unwrap().fold(Some(Point::Seq(3)), NO_PROGRESS).unwrap().state;
    {
        let store = Store::open(db_path(dir.path())).unwrap();
        store.log::<engine::Recorded>(EVENTS_LOG).unwrap().save_snapshot(3, at3.encode()).unwrap();
    }
    let h = History::open(dir.path()).unwrap();
    for point in [None, Some(Point::Seq(2)), Some(Point::Seq(3)), Some(Point::Seq(5)), Some(Point::Seq(99))] {
        let quick = h.state_at(point, NO_PROGRESS).unwrap();
        let full = h.fold(point, NO_PROGRESS).unwrap();
        assert_eq!(quick.state.state_hash(), full.state.state_hash(), "{point:?}");
        assert_eq!(quick.last, full.last, "{point:?}");
        // `why` (read from the state at the point) says what a full fold says, provenance and
        // `since` included, for every VLAN desired there.
        for (p, vlans) in &full.state.desired().ports {
            for vlan in vlans.keys() {
                let quick = serde_json::to_value(h.why(p, *vlan, point, NO_PROGRESS).unwrap()).unwrap();
                let slow = serde_json::to_value(replay::history::explain(&full, p, *vlan)).unwrap();
                assert_eq!(quick, slow, "{point:?} {p} {vlan}");
                assert!(
                    quick["since"].is_array()
                        && quick["reasons"][0]["learnt"].as_array().is_some_and(|l| !l.is_empty())
                );
            }
        }
    }
    // diff starts both ends from the snapshot too, and says what a full fold says.
    let removed = h.diff(Point::Seq(4), Point::Seq(6), NO_PROGRESS).unwrap();
    assert_eq!(removed[0].change, DiffChange::Removed { reasons: 1 });
    let added = h.diff(Point::Seq(1), Point::Seq(3), NO_PROGRESS).unwrap();
    assert_eq!(added[0].change, DiffChange::Added { reasons: 2 });
}
