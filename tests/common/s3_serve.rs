//! The S3 server of the tests, demos and benchmarks: s3s-fs serving a
//! directory (each subdirectory a bucket), SigV4 and presigned-URL expiry
//! checked. Used by `tests/common/s3.rs` and `examples/s3_server.rs`.

use std::path::Path;

/// Serve `root` on `listener`, accepting one access key, until accepting
/// fails.
pub async fn serve(listener: tokio::net::TcpListener, root: &Path, ak: &str, sk: &str) -> Result<(), String> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| format!("serving {}: {e:?}", root.display()))?;
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(ak, sk));
    let service = b.build();
    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let (sock, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
        // Without it, keep-alive requests stall ~40 ms each.
        let _ = sock.set_nodelay(true);
        let conn = http
            .serve_connection(hyper_util::rt::TokioIo::new(sock), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
