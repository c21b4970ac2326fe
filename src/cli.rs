//! The command line: every subcommand and its flags (clap derive). Only parsing lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "netfold",
    version,
    about = "Keeps a switch's VLANs in step with the VMs on the hypervisors behind it."
)]
pub struct Cli {
    /// Log output format (default: the config's `log_format`, else human).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: a session per hypervisor, a reconciler per switch, until SIGINT/SIGTERM.
    Run {
        #[arg(short, long, default_value = "netfold.toml")]
        config: PathBuf,
        /// Start even though the log lost acknowledged records (`verify` names them): the loss
        /// is appended to the log as a `LossAccepted` event and netfold continues from what is
        /// left. Without it, `run` refuses such a log. For a sled data directory: on PostgreSQL
        /// it is refused (restore the database from its backups).
        #[arg(long)]
        accept_loss: bool,
    },
    /// Run the embedded demo: simulators and netfold over loopback, a scripted scenario.
    Demo(DemoArgs),
    /// The audit trail: one line per event.
    Log {
        #[command(flatten)]
        data: DataDir,
        /// Keep printing new events as the running agent appends them (always read from the
        /// agent: `--agent`, else the config's `[http] listen`).
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        hypervisor: Option<String>,
        /// The switch audit of this switch instead of the event log: intents, applied changes,
        /// failures, settlements, refusals and held removals, each with its cause (`--kind`
        /// then takes intent, applied, already, failed, settled, refused, held or dry-run).
        #[arg(long)]
        switch: Option<String>,
        /// Only events at or after this time: RFC 3339 with an offset (2026-11-25T10:00:00Z,
        /// 2026-11-25T12:00:00+02:00) or a duration before now (15m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// Only events at or before this time (as --since).
        #[arg(long)]
        until: Option<String>,
        /// Only events of this kind (Connected, Learnt, Lost, Reestablished, Expired).
        #[arg(long)]
        kind: Option<String>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The desired state and hypervisor statuses, now or at any point in history.
    State {
        #[command(flatten)]
        data: DataDir,
        /// A sequence number or an RFC 3339 time.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        switch: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Why a VLAN is (or was) on a port: the reasons and the events behind them.
    Why {
        #[command(flatten)]
        data: DataDir,
        /// SWITCH:PORT, e.g. tor1:eth1.
        #[arg(long)]
        port: String,
        #[arg(long)]
        vlan: u16,
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// What changed in desired state between two points.
    Diff {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Check the hash chain, every record, and replay determinism. Exit code 0 only if all hold.
    Verify {
        #[command(flatten)]
        data: DataDir,
    },
    /// Let a mass removal held back by the guard through (on the running agent): the
    /// hypervisor is read again and what it no longer reports is removed.
    Release {
        /// The hypervisor whose held removal to release.
        #[arg(long)]
        hypervisor: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// One screen on the running agent: per hypervisor its session, last contact, grace left,
    /// facts, held removals and errors; per switch its last cycle, pending and failed
    /// operations, owned VLANs and drift repairs.
    Status {
        #[command(flatten)]
        agent: AgentArgs,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The store: move a data directory's history into PostgreSQL.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Run a simulator on its own.
    Sim {
        #[command(subcommand)]
        sim: SimCommand,
    },
    /// Write the man pages or a shell's completions generated from this CLI (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: GenerateCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy a data directory's store (the event log, the switch audit log, their snapshots and
    /// checkpoints, the ownership ledger and the policy) into an empty PostgreSQL database, byte
    /// for byte, then verify every copied log by its head and chain hash. Stop netfold first.
    Copy {
        /// The data directory (as `data_dir` in the config).
        #[arg(long)]
        from: PathBuf,
        /// The target: `postgres://USER@HOST:PORT/DATABASE` (no password in it).
        #[arg(long)]
        to: String,
        /// A file holding the database password (readable by its owner only).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Require TLS, trusting these CA certificates (PEM) besides the system's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Require TLS, trusting the system's roots.
        #[arg(long)]
        tls: bool,
        /// Accept a server not on this machine without TLS.
        #[arg(long)]
        allow_plaintext: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// One man page per visible command (`netfold.1`, `netfold-run.1`, …) into DIR.
    Man { dir: PathBuf },
    /// SHELL's completion script into DIR (`netfold.bash`, `_netfold`, `netfold.fish`, …).
    Completions { shell: clap_complete::Shell, dir: PathBuf },
}

/// What both hypervisor simulators take besides their inventory size.
#[derive(clap::Args, Debug)]
pub struct SimCommon {
    /// The demo's small lab inventory instead, cabled to `SWITCH` ports `PREFIX1`, `PREFIX2`, …
    /// (e.g. `tor1:Ethernet2/`); the size options are then ignored.
    #[arg(long, value_name = "SWITCH:PREFIX")]
    pub lab: Option<String>,
    /// Also serve the test control API on this address: `POST /fault/{none|hollow|garbage|
    /// oversize|fail-follow}`, `POST /password/{new}`, `GET /counts`.
    #[arg(long)]
    pub control: Option<String>,
}

/// Where an audit command reads its history: the data directory itself, or — while a running
/// agent holds it (sled lets one process open it), or with `--agent` — the agent's HTTP API.
/// With a config on PostgreSQL (`[store] kind = "postgres"`) it reads the database, in read-only
/// sessions, whether instances run or not.
#[derive(clap::Args, Debug)]
pub struct DataDir {
    /// A sled data directory to read (default: the config's store — its PostgreSQL database, or
    /// its `data_dir` — else ./netfold-data).
    #[arg(short, long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// How the command reaches the running agent.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The agent's config file: its `data_dir`, and its `[http]` section to reach the agent
    /// (`listen`, and `token_file` when set). Default: ./netfold.toml, else
    /// /etc/netfold/netfold.toml, when one exists.
    #[arg(short, long, env = "NETFOLD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Ask the running agent at this URL (e.g. http://127.0.0.1:9187). Default: the agent at
    /// the config's `[http] listen` address, asked when the data directory is in use.
    #[arg(long, value_name = "URL")]
    pub agent: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Which switch the demo drives.
    #[arg(long, value_enum, default_value_t = DemoSwitch::Memory)]
    pub switch: DemoSwitch,
    /// Where the demo keeps its log (default: a fresh directory under the system temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The grace period the demo uses, in seconds.
    #[arg(long, default_value_t = 5)]
    pub grace_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoSwitch {
    Memory,
    Ovs,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file without connecting to anything.
    Check {
        #[arg(short, long, default_value = "netfold.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// A vCenter (vSphere SOAP) simulator.
    Vcenter {
        #[arg(long, default_value = "127.0.0.1:8989")]
        listen: String,
        #[arg(long, default_value_t = 4)]
        hosts: usize,
        #[arg(long, default_value_t = 10)]
        vms_per_host: usize,
        #[arg(long, default_value_t = 4)]
        portgroups: usize,
        #[command(flatten)]
        common: SimCommon,
    },
    /// A XenServer pool (XenAPI XML-RPC) simulator.
    Xen {
        #[arg(long, default_value = "127.0.0.1:8990")]
        listen: String,
        #[arg(long, default_value_t = 4)]
        hosts: usize,
        #[arg(long, default_value_t = 10)]
        vms_per_host: usize,
        #[arg(long, default_value_t = 4)]
        vlans: usize,
        #[command(flatten)]
        common: SimCommon,
    },
    /// An Arista eAPI switch fixture.
    Eapi {
        #[arg(long, default_value = "127.0.0.1:8991")]
        listen: String,
        /// Interfaces the fixture has (comma-separated).
        #[arg(long, default_value = "Ethernet1,Ethernet2,Ethernet3,Ethernet4")]
        interfaces: String,
    },
}
