//! A real S3 server on loopback for demos and benchmarks: s3s-fs (SigV4
//! and presigned-URL expiry checked) serving a directory, each subdirectory
//! a bucket. Not part of lazysnap; built from its dev-dependencies.
//!
//!   cargo run --release --example s3_server -- DIR [PORT] [ACCESS_KEY SECRET_KEY]
//!
//! Prints `listening on http://127.0.0.1:PORT` and serves until killed.

use std::net::SocketAddr;

#[path = "../tests/common/s3_serve.rs"]
mod s3_serve;

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
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        println!("listening on http://{}", listener.local_addr()?);
        s3_serve::serve(listener, std::path::Path::new(dir), &ak, &sk).await?;
        Ok(())
    })
}
