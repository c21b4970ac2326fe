//! The audit trail: every event as one line, human or JSON, filtered by hypervisor, time and
//! event kind.

use serde::{Deserialize, Serialize};

use engine::{Change, Envelope, Event, HypervisorId, UnixMs};

use crate::point::format_time;

/// Which events to show. Empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub hypervisor: Option<HypervisorId>,
    pub since: Option<UnixMs>,
    pub until: Option<UnixMs>,
    /// Event kind by name, case-insensitive (`lost`, `Learnt`).
    pub kind: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &Envelope) -> bool {
        self.hypervisor.as_ref().is_none_or(|h| *h == e.hypervisor)
            && self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at <= t)
            && self.kind.as_ref().is_none_or(|k| k.eq_ignore_ascii_case(e.event.name()))
    }
}

/// One human line: `seq  time  hypervisor  Event  detail`.
pub fn line(e: &Envelope) -> String {
    format!("{:>8}  {}  {:<12} {:<13} {}", e.seq, format_time(e.at), e.hypervisor, e.event.name(), detail(&e.event))
}

fn detail(event: &Event) -> String {
    match event {
        Event::Connected { kind, endpoint } => format!("{kind} at {endpoint}"),
        Event::Learnt { changes } => {
            let (up, rm) = changes.iter().fold((0, 0), |(u, r), c| match c {
                Change::Upsert(_) => (u + 1, r),
                Change::Remove(_) => (u, r + 1),
            });
            let sample: Vec<String> = changes.iter().take(3).map(change_text).collect();
            let more = if changes.len() > 3 { format!(" (+{} more)", changes.len() - 3) } else { String::new() };
            format!("{up} upserted, {rm} removed: {}{more}", sample.join("; "))
        }
        Event::Lost { reason, since } => {
            format!("reason: {reason} (last contact {})", crate::point::format_time(*since))
        }
        Event::Reestablished { outage_ms } => format!("after {:.1} s", *outage_ms as f64 / 1000.0),
        Event::Expired => "grace period ran out: learnt information removed".to_string(),
        Event::RemovalHeld { would_remove, known, sample } => {
            let first: Vec<String> = sample.iter().take(3).map(|k| k.to_string()).collect();
            format!(
                "a full read would remove {would_remove} of {known} facts; held back by the mass-removal guard \
                 (release: netfold release --hypervisor NAME): {}",
                first.join("; ")
            )
        }
        Event::RemovalReleased { by } => format!("held removal let through ({by})"),
        Event::LossAccepted { detail, .. } => format!("loss accepted by the operator (--accept-loss): {detail}"),
        Event::Refused { refusals } => {
            let sample: Vec<String> = refusals.iter().take(3).map(|r| format!("{}: {}", r.what, r.why)).collect();
            let more = if refusals.len() > 3 { format!(" (+{} more)", refusals.len() - 3) } else { String::new() };
            format!("{} not learnt: {}{more}", refusals.len(), sample.join("; "))
        }
        Event::SwitchSaw { switch, view } => {
            let sample: Vec<String> = view
                .macs
                .iter()
                .take(3)
                .map(|m| format!("{} on {}{}", m.mac, m.port, if m.managed { "" } else { " (unmanaged)" }))
                .collect();
            let more = if view.macs.len() > 3 { format!(" (+{} more)", view.macs.len() - 3) } else { String::new() };
            format!(
                "switch {switch} saw {} pNIC MAC(s), {} LLDP neighbour(s), {} bond member(s): {}{more}",
                view.macs.len(),
                view.lldp.len(),
                view.bonds.len(),
                sample.join("; ")
            )
        }
        Event::TiesDisagreed { disagreements } if disagreements.is_empty() => {
            "the port sources of every uplink agree again".to_string()
        }
        Event::TiesDisagreed { disagreements } => {
            let sample: Vec<String> = disagreements
                .iter()
                .take(3)
                .map(|d| {
                    let said: Vec<String> = d.opinions.iter().map(|(s, p)| format!("{s} says {p}")).collect();
                    format!("uplink {}/{}: {}", d.host, d.nic, said.join(", "))
                })
                .collect();
            let more =
                if disagreements.len() > 3 { format!(" (+{} more)", disagreements.len() - 3) } else { String::new() };
            format!("port sources disagree for {} uplink(s): {}{more}", disagreements.len(), sample.join("; "))
        }
    }
}

/// A change in words: `+vnic vm-42/4000 (web-1) on net-120 at host-12`.
pub fn change_text(c: &Change) -> String {
    use engine::Fact;
    match c {
        Change::Remove(k) => format!("-{k}"),
        Change::Upsert(Fact::Host(h)) => format!("+host {} ({})", h.host, h.name),
        Change::Upsert(Fact::Uplink(u)) => match &u.port {
            Some(p) => format!("+uplink {}/{} -> {p}", u.host, u.nic),
            None => format!("+uplink {}/{} (neighbour unknown)", u.host, u.nic),
        },
        Change::Upsert(Fact::Network(n)) => format!("+network {} ({}) on {}: {}", n.network, n.name, n.host, n.vlan),
        Change::Upsert(Fact::Vnic(v)) => format!(
            "+vnic {}/{} ({}) on {} at {}{}{}",
            v.vm,
            v.nic,
            v.vm_name,
            v.network,
            v.host,
            if v.powered_on { "" } else { ", powered off" },
            if v.connected { "" } else { ", disconnected" }
        ),
    }
}

/// The JSON-lines form of an event (`log --json`, the agent's `/log`).
#[derive(Serialize, Deserialize)]
pub struct JsonLine {
    pub seq: u64,
    pub at: UnixMs,
    pub time: String,
    pub hypervisor: HypervisorId,
    pub kind: String,
    pub schema: u16,
    /// Hash of the previous record, hex.
    pub prev: String,
    pub event: Event,
}

pub fn json(e: &Envelope) -> String {
    let line = JsonLine {
        seq: e.seq,
        at: e.at,
        time: format_time(e.at),
        hypervisor: e.hypervisor.clone(),
        kind: e.event.name().to_string(),
        schema: e.schema,
        prev: hex::encode(e.prev),
        event: e.event.clone(),
    };
    // Serializing plain data with string keys cannot fail.
    serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Reads back a line [`json`] wrote.
pub fn from_json(line: &str) -> Result<Envelope, String> {
    let l: JsonLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let mut prev = [0u8; 32];
    hex::decode_to_slice(&l.prev, &mut prev).map_err(|e| format!("prev: {e}"))?;
    Ok(Envelope { seq: l.seq, at: l.at, hypervisor: l.hypervisor, schema: l.schema, prev, event: l.event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_round_trip() {
        let e = Envelope {
            seq: 7,
            at: 1_700_000_000_000,
            hypervisor: HypervisorId::new("vc-east").unwrap(),
            schema: 1,
            prev: [0xab; 32],
            event: Event::Lost { reason: "timeout".into(), since: 1_699_999_985_000 },
        };
        assert_eq!(from_json(&json(&e)).unwrap(), e);
        assert!(from_json("{").is_err());
    }

    #[test]
    fn every_filter_field_narrows_and_the_time_bounds_are_inclusive() {
        let env = |hv: &str, at: UnixMs, event: Event| Envelope {
            seq: 1,
            at,
            hypervisor: HypervisorId::new(hv).unwrap(),
            schema: 1,
            prev: [0; 32],
            event,
        };
        let events = [
            env("vc-east", 1_000, Event::Expired),
            env("vc-east", 2_000, Event::Lost { reason: "x".into(), since: 1_500 }),
            env("xen217", 2_000, Event::Reestablished { outage_ms: 1 }),
            env("xen217", 3_000, Event::Lost { reason: "y".into(), since: 2_500 }),
        ];
        let shown = |f: &Filter| -> Vec<usize> { (0..events.len()).filter(|&i| f.matches(&events[i])).collect() };
        assert_eq!(shown(&Filter::default()), [0, 1, 2, 3]);
        let xen = Some(HypervisorId::new("xen217").unwrap());
        assert_eq!(shown(&Filter { hypervisor: xen.clone(), ..Filter::default() }), [2, 3]);
        assert_eq!(shown(&Filter { since: Some(2_000), ..Filter::default() }), [1, 2, 3]);
        assert_eq!(shown(&Filter { until: Some(2_000), ..Filter::default() }), [0, 1, 2]);
        assert_eq!(shown(&Filter { kind: Some("LOST".into()), ..Filter::default() }), [1, 3]);
        let all = Filter { hypervisor: xen, since: Some(2_000), until: Some(2_999), kind: Some("lost".into()) };
        assert!(shown(&all).is_empty(), "every field must hold at once");
    }

    #[test]
    fn switch_sightings_and_disagreements_read_as_sentences() {
        use engine::discovery::{Disagreement, MacSighting, SwitchView};
        let view = SwitchView {
            macs: vec![
                MacSighting { mac: "02:00:00:00:00:01".into(), port: "Ethernet1".into(), managed: true },
                MacSighting { mac: "02:00:00:00:00:02".into(), port: "Ethernet48".into(), managed: false },
            ],
            ..SwitchView::default()
        };
        let saw = detail(&Event::SwitchSaw { switch: "tor1".into(), view });
        assert_eq!(
            saw,
            "switch tor1 saw 2 pNIC MAC(s), 0 LLDP neighbour(s), 0 bond member(s): 02:00:00:00:00:01 on Ethernet1; \
             02:00:00:00:00:02 on Ethernet48 (unmanaged)"
        );
        let d = Disagreement {
            host: "host-1".into(),
            nic: "vmnic0".into(),
            opinions: vec![
                (engine::NeighbourSource::Cdp, "tor1:Ethernet1".parse().unwrap()),
                (engine::NeighbourSource::MacTable, "tor1:Ethernet2".parse().unwrap()),
            ],
        };
        assert_eq!(
            detail(&Event::TiesDisagreed { disagreements: vec![d] }),
            "port sources disagree for 1 uplink(s): uplink host-1/vmnic0: hypervisor CDP says tor1:Ethernet1, \
             switch MAC table says tor1:Ethernet2"
        );
        assert_eq!(
            detail(&Event::TiesDisagreed { disagreements: vec![] }),
            "the port sources of every uplink agree again"
        );
    }
}
