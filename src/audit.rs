//! `netfold log | state | why | diff | verify | release`: each asks its [`Source`] — the data
//! directory (read-only: a private copy, never written) or, while a running agent holds it, the
//! agent's HTTP API ([`crate::http`]) — for data, then renders it here. Both sources compute
//! with the same functions (`state_of`, `replay`'s `why`, `diff` and `verify`) and return the
//! same types, so the output is the same either way. A log that lost acknowledged records still
//! shows what is left, then fails with what was lost (non-zero exit): never a silently shorter
//! history. `netfold log --switch NAME` prints the switch audit instead: intents, applied
//! changes, failures, settlements, refusals and held removals, each with its cause.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use engine::projector::{Held, State, Status, UplinkTie};
use engine::reconciler::{AuditEntry, SwitchRecord};
use engine::{HypervisorId, Reason, SwitchPort, UnixMs, VlanId};
use indicatif::{ProgressBar, ProgressStyle};
use replay::audit::{self, Filter};
use replay::history::{DiffLine, Why};
use replay::point::format_time;
use replay::verify::Report;
use replay::{History, Point};
use serde::{Deserialize, Serialize};

use store::Log;

use crate::cli::{AgentArgs, DataDir};
use crate::source::{Agent, Source};
use store::layout::SWITCH_AUDIT_LOG;

/// Fails when the history is incomplete (acknowledged records lost), after the output.
fn complete(h: &History) -> Result<()> {
    match h.loss() {
        Some(e) => Err(anyhow::Error::new(e).context("the history shown is incomplete")),
        None => Ok(()),
    }
}

fn point(s: &Option<String>) -> Result<Option<Point>> {
    s.as_deref().map(|s| s.parse::<Point>().map_err(anyhow::Error::msg)).transpose()
}

/// A point as the agent's API takes it: a sequence number, or an RFC 3339 time in UTC (a
/// relative time is resolved here, on the caller's clock).
pub fn point_query(p: Point) -> String {
    match p {
        Point::Seq(n) => n.to_string(),
        Point::Time(t) => format_time(t),
    }
}

/// A progress bar on a terminal, nothing when piped; returns the callback replay calls.
fn progress() -> (ProgressBar, impl Fn(u64, u64)) {
    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("replaying {bar:40} {pos}/{len} events ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    (bar, move |seq, head| {
        b.set_length(head);
        b.set_position(seq);
    })
}

/// A spinner on a terminal while the agent works (it reports no progress), nothing when piped.
fn waiting(agent: &Agent, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(format!("{what} on the agent at {}", agent.url()));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// The audit filter from the command line: `(since, until)` are times ([`replay::point::parse_time`]).
pub fn filter(
    hypervisor: Option<String>,
    (since, until): (Option<String>, Option<String>),
    kind: Option<String>,
) -> Result<Filter> {
    let now = std::time::SystemTime::now();
    let time = |flag: &str, s: Option<String>| -> Result<Option<engine::UnixMs>> {
        s.map(|s| replay::point::parse_time(&s, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))).transpose()
    };
    Ok(Filter {
        hypervisor: hypervisor.map(HypervisorId::new).transpose()?,
        since: time("since", since)?,
        until: time("until", until)?,
        kind,
    })
}

/// The filter as the agent's `/log` takes it (times in unix ms).
fn filter_query(filter: &Filter) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(h) = &filter.hypervisor {
        q.push(("hypervisor", h.to_string()));
    }
    if let Some(k) = &filter.kind {
        q.push(("kind", k.clone()));
    }
    if let Some(t) = filter.since {
        q.push(("since", t.to_string()));
    }
    if let Some(t) = filter.until {
        q.push(("until", t.to_string()));
    }
    q
}

fn print_event(out: &mut impl Write, env: &engine::Envelope, json: bool) -> bool {
    let line = if json { audit::json(env) } else { audit::line(env) };
    writeln!(out, "{line}").is_ok()
}

/// The audit trail: from the data directory, or page by page from the agent's `/log`.
pub async fn log(data: &DataDir, filter: &Filter, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match Source::resolve(data)? {
        Source::Local(local) => {
            let h = local.open().await?;
            for env in h.events(1) {
                let env = env?;
                if filter.matches(&env) && !print_event(&mut out, &env, json) {
                    return Ok(()); // reader went away (e.g. `| head`)
                }
            }
            complete(&h)
        }
        Source::Agent(agent) => {
            let base = filter_query(filter);
            let mut pages = Pages::new(&agent, "/log", base);
            while let Some(body) = pages.next().await? {
                for line in body.lines() {
                    let env = audit::from_json(line)
                        .map_err(|e| anyhow::anyhow!("the agent sent a malformed /log line: {e}"))?;
                    if !print_event(&mut out, &env, json) {
                        return Ok(());
                    }
                }
            }
            Ok(())
        }
    }
}

/// The pages of a paged agent answer (`/log`, `/switch-log` with `wait=false`): the first
/// fixes the head it reads to (`Netfold-Head`), each names where the next starts
/// (`Netfold-Next`; none after the last).
struct Pages<'a> {
    agent: &'a Agent,
    path: &'static str,
    query: Vec<(&'static str, String)>,
    from: Option<u64>,
    to: Option<u64>,
}

impl<'a> Pages<'a> {
    fn new(agent: &'a Agent, path: &'static str, query: Vec<(&'static str, String)>) -> Self {
        Pages { agent, path, query, from: Some(1), to: None }
    }

    async fn next(&mut self) -> Result<Option<String>> {
        let Some(from) = self.from else { return Ok(None) };
        let mut q = self.query.clone();
        q.push(("from", from.to_string()));
        q.push(("wait", "false".into()));
        if let Some(to) = self.to {
            q.push(("to", to.to_string()));
        }
        let (body, headers) = self.agent.get_page(self.path, &q).await?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        self.to = self.to.or(header(crate::http::HEAD_HEADER));
        self.from = header(crate::http::NEXT_HEADER);
        Ok(Some(body))
    }
}

/// One switch audit record for people: `seq  time  switch  kind  what (cause)`.
pub fn switch_line(seq: u64, r: &SwitchRecord) -> String {
    format!("{seq:>8}  {}  {:<10} {:<8} {}", format_time(r.at), r.switch, r.entry.kind(), r.entry)
}

/// One switch audit record as a JSON line: the entry as stored plus its kind and text.
pub fn switch_json(seq: u64, r: &SwitchRecord) -> serde_json::Value {
    serde_json::json!({
        "seq": seq,
        "at": r.at,
        "time": format_time(r.at),
        "switch": r.switch,
        "kind": r.entry.kind(),
        "text": r.entry.to_string(),
        "entry": r.entry,
    })
}

/// Reads back a line [`switch_json`] wrote.
fn switch_from_json(line: &str) -> Result<(u64, SwitchRecord)> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| anyhow::anyhow!("the agent sent a malformed /switch-log line: {e}"))?;
    let seq = v["seq"].as_u64().context("a /switch-log line without seq")?;
    let record = SwitchRecord {
        at: v["at"].as_u64().context("a /switch-log line without at")?,
        switch: v["switch"].as_str().context("a /switch-log line without switch")?.to_string(),
        entry: serde_json::from_value(v["entry"].clone())
            .map_err(|e| anyhow::anyhow!("the agent sent a malformed /switch-log entry: {e}"))?,
    };
    Ok((seq, record))
}

/// Whether a switch audit record passes the command line's filter (`--kind` names an entry kind
/// here: intent, applied, already, failed, settled, refused, held, dry-run; `--hypervisor` keeps
/// entries one of whose reasons is that hypervisor's).
fn switch_matches(filter: &Filter, r: &SwitchRecord) -> bool {
    let cause = match &r.entry {
        AuditEntry::Intent { cause, .. }
        | AuditEntry::Done { cause, .. }
        | AuditEntry::DryRun { cause, .. }
        | AuditEntry::Refused { cause, .. } => Some(cause),
        AuditEntry::Held { .. } | AuditEntry::Settled { .. } => None,
    };
    filter.since.is_none_or(|t| r.at >= t)
        && filter.until.is_none_or(|t| r.at <= t)
        && filter.kind.as_ref().is_none_or(|k| k.eq_ignore_ascii_case(r.entry.kind()))
        && filter
            .hypervisor
            .as_ref()
            .is_none_or(|h| cause.is_some_and(|c| c.reasons.iter().any(|reason| reason.hypervisor == *h)))
}

/// One long-polled page of JSON lines from the running agent's `/{path}?from=FROM`.
async fn agent_page(agent: &Agent, path: &str, from: u64) -> Result<String> {
    agent
        .get_text(path, &[("from", from.to_string())], Some(std::time::Duration::from_secs(30)))
        .await
        .context("--follow reads the running agent; without one, drop --follow to read the data directory")
}

/// The switch audit of `switch` from the running agent, following new entries until interrupted.
pub async fn follow_switch(agent: &AgentArgs, switch: &str, filter: &Filter, json: bool) -> Result<()> {
    let agent = Agent::from_args(agent)?;
    let mut from = 1;
    let mut out = std::io::stdout().lock();
    loop {
        let body = agent_page(&agent, "/switch-log", from).await?;
        for line in body.lines() {
            let (seq, record) = switch_from_json(line)?;
            from = seq + 1;
            if record.switch != switch || !switch_matches(filter, &record) {
                continue;
            }
            let text = if json { line.to_string() } else { switch_line(seq, &record) };
            if writeln!(out, "{text}").is_err() {
                return Ok(());
            }
        }
    }
}

/// The switch audit of `switch`: from the data directory, or from the agent's `/switch-log`.
pub async fn switch_log(data: &DataDir, switch: &str, filter: &Filter, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut seen = false;
    let mut print = |seq: u64, record: &SwitchRecord| -> bool {
        if record.switch != switch {
            return true;
        }
        seen = true;
        if !switch_matches(filter, record) {
            return true;
        }
        let line = if json { switch_json(seq, record).to_string() } else { switch_line(seq, record) };
        writeln!(out, "{line}").is_ok() // false: the reader went away (e.g. `| head`)
    };
    let from = match Source::resolve(data)? {
        Source::Local(local) => {
            let h = local.open().await?;
            let log = match h.store().log_on_loss::<SwitchRecord>(SWITCH_AUDIT_LOG, store::OnLoss::Refuse).await {
                Ok(log) => Some(log),
                // On PostgreSQL a log nothing was appended to does not exist (sled makes it).
                Err(store::Error::NoLog(_)) => None,
                Err(e) => {
                    return Err(anyhow::Error::new(e))
                        .with_context(|| format!("cannot open the switch audit log in {}", local.place()))
                }
            };
            for entry in log.iter().flat_map(|log| log.read(1)) {
                let entry = entry.with_context(|| "cannot read the switch audit log")?;
                if !print(entry.seq, &entry.record) {
                    return Ok(());
                }
            }
            local.place()
        }
        Source::Agent(agent) => {
            let mut pages = Pages::new(&agent, "/switch-log", vec![("switch", switch.to_string())]);
            while let Some(body) = pages.next().await? {
                for line in body.lines() {
                    let (seq, record) = switch_from_json(line)?;
                    if !print(seq, &record) {
                        return Ok(());
                    }
                }
            }
            format!("the agent at {}", agent.url())
        }
    };
    if !seen {
        eprintln!("no switch audit entries for switch `{switch}` in {from}");
    }
    Ok(())
}

/// The audit trail from the running agent, following new events until interrupted.
pub async fn follow(agent: &AgentArgs, filter: &Filter, json: bool) -> Result<()> {
    let agent = Agent::from_args(agent)?;
    let mut from = 1;
    let mut out = std::io::stdout().lock();
    loop {
        let body = agent_page(&agent, "/log", from).await?;
        for line in body.lines() {
            let env =
                audit::from_json(line).map_err(|e| anyhow::anyhow!("the agent sent a malformed /log line: {e}"))?;
            from = env.seq + 1;
            if filter.matches(&env) && !print_event(&mut out, &env, json) {
                return Ok(());
            }
        }
    }
}

/// `netfold release`: asks the running agent to let `hypervisor`'s held removal through.
pub async fn release(agent: &AgentArgs, hypervisor: &str) -> Result<()> {
    let agent = Agent::from_args(agent)?;
    let body = agent
        .post("/release", &[("hypervisor", hypervisor.to_string())])
        .await
        .context("the release was not done (release goes through the running agent)")?;
    let n = body.get("released").and_then(|n| n.as_u64()).unwrap_or(0);
    outln!("{hypervisor}: released a held removal of {n} facts; it applies at the next full read (asked for now)");
    Ok(())
}

/// The desired state and hypervisor statuses at one point: what `state` prints and the agent's
/// `/state` returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateView {
    /// The state's sequence number (the last record folded; 0 before the first).
    pub seq: u64,
    /// The last record folded, `(seq, unix ms)`; `None` before the first.
    pub last: Option<(u64, UnixMs)>,
    pub hypervisors: Vec<HypervisorRow>,
    pub ports: Vec<PortRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HypervisorRow {
    pub name: HypervisorId,
    pub kind: Option<String>,
    pub status: Status,
    pub held: Option<Held>,
    pub facts: usize,
    /// How each uplink is tied to a switch port, and what every source says.
    pub ties: Vec<UplinkTie>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortRow {
    /// `SWITCH:PORT`.
    pub port: String,
    pub vlans: Vec<VlanRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VlanRow {
    pub vlan: VlanId,
    pub reasons: Vec<Reason>,
    /// The first three reasons in words, with the names the facts give.
    pub labels: Vec<String>,
}

/// Most reasons a desired-state row names in words.
const LABELS: usize = 3;

impl StateView {
    /// The view of `st` as of `last`, the ports of `switch` only when given.
    pub fn of(st: &State, last: Option<(u64, UnixMs)>, switch: Option<&str>) -> StateView {
        let hypervisors = st
            .hypervisors()
            .map(|(id, s)| HypervisorRow {
                name: id.clone(),
                kind: s.kind.map(|k| k.to_string()),
                status: s.status,
                held: s.held,
                facts: st.facts_of(id).map_or(0, |f| f.len()),
                ties: st.ties_of(id),
            })
            .collect();
        let ports = st
            .desired()
            .ports
            .iter()
            .filter(|(p, _)| switch.is_none_or(|s| s == p.switch))
            .map(|(p, vlans)| PortRow {
                port: p.to_string(),
                vlans: vlans
                    .iter()
                    .map(|(v, reasons)| VlanRow {
                        vlan: *v,
                        reasons: reasons.iter().cloned().collect(),
                        labels: reasons.iter().take(LABELS).map(|r| label(st, r)).collect(),
                    })
                    .collect(),
            })
            .collect();
        StateView { seq: st.seq(), last, hypervisors, ports }
    }
}

/// A reason in words: human names where the facts have them, ids otherwise.
fn label(st: &State, r: &Reason) -> String {
    let facts = st.facts_of(&r.hypervisor);
    let host = facts.and_then(|f| f.host(&r.host)).map_or(r.host.as_str(), |h| h.name.as_str());
    let net = facts.and_then(|f| f.network(&r.host, &r.network)).map_or(r.network.as_str(), |n| n.name.as_str());
    match &r.vnic {
        Some(v) => format!("{}: VM {} on {net} at {host}", r.hypervisor, v.vm_name),
        None => format!("{}: network {net} at {host}", r.hypervisor),
    }
}

/// The state at `at` (the head when `None`) from a history, as a view.
pub fn state_of(
    h: &History,
    at: Option<Point>,
    switch: Option<&str>,
    progress: replay::history::Progress<'_>,
) -> Result<StateView> {
    let folded = h.state_at(at, progress)?;
    Ok(StateView::of(&folded.state, folded.last, switch))
}

pub async fn state(data: &DataDir, at: Option<String>, switch: Option<String>, json: bool) -> Result<()> {
    let at = point(&at)?;
    match Source::resolve(data)? {
        Source::Local(local) => {
            let h = local.open().await?;
            let (bar, cb) = progress();
            let view = state_of(&h, at, switch.as_deref(), &cb)?;
            bar.finish_and_clear();
            render_state(&view, json)?;
            complete(&h)
        }
        Source::Agent(agent) => {
            let mut q = Vec::new();
            if let Some(p) = at {
                q.push(("at", point_query(p)));
            }
            if let Some(s) = &switch {
                q.push(("switch", s.clone()));
            }
            let view: StateView = agent.get("/state", &q).await?;
            render_state(&view, json)
        }
    }
}

fn render_state(view: &StateView, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(view)?);
        return Ok(());
    }
    match view.last {
        Some((seq, t)) => outln!("State as of record {seq} ({})", format_time(t)),
        None => outln!("State before the first record"),
    }
    print_statuses(&view.hypervisors);
    print_ports(&view.ports);
    Ok(())
}

fn print_statuses(rows: &[HypervisorRow]) {
    outln!("\nHypervisors:");
    for r in rows {
        let id = &r.name;
        let kind = r.kind.as_deref().unwrap_or("?");
        let status = match r.status {
            Status::Live => "live".to_string(),
            Status::Lost { since } => format!("lost since {}", format_time(since)),
            Status::Expired => "expired".to_string(),
        };
        let tied = r.ties.iter().filter(|t| t.port.is_some()).count();
        let disagree = r.ties.iter().filter(|t| t.disagree).count();
        let ties = format!("{tied}/{} uplinks tied, {disagree} disagree", r.ties.len());
        let held = r.held.map_or(String::new(), |h| {
            format!(
                "  HELD: removal of {} facts since {} (seq {}; netfold release --hypervisor {id})",
                h.would_remove,
                format_time(h.since),
                h.seq
            )
        });
        outln!("  {id:<14} {kind:<11} {status:<36} {:<11} {ties}{held}", format!("{} facts", r.facts));
    }
}

/// The desired-state table of `st`: port, VLANs, and a summary of the reasons.
pub fn print_desired(st: &State, switch: Option<&str>) {
    print_ports(&StateView::of(st, None, switch).ports);
}

fn print_ports(ports: &[PortRow]) {
    outln!("\n{:<22} {:>5}  reasons", "port", "vlan");
    let mut any = false;
    for port in ports {
        for v in &port.vlans {
            any = true;
            let n = v.reasons.len();
            let more = if n > v.labels.len() { format!(" (+{} more)", n - v.labels.len()) } else { String::new() };
            outln!("{:<22} {:>5}  {}{}", port.port, v.vlan.get(), v.labels.join(", "), more);
        }
    }
    if !any {
        outln!("(no VLAN is desired on any port)");
    }
}

pub async fn why(data: &DataDir, port: &str, vlan: u16, at: Option<String>, json: bool) -> Result<()> {
    let port: SwitchPort = port.parse()?;
    let vlan = VlanId::new(vlan)?;
    let at = point(&at)?;
    match Source::resolve(data)? {
        Source::Local(local) => {
            let h = local.open().await?;
            let (bar, cb) = progress();
            let why = h.why(&port, vlan, at, &cb)?;
            bar.finish_and_clear();
            render_why(&why, json)?;
            complete(&h)
        }
        Source::Agent(agent) => {
            let mut q = vec![("port", port.to_string()), ("vlan", vlan.get().to_string())];
            if let Some(p) = at {
                q.push(("at", point_query(p)));
            }
            let bar = waiting(&agent, "explaining");
            let why = agent.get::<Why>("/why", &q).await;
            bar.finish_and_clear();
            let why = why?;
            render_why(&why, json)
        }
    }
}

fn render_why(why: &Why, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(why)?);
        return Ok(());
    }
    let (port, vlan) = (&why.port, why.vlan);
    let when =
        why.at.map_or("before the first record".to_string(), |(s, t)| format!("as of record {s} ({})", format_time(t)));
    if why.reasons.is_empty() {
        outln!("VLAN {vlan} is not desired on {port} {when}: no VM or network needs it there.");
        return Ok(());
    }
    let since = why.since.map_or(String::new(), |(s, t)| format!(", since record {s} ({})", format_time(t)));
    outln!("VLAN {vlan} is on {port} {when}{since}, because of {} reason(s):", why.reasons.len());
    for e in &why.reasons {
        let r = &e.reason;
        match &r.vnic {
            Some(v) => outln!(
                "- VM {} ({}) NIC {} on network {} at host {} of hypervisor {}",
                v.vm_name,
                v.vm,
                v.nic,
                r.network,
                r.host,
                r.hypervisor
            ),
            None => outln!(
                "- network {} at host {} of hypervisor {} (VM-less networks count)",
                r.network,
                r.host,
                r.hypervisor
            ),
        }
        for t in &e.ties {
            let source = t.source.map_or("an unknown source".to_string(), |s| s.to_string());
            let others: Vec<String> = t.opinions.iter().map(|(s, p)| format!("{s}: {p}")).collect();
            let note = if t.disagree { format!(" (sources DISAGREE: {})", others.join(", ")) } else { String::new() };
            println!("    uplink {}/{} is tied to {port} by {source}{note}", r.host, t.nic);
        }
        for l in &e.learnt {
            outln!("    {} learnt at record {} ({})", l.fact, l.seq, format_time(l.at));
        }
    }
    Ok(())
}

pub async fn diff(data: &DataDir, from: &str, to: &str) -> Result<()> {
    let (a, b) = (from.parse::<Point>().map_err(anyhow::Error::msg)?, to.parse::<Point>().map_err(anyhow::Error::msg)?);
    match Source::resolve(data)? {
        Source::Local(local) => {
            let h = local.open().await?;
            let (bar, cb) = progress();
            let lines = h.diff(a, b, &cb)?;
            bar.finish_and_clear();
            render_diff(a, b, &lines);
            complete(&h)
        }
        Source::Agent(agent) => {
            let bar = waiting(&agent, "comparing");
            let lines = agent.get::<Vec<DiffLine>>("/diff", &[("from", point_query(a)), ("to", point_query(b))]).await;
            bar.finish_and_clear();
            let lines = lines?;
            render_diff(a, b, &lines);
            Ok(())
        }
    }
}

fn render_diff(a: Point, b: Point, lines: &[DiffLine]) {
    if lines.is_empty() {
        outln!("Desired state is the same at {a} and {b}.");
    }
    for l in lines {
        use replay::history::DiffChange::*;
        match l.change {
            Added { reasons } => outln!("+ {} vlan {} ({reasons} reasons)", l.port, l.vlan),
            Removed { reasons } => outln!("- {} vlan {} (had {reasons} reasons)", l.port, l.vlan),
            Reasons { before, after } => outln!("~ {} vlan {} (reasons {before} -> {after})", l.port, l.vlan),
        }
    }
}

pub async fn verify(data: &DataDir) -> Result<()> {
    let report = match Source::resolve(data)? {
        Source::Local(local) => {
            let h = local.open().await?;
            let (bar, cb) = progress();
            let report = replay::verify::verify(&h, &cb).context("verification FAILED")?;
            bar.finish_and_clear();
            report
        }
        Source::Agent(agent) => {
            let bar = waiting(&agent, "verifying the log");
            let report = agent.get::<Report>("/verify", &[]).await;
            bar.finish_and_clear();
            report.context("verification FAILED")?
        }
    };
    outln!(
        "verify OK: {} records, hash chain intact (tip {}), every record decodes, replay deterministic ({}; state {})",
        report.records,
        report.tip.get(..16).unwrap_or(&report.tip),
        match (report.snapshot_seq, report.older_snapshot) {
            (Some(s), _) => format!("snapshot at {s} + tail = full fold"),
            (None, Some((s, f))) =>
                format!("the snapshot at {s} is of format {f}, older than this build's: not compared"),
            (None, None) => "no snapshot to compare".to_string(),
        },
        report.state_hash.get(..16).unwrap_or(&report.state_hash),
    );
    Ok(())
}
