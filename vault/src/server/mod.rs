//! The server: opening everything, serving it, sealing and unsealing.
//!
//! - [`open`]: the store, keys, engine, policy, credentials and audit trail,
//!   opened in order ([`open::Vault`]), and `vaultd officer`'s one token.
//! - [`serve`](mod@serve): the gRPC services built once, health and reflection,
//!   a graceful stop or seal.
//! - `jobs`: the background jobs of a serving vault.
//! - [`seal`]: Shamir shares: `vaultd init --shares`, the sealed phase that
//!   takes shares, offline unsealing.
//! - [`error`]: [`StartError`], why the vault could not start.
//!
//! [`run`] is what `vaultd` runs, and what a test or a program embedding
//! the vault calls: it serves until `shutdown`, going back to the sealed
//! phase whenever an operator seals a vault initialised with shares.

pub mod error;
mod jobs;
pub mod open;
pub mod seal;
mod serve;

pub use error::StartError;
pub use open::{Vault, load_schema, open_engine, open_store};

use crate::auth::credentials::{BOOTSTRAP_TTL_SECS, IssuedToken};
use crate::config::Config;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Most bytes of request headers (gRPC metadata: `authorization`,
/// `x-request-id`, ...) the transport accepts per request (HTTP/2
/// `SETTINGS_MAX_HEADER_LIST_SIZE`); beyond, it refuses the request.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Shut down.
    Stopped,
    /// Sealed by an operator: unseal again to serve.
    Sealed,
}

/// The role `vaultd officer` issues: the approver of data-role grants.
pub const OFFICER_ROLE: &str = "privacy_officer";

/// The line `vaultd officer` prints on stdout with the officer's token.
pub const OFFICER_LINE_PREFIX: &str = "vaultd privacy officer token (shown once): ";

/// The line `vaultd` prints on stdout with a bootstrap operator token.
pub const BOOTSTRAP_LINE_PREFIX: &str = "vaultd bootstrap operator token (shown once): ";

/// Prints the bootstrap operator token on stdout (never to the log).
pub fn print_bootstrap(token: &IssuedToken) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{BOOTSTRAP_LINE_PREFIX}{}", token.expose());
    let _ = out.flush();
    tracing::warn!(
        ttl_hours = BOOTSTRAP_TTL_SECS / 3600,
        "issued the bootstrap operator token (printed on stdout, once): use it to create principals, then revoke it"
    );
}

/// The line `vaultd` prints on stdout once it takes requests (sealed or
/// not), which scripts and tests wait for.
pub const LISTENING_LINE_PREFIX: &str = "vaultd listening on ";

/// Serves the vault of `config` on `listener` until `shutdown` resolves:
/// a vault initialised with shares starts sealed and goes back to sealed
/// whenever an operator seals it; any other opens at once. Prints on stdout
/// the line `vaultd listening on ADDR` once it takes requests, and a
/// bootstrap operator token a start issues. Then finishes in-flight
/// requests and flushes the trail and the store.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let listener = Arc::new(listener);
    let mut announced = false;
    // One open of the store for both the share configuration and the
    // engine (opening sled reads its log); a vault under shares opens it
    // again once unsealed.
    let (shares, mut store) = if config.data_dir.exists() {
        let store = open_store(&config, config.store_cache_bytes)?;
        match seal::read_config_in(store.as_ref())? {
            Some(sc) => {
                store.close()?;
                (Some(sc), None)
            }
            None => (None, Some(store)),
        }
    } else {
        (None, None)
    };
    loop {
        let unsealed = match &shares {
            Some(sc) => {
                announce(&listener, &mut announced);
                let phase =
                    seal::serve_sealed(&config, sc.clone(), listener.clone(), stop_rx.clone());
                match phase.await? {
                    Some(u) => Some(u),
                    None => return Ok(()),
                }
            }
            None => None,
        };
        let mut vault = Vault::open_with(config.clone(), unsealed, store.take()).await?;
        if let Some(token) = vault.take_bootstrap_token() {
            print_bootstrap(&token);
        }
        let ready = || announce(&listener, &mut announced);
        match vault
            .serve_shared(listener.clone(), stop_rx.clone(), ready)
            .await?
        {
            Served::Sealed if shares.is_some() => continue,
            _ => return Ok(()),
        }
    }
}

/// Prints the listening line, once.
fn announce(listener: &TcpListener, announced: &mut bool) {
    if !*announced && let Ok(addr) = listener.local_addr() {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{LISTENING_LINE_PREFIX}{addr}");
        let _ = out.flush();
        *announced = true;
    }
}
