//! The `vaultd` command line: parses the arguments and runs `serve` (the
//! default: [`server::run`]), `check`, `init`, `officer` or `restore`.

use crate::config::{Config, LogFormat, Overrides};
use crate::server::{self, StartError};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The vault daemon.
#[derive(Debug, Parser)]
#[command(
    name = "vaultd",
    version,
    about = "Privacy-compliance data vault (gRPC)"
)]
pub struct Cli {
    /// Configuration file (TOML); also VAULT_CONFIG.
    #[arg(long, global = true, env = "VAULT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:50051 (port 0 picks a free one).
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Data directory.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Development root key file.
    #[arg(long, global = true)]
    pub root_key_file: Option<PathBuf>,
    /// Field schema (default: the built-in policies/fields.toml).
    #[arg(long, global = true)]
    pub schema: Option<PathBuf>,
    /// Directory of vault.cedarschema and *.cedar (default: the built-in policies/).
    #[arg(long, global = true)]
    pub policy_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the vault (the default).
    Serve,
    /// Initialise the data directory's keys, then exit: under a new root key
    /// split into Shamir shares (--shares N --threshold K, one file per
    /// custodian in --shares-dir; the vault then starts sealed), or under a
    /// development root key file.
    Init {
        /// Split the root key into this many shares (2 to 255).
        #[arg(long, requires = "threshold")]
        shares: Option<u8>,
        /// Shares needed to unseal (2 to --shares).
        #[arg(long, requires = "shares")]
        threshold: Option<u8>,
        /// Where to write share-1.txt ... share-N.txt (not inside the data
        /// directory); hand each to its custodian and delete it here.
        #[arg(long, default_value = "./vault-shares")]
        shares_dir: PathBuf,
    },
    /// Check the configuration, the field schema and the access policy, then exit.
    Check,
    /// Issues a privacy officer's bearer token as the holder of the root key
    /// (offline: the vault must be stopped). This is how the first approver
    /// of data-role grants comes to exist without a client certificate
    /// mapped to the role; it grants nothing the root key's holder could
    /// not already read. Under shares, give the threshold of shares on
    /// standard input, one per line.
    Officer {
        /// The officer's name (1 to 128 of A-Z a-z 0-9 . _ : @ / -).
        #[arg(long)]
        name: String,
        /// The token's life in seconds.
        #[arg(long, default_value_t = 8 * 3600)]
        ttl: u64,
    },
    /// Restore a backup (`vaultctl backup`) into an empty data directory,
    /// then replay the erasure and revocation journals so that erased
    /// subjects stay erased and revoked tokens stay revoked. The backup and
    /// the journals are authenticated with the vault's backup key (so the
    /// root key is needed: the key file, --share files, or the HSM) and
    /// checked whole before anything is written.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Newer journals to replay (`vaultctl backup --journal-only`, or a
        /// newer backup of the same vault); may repeat.
        #[arg(long = "journal", visible_alias = "erasure-journal")]
        journal: Vec<PathBuf>,
        /// A custodian's share file, for a vault initialised with shares
        /// (give the threshold of them); may repeat.
        #[arg(long = "share")]
        share: Vec<PathBuf>,
    },
}

fn init_logging(format: LogFormat) {
    // The PostgreSQL driver logs statements with their parameters (keys,
    // ciphertexts, subject ids) at debug: never below warn, whatever
    // VAULT_LOG asks (its directives for the driver, or any of its modules,
    // are dropped).
    const QUIET: [&str; 2] = ["tokio_postgres", "postgres_protocol"];
    let asked = std::env::var("VAULT_LOG").unwrap_or_else(|_| "info".into());
    let kept: Vec<&str> = asked
        .split(',')
        .filter(|d| !QUIET.iter().any(|q| d.trim_start().starts_with(q)))
        .collect();
    let mut filter = tracing_subscriber::EnvFilter::try_new(kept.join(","))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for quiet in QUIET {
        if let Ok(d) = format!("{quiet}=warn").parse() {
            filter = filter.add_directive(d);
        }
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Registers SIGINT and SIGTERM handlers now (so that a signal arriving
/// right after start-up is not fatal) and returns a future that resolves on
/// the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            tracing::info!("shutdown signal received");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown signal received");
        })
    }
}

/// Runs `vaultd` with the process's arguments and environment.
pub fn main() -> ExitCode {
    // Everything the vault creates (sled's files, audit segments, subject
    // records, backups it restores) is its owner's only, whatever the
    // umask it was started with and whoever made the data directory.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    let overrides = Overrides {
        listen_addr: cli.listen.clone(),
        data_dir: cli.data_dir.clone(),
        root_key_file: cli.root_key_file.clone(),
        schema_file: cli.schema.clone(),
        policy_dir: cli.policy_dir.clone(),
    };
    let config = match Config::load(cli.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vaultd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vaultd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), StartError> = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Check => {
                let schema = std::sync::Arc::new(server::load_schema(&config)?);
                let policy = crate::policy::PolicyEngine::load(config.policy_dir.clone(), schema)?;
                eprintln!(
                    "vaultd: configuration, schema and access policy ({} policies) are valid",
                    policy.summary().policies
                );
                Ok(())
            }
            Command::Init {
                shares: Some(n),
                threshold: Some(k),
                shares_dir,
            } => {
                let done = server::seal::init(&config, n, k, &shares_dir).await?;
                if let Some(token) = &done.bootstrap {
                    server::print_bootstrap(token);
                }
                eprintln!(
                    "vaultd: initialised {} under a root key split into {n} shares, {k} needed to unseal:",
                    config.data_dir.display()
                );
                for f in &done.share_files {
                    eprintln!("  {}", f.display());
                }
                eprintln!("vaultd: give each share to one custodian and delete it here; the vault starts sealed");
                Ok(())
            }
            Command::Init { .. } => {
                let mut c = config;
                c.init_if_missing = true;
                let engine = server::open_engine(&c, None).await?;
                engine.store().flush()?;
                eprintln!(
                    "vaultd: initialised {} (root key file {})",
                    c.data_dir.display(),
                    c.root_key_file.display()
                );
                Ok(())
            }
            Command::Officer { name, ttl } => {
                let unsealed = match server::seal::read_config(&config)? {
                    Some(sc) => Some(server::seal::unseal_from_lines(&sc, std::io::stdin().lock())?),
                    None => None,
                };
                let mut vault = server::Vault::open_with(config, unsealed, None).await?;
                if let Some(token) = vault.take_bootstrap_token() {
                    server::print_bootstrap(&token);
                }
                let token = vault.issue_officer(&name, ttl).await?;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}{}", server::OFFICER_LINE_PREFIX, token.expose());
                let _ = out.flush();
                eprintln!("vaultd: issued a privacy officer token to {name} (audited); it approves grants of data roles");
                Ok(())
            }
            Command::Restore {
                from,
                journal,
                share,
            } => {
                // Everything is checked before the data directory is opened
                // (or made): a refused backup leaves it as it was.
                let root = crate::backup::restore_root(&config, &share)?;
                let checked = crate::backup::check(&root, &from, &journal)?;
                drop(root);
                let store = server::open_store(&config, config.store_cache_bytes)?;
                let result = crate::backup::restore(store.as_ref(), checked).await;
                store.close()?;
                let r = result?;
                eprintln!(
                    "vaultd: restored {} subjects and {} entries from {} into {}; journals: {} entries added, {} subjects erased again, {} credentials revoked again",
                    r.backup.records,
                    r.backup.entries,
                    from.display(),
                    config.data_dir.display(),
                    r.journal_added,
                    r.erased_again,
                    r.revoked_again
                );
                Ok(())
            }
            Command::Serve => {
                let listener = tokio::net::TcpListener::bind(config.listen_addr)
                    .await
                    .map_err(|e| StartError::io(format!("cannot listen on {}", config.listen_addr), e))?;
                let shutdown =
                    shutdown_signal().map_err(|e| StartError::io("cannot handle signals", e))?;
                server::run(config, listener, shutdown).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "vaultd failed");
            eprintln!("vaultd: {e}");
            ExitCode::FAILURE
        }
    }
}
