//! Progress on a terminal (indicatif), nothing when stderr is not one: the first learn of each
//! hypervisor while `netfold run` starts (a large vCenter takes minutes to read), and the
//! operator log written around the bars ([`LogWriter`]) so neither garbles the other. The
//! audit commands' replay bars are in [`crate::audit`].

use std::io::{IsTerminal, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use adapters::driver::LinkState;
use engine::runtime::SharedState;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::metrics::Metrics;

/// The bars, once [`bars`] made them (only on a terminal).
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// The shared bars, when stderr is a terminal; `None` otherwise (then nothing is drawn).
pub fn bars() -> Option<&'static MultiProgress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(BARS.get_or_init(MultiProgress::new))
}

/// The operator log's writer: stderr, with the bars (if any) lifted while a line is written.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BARS.get() {
            Some(bars) => bars.suspend(|| std::io::stderr().write_all(buf)).map(|()| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// One line per hypervisor until its first inventory is read and handed to the engine:
/// connecting, retrying with the last error, reading — then how many facts it gave, and how
/// long it took. Returns once every adapter has been live once (or at once when not on a
/// terminal).
pub async fn first_learn(metrics: Arc<Metrics>, state: SharedState) {
    let Some(bars) = bars() else { return };
    let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut pending: Vec<_> = metrics
        .adapters()
        .into_iter()
        .map(|(id, kind, _)| {
            let bar =
                bars.add(ProgressBar::new_spinner().with_style(style.clone()).with_prefix(format!("{id} ({kind})")));
            bar.enable_steady_tick(Duration::from_millis(120));
            (id, bar, None)
        })
        .collect();
    while !pending.is_empty() {
        let health = metrics.adapters();
        pending.retain_mut(|(id, bar, live_since)| {
            let Some((_, _, h)) = health.iter().find(|(i, _, _)| i == id) else { return false };
            match h.state {
                LinkState::Live => {
                    // The inventory is with the engine; its facts count once they are durable
                    // (an empty inventory stays at none).
                    let facts = state.read(|s| s.facts_of(id).map_or(0, |f| f.len()));
                    let since = *live_since.get_or_insert_with(Instant::now);
                    if facts == 0 && since.elapsed() < Duration::from_secs(3) {
                        bar.set_message(format!("read from {}; recording it", h.endpoint));
                        return true;
                    }
                    bar.finish_with_message(format!("learnt: {facts} facts from {} in", h.endpoint));
                    false
                }
                LinkState::Connecting if h.last_contact_ms.is_some() => {
                    bar.set_message(format!("reading the inventory from {}", h.endpoint));
                    true
                }
                LinkState::Connecting => {
                    bar.set_message(format!("connecting to {}", h.endpoint));
                    true
                }
                LinkState::Retrying | LinkState::Failing => {
                    let why = h.last_error.as_deref().unwrap_or("no answer");
                    bar.set_message(format!("attempt {} failed, retrying: {why}", h.attempt));
                    true
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
