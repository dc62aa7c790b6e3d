//! The binary's errors: what stops `sluice run`, `check-config`,
//! `migrate` or `ctl`, each with a message for the operator; and binding a
//! listener, whose failure names the address.

use sluice_config::ConfigError;
use sluice_routing::TableError;
use sluice_store::StoreError;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("routing table: {0}")]
    Table(#[from] TableError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("admin tokens: {0}")]
    Tokens(#[from] sluice_admin_api::TokenError),
    #[error("TLS: {0}")]
    Tls(#[from] sluice_transport::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Listens on `addr`.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}
