//! The signer service (`lazysnap signer`): it holds the store's
//! credentials, so pods need none. A pod presents a bearer token; the
//! signer answers, within the token's key prefix, mount specs of presigned
//! GET URLs, listings, presigned multipart uploads and deletes.
//!
//! - [`api`]: the versioned wire types (what a client uses).
//! - [`client`]: the pods' side of the API (`--signer URL --token-file F`).
//! - [`tokens`]: the token file (SHA-256 of each token → prefix and
//!   rights), reloaded on SIGHUP.
//! - [`service`]: the core, testable without HTTP: authorise, check the
//!   name, then call the store.
//! - [`http`]: the hyper adapter (routes, body limit, JSON errors, TLS,
//!   one log line per call with the token's prefix, never the token).

pub mod api;
pub mod client;
pub mod http;
pub mod service;
pub mod tokens;

use std::sync::Arc;

use crate::error::{Error, Result};

/// Watch for SIGHUP: from here on, the signal no longer ends the process.
/// (Installed before the signer says it listens, so a reload sent as soon
/// as it does is never fatal.)
pub fn watch_hangup() -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| Error::io("watching SIGHUP", e))
}

/// Serve `signer` on `listener` (TLS with `tls`) until the process ends;
/// SIGHUP (`hup`, from [`watch_hangup`]) re-reads the token file.
pub async fn run(
    listener: tokio::net::TcpListener,
    signer: Arc<service::Signer>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut hup: tokio::signal::unix::Signal,
) -> Result<()> {
    let reloading = signer.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // (The outcome is logged either way; the old table stays on error.)
            let _ = reloading.tokens().reload();
        }
    });
    http::serve(listener, signer, tls).await
}
