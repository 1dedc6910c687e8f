//! A latency- and bandwidth-shaping TCP proxy, loopback only, for tests and
//! benchmarks (`tc netem` is not available on these kernels).
//!
//! Every byte crossing the proxy is delivered half a round trip after it
//! was read, in each direction, and each direction is one link whose
//! bandwidth all connections share: a chunk is serialised onto its link
//! after the chunks before it (from any connection) and delivered when its
//! last byte is through, plus the one-way delay. Reading and delivering are
//! separate tasks per direction, so a connection keeps a full round trip of
//! data in flight (a slow link, not a slow proxy). A new connection costs
//! one round trip before its first byte, as a TCP handshake does.
//!
//! Faults, switchable while running ([`Faults`]): cut every connection's
//! download after N bytes, or cut once N more bytes have gone to clients,
//! answer the next K connections with an HTTP 503 (and close), answer
//! every request with a 403 AccessDenied from now on, or stall delivery to
//! clients until released.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, IoContext, Result};

/// How the link behaves.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    /// Round-trip time (each direction gets half).
    pub rtt: Duration,
    /// Bits per second in each direction, shared by all connections
    /// (`None`: unlimited).
    pub bandwidth: Option<u64>,
}

/// Faults to inject, switchable while the proxy runs.
#[derive(Debug, Default)]
pub struct Faults {
    /// Cut each connection (both ways) once this many bytes have been
    /// delivered to its client (0: never).
    pub cut_after: AtomicU64,
    /// Answer this many next connections with `503 Slow Down` and close.
    pub fail_next: AtomicU64,
    /// Cut once: when this many more bytes have been delivered to
    /// clients (over all connections, open ones included), cut the
    /// connection carrying the last of them; then disarmed (0: off).
    pub cut_once: AtomicU64,
    /// Connections cut so far (by `cut_after` or `cut_once`).
    pub cuts: AtomicU64,
    /// Answer every request with `403 Forbidden` and an S3 `AccessDenied`
    /// body until cleared: new connections are answered so, open ones are
    /// closed (within ~20 ms) so that their next request opens a new one.
    pub deny: AtomicBool,
    /// Hold every byte bound for clients until cleared.
    pub stall: AtomicBool,
}

impl Faults {
    /// Of a chunk of `n` bytes about to go to a client: how many to deliver
    /// before cutting, if `cut_once` fires within it.
    fn take_cut_once(&self, n: usize) -> Option<usize> {
        let mut fire = None;
        let _ = self
            .cut_once
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                fire = None;
                if left == 0 {
                    None
                } else if left > n as u64 {
                    Some(left - n as u64)
                } else {
                    fire = Some(left as usize);
                    Some(0)
                }
            });
        fire
    }
}

/// A running proxy; dropping it stops accepting (live connections end with
/// their peers).
pub struct Shaper {
    addr: SocketAddr,
    faults: Arc<Faults>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One direction's link: when it is next free to carry a byte.
struct Link {
    next_free: Mutex<Instant>,
    bits_per_sec: Option<u64>,
    one_way: Duration,
}

impl Link {
    /// When `n` bytes read now arrive at the other end.
    fn deliver_at(&self, n: usize) -> Instant {
        let now = Instant::now();
        let Some(bps) = self.bits_per_sec else {
            return now + self.one_way;
        };
        let wire = Duration::from_secs_f64(n as f64 * 8.0 / bps as f64);
        let mut next = self.next_free.lock();
        let start = (*next).max(now);
        *next = start + wire;
        *next + self.one_way
    }
}

/// Refuse anything but loopback: test traffic never leaves the machine.
fn loopback(addr: SocketAddr, what: &str) -> Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{what} {addr}: the shaper only works on loopback addresses"
        )))
    }
}

impl Shaper {
    /// Listen on `listen` (port 0: any) and forward to `upstream`, shaped.
    /// Must be called within a tokio runtime.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr, shape: LinkShape) -> Result<Shaper> {
        loopback(listen, "listen address")?;
        loopback(upstream, "upstream")?;
        let listener = TcpListener::bind(listen)
            .await
            .ctx(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr().ctx(|| "shaper address".into())?;
        let faults = Arc::new(Faults::default());
        let link = |_| {
            Arc::new(Link {
                next_free: Mutex::new(Instant::now()),
                bits_per_sec: shape.bandwidth,
                one_way: shape.rtt / 2,
            })
        };
        let (up, down) = (link(()), link(()));
        let f = faults.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (up, down, f) = (up.clone(), down.clone(), f.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(client, upstream, shape, up, down, f).await {
                        tracing::debug!("shaper connection: {e}");
                    }
                });
            }
        });
        Ok(Shaper { addr, faults, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The faults to switch.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    shape: LinkShape,
    up: Arc<Link>,
    down: Arc<Link>,
    faults: Arc<Faults>,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    // A new connection costs a round trip before its first byte.
    tokio::time::sleep(shape.rtt).await;
    if faults.deny.load(Ordering::Relaxed) {
        return refuse(client, "403 Forbidden", "AccessDenied", "Access Denied").await;
    }
    if take_one(&faults.fail_next) {
        return refuse(client, "503 Slow Down", "SlowDown", "Please reduce your request rate.").await;
    }
    let server = TcpStream::connect(upstream).await?;
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let cut = faults.cut_after.load(Ordering::Relaxed);
    let to_server = pump(cr, sw, up, None, 0);
    let to_client = pump(sr, cw, down, Some(faults.clone()), cut);
    let denied = async {
        while !faults.deny.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Either direction ending ends the connection; so does `deny`.
    tokio::select! {
        r = to_server => r,
        r = to_client => r,
        () = denied => Ok(()),
    }
}

/// Read the request head, answer it with `status` and an S3-style error
/// body, and close.
async fn refuse(mut client: TcpStream, status: &str, code: &str, message: &str) -> std::io::Result<()> {
    let mut head = [0u8; 16 << 10];
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read(&mut head)).await;
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(msg.as_bytes()).await?;
    client.shutdown().await
}

/// Decrement `n` if it is positive; was it?
fn take_one(n: &AtomicU64) -> bool {
    n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
        .is_ok()
}

/// Carry bytes from `r` to `w` over `link`: a reader task timestamps each
/// chunk with its delivery time, this task delivers them in order.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    faults: Option<Arc<Faults>>,
    cut_after: u64,
) -> std::io::Result<()> {
    // About a round trip of a fast link in flight per direction.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let at = link.deliver_at(n);
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    });
    let mut delivered = 0u64;
    while let Some((at, mut chunk)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        if let Some(f) = &faults {
            while f.stall.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let cut = if cut_after > 0 && delivered + chunk.len() as u64 >= cut_after {
            Some((cut_after - delivered) as usize)
        } else {
            faults.as_ref().and_then(|f| f.take_cut_once(chunk.len()))
        };
        if let Some(keep) = cut {
            chunk.truncate(keep);
            w.write_all(&chunk).await?;
            reader.abort();
            if let Some(f) = &faults {
                f.cuts.fetch_add(1, Ordering::Relaxed);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "cut by the shaper",
            ));
        }
        delivered += chunk.len() as u64;
        w.write_all(&chunk).await?;
    }
    reader.abort();
    w.shutdown().await
}

/// Parse a duration: `20ms`, `1.5s`, `50us`, `0`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit.trim() {
        "" if v == 0.0 => 0.0,
        "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        _ => return Err(format!("bad duration {s:?} (use s, ms or us)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad duration {s:?}"))
}

/// Parse a bit rate: `1Gbit`, `100Mbit`, `512kbit`, `1000000` (bits/s).
pub fn parse_rate(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("bad rate {s:?}"))?;
    let mult = match unit.trim().trim_end_matches("/s").trim_end_matches("ps") {
        "" | "bit" | "b" => 1.0,
        "k" | "kbit" => 1e3,
        "m" | "mbit" => 1e6,
        "g" | "gbit" => 1e9,
        _ => return Err(format!("bad rate {s:?} (use kbit, Mbit, Gbit)")),
    };
    let bits = v * mult;
    if !(1.0..=1e12).contains(&bits) {
        return Err(format!("rate {s:?} out of range"));
    }
    Ok(bits as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err() && parse_duration("x").is_err());
        assert_eq!(parse_rate("1Gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("100Mbit/s"), Ok(100_000_000));
        assert!(parse_rate("fast").is_err() && parse_rate("0").is_err());
    }

    /// An upstream that answers every connection with `len` bytes.
    async fn server(len: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut req = [0u8; 1024];
                    let _ = s.read(&mut req).await;
                    let _ = s.write_all(&vec![7u8; len]).await;
                });
            }
        });
        addr
    }

    /// Ask through `addr`; (bytes received, time to the first byte, total).
    async fn fetch(addr: SocketAddr) -> (Vec<u8>, Duration, Duration) {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("send");
        let mut out = Vec::new();
        let mut first = None;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            first.get_or_insert(t0.elapsed());
            out.extend_from_slice(&buf[..n]);
        }
        (out, first.unwrap_or_default(), t0.elapsed())
    }

    #[tokio::test]
    async fn delay_bandwidth_and_faults() {
        let up = server(1 << 20).await;
        let shape = LinkShape {
            rtt: Duration::from_millis(40),
            bandwidth: Some(80_000_000),
        };
        let sh = Shaper::start("127.0.0.1:0".parse().expect("addr"), up, shape)
            .await
            .expect("start");
        // A new connection: one RTT to set up, one for the request and
        // answer; 1 MiB at 80 Mbit/s is ~105 ms on the wire.
        let (data, first, total) = fetch(sh.addr()).await;
        assert_eq!(data.len(), 1 << 20);
        assert!(first >= Duration::from_millis(80), "first byte after {first:?}");
        assert!(total >= Duration::from_millis(180), "1 MiB in {total:?}");

        // Two connections share the link: together no faster than one link.
        let t0 = Instant::now();
        let (a, b) = tokio::join!(fetch(sh.addr()), fetch(sh.addr()));
        assert_eq!(a.0.len() + b.0.len(), 2 << 20);
        assert!(
            t0.elapsed() >= Duration::from_millis(280),
            "2 MiB in {:?}",
            t0.elapsed()
        );

        // Cut mid-body.
        sh.faults().cut_after.store(1000, Ordering::Relaxed);
        let (data, _, _) = fetch(sh.addr()).await;
        assert_eq!(data.len(), 1000);
        sh.faults().cut_after.store(0, Ordering::Relaxed);
        // Cut once, counted over connections: this one is cut, the next is whole.
        sh.faults().cut_once.store(3000, Ordering::Relaxed);
        assert_eq!(fetch(sh.addr()).await.0.len(), 3000);
        assert_eq!(fetch(sh.addr()).await.0.len(), 1 << 20);
        assert_eq!(sh.faults().cuts.load(Ordering::Relaxed), 2);

        // A 503 burst: the next two connections, then service again.
        sh.faults().fail_next.store(2, Ordering::Relaxed);
        for _ in 0..2 {
            let (data, _, _) = fetch(sh.addr()).await;
            assert!(
                data.starts_with(b"HTTP/1.1 503"),
                "{:?}",
                String::from_utf8_lossy(&data[..20.min(data.len())])
            );
        }
        assert_eq!(fetch(sh.addr()).await.0.len(), 1 << 20);

        // Denied: a 403 with an S3 error body, until cleared.
        sh.faults().deny.store(true, Ordering::Relaxed);
        let (data, _, _) = fetch(sh.addr()).await;
        let text = String::from_utf8_lossy(&data);
        assert!(
            text.starts_with("HTTP/1.1 403") && text.contains("<Code>AccessDenied</Code>"),
            "{text}"
        );
        sh.faults().deny.store(false, Ordering::Relaxed);

        // Stall: nothing arrives until released.
        sh.faults().stall.store(true, Ordering::Relaxed);
        let addr = sh.addr();
        let pending = tokio::spawn(fetch(addr));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pending.is_finished());
        sh.faults().stall.store(false, Ordering::Relaxed);
        assert_eq!(pending.await.expect("task").0.len(), 1 << 20);

        // Loopback only.
        let far: SocketAddr = "10.1.2.3:80".parse().expect("addr");
        assert!(Shaper::start("127.0.0.1:0".parse().expect("addr"), far, shape)
            .await
            .is_err());
    }
}
