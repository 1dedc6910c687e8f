//! The `lazysnap` command line: parse, call the library, print.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lazysnap::cmd;
use lazysnap::error::{Error, Result};
use lazysnap::fetch::fetcher::FetchConfig;
use lazysnap::format::writer::WriterOptions;
use lazysnap::format::{self, DEFAULT_LEVEL};
use lazysnap::mount::MountOptions;
use lazysnap::store::{RetryPolicy, Store};

/// Shown after the top-level `--help`.
const ENVIRONMENT: &str = "\
Example:
  lazysnap create ./work --store /srv/snaps --name org/repo/main
  lazysnap mount org/repo/main /mnt/work --store /srv/snaps

Sizes take B, KiB, MiB, GiB, TiB (or K, M, G, T). Exit codes: 0 ok, 1 runtime error, 2 usage error.

Environment:
  LAZYSNAP_STORE          default for --store (else ~/.local/share/lazysnap/store)
  LAZYSNAP_STATE_DIR      mount records, daemon logs, default upper dirs
                          (else $XDG_STATE_HOME/lazysnap or ~/.local/state/lazysnap)
  LAZYSNAP_READ_TIMEOUT   default for --read-timeout
  RUST_LOG                log filter on stderr (default: warn), e.g. RUST_LOG=debug
  s3:// stores: the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
  AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE for IRSA), AWS_REGION, AWS_ENDPOINT_URL;
  LAZYSNAP_S3_PATH_STYLE=1 (or --s3-path-style), LAZYSNAP_S3_PART_SIZE (5MiB-512MiB),
  LAZYSNAP_S3_PARTS_IN_FLIGHT (1-16), LAZYSNAP_S3_PRESIGN_ENDPOINT (the endpoint presigned
  URLs name, when readers reach S3 by another address than this process)
  LAZYSNAP_SIGNER, LAZYSNAP_TOKEN_FILE  pod mode: --signer URL and --token-file FILE
                          (every command goes through the signer; no AWS setting needed)";

#[derive(Parser)]
#[command(
    name = "lazysnap",
    version,
    about = "Instant-restore, cheap-save workspace snapshots",
    long_about = "Instant-restore, cheap-save workspace snapshots.\n\n\
        A snapshot is one indexed .tar.zst object (stock `zstd -d | tar -x` restores it); \
        `mount` serves it lazily, fetching only what is read, with writes going to an \
        overlay; `save` packs only the changes as a diff snapshot.",
    after_help = "Example:\n  lazysnap create ./work --store /srv/snaps --name org/repo/main\n  \
        lazysnap mount org/repo/main /mnt/work --store /srv/snaps\n\n\
        Sizes take B, KiB, MiB, GiB, TiB (or K, M, G, T). Exit codes: 0 ok, 1 runtime error, 2 usage error.",
    after_long_help = ENVIRONMENT
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
    /// Seconds a store read may take, retries included, before the command
    /// (or, in a mount, the read) fails with a timeout.
    #[arg(long, global = true, env = "LAZYSNAP_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    read_timeout: u64,
    /// Address s3:// buckets by path (http://endpoint/bucket/key), as
    /// MinIO and most S3-compatible servers need.
    #[arg(long, global = true, env = "LAZYSNAP_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new())]
    s3_path_style: bool,
    /// Pod mode: reach the store only through the lazysnap signer at URL
    /// (https://HOST[:PORT]), holding no storage credential; replaces
    /// --store for every command. Needs --token-file.
    #[arg(long, global = true, env = "LAZYSNAP_SIGNER", value_name = "URL")]
    signer: Option<String>,
    /// The file holding the bearer token --signer is called with (one line).
    #[arg(long, global = true, env = "LAZYSNAP_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// With --signer, the store every command uses (`signer+URL`).
static SIGNER_STORE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The store --signer replaces others with, if it was given.
fn signer_store() -> Option<String> {
    SIGNER_STORE.get().cloned()
}

#[derive(clap::Args, Clone)]
struct StoreArg {
    /// Store URI: a directory path, file:///DIR, or s3://BUCKET/PREFIX.
    #[arg(long, env = "LAZYSNAP_STORE", default_value_os_t = default_store(), value_name = "URI")]
    store: PathBuf,
}

impl StoreArg {
    /// The store URI: `--store`, unless --signer replaces it.
    fn uri(&self) -> String {
        signer_store().unwrap_or_else(|| self.store.to_string_lossy().into_owned())
    }
}

/// Where a read command reads: a store, or a presigned mount spec.
#[derive(clap::Args, Clone)]
struct ReadArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Read through this mount spec (from `lazysnap presign`, or any JSON
    /// naming presigned GET URLs) instead of a store; leave NAME out.
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct WriteArgs {
    /// Uncompressed bytes per zstd frame, a multiple of 512 B up to 64MiB.
    #[arg(long, default_value = "512KiB", value_parser = parse_size, value_name = "SIZE")]
    frame_size: u64,
    /// zstd compression level of data frames.
    #[arg(long, default_value_t = DEFAULT_LEVEL, allow_negative_numbers = true)]
    level: i32,
}

#[derive(Subcommand)]
enum Command {
    /// Snapshot a directory tree.
    #[command(
        after_help = "Example:\n  lazysnap create ./work --store /srv/snaps --name org/repo/main\n  lazysnap create ./work --store /srv/snaps --name org/repo/next --parent org/repo/main"
    )]
    Create {
        /// Directory to snapshot.
        dir: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// Name of the new snapshot.
        #[arg(long)]
        name: String,
        /// Write a diff against this snapshot's chain (no parent data is fetched).
        #[arg(long)]
        parent: Option<String>,
        /// With --parent: also compare file contents (local hashing) when
        /// size and mtime agree.
        #[arg(long, requires = "parent")]
        checksum: bool,
        /// Print {"bytes_fetched":N,"requests":M} (store reads) on stderr at the end.
        #[arg(long)]
        stats: bool,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Convert a .tar, .tar.gz or .tar.zst into an indexed snapshot.
    #[command(
        after_help = "Example:\n  lazysnap import cache.tar.zst --store /srv/snaps --name org/repo/cache\n  \
        lazysnap import \"https://bucket.s3.amazonaws.com/org/repo/cache.tar.zst?X-Amz-...\" --store s3://bucket/snaps --name org/repo/cache"
    )]
    Import {
        /// Archive to import: a path, or an https:// URL (a presigned GET),
        /// streamed with no local copy.
        input: String,
        #[command(flatten)]
        store: StoreArg,
        /// Name of the new snapshot.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Show a snapshot's metadata, counts and sizes.
    #[command(
        after_help = "Example:\n  lazysnap inspect org/repo/main --store /srv/snaps --json\n  lazysnap inspect --spec main.spec.json"
    )]
    Inspect {
        /// Snapshot name (left out with --spec).
        name: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List a directory inside a snapshot.
    #[command(
        after_help = "Example:\n  lazysnap ls org/repo/main node_modules --store /srv/snaps\n  lazysnap ls --spec main.spec.json node_modules"
    )]
    Ls {
        /// Snapshot name (left out with --spec).
        name: Option<String>,
        /// Directory inside the snapshot [default: /].
        path: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print one file, fetching only its frames.
    #[command(
        after_help = "Example:\n  lazysnap cat org/repo/main package.json --store /srv/snaps\n  lazysnap cat --spec main.spec.json package.json"
    )]
    Cat {
        /// Snapshot name (left out with --spec).
        name: Option<String>,
        /// File inside the snapshot.
        path: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
        /// Print {"bytes_fetched":N,"requests":M} on stderr at the end.
        #[arg(long)]
        stats: bool,
    },
    /// Check every frame digest and every entry.
    #[command(after_help = "Example:\n  lazysnap verify org/repo/main --store /srv/snaps")]
    Verify {
        /// Snapshot name (left out with --spec).
        name: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot into a new directory (atomic, parallel); or
    /// stream a plain .tar, .tar.gz or .tar.zst from an https:// URL into one.
    #[command(
        after_help = "Example:\n  lazysnap extract org/repo/main ./restored --store /srv/snaps\n  lazysnap extract --spec main.spec.json ./restored\n  lazysnap extract \"https://bucket.s3.amazonaws.com/org/repo/cache.tar.gz?X-Amz-...\" ./restored"
    )]
    Extract {
        /// Snapshot name (left out with --spec), or the https:// URL of a
        /// plain tar archive.
        name: Option<String>,
        /// Destination; must not exist.
        dest: Option<PathBuf>,
        #[command(flatten)]
        read: ReadArgs,
        /// Print {"bytes_fetched":N,"requests":M} on stderr at the end.
        #[arg(long)]
        stats: bool,
    },
    /// Mount a snapshot lazily: writable through an overlay (changes kept
    /// in an upper dir, packed by `save`), or --read-only.
    #[command(
        after_help = "Example:\n  lazysnap mount org/repo/main /mnt/work --store /srv/snaps\n  \
        lazysnap mount org/repo/main /mnt/ro --store /srv/snaps --read-only --cache-dir /var/cache/lazysnap\n  \
        lazysnap mount --spec main.spec.json /mnt/work\n  \
        lazysnap mount org/repo/main /mnt/work --signer https://signer:8443 --token-file /var/run/lazysnap/token"
    )]
    Mount {
        /// Snapshot name (left out with --spec).
        name: Option<String>,
        /// Mount point (an existing directory).
        mountpoint: Option<PathBuf>,
        #[command(flatten)]
        read: ReadArgs,
        /// Serve the snapshot read-only (no overlay, no upper dir).
        #[arg(long, conflicts_with = "upper")]
        read_only: bool,
        /// Directory for the overlay's changes (`upper/`, `work/`); reuse it
        /// to resume unsaved changes. Default: a dir in the state dir.
        #[arg(long)]
        upper: Option<PathBuf>,
        /// Disk cache of fetched frames, shared by mounts (content-addressed).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Disk cache size limit.
        #[arg(long, default_value = "10GiB", value_parser = parse_size, value_name = "SIZE")]
        cache_size: u64,
        /// Memory budget for all frame buffers.
        #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
        memory: u64,
        /// Do not fetch the snapshot's prefetch list at mount.
        #[arg(long)]
        no_prefetch: bool,
        /// Honour setuid/setgid bits of the snapshot's files, in the
        /// read-only mount and in the writable overlay alike (trusted
        /// snapshots only; device nodes are never honoured).
        #[arg(long)]
        allow_setuid: bool,
        /// Throw away the upper dir's unsaved changes if they were made on
        /// another snapshot (otherwise such a mount is refused).
        #[arg(long, conflicts_with = "read_only")]
        discard_changes: bool,
        /// Mount over a directory that is not empty, hiding its contents.
        #[arg(long)]
        allow_non_empty: bool,
        /// Stay in the foreground instead of daemonizing.
        #[arg(long)]
        foreground: bool,
    },
    /// Save a writable mount's changes as a diff snapshot of the mounted one.
    #[command(after_help = "Example:\n  lazysnap save /mnt/work --name org/repo/main-2\n  \
        LAZYSNAP_SIGNER=https://signer:8443 LAZYSNAP_TOKEN_FILE=/var/run/lazysnap/token lazysnap save /mnt/work --name org/repo/main-2")]
    Save {
        /// Mount point (a writable lazysnap mount).
        mountpoint: PathBuf,
        /// Name of the new snapshot.
        #[arg(long)]
        name: String,
        /// Store to write to (default: the mount's own store).
        #[arg(long)]
        store: Option<PathBuf>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Unmount a lazysnap mount (also cleans up after a killed daemon).
    #[command(after_help = "Example:\n  lazysnap umount /mnt/work")]
    Umount {
        /// Mount point.
        mountpoint: PathBuf,
    },
    /// Write a mount spec: presigned GET URLs for a snapshot's whole chain,
    /// with what a reader checks them against. Mount, extract, cat, ls and
    /// inspect read through it (--spec) with no credentials at all.
    #[command(
        after_help = "Example:\n  lazysnap presign org/repo/main --store s3://bucket/snaps --expires 15m -o main.spec.json\n  \
        lazysnap mount --spec main.spec.json /mnt/work\n\n\
        The spec holds signed URLs: anyone with it can read the chain until it expires. \
        URLs signed with temporary credentials (a role, IRSA) stop working when those expire."
    )]
    Presign {
        /// Snapshot name.
        name: String,
        #[command(flatten)]
        store: StoreArg,
        /// How long the URLs work: 90s, 15m, 2h, 7d (at most 7 days).
        #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
        expires: std::time::Duration,
        /// Write the spec to this file (mode 0600) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete a snapshot (refused while a diff's chain needs it).
    #[command(after_help = "Example:\n  lazysnap rm org/repo/old --store s3://bucket/snaps")]
    Rm {
        /// Snapshot name.
        name: String,
        #[command(flatten)]
        store: StoreArg,
        /// Delete it even if diffs were made on it (their chains break).
        #[arg(long)]
        force: bool,
    },
    /// Clean up what crashed writers left in a store: temporary files,
    /// multipart uploads whose writer is gone.
    #[command(after_help = "Example:\n  lazysnap gc --store s3://bucket/snaps")]
    Gc {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Example:\n  lazysnap completions bash > /etc/bash_completion.d/lazysnap")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    #[command(after_help = "Example:\n  lazysnap man > /usr/local/share/man/man1/lazysnap.1")]
    Man,
    /// List live mounts, and kept upper dirs with unsaved changes.
    #[command(after_help = "Example:\n  lazysnap mounts --json")]
    Mounts {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show what a mount fetched: bytes, requests, frames, cache hits, errors.
    #[command(after_help = "Example:\n  lazysnap stats /mnt/work --json")]
    Stats {
        /// Mount point.
        mountpoint: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write a chain's merged view as one full snapshot.
    #[command(after_help = "Example:\n  lazysnap squash org/repo/main-9 --store /srv/snaps --name org/repo/main-flat")]
    Squash {
        /// Snapshot name (usually a diff).
        name: String,
        #[command(flatten)]
        store: StoreArg,
        /// Name of the new full snapshot.
        #[arg(long = "name", id = "new_name", value_name = "NEW")]
        new: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List what changes from snapshot A to snapshot B (A/M/D); with one
    /// snapshot, what it changes against its parent.
    #[command(after_help = "Example:\n  lazysnap diff org/repo/main org/repo/main-2 --store /srv/snaps")]
    Diff {
        /// Snapshot A (with no B: a diff, compared with its parent).
        name: String,
        /// Snapshot B.
        to: Option<String>,
        #[command(flatten)]
        store: StoreArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a snapshot's chain: itself and every parent down to the base.
    #[command(after_help = "Example:\n  lazysnap log org/repo/main-9 --store /srv/snaps")]
    Log {
        /// Snapshot name (left out with --spec).
        name: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Serve presigned URLs to pods that hold no credential: mount specs,
    /// listings, multipart uploads and deletes, each scoped by a bearer
    /// token to a key prefix (JSON over HTTP, API v1).
    #[command(after_help = "Example:\n  \
        lazysnap signer --listen 0.0.0.0:8443 --store s3://bucket/snaps --tokens /etc/lazysnap/tokens.json \\\n      \
        --tls-cert /etc/lazysnap/cert.pem --tls-key /etc/lazysnap/key.pem\n  \
        curl -H \"Authorization: Bearer $TOKEN\" -d '{\"name\":\"org/repo/main\"}' https://signer:8443/v1/spec > main.spec.json\n\n\
        The token file holds each token's SHA-256, never the token:\n  \
        {\"version\": 1, \"tokens\": [{\"sha256\": \"<hex of sha256(token)>\", \"prefix\": \"org/repo/\",\n               \
        \"rights\": \"read\" | \"read-write\", \"comment\": \"…\"}]}\n\
        (printf %s \"$TOKEN\" | sha256sum). kill -HUP re-reads it; a broken file keeps the old tokens. \
        Prints \"listening on ADDR\" once bound (--listen 127.0.0.1:0 picks a port). \
        Pods use it with --signer URL --token-file FILE; if they reach S3 by another address than \
        the signer does, set LAZYSNAP_S3_PRESIGN_ENDPOINT to theirs.")]
    Signer {
        /// Address to listen on (HOST:PORT).
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// The store, s3://BUCKET/PREFIX (the signer's AWS credentials).
        #[arg(long, value_name = "URI")]
        store: String,
        /// The token file (JSON; see below).
        #[arg(long, value_name = "FILE")]
        tokens: PathBuf,
        /// PEM certificate chain: serve HTTPS (with --tls-key).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// How long URLs work, by default and at most (a request may ask
        /// for less): 90s, 15m, 1h (at most 1 hour).
        #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
        expires: std::time::Duration,
        /// Upload part size (5MiB to 64MiB), raised for an upload whose
        /// size hint needs more than 10,000 parts of it.
        #[arg(long, default_value = "8MiB", value_parser = parse_size, value_name = "SIZE")]
        part_size: u64,
    },
    /// List the snapshots in a store: kind, size, entries, date, parent.
    #[command(after_help = "Example:\n  lazysnap list org/repo/ --store /srv/snaps --json\n  \
        lazysnap list --signer https://signer:8443 --token-file /var/run/lazysnap/token")]
    List {
        /// Only names starting with this prefix.
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        store: StoreArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn default_store() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("lazysnap/store")
}

/// Parse "512KiB", "1MiB", "4M", "1048576".
fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("bad size unit in {s:?} (use KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} too large"))
}

/// Parse "90s", "15m", "2h", "7d", "900" (seconds).
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 90s, 15m, 2h, 7d)"))?;
    let mult: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("bad duration unit in {s:?} (use s, m, h, d)")),
    };
    n.checked_mul(mult)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} too large"))
}

/// With --spec, NAME is left out: what the user typed first is the
/// positional after it. Returns (NAME, the next positional).
fn spec_shift<T: From<String>>(
    read: &ReadArgs,
    name: Option<String>,
    next: Option<T>,
) -> Result<(Option<String>, Option<T>)> {
    if read.spec.is_none() {
        return Ok((name, next));
    }
    if next.is_some() {
        return Err(Error::Usage(
            "with --spec, leave NAME out: the spec names the snapshot".into(),
        ));
    }
    Ok((None, name.map(T::from)))
}

/// The store a read command reads and the snapshot it names: `--store`
/// and NAME, or `--spec` (which names the snapshot itself).
fn read_target(read: &ReadArgs, name: Option<String>, read_timeout: u64) -> Result<(Store, String)> {
    let uri = read_uri(read)?;
    let store = Store::open(&uri)?.with_policy(policy(read_timeout));
    let name = match (&read.spec, name) {
        (Some(spec), None) => lazysnap::spec::MountSpec::load(spec)?.top().to_string(),
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "with --spec, leave NAME out: the spec names the snapshot".into(),
            ))
        }
        (None, Some(n)) => n,
        (None, None) => return Err(Error::Usage("NAME is required (or --spec FILE)".into())),
    };
    Ok((store, name))
}

/// The store URI of a read command: `--store`, or the spec as `spec:///ABS`.
fn read_uri(read: &ReadArgs) -> Result<String> {
    match &read.spec {
        Some(p) => lazysnap::store::absolute_uri(&format!("{}{}", lazysnap::store::SPEC_SCHEME, p.display())),
        None => Ok(read.store.uri()),
    }
}

/// A positional the command needs.
fn required<T>(v: Option<T>, what: &str) -> Result<T> {
    v.ok_or_else(|| Error::Usage(format!("{what} is required")))
}

fn writer_opts(w: &WriteArgs) -> Result<WriterOptions> {
    let frame_size = usize::try_from(w.frame_size).map_err(|_| Error::Usage("--frame-size too large".into()))?;
    Ok(WriterOptions {
        frame_size,
        level: w.level,
        ..WriterOptions::default()
    })
}

/// How every command reads a store: a bounded number of attempts, each
/// with a deadline, adding up to about `--read-timeout`.
fn policy(read_timeout: u64) -> RetryPolicy {
    RetryPolicy::within(std::time::Duration::from_secs(read_timeout))
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn report_written(name: &str, w: &format::writer::Written, secs: f64) {
    let idx = &w.index;
    println!(
        "created {name}: {} entries, {} frames, {} tar -> {} ({} index) in {secs:.2}s",
        idx.entries.len(),
        idx.frames.len(),
        human(idx.tar_size),
        human(w.size),
        human(w.index_len),
    );
}

/// One snapshot per line: name, kind, size, entries, whiteouts, frames,
/// creation time, parent.
fn print_log_row(e: &cmd::inspect::LogEntry) {
    let parent = e.parent.as_deref().map(|p| format!("  parent {p}")).unwrap_or_default();
    println!(
        "{:<40} {} {:>10} {:>7} entries {:>5} whiteouts {:>5} frames  {}{parent}",
        e.name,
        e.kind,
        human(e.size),
        e.entries,
        e.whiteouts,
        e.frames,
        e.created
    );
}

fn run(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting runtime", e))?;
    if !matches!(cli.cmd, Command::Mount { .. }) {
        // (A mount daemon unmounts cleanly on these signals itself.)
        rt.spawn(remove_temporaries_on_signal());
    }
    let res = dispatch(&rt, cli);
    // Do not wait for idle blocking-pool threads on the way out.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    res
}

/// On SIGINT or SIGTERM, remove what this process was writing under a
/// temporary name, and exit as a shell expects (128 + signal).
async fn remove_temporaries_on_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    let code = tokio::select! {
        _ = int.recv() => 128 + libc::SIGINT,
        _ = term.recv() => 128 + libc::SIGTERM,
    };
    lazysnap::tmp::remove_registered();
    std::process::exit(code);
}

fn open_store_uri(uri: &str, read_timeout: u64) -> Result<Store> {
    Ok(Store::open(uri)?.with_policy(policy(read_timeout)))
}

fn dispatch(rt: &tokio::runtime::Runtime, cli: Cli) -> Result<()> {
    let h = rt.handle();
    let t0 = std::time::Instant::now();
    let read_timeout = cli.read_timeout;
    let open_store = |s: &StoreArg| Store::open(&s.uri()).map(|st| st.with_policy(policy(read_timeout)));
    let open_writable = |s: &StoreArg| Store::open_writable(&s.uri()).map(|st| st.with_policy(policy(read_timeout)));
    match cli.cmd {
        Command::Create {
            dir,
            store,
            name,
            parent,
            checksum,
            stats,
            write,
        } => {
            let st = open_writable(&store)?;
            let res = match parent {
                Some(p) => lazysnap::build::create_diff(h, &st, &name, &dir, &p, checksum, writer_opts(&write)?),
                None => lazysnap::build::create(h, &st, &name, &dir, writer_opts(&write)?),
            };
            if stats {
                eprintln!("{}", st.stats().json());
            }
            let w = res?;
            report_written(&name, &w, t0.elapsed().as_secs_f64());
        }
        Command::Import {
            input,
            store,
            name,
            write,
        } => {
            let st = open_writable(&store)?;
            let stall = std::time::Duration::from_secs(read_timeout);
            let w = lazysnap::build::import::import(h, &st, &name, &input, stall, writer_opts(&write)?)?;
            report_written(&name, &w, t0.elapsed().as_secs_f64());
        }
        Command::Inspect { name, read, json } => {
            let (st, name) = read_target(&read, name, read_timeout)?;
            let s = cmd::inspect::inspect(h, &st, &name)?;
            if json {
                print_json(&s)?;
            } else {
                println!("name:        {}", s.name);
                println!("format:      v{} ({})", s.format_version, s.tool);
                println!("created:     {}", s.created);
                println!(
                    "size:        {} (data {}, index {} -> {} raw)",
                    human(s.size),
                    human(s.data_size),
                    human(s.index_size),
                    human(s.index_raw_size)
                );
                println!(
                    "tar stream:  {}  ({} of file content)",
                    human(s.tar_size),
                    human(s.file_bytes)
                );
                println!(
                    "frames:      {} x ~{} at zstd level {}",
                    s.frames,
                    human(s.frame_size),
                    s.level
                );
                println!(
                    "entries:     {} ({} files, {} dirs, {} symlinks, {} hardlinks, {} other)",
                    s.entries, s.files, s.dirs, s.symlinks, s.hardlinks, s.other
                );
                println!("index:       {}", s.index_digest);
                match &s.parent {
                    Some(p) => println!("parent:      {} ({})", p.name, p.index_digest),
                    None => println!("parent:      none (full snapshot)"),
                }
                println!("prefetch:    {} paths", s.prefetch);
            }
        }
        Command::Ls { name, path, read, json } => {
            let (name, path) = spec_shift(&read, name, path)?;
            let (st, name) = read_target(&read, name, read_timeout)?;
            let path = path.unwrap_or_else(|| "/".into());
            let rows = cmd::inspect::ls(h, &st, &name, &path)?;
            if json {
                print_json(&rows)?;
            } else {
                let mut out = std::io::stdout().lock();
                for r in rows {
                    let link = r.link.map(|l| format!(" -> {l}")).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{:<8} {} {:>5}:{:<5} {:>12} {} {}{}",
                        r.kind, r.mode, r.uid, r.gid, r.size, r.mtime, r.path, link
                    );
                }
            }
        }
        Command::Cat {
            name,
            path,
            read,
            stats,
        } => {
            let (name, path) = spec_shift(&read, name, path)?;
            let path = required(path, "PATH")?;
            let (st, name) = read_target(&read, name, read_timeout)?;
            let res = cmd::inspect::cat(h, &st, &name, &path, &mut std::io::stdout().lock());
            if stats {
                eprintln!("{}", st.stats().json());
            }
            res?;
        }
        Command::Verify { name, read, json } => {
            let (st, name) = read_target(&read, name, read_timeout)?;
            let r = cmd::verify::verify(h, &st, &name)?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "ok: {name}: {} frames, {} entries, {} verified",
                    r.frames,
                    r.entries,
                    human(r.tar_bytes)
                );
            }
        }
        Command::Extract {
            name,
            dest,
            read,
            stats,
        } => {
            let (name, dest) = spec_shift(&read, name, dest)?;
            let dest = required(dest, "DEST")?;
            if let Some(url) = name.as_deref().filter(|n| lazysnap::build::import::is_url(n)) {
                let stall = std::time::Duration::from_secs(read_timeout);
                return cmd::extract::extract_archive(h, url, &dest, stall);
            }
            let (st, name) = read_target(&read, name, read_timeout)?;
            let res = cmd::extract::extract(h, &st, &name, &dest);
            if stats {
                eprintln!("{}", st.stats().json());
            }
            res?;
        }
        Command::Mount {
            name,
            mountpoint,
            read,
            read_only,
            upper,
            cache_dir,
            cache_size,
            memory,
            no_prefetch,
            allow_setuid,
            discard_changes,
            allow_non_empty,
            foreground,
        } => {
            let (name, mountpoint) = spec_shift(&read, name, mountpoint)?;
            let mountpoint = required(mountpoint, "MOUNTPOINT")?;
            let name = match (&read.spec, name) {
                (Some(spec), _) => lazysnap::spec::MountSpec::load(spec)?.top().to_string(),
                (None, n) => required(n, "NAME")?,
            };
            lazysnap::store::snapshot_key(&name)?;
            // Checked here too, so a bad mount point is a usage error (exit 2).
            cmd::mount::check_mount_point(&cmd::mount::absolute(&mountpoint)?, allow_non_empty)?;
            if !foreground {
                let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
                cmd::mount::spawn_daemon(&args, &mountpoint)?;
                let abs = cmd::mount::absolute(&mountpoint)?;
                if let Some(up) = cmd::mount::read_record(&abs)?.and_then(|r| r.upper) {
                    println!(
                        "mounted {name} at {} (writable; changes kept in {})",
                        abs.display(),
                        up.display()
                    );
                }
                return Ok(());
            }
            let opts = MountOptions {
                fetch: FetchConfig {
                    memory,
                    disk: cache_dir.map(|d| (d, cache_size)),
                    ..FetchConfig::default()
                },
                read_deadline: std::time::Duration::from_secs(read_timeout),
                prefetch: !no_prefetch,
                allow_setuid,
                ..MountOptions::default()
            };
            let placement = cmd::mount::Placement {
                writable: (!read_only).then_some(upper),
                discard_changes,
                allow_non_empty,
            };
            cmd::mount::run_foreground(rt, &read_uri(&read)?, &name, &mountpoint, opts, placement)?;
        }
        Command::Save {
            mountpoint,
            name,
            store,
            write,
        } => {
            let uri = signer_store().or_else(|| store.map(|s| s.to_string_lossy().into_owned()));
            let (saved, parent) = cmd::mount::save(
                rt,
                &mountpoint,
                uri.as_deref(),
                policy(read_timeout),
                &name,
                writer_opts(&write)?,
            )?;
            match saved {
                Some(w) => report_written(&name, &w, t0.elapsed().as_secs_f64()),
                None => println!("nothing changed since {parent}: no snapshot created"),
            }
        }
        Command::Presign {
            name,
            store,
            expires,
            output,
        } => {
            let spec = h.block_on(lazysnap::spec::MountSpec::presign(&open_store(&store)?, &name, expires))?;
            let json = spec.to_json()? + "\n";
            match output {
                Some(p) => {
                    lazysnap::tmp::write_file_atomic(&p, json.as_bytes(), 0o600)?;
                    eprintln!(
                        "wrote {}: {} layer{} of {name}, URLs valid until {}",
                        p.display(),
                        spec.layers.len(),
                        if spec.layers.len() == 1 { "" } else { "s" },
                        spec.expires.as_deref().unwrap_or("?")
                    );
                }
                None => print!("{json}"),
            }
        }
        Command::Rm { name, store, force } => {
            let advice = if signer_store().is_some() {
                lazysnap::signer::service::NEEDED_ADVICE
            } else {
                "--force deletes it anyway, breaking their chains"
            };
            let broken = cmd::inspect::rm(h, &open_writable(&store)?, &name, force, advice)?;
            if broken.is_empty() {
                println!("deleted {name}");
            } else {
                println!("deleted {name}; these diffs no longer open: {}", broken.join(", "));
            }
        }
        Command::Gc { store } => {
            let n = h.block_on(open_writable(&store)?.collect_garbage())?;
            println!("removed {n} abandoned upload{}", if n == 1 { "" } else { "s" });
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "lazysnap", &mut std::io::stdout());
        }
        Command::Man => {
            let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            man.render(&mut std::io::stdout())
                .map_err(|e| Error::io("writing the man page", e))?;
        }
        Command::Mounts { json } => {
            let r = cmd::mount::mounts()?;
            if json {
                print_json(&r)?;
            } else {
                for m in &r.mounts {
                    let state = if m.alive {
                        ""
                    } else {
                        "  (daemon gone: umount cleans up)"
                    };
                    let kind = match &m.upper {
                        Some(u) => format!("writable, changes in {}", u.display()),
                        None => "read-only".into(),
                    };
                    println!(
                        "{}  {} from {}  {kind}  pid {}{state}",
                        m.mountpoint.display(),
                        m.name,
                        m.store,
                        m.pid
                    );
                }
                for k in &r.kept {
                    let on = k.last_save.as_deref().or(k.base.as_deref()).unwrap_or("?");
                    println!("{}  unsaved changes on {on} (not mounted)", k.dir.display());
                }
            }
        }
        Command::Umount { mountpoint } => {
            cmd::mount::umount(&mountpoint)?;
        }
        Command::Stats { mountpoint, json } => {
            let v = cmd::mount::stats(&mountpoint)?;
            if json {
                print_json(&v)?;
            } else {
                let n = |k: &str| v[k].as_u64().unwrap_or(0);
                println!(
                    "mount:          {} ({} from {})",
                    v["mount"]["mountpoint"].as_str().unwrap_or("?"),
                    v["mount"]["name"].as_str().unwrap_or("?"),
                    v["mount"]["store"].as_str().unwrap_or("?")
                );
                println!(
                    "fetched:        {} in {} requests ({} frames)",
                    human(n("bytes_fetched")),
                    n("requests"),
                    n("frames_fetched")
                );
                println!("cache hits:     {} memory, {} disk", n("memory_hits"), n("disk_hits"));
                println!(
                    "cache size:     {} memory, {} disk",
                    human(n("memory_bytes")),
                    human(n("disk_bytes"))
                );
                println!("errors:         {}", n("errors"));
            }
        }
        Command::Squash {
            name,
            store,
            new,
            write,
        } => {
            let w = lazysnap::build::squash::squash(h, &open_writable(&store)?, &name, &new, writer_opts(&write)?)?;
            report_written(&new, &w, t0.elapsed().as_secs_f64());
        }
        Command::Diff { name, to, store, json } => {
            let changes = cmd::inspect::diff(h, &open_store(&store)?, &name, to.as_deref())?;
            if json {
                print_json(&changes)?;
            } else {
                let mut out = std::io::stdout().lock();
                for c in changes {
                    let _ = writeln!(out, "{} {}", c.op, c.path);
                }
            }
        }
        Command::Log { name, read, json } => {
            let (st, name) = read_target(&read, name, read_timeout)?;
            let (entries, broken) = cmd::inspect::log(h, &st, &name)?;
            if json {
                print_json(&entries)?;
            } else {
                for e in &entries {
                    print_log_row(e);
                }
            }
            if let Some(e) = broken {
                return Err(e);
            }
        }
        Command::Signer {
            listen,
            store,
            tokens,
            tls_cert,
            tls_key,
            expires,
            part_size,
        } => {
            if !store.starts_with("s3://") {
                return Err(Error::Usage(format!(
                    "--store {store}: the signer presigns URLs, so it needs an s3:// store"
                )));
            }
            let config = lazysnap::signer::service::Config::with_expiry(expires, part_size)?;
            let tokens = lazysnap::signer::tokens::Tokens::load(&tokens)?;
            let tls = match (tls_cert, tls_key) {
                (Some(c), Some(k)) => Some(lazysnap::signer::http::tls_acceptor(&c, &k)?),
                _ => None,
            };
            let signer = lazysnap::signer::service::Signer::new(open_store_uri(&store, read_timeout)?, tokens, config);
            h.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| Error::io(format!("listening on {listen}"), e))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| Error::io(format!("listening on {listen}"), e))?;
                let hup = lazysnap::signer::watch_hangup()?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "listening on {addr}").and_then(|()| out.flush()).ok();
                drop(out);
                tracing::info!(
                    target: "lazysnap::signer",
                    "serving {store} on {addr}{}",
                    if tls.is_some() { " (TLS)" } else { "" }
                );
                lazysnap::signer::run(listener, std::sync::Arc::new(signer), tls, hup).await
            })?;
        }
        Command::List { prefix, store, json } => {
            let rows = cmd::inspect::list(h, &open_store(&store)?, &prefix)?;
            if json {
                print_json(&rows)?;
            } else {
                for r in &rows {
                    match (&r.snapshot, &r.error) {
                        (Some(e), _) => print_log_row(e),
                        (None, Some(err)) => println!("{:<40} unreadable: {}", err.name, err.error),
                        (None, None) => {}
                    }
                }
            }
        }
    }
    Ok(())
}

/// Log targets that may print secrets at debug or trace, clamped to info.
const SECRET_BEARING_TARGETS: &[&str] = &[
    "aws_sigv4=info",
    "aws_smithy_runtime=info",
    "aws_smithy_runtime_api=info",
    "aws_smithy_http_client=info",
    "aws_smithy_http=info",
    "aws_sdk_s3=info",
    "aws_sdk_sts=info",
    "aws_sdk_sso=info",
    "aws_sdk_ssooidc=info",
    "aws_config=info",
    "aws_runtime=error",
    "aws_credential_types=info",
    "hyper=info",
    "reqwest=info",
    "hyper_util=info",
    "h2=info",
    "rustls=info",
];

/// Also write a trace-level log of this process (the same targets clamped)
/// to `$LAZYSNAP_TRACE_DIR/lazysnap-PID.log`: for a bug report, or for the
/// test suite, which greps the logs of every process it ran for secrets.
const TRACE_DIR_ENV: &str = "LAZYSNAP_TRACE_DIR";

/// `filter`, with the targets that may print secrets clamped: the AWS SDK
/// and the HTTP stack log requests (URLs with their query strings, signing
/// material) at debug and trace, so never below info, whatever is asked.
fn clamped(mut filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    for clamp in SECRET_BEARING_TARGETS {
        if let Ok(d) = clamp.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Logs to stderr at `RUST_LOG` (else `default_filter`), and at trace level
/// to a file when [`TRACE_DIR_ENV`] is set.
fn init_logging(default_filter: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a daemon's log file is plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(clamped(filter));
    let file = std::env::var_os(TRACE_DIR_ENV).and_then(|dir| {
        let p = std::path::Path::new(&dir).join(format!("lazysnap-{}.log", std::process::id()));
        match std::fs::OpenOptions::new().create(true).append(true).open(&p) {
            Ok(f) => Some(
                fmt::layer()
                    .with_writer(std::sync::Mutex::new(f))
                    .with_ansi(false)
                    .with_filter(clamped(EnvFilter::new("trace"))),
            ),
            Err(e) => {
                eprintln!("lazysnap: warning: {TRACE_DIR_ENV}: {}: {e}", p.display());
                None
            }
        }
    });
    tracing_subscriber::registry().with(stderr).with(file).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A signer logs every call by default (one line each, at info).
    let default_filter = match cli.cmd {
        Command::Signer { .. } => "warn,lazysnap::signer=info",
        _ => "warn",
    };
    init_logging(default_filter);
    if cli.s3_path_style {
        // The S3 store reads it, and a mount daemon inherits it. (Set
        // before any thread starts.)
        std::env::set_var("LAZYSNAP_S3_PATH_STYLE", "1");
    }
    if let Some(file) = &cli.token_file {
        // The signer store reads it, and a mount daemon (whose cwd is
        // elsewhere) inherits it: absolute.
        match std::path::absolute(file) {
            Ok(abs) => std::env::set_var(lazysnap::signer::client::TOKEN_FILE_ENV, abs),
            Err(e) => {
                eprintln!("lazysnap: error: --token-file {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    if let Some(url) = &cli.signer {
        if cli.token_file.is_none() {
            eprintln!("lazysnap: error: --signer needs --token-file FILE (or LAZYSNAP_TOKEN_FILE)");
            return ExitCode::from(2);
        }
        let _ = SIGNER_STORE.set(format!("{}{url}", lazysnap::signer::client::SCHEME));
    }
    if !matches!(cli.cmd, Command::Mount { .. }) {
        // A closed stdout (`lazysnap ls --json | head`) ends the command
        // quietly, as it does any Unix tool. (Not in a mount daemon, whose
        // stats socket must survive a client that hangs up.)
        // SAFETY: restoring the default disposition of one signal.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lazysnap: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("").is_err());
    }
}
