//! ovs-vswitchd's control socket (`unixctl`): JSON-RPC 1.0 over a unix socket, the protocol
//! `ovs-appctl` speaks (`{"method":"fdb/show","params":["br0"],"id":N}` → `{"id":N,"result":
//! "<text>","error":null}`), one request per connection as `ovs-appctl` makes it. Framing reuses
//! the OVSDB [`codec::JsonFrames`] (same back-to-back JSON, same size limit); what the text means
//! is [`super::discovery`]'s.
//!
//! Where the socket is: `--unixctl=PATH` when ovs-vswitchd was started with it, else
//! `<rundir>/ovs-vswitchd.<pid>.ctl` with the pid read from `<rundir>/ovs-vswitchd.pid`
//! ([`Target::resolve`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

use super::codec::{self, Incoming};
use super::{Error, Result};

/// The largest reply read from the control socket (a MAC table of 8k entries is ~400 kB).
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Where ovs-vswitchd's control socket is: a socket path, or a run directory holding its pid
/// file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Socket(PathBuf),
    RunDir(PathBuf),
}

impl Target {
    /// A path that is a directory is a run directory; anything else is the socket itself.
    pub fn new(path: impl Into<PathBuf>) -> Target {
        let path = path.into();
        if path.is_dir() {
            Target::RunDir(path)
        } else {
            Target::Socket(path)
        }
    }

    /// The socket path: as given, or `<rundir>/ovs-vswitchd.<pid>.ctl` from the pid file (read
    /// each time: ovs-vswitchd restarts with a new pid).
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            Target::Socket(p) => Ok(p.clone()),
            Target::RunDir(dir) => {
                let pidfile = dir.join("ovs-vswitchd.pid");
                let text = std::fs::read_to_string(&pidfile).map_err(|e| {
                    Error::Disconnected(format!("cannot read {} (is ovs-vswitchd running?): {e}", pidfile.display()))
                })?;
                let pid: u32 = text.trim().parse().map_err(|_| {
                    Error::Codec(format!("{} holds {:?}, not a process id", pidfile.display(), codec::shown(&text)))
                })?;
                Ok(dir.join(format!("ovs-vswitchd.{pid}.ctl")))
            }
        }
    }
}

/// Runs one unixctl command and returns its text result. A JSON-RPC `error` (`no such bridge`,
/// `"lldp/neighbor" is not a valid command`) is [`Error::Vswitchd`] with ovs-vswitchd's words.
pub async fn call(target: &Target, method: &str, params: &[&str], timeout: Duration) -> Result<String> {
    let path = target.resolve()?;
    tokio::time::timeout(timeout, call_at(&path, method, params)).await.map_err(|_| Error::Timeout(timeout))?
}

async fn call_at(path: &Path, method: &str, params: &[&str]) -> Result<String> {
    let mut stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| Error::Disconnected(format!("ovs-vswitchd control socket {}: {e}", path.display())))?;
    let request = codec::request(1, method, json!(params));
    let bytes = serde_json::to_vec(&request).map_err(|e| Error::Codec(e.to_string()))?;
    stream.write_all(&bytes).await?;
    let mut frames = FramedRead::new(stream, codec::JsonFrames::new(MAX_REPLY));
    loop {
        let msg = match frames.next().await {
            None => return Err(Error::Disconnected(format!("{} closed before answering {method}", path.display()))),
            Some(m) => m?,
        };
        match codec::classify(msg)? {
            Incoming::Response { id: 1, result, error } => return reply(method, result, error),
            // Nothing else is expected on a control connection; skip it rather than fail.
            _ => continue,
        }
    }
}

/// The text of a unixctl reply, or its error.
fn reply(method: &str, result: Value, error: Value) -> Result<String> {
    if !error.is_null() {
        let text = error.as_str().map_or_else(|| error.to_string(), str::to_string);
        return Err(Error::Vswitchd { command: method.to_string(), text: codec::shown(&text.trim()) });
    }
    match result {
        Value::String(s) => Ok(s),
        other => Err(Error::Codec(format!("{method} answered {} instead of text", codec::shown(&other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_carries_vswitchds_words() {
        let e = reply("fdb/show", Value::Null, json!("no such bridge\n")).unwrap_err();
        assert_eq!(e.to_string(), "ovs-vswitchd refused fdb/show: no such bridge");
        assert_eq!(
            reply("fdb/show", json!(" port  VLAN  MAC  Age\n"), Value::Null).unwrap(),
            " port  VLAN  MAC  Age\n"
        );
        assert!(reply("fdb/show", json!([1]), Value::Null).is_err());
    }

    #[test]
    fn a_run_directory_resolves_through_the_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::new(dir.path());
        assert!(t.resolve().unwrap_err().to_string().contains("ovs-vswitchd.pid"));
        std::fs::write(dir.path().join("ovs-vswitchd.pid"), "4321\n").unwrap();
        assert_eq!(t.resolve().unwrap(), dir.path().join("ovs-vswitchd.4321.ctl"));
        std::fs::write(dir.path().join("ovs-vswitchd.pid"), "x").unwrap();
        assert!(t.resolve().unwrap_err().to_string().contains("not a process id"));
        assert_eq!(Target::new("/no/such.ctl").resolve().unwrap(), PathBuf::from("/no/such.ctl"));
    }
}
