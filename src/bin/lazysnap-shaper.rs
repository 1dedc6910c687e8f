//! `lazysnap-shaper`: a latency/bandwidth-shaping TCP proxy on loopback, for
//! tests and benchmarks (see `lazysnap::shaper`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use lazysnap::shaper::{parse_duration, parse_rate, LinkShape, Shaper};
use tokio::signal::unix::SignalKind;

/// Forward TCP connections to UPSTREAM with a round-trip delay, a bandwidth
/// cap shared by all connections and optional faults. Loopback only.
#[derive(Parser)]
#[command(
    name = "lazysnap-shaper",
    version,
    after_help = "Signals: SIGUSR1 turns --deny on or off, SIGUSR2 stalls or releases every byte bound for clients.\n\nExample:\n  lazysnap-shaper --upstream 127.0.0.1:9000 --listen 127.0.0.1:9001 --rtt 20ms --bandwidth 1Gbit"
)]
struct Cli {
    /// Where the server listens (a loopback address).
    #[arg(long)]
    upstream: SocketAddr,
    /// Where clients connect (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Round-trip time (half in each direction; a new connection costs one).
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    rtt: Duration,
    /// Bandwidth of each direction, shared by all connections (e.g. 1Gbit).
    #[arg(long, value_parser = parse_rate)]
    bandwidth: Option<u64>,
    /// Cut each connection after this many bytes to the client.
    #[arg(long, default_value_t = 0)]
    cut_after: u64,
    /// Answer the first N connections with HTTP 503 Slow Down.
    #[arg(long, default_value_t = 0)]
    fail_first: u64,
    /// Cut one connection once this many bytes have gone to clients (over
    /// all connections), then pass everything.
    #[arg(long, default_value_t = 0)]
    cut_once: u64,
    /// Answer every request with HTTP 403 AccessDenied (SIGUSR1 toggles it).
    #[arg(long)]
    deny: bool,
}

/// Flip `flag` on every `signal`, saying so on stderr.
async fn toggle_on(kind: tokio::signal::unix::SignalKind, flag: &AtomicBool, what: &str) {
    let Ok(mut sig) = tokio::signal::unix::signal(kind) else {
        eprintln!("lazysnap-shaper: warning: cannot listen for the signal that toggles {what}");
        return;
    };
    while sig.recv().await.is_some() {
        let now = !flag.fetch_xor(true, Ordering::Relaxed);
        eprintln!("lazysnap-shaper: {what} {}", if now { "on" } else { "off" });
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lazysnap-shaper: error: starting runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let shape = LinkShape {
        rtt: cli.rtt,
        bandwidth: cli.bandwidth,
    };
    let res = rt.block_on(async {
        let sh = Shaper::start(cli.listen, cli.upstream, shape).await?;
        sh.faults().cut_after.store(cli.cut_after, Ordering::Relaxed);
        sh.faults().fail_next.store(cli.fail_first, Ordering::Relaxed);
        sh.faults().cut_once.store(cli.cut_once, Ordering::Relaxed);
        sh.faults().deny.store(cli.deny, Ordering::Relaxed);
        println!("listening on {}", sh.addr());
        let faults = sh.faults();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = toggle_on(SignalKind::user_defined1(), &faults.deny, "deny") => {}
            () = toggle_on(SignalKind::user_defined2(), &faults.stall, "stall") => {}
        }
        Ok::<(), lazysnap::Error>(())
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lazysnap-shaper: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
