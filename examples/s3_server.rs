//! A real S3 server on loopback for demos and benchmarks: s3s-fs (SigV4
//! and presigned-URL expiry checked) serving a directory, each subdirectory
//! a bucket. Not part of lazysnap; built from its dev-dependencies.
//!
//!   cargo run --release --example s3_server -- DIR [PORT] [ACCESS_KEY SECRET_KEY]
//!
//! Prints `listening on http://127.0.0.1:PORT` and serves until killed.

use std::net::SocketAddr;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: s3_server DIR [PORT] [ACCESS_KEY SECRET_KEY]");
        std::process::exit(2);
    };
    let port: u16 = args.get(1).map(|p| p.parse()).transpose()?.unwrap_or(0);
    let ak = args.get(2).cloned().unwrap_or_else(|| "AKLAZYSNAPDEMO".into());
    let sk = args.get(3).cloned().unwrap_or_else(|| "lazysnap-demo-secret".into());
    std::fs::create_dir_all(dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let fs = s3s_fs::FileSystem::new(dir).map_err(|e| format!("serving {dir}: {e:?}"))?;
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ak.as_str(), sk.as_str()));
        let service = b.build();
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        loop {
            let (sock, _) = listener.accept().await?;
            // Without it, keep-alive requests stall ~40 ms each.
            let _ = sock.set_nodelay(true);
            let conn = http
                .serve_connection(hyper_util::rt::TokioIo::new(sock), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}
