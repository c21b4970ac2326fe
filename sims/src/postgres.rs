//! A private PostgreSQL cluster for tests: Debian's own server binaries (`initdb`, `postgres`,
//! `psql` of the `postgresql-15` package), a fresh cluster in a temporary directory, listening on
//! a free loopback port with password (SCRAM) logins only. No system service is involved.
//!
//! [`Cluster::shared`] starts one per test process on first use; each test takes a database of
//! its own ([`Cluster::database`]). The server runs under a small `sh` that reads the test
//! process's end of a pipe: when the process exits, however it exits, the pipe closes and the
//! shell stops the server (fast shutdown) and removes the directory, so no cluster outlives its
//! tests. `initdb` refuses to run as root, so when the tests do (CI), the cluster belongs to
//! Debian's `postgres` user (or `nobody`) and runs through `runuser`.
//!
//! When the binaries are missing, starting fails with [`Error::Missing`] naming the package.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What to run when the binaries are missing.
pub const INSTALL: &str = "apt-get install -y postgresql-15";
/// The cluster's superuser (a password login).
pub const USER: &str = "netfold";
/// How long the server gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A cluster failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` not found (neither on PATH nor in /usr/lib/postgresql/*/bin): the tests need PostgreSQL's server binaries; install them with `{INSTALL}`")]
    Missing(String),
    #[error("cannot run {command}: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("{command} failed: {output}")]
    Failed { command: String, output: String },
    #[error("PostgreSQL test cluster directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the PostgreSQL test cluster did not accept connections within {START_TIMEOUT:?}; its log:\n{0}")]
    Timeout(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running private cluster.
pub struct Cluster {
    port: u16,
    password: String,
    bin: PathBuf,
    dir: PathBuf,
    /// The supervising shell; its stdin is the pipe whose closing stops the server.
    shell: Mutex<Option<(Child, ChildStdin)>>,
    next_db: Mutex<u32>,
}

/// The directory holding `initdb`, `postgres` and `psql`.
pub fn binaries() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("initdb")).filter(|f| f.is_file()).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut found: Vec<PathBuf> = on_path.into_iter().filter_map(|f| std::fs::canonicalize(f).ok()).collect();
    if found.is_empty() {
        if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut dirs: Vec<PathBuf> =
                versions.flatten().map(|e| e.path().join("bin/initdb")).filter(|f| f.is_file()).collect();
            dirs.sort();
            found.extend(dirs.pop());
        }
    }
    let dir =
        found.first().and_then(|f| f.parent()).map(Path::to_path_buf).ok_or_else(|| Error::Missing("initdb".into()))?;
    for bin in ["postgres", "psql"] {
        if !dir.join(bin).is_file() {
            return Err(Error::Missing(dir.join(bin).display().to_string()));
        }
    }
    Ok(dir)
}

/// The user the cluster runs as when the tests run as root: `postgres` if it exists, else
/// `nobody`, with its uid and gid.
fn unprivileged() -> Result<Option<(String, u32, u32)>> {
    let out =
        Command::new("id").arg("-u").output().map_err(|source| Error::Spawn { command: "id -u".into(), source })?;
    if String::from_utf8_lossy(&out.stdout).trim() != "0" {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    for name in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == name {
                if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                    return Ok(Some((name.to_string(), uid, gid)));
                }
            }
        }
    }
    Err(Error::Failed {
        command: "looking up a user to run PostgreSQL as".into(),
        output: "neither `postgres` nor `nobody` in /etc/passwd (initdb refuses root)".into(),
    })
}

/// The supervising shell: initdb, the server in the background, then wait for stdin to close
/// and stop the server and remove the directory.
const SCRIPT: &str = r#"
set -u
bin=$1 dir=$2 port=$3
if ! "$bin/initdb" -D "$dir/data" -U netfold --auth=scram-sha-256 --pwfile="$dir/password" -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
  echo "initdb failed:"; cat "$dir/initdb.log"; rm -rf "$dir"; exit 1
fi
ssl=""
if [ -f "$dir/server.crt" ]; then
  ssl="-c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
fi
"$bin/postgres" -D "$dir/data" -p "$port" -c listen_addresses=127.0.0.1 -c unix_socket_directories="$dir" \
  -c fsync=on -c synchronous_commit=on -c max_connections=300 -c shared_buffers=64MB $ssl \
  >"$dir/postgres.log" 2>&1 &
pid=$!
echo "postgres $pid"
cat >/dev/null
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    /// The cluster of this test process, started on first use. Panics with the reason (a
    /// missing binary names the package) when it cannot start: tests needing PostgreSQL fail
    /// loudly, never skip.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            Cluster::start().unwrap_or_else(|e| panic!("cannot start the PostgreSQL test cluster: {e}"))
        })
    }

    /// Starts a new cluster (see the module doc).
    pub fn start() -> Result<Cluster> {
        Self::start_with(None)
    }

    /// Starts a new cluster that also accepts TLS with this certificate and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<Cluster> {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<Cluster> {
        let bin = binaries()?;
        let user = unprivileged()?;
        // A free port can be taken by someone else between asking and binding: try a few.
        let mut last = None;
        for _ in 0..5 {
            match Self::try_start(&bin, &user, tls) {
                Err(Error::Timeout(log)) if log.contains("could not bind") => last = Some(Error::Timeout(log)),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::Timeout(String::new())))
    }

    fn try_start(bin: &Path, user: &Option<(String, u32, u32)>, tls: Option<(&str, &str)>) -> Result<Cluster> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new().prefix("netfold-pg-").tempdir()?.keep();
        let password = format!("test-{:016x}", rand::random::<u64>());
        std::fs::write(dir.join("password"), &password)?;
        let mut owned = vec![dir.clone(), dir.join("password")];
        if let Some((cert, key)) = tls {
            std::fs::write(dir.join("server.crt"), cert)?;
            std::fs::write(dir.join("server.key"), key)?;
            // The server refuses a key its group or others can read.
            std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600))?;
            owned.extend([dir.join("server.crt"), dir.join("server.key")]);
        }
        if let Some((_, uid, gid)) = user {
            for p in owned {
                std::os::unix::fs::chown(&p, Some(*uid), Some(*gid))?;
            }
        }
        let port = free_port()?;
        let mut cmd = match user {
            Some((name, _, _)) => {
                let mut c = Command::new("runuser");
                c.args(["-u", name, "--", "sh", "-c", SCRIPT, "sh"]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", SCRIPT, "sh"]);
                c
            }
        };
        cmd.arg(bin).arg(&dir).arg(port.to_string());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| Error::Spawn { command: "runuser/sh (the PostgreSQL supervisor)".into(), source })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        out.read_line(&mut first)?;
        if !first.starts_with("postgres ") {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut rest);
            drop(stdin);
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::Failed { command: format!("initdb in {}", dir.display()), output: first + &rest });
        }
        let cluster = Cluster {
            port,
            password,
            bin: bin.to_path_buf(),
            dir,
            shell: Mutex::new(Some((child, stdin))),
            next_db: Mutex::new(0),
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(|source| Error::Spawn { command: "psql".into(), source })?;
        if !out.status.success() {
            return Err(Error::Failed {
                command: format!("psql -c {sql:?}"),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.psql("postgres", "SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > START_TIMEOUT => {
                    let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                    return Err(Error::Timeout(format!("{log}\n(last attempt: {e})")));
                }
                Err(e) => {
                    let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                    // A port taken meanwhile is retried on another at once; anything else
                    // (a client refused while the server starts up, for one) is waited out.
                    if log.contains("could not bind") {
                        return Err(Error::Timeout(format!("{log}\n(last attempt: {e})")));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// A new, empty database of its own, named after `prefix`.
    pub fn database(&self, prefix: &str) -> Result<String> {
        let n = {
            let mut n = self.next_db.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        let clean: String = prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(40)
            .collect();
        let name = format!("{clean}_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// Runs SQL in database `db` (tests that damage what the store wrote); returns `psql`'s
    /// unaligned, tuples-only output.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String> {
        self.psql(db, sql)
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &'static str {
        USER
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://netfold@127.0.0.1:PORT/DB` (the password is not in it).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing the pipe lets the shell stop the server and remove the directory.
        if let Some((mut child, stdin)) = self.shell.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}
