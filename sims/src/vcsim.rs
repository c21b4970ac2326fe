//! VMware's own vCenter simulator (vcsim, govmomi's `simulator` package from Debian's
//! `golang-github-vmware-govmomi-dev`) as a test peer: [`binary`] builds the small main in
//! `tests/peers/vcsim/` offline in GOPATH mode, [`Vcsim::start`] runs it on a loopback port and
//! reads the address and credentials it prints. The process is killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The Go main, relative to the workspace root.
const SOURCE: &str = "tests/peers/vcsim";
/// What to install when Go or govmomi is missing.
pub const INSTALL: &str = "apt-get install -y golang-go golang-github-vmware-govmomi-dev";

/// Builds vcsim into `dir` once per version of its source (or takes `NETFOLD_VCSIM`) and
/// returns its path.
pub fn binary(dir: &Path) -> Result<PathBuf, String> {
    use std::hash::{Hash, Hasher};
    if let Ok(p) = std::env::var("NETFOLD_VCSIM") {
        return Ok(p.into());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let main = root.join(SOURCE).join("main.go");
    let source = std::fs::read(&main).map_err(|e| format!("cannot read {}: {e}", main.display()))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    let out = dir.join(format!("vcsim-{:016x}", h.finish()));
    if out.exists() {
        return Ok(out);
    }
    let status = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(format!("./{SOURCE}"))
        .current_dir(&root)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env_remove("GOFLAGS")
        .status()
        .map_err(|e| format!("cannot run `go` ({e}): {INSTALL}"))?;
    if !status.success() {
        return Err(format!("building vcsim from {SOURCE} failed ({status}): is govmomi installed? {INSTALL}"));
    }
    Ok(out)
}

/// A running vcsim.
pub struct Vcsim {
    child: Child,
    /// `https` with `-tls`.
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The SHA-256 thumbprint of its certificate, as govmomi prints it (with `-tls`).
    pub thumbprint: Option<String>,
}

impl Vcsim {
    /// Starts `binary` on a free loopback port with `args` (e.g. `-vm 10`, `-username u
    /// -password p`) and waits up to `within` for its `url:` line.
    pub fn start(binary: &Path, args: &[&str], within: Duration) -> Result<Vcsim, String> {
        let mut child = Command::new(binary)
            .args(["-l", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("vcsim has no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut v = Vcsim {
            child,
            scheme: String::new(),
            host: String::new(),
            port: 0,
            user: String::new(),
            password: String::new(),
            thumbprint: None,
        };
        let url = loop {
            match rx.recv_timeout(within) {
                Ok(line) => {
                    if let Some(t) = line.strip_prefix("thumbprint: ") {
                        v.thumbprint = Some(t.to_string());
                    } else if let Some(url) = line.strip_prefix("url: ") {
                        break url.to_string();
                    }
                }
                Err(e) => return Err(format!("vcsim printed no `url:` line within {within:?}: {e}")),
            }
        };
        // `http[s]://user:pass@127.0.0.1:PORT/sdk`
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("not a URL: {url}"))?;
        v.scheme = scheme.to_string();
        let (creds, hostport) = rest.split_once('@').ok_or_else(|| format!("no credentials in {url}"))?;
        let (user, password) = creds.split_once(':').ok_or_else(|| format!("no password in {url}"))?;
        let (host, port) =
            hostport.trim_end_matches("/sdk").rsplit_once(':').ok_or_else(|| format!("no port in {url}"))?;
        v.host = host.to_string();
        v.port = port.parse().map_err(|_| format!("bad port in {url}"))?;
        v.user = user.to_string();
        v.password = password.to_string();
        Ok(v)
    }

    /// `http[s]://HOST:PORT/sdk`.
    pub fn url(&self) -> String {
        format!("{}://{}:{}/sdk", self.scheme, self.host, self.port)
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
