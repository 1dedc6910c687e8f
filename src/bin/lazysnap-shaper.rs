//! `lazysnap-shaper`: a latency/bandwidth-shaping TCP proxy on loopback, for
//! tests and benchmarks (see `lazysnap::shaper`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use lazysnap::shaper::{parse_duration, parse_rate, LinkShape, Shaper};

/// Forward TCP connections to UPSTREAM with a round-trip delay, a bandwidth
/// cap shared by all connections and optional faults. Loopback only.
#[derive(Parser)]
#[command(
    name = "lazysnap-shaper",
    version,
    after_help = "Example:\n  lazysnap-shaper --upstream 127.0.0.1:9000 --listen 127.0.0.1:9001 --rtt 20ms --bandwidth 1Gbit"
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
        println!("listening on {}", sh.addr());
        let _ = tokio::signal::ctrl_c().await;
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
