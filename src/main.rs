//! The `netfold` binary: CLI and wiring only. The work lives in the library crates; this file
//! parses arguments, installs the tracing subscriber, dispatches, and turns any error into one
//! clear paragraph and a non-zero exit.

/// `println!` that stops quietly when the reader went away (`netfold state | head`) instead of
/// panicking on the broken pipe.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod agent;
mod audit;
mod cli;
mod cluster;
mod config;
mod demo;
mod generate;
mod health;
mod http;
mod metrics;
mod progress;
mod run;
mod sim;
mod source;
mod status;
mod store_copy;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, LogFormat};

/// netfold decodes and folds millions of small strings (the fields of its events); with glibc's
/// allocator, allocation is about a third of reading the log (`cargo bench -p store --bench log`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(progress::LogWriter).with_ansi(ansi);
    match format {
        LogFormat::Human => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` may set the format in its config; a bad config is reported by `run` itself.
    let from_config = match &cli.command {
        Command::Run { config, .. } => config::load(config).ok().and_then(|p| p.log_format),
        _ => None,
    };
    init_tracing(cli.log_format.or(from_config).unwrap_or(LogFormat::Human));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netfold: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One paragraph: the outermost context, then each cause.
            let causes: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("netfold: {}", causes.join(": "));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Log { data, follow, hypervisor, switch, since, until, kind, json } => {
            let filter = audit::filter(hypervisor, (since, until), kind)?;
            match (switch, follow) {
                (Some(switch), true) => audit::follow_switch(&data.agent, &switch, &filter, json).await,
                (Some(switch), false) => audit::switch_log(&data, &switch, &filter, json).await,
                (None, true) => audit::follow(&data.agent, &filter, json).await,
                (None, false) => audit::log(&data, &filter, json).await,
            }
        }
        Command::State { data, at, switch, json } => audit::state(&data, at, switch, json).await,
        Command::Why { data, port, vlan, at, json } => audit::why(&data, &port, vlan, at, json).await,
        Command::Diff { data, from, to } => audit::diff(&data, &from, &to).await,
        Command::Verify { data } => audit::verify(&data).await,
        Command::Release { hypervisor, agent } => audit::release(&agent, &hypervisor).await,
        Command::Status { agent, json } => status::run(&agent, json).await,
        Command::Run { config, accept_loss } => run::run(&config, accept_loss).await,
        Command::Config { command: cli::ConfigCommand::Check { config } } => run::check(&config),
        Command::Store {
            command: cli::StoreCommand::Copy { from, to, password_file, ca_file, tls, allow_plaintext },
        } => {
            let tls =
                (tls || ca_file.is_some()).then(|| adapters::common::TlsOptions { ca_file, ..Default::default() });
            let section = config::StoreSection {
                kind: Some("postgres".into()),
                url: Some(to),
                password_file,
                tls,
                allow_plaintext,
            };
            store_copy::run(&from, &section).await
        }
        Command::Sim { sim } => sim::run(sim).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Generate { what } => generate::run(what),
    }
}
