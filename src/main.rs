//! The `netfold` binary: CLI and wiring only. The work lives in the library crates; this file
//! parses arguments, installs the tracing subscriber, dispatches, and turns any error into one
//! clear paragraph and a non-zero exit.

mod audit;
mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, LogFormat};

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
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
        Command::Log { data, follow, hypervisor, since, kind, json } => {
            audit::log(&data, follow, hypervisor, since, kind, json).await
        }
        Command::State { data, at, switch, json } => audit::state(&data, at, switch, json),
        Command::Why { data, port, vlan, at, json } => audit::why(&data, &port, vlan, at, json),
        Command::Diff { data, from, to } => audit::diff(&data, &from, &to),
        Command::Verify { data } => audit::verify(&data),
        Command::Run { .. } | Command::Demo(_) | Command::Config { .. } | Command::Sim { .. } => {
            anyhow::bail!("this command is not wired yet in this build")
        }
    }
}
