//! `netfold store copy --from DATA --to postgres://…`: opens the data directory read-only (a
//! private copy: a running agent holds it and is refused), connects to the target, and hands
//! both to [`store::copy::copy_to_postgres`], which refuses a non-empty target and verifies
//! every copied log by its head and chain hash. Shows the records copied on a terminal
//! (indicatif; nothing when stderr is not one), then prints what it copied.

use std::path::Path;

use std::io::IsTerminal;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{self, StoreSection};

pub async fn run(from: &Path, to: &StoreSection) -> Result<()> {
    let (pg, warnings) = config::postgres_store(to)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let path = store::layout::db_path(from);
    let source = store::Store::open_read_only(&path).with_context(|| {
        format!("cannot open the data directory {} (is netfold still running on it?)", from.display())
    })?;
    let target = store::PgStore::connect(pg.config, pg.tls)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL {}", pg.url))?;
    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("copying {msg} {bar:40} {pos}/{len} records ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let progress = move |log: &str, done: u64, total: u64| {
        b.set_message(log.to_string());
        b.set_length(total);
        b.set_position(done);
    };
    let copied = store::copy::copy_to_postgres(&source, &target, &progress)
        .await
        .with_context(|| format!("copying {} to PostgreSQL {}", from.display(), pg.url))?;
    bar.finish_and_clear();
    for (name, v) in &copied.logs {
        let tip: String = v.tip.iter().map(|b| format!("{b:02x}")).collect();
        println!("log {name}: {} records, verified, chain tip {tip}", v.head);
    }
    for (name, n) in &copied.tables {
        println!("table {name}: {n} entries");
    }
    println!(
        "copied {} to PostgreSQL {}: {} snapshot(s), {} checkpoint(s)",
        from.display(),
        pg.url,
        copied.snapshots,
        copied.checkpoints
    );
    Ok(())
}
