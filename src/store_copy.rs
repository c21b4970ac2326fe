//! `netfold store copy --from DATA --to postgres://…`: opens the data directory read-only (a
//! private copy: a running agent holds it and is refused), connects to the target, and hands
//! both to [`store::copy::copy_to_postgres`], which refuses a non-empty target and verifies
//! every copied log by its head and chain hash. Prints what it copied.

use std::path::Path;

use anyhow::{Context, Result};

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
    let copied = store::copy::copy_to_postgres(&source, &target)
        .await
        .with_context(|| format!("copying {} to PostgreSQL {}", from.display(), pg.url))?;
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
