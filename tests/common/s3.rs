//! An S3 server for tests: s3s-fs in-process on loopback (SigV4 checked,
//! ranged GETs, multipart uploads), and the environment that points the
//! CLI at it and at nothing else.

#![allow(dead_code)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The access key the server accepts.
pub const AK: &str = "AKLAZYSNAPTEST";
/// Its secret.
pub const SK: &str = "lazysnap-test-secret-key";
/// The bucket every test store lives in.
pub const BUCKET: &str = "snaps";

/// An S3 server on loopback serving a directory (each subdir a bucket),
/// running until dropped.
pub struct S3Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The directory it serves; bucket [`BUCKET`] is `root/snaps`.
    pub root: PathBuf,
    /// Empty AWS config and credentials files: no profile of this machine
    /// leaks into the tests.
    no_config: PathBuf,
    _rt: tokio::runtime::Runtime,
}

impl S3Server {
    /// Serve `root` (created, with bucket [`BUCKET`] in it).
    pub fn start(root: &Path) -> S3Server {
        fs::create_dir_all(root.join(BUCKET)).expect("bucket");
        let no_config = root.with_extension("no-aws-config");
        fs::write(&no_config, b"").expect("write");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = root.to_path_buf();
        rt.spawn(async move {
            if let Err(e) = super::s3_serve::serve(listener, &served, AK, SK).await {
                eprintln!("test S3 server: {e}");
            }
        });
        S3Server {
            addr,
            root: root.to_path_buf(),
            no_config,
            _rt: rt,
        }
    }

    /// Point `c` at the server, reached at `endpoint` (the server itself,
    /// or a proxy in front of it), signing with `secret`: endpoint, keys,
    /// region, path-style addressing, and no profile, session token or
    /// instance metadata of this machine.
    pub fn configure(&self, c: &mut Command, endpoint: SocketAddr, secret: &str) {
        c.env("AWS_ENDPOINT_URL", format!("http://{endpoint}"))
            .env("AWS_ACCESS_KEY_ID", AK)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", &self.no_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &self.no_config)
            .env("LAZYSNAP_S3_PATH_STYLE", "1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    }

    /// The same settings for this process (tests that use the library
    /// directly); process-wide, so only for a test binary's own S3 tests.
    pub fn configure_this_process(&self) {
        std::env::set_var("AWS_ENDPOINT_URL", format!("http://{}", self.addr));
        std::env::set_var("AWS_ACCESS_KEY_ID", AK);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SK);
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", &self.no_config);
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &self.no_config);
        std::env::set_var("LAZYSNAP_S3_PATH_STYLE", "1");
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_SESSION_TOKEN");
    }

    /// The file the server keeps object `key` of bucket [`BUCKET`] in.
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// Files the server keeps for multipart uploads in progress.
    pub fn uploads_in_progress(&self) -> usize {
        fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".upload"))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// The shaping proxy in front of `upstream`, with `rtt` and no bandwidth
/// cap; it runs until the returned runtime is dropped.
pub fn shaper(upstream: SocketAddr, rtt: Duration) -> (lazysnap::shaper::Shaper, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let shape = lazysnap::shaper::LinkShape { rtt, bandwidth: None };
    let listen = "127.0.0.1:0".parse().expect("addr");
    let sh = rt
        .block_on(lazysnap::shaper::Shaper::start(listen, upstream, shape))
        .expect("shaper");
    (sh, rt)
}

impl S3Server {
    /// A presigned GET URL of `key` in [`BUCKET`], made by the AWS SDK
    /// itself (not by lazysnap), for a server reached at `endpoint`.
    pub fn presign_get(&self, endpoint: SocketAddr, key: &str, expires: Duration) -> String {
        let creds = aws_sdk_s3::config::Credentials::new(AK, SK, None, None, "test");
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{endpoint}"))
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires).expect("expiry");
        let req = self
            ._rt
            .block_on(client.get_object().bucket(BUCKET).key(key).presigned(cfg))
            .expect("presign");
        req.uri().to_string()
    }
}
