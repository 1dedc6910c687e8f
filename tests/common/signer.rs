#![allow(dead_code)]
//! `lazysnap signer` as a subprocess in front of a test env's S3 store,
//! and the pod side of it: commands that hold a token and nothing else.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use lazysnap::signer::tokens::token_sha256;
use serde_json::{json, Value};

use super::Env;

/// The token of an env on the signer access path: read-write on the
/// whole store.
pub const POD_TOKEN: &str = "pod-token-7e3a91c4d2b8";

/// Write a token file: `(token, prefix, rights)` entries.
pub fn write_tokens(path: &Path, entries: &[(&str, &str, &str)]) {
    let tokens: Vec<Value> = entries
        .iter()
        .map(|(t, prefix, rights)| json!({"sha256": token_sha256(t), "prefix": prefix, "rights": rights}))
        .collect();
    fs::write(path, json!({"version": 1, "tokens": tokens}).to_string()).expect("write tokens");
}

/// `lazysnap signer` on 127.0.0.1:0 (or a given address), killed on drop.
pub struct SignerProc {
    pub child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl SignerProc {
    /// Start it with `cmd` (the env's binary, with S3 access), the token
    /// file and `extra` arguments; wait for "listening on ADDR".
    pub fn start(env: &Env, cmd: Command, tokens: &Path, extra: &[&str]) -> SignerProc {
        SignerProc::start_on(env, cmd, tokens, "127.0.0.1:0", extra)
    }

    /// [`SignerProc::start`] listening on `listen` (to restart one on the
    /// address it had).
    pub fn start_on(env: &Env, mut cmd: Command, tokens: &Path, listen: &str, extra: &[&str]) -> SignerProc {
        let log = env.p("signer.log");
        cmd.args(["signer", "--listen", listen, "--store", &env.s3_store(), "--tokens"])
            .arg(tokens)
            .args(extra)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            );
        let mut child = cmd.spawn().expect("spawn signer");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read stdout");
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the signer did not start: {line:?}\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let addr = addr.parse().expect("address");
        SignerProc { child, addr, log }
    }

    /// The signer of an env on the signer access path: one read-write
    /// token ([`POD_TOKEN`]) on the whole store, in `ENV/pod-token`.
    pub fn for_env(env: &Env) -> SignerProc {
        let tokens = env.p("tokens.json");
        write_tokens(&tokens, &[(POD_TOKEN, "", "read-write")]);
        fs::write(env.p("pod-token"), format!("{POD_TOKEN}\n")).expect("write token");
        SignerProc::start(env, env.s3_cmd(), &tokens, &[])
    }

    /// The store URI a pod names it by.
    pub fn store(&self) -> String {
        format!("signer+{}", self.url())
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The binary as a pod runs it: no credential, only the signer's URL
    /// and the token file, in the environment.
    pub fn pod_cmd(&self, env: &Env) -> Command {
        let mut c = env.no_credential();
        c.env("LAZYSNAP_SIGNER", self.url())
            .env("LAZYSNAP_TOKEN_FILE", env.p("pod-token"));
        c
    }

    /// Everything it logged (every signer of the env appends here).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).expect("signer log")
    }

    /// Send it a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process, by its pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill -{sig}");
    }

    /// Kill it and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SignerProc {
    fn drop(&mut self) {
        self.kill();
    }
}
