//! A [`Store`] on PostgreSQL (issue 20, first step: keyed data and key
//! slots; see docs/postgres-plan.md for what is still to come).
//!
//! Two tables hold what sled and the key-slot file hold on the embedded
//! store: `vault_kv (k BYTEA PRIMARY KEY, v BYTEA)`, with the key layout of
//! [`super::keys`], and `vault_slots (slot BIGINT PRIMARY KEY, …)`, two
//! halves per slot as in [`super::slots`]. A [`Store::commit`] is one
//! transaction: its operations, key writes and shreds included, become
//! durable together at `COMMIT` (PostgreSQL's group commit shares the WAL
//! flush), and a failed one leaves nothing (`ROLLBACK`). A shred is an
//! `UPDATE` that sets the half to `NULL`: the old row version lives on in
//! the table until `VACUUM` and in the WAL (docs/postgres-plan.md,
//! "Erasure where rows are updated in place", says what that means and
//! what is planned).
//!
//! The SQL is the subset that CockroachDB and YugabyteDB also accept
//! (`BYTEA`, `BIGINT`, `INT`, primary keys, `INSERT … ON CONFLICT`, range
//! scans on the primary key); [`MIGRATIONS`] are applied at open, and a
//! database migrated by a newer binary is refused.
//!
//! Statements go with their parameters' types (`query_typed`,
//! `execute_typed`): one round trip each, no statement prepared first.
//!
//! The connections live on a runtime of the store's own (two threads), so
//! that the synchronous reads of [`Store`] can wait for them from any
//! thread: on a worker of a multi-threaded runtime the wait is wrapped in
//! `block_in_place`, so the worker's other tasks move on.

use super::{
    Batch, BoxFuture, Changes, Cluster, Entries, Entry, Listener, Op, SlotKeys, Store, StoreError,
};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Mutex;
use tokio_postgres::types::Type;

/// The schema, one migration per entry, applied in order; the number of
/// the last one applied is kept in `vault_schema`.
pub const MIGRATIONS: &[&str] = &[
    // 1: keyed entries and key slots.
    "CREATE TABLE vault_kv (k BYTEA PRIMARY KEY, v BYTEA NOT NULL);
     CREATE TABLE vault_slots (slot BIGINT PRIMARY KEY,
        v0 BIGINT, k0 BYTEA, v1 BIGINT, k1 BYTEA)",
    // 2: several nodes: counters, the nodes seen, the changes that other
    // nodes' caches follow, and the leases of cluster-wide jobs.
    "CREATE TABLE vault_counters (name TEXT PRIMARY KEY, next BIGINT NOT NULL);
     CREATE TABLE vault_nodes (node TEXT PRIMARY KEY, incarnation BYTEA NOT NULL,
        started TIMESTAMPTZ NOT NULL, seen TIMESTAMPTZ NOT NULL, version TEXT NOT NULL);
     CREATE SEQUENCE vault_change_ids CACHE 1;
     CREATE TABLE vault_changes (id BIGINT PRIMARY KEY, node TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL, keys BYTEA NOT NULL);
     CREATE INDEX vault_changes_at ON vault_changes (at);
     CREATE TABLE vault_leases (job TEXT PRIMARY KEY, holder TEXT NOT NULL,
        until TIMESTAMPTZ NOT NULL);
     CREATE TABLE vault_commits (id BYTEA PRIMARY KEY, at TIMESTAMPTZ NOT NULL);
     CREATE INDEX vault_commits_at ON vault_commits (at)",
];

/// How often a node looks for other nodes' changes (and says it is alive).
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A node not seen for this long is gone: its id may be taken again, and
/// Status no longer lists it.
const NODE_GONE_SECS: i64 = 15;

/// How long a change id that was handed out but not seen committed is
/// looked for again (a transaction under way on another node commits
/// within [`ANSWER_WITHIN`]; one rolled back never shows).
const HOLE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long changes are kept in `vault_changes`, and commit markers in
/// `vault_commits`.
const CHANGES_KEPT: &str = "1 hour";

/// Past this many bytes of changed keys, one commit is announced as
/// "everything changed" (the other nodes drop their caches).
const CHANGE_KEYS_MAX: usize = 16 * 1024;

/// Longest wait for the database to answer one operation (a read, or a
/// commit's transaction), connecting included.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Rows read at once by the scans that visit everything.
const PAGE: usize = 1000;

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user@host:port/database?…` without a password.
    pub url: String,
    /// The password, from a file or the environment (never the URL).
    pub password: Option<secrecy::SecretString>,
    /// Connections in the pool.
    pub pool: usize,
    /// CA certificate (PEM) of the server's TLS certificate: TLS on.
    pub ca_file: Option<std::path::PathBuf>,
    /// The schema that holds the vault's tables (`None`: the user's
    /// default, normally `public`); created if missing.
    pub schema: Option<String>,
    /// This node's id among the nodes that share the database: two live
    /// nodes with one id are refused.
    pub node: String,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &self.url)
            .field("pool", &self.pool)
            .field("tls", &self.ca_file.is_some())
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// An error inside a connection's work: PostgreSQL's, or a request the
/// store refuses before sending it.
enum PgError {
    Db(tokio_postgres::Error),
    Invalid(&'static str),
    /// The connection broke while `COMMIT` was under way: the transaction
    /// may or may not have happened.
    Unknown,
    /// An [`Op::Insert`] or [`Op::Expect`] failed: rolled back.
    Conflict,
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

/// What went wrong, in words that carry no value: the SQLSTATE and
/// PostgreSQL's message (never its detail, which may quote a row), or the
/// kind of a connection error.
fn pg(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message())),
        // (A connection error carries no row data: its words help.)
        None => StoreError::Backend(format!("postgres: {e}")),
    }
}

fn parse_config(s: &PgSettings) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = s
        .url
        .parse()
        .map_err(|_| StoreError::Backend("postgres_url: not a PostgreSQL URL".into()))?;
    if config.get_password().is_some() {
        return Err(StoreError::Backend(
            "postgres_url: holds a password; put it in postgres_password_file or VAULT_POSTGRES_PASSWORD instead".into(),
        ));
    }
    if config.get_options().is_some() {
        return Err(StoreError::Backend(
            "postgres_url: holds options; the vault sets them (postgres_schema)".into(),
        ));
    }
    if let Some(p) = &s.password {
        use secrecy::ExposeSecret;
        config.password(p.expose_secret());
    }
    // Every commit durable when it returns, and no statement or connection
    // attempt hanging a request for long.
    // A transaction whose client vanished (its COMMIT lost on the wire)
    // ends within 15 s, not when the operating system's keepalive gives up
    // (hours): it holds row locks and a commit marker other nodes wait on.
    let mut options = "-c synchronous_commit=on -c statement_timeout=10000 \
         -c idle_in_transaction_session_timeout=15000 -c tcp_keepalives_idle=10 \
         -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
        .to_owned();
    if let Some(schema) = &s.schema {
        if !is_identifier(schema) {
            return Err(StoreError::Backend(
                "postgres_schema: lower-case letters, digits and _ only, starting with a letter (at most 63)".into(),
            ));
        }
        options.push_str(&format!(" -c search_path={schema}"));
    }
    config.options(options);
    config.connect_timeout(std::time::Duration::from_secs(5));
    config.keepalives(true);
    config.keepalives_idle(std::time::Duration::from_secs(30));
    if s.ca_file.is_some() {
        // With a CA, TLS or nothing: never the plaintext fallback of
        // `sslmode=prefer` (the driver's default), nor `disable`.
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
            return Err(StoreError::Backend(
                "postgres_url: sslmode=disable with postgres_ca_file set".into(),
            ));
        }
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    } else if !loopback_only(&config) {
        return Err(StoreError::Backend(
            "postgres_url: a host that is not loopback needs TLS (postgres_ca_file)".into(),
        ));
    }
    Ok(config)
}

/// A plain SQL identifier: safe to name a schema without quoting.
fn is_identifier(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Whether every host (and host address) of `config` is the loopback
/// interface or a Unix socket.
fn loopback_only(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    config
        .get_hostaddrs()
        .iter()
        .all(std::net::IpAddr::is_loopback)
        && config.get_hosts().iter().all(|h| match h {
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Host::Unix(_) => true,
        })
}

fn tls(ca: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|_| StoreError::Backend("postgres_ca_file: cannot be read as PEM".into()))?;
    for cert in certs {
        let cert = cert
            .map_err(|_| StoreError::Backend("postgres_ca_file: a damaged certificate".into()))?;
        roots
            .add(cert)
            .map_err(|_| StoreError::Backend("postgres_ca_file: an unusable certificate".into()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| StoreError::Backend("postgres TLS: no protocol version".into()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// One connection, reopened when it breaks.
struct Conn {
    client: Option<tokio_postgres::Client>,
}

/// The connections, taken in turn.
struct Pool {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    conns: Vec<Mutex<Conn>>,
    next: AtomicUsize,
    /// Set while the poller finds the database unreachable: operations fail
    /// at once instead of waiting [`ANSWER_WITHIN`] each.
    down: AtomicBool,
    /// Round trips to the database so far ([`Store::round_trips`]).
    trips: std::sync::atomic::AtomicU64,
}

impl Pool {
    async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        let (client, handle) = match &self.tls {
            Some(tls) => {
                let (c, conn) = self.config.connect(tls.clone()).await.map_err(|e| pg(&e))?;
                (c, tokio::spawn(conn))
            }
            None => {
                let (c, conn) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| pg(&e))?;
                (c, tokio::spawn(conn))
            }
        };
        drop(handle); // the connection task ends when the client goes
        Ok(client)
    }

    /// Runs `f` on a connection (a free one if there is, opened again if
    /// it was closed), within [`ANSWER_WITHIN`]: past it the connection is
    /// dropped (the server then aborts what it was doing) and the answer is
    /// [`Pool::LATE`].
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, PgError>,
    ) -> Result<T, StoreError> {
        if self.down.load(Ordering::Acquire) {
            return Err(StoreError::Backend(Self::DOWN.into()));
        }
        self.probe(f).await
    }

    /// [`Pool::with`], even while the database looks unreachable (to find
    /// out whether it still is).
    async fn probe<T>(
        &self,
        f: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, PgError>,
    ) -> Result<T, StoreError> {
        self.trips.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..n).find_map(|k| self.conns.get((start + k) % n)?.try_lock().ok());
        let mut conn = match free {
            Some(c) => c,
            None => {
                self.conns
                    .get(start % n)
                    .ok_or(StoreError::Closed)?
                    .lock()
                    .await
            }
        };
        let answer = tokio::time::timeout(ANSWER_WITHIN, async {
            if conn
                .client
                .as_ref()
                .is_none_or(tokio_postgres::Client::is_closed)
            {
                conn.client = Some(self.connect().await?);
            }
            let client = conn.client.as_mut().ok_or(StoreError::Closed)?;
            f(client).await.map_err(|e| match e {
                // A serialization failure or a deadlock: another
                // transaction won; this one did nothing.
                PgError::Db(e)
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE)
                        || e.code()
                            == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
                {
                    StoreError::Conflict
                }
                PgError::Db(e) => pg(&e),
                PgError::Invalid(what) => StoreError::Backend(what.into()),
                PgError::Unknown => StoreError::Unsettled,
                PgError::Conflict => StoreError::Conflict,
            })
        })
        .await;
        match answer {
            Ok(r) => r,
            Err(_) => {
                conn.client = None;
                Err(StoreError::Backend(Self::LATE.into()))
            }
        }
    }

    /// What [`Pool::with`] answers past [`ANSWER_WITHIN`].
    const LATE: &'static str = "postgres: no answer within 10 s";
    /// What [`Pool::with`] answers while the database looks unreachable.
    const DOWN: &'static str = "postgres: the database does not answer";
}

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    pool: Arc<Pool>,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    /// Commits whose outcome is not known yet (the connection broke during
    /// `COMMIT`, and the database has not said since): no writes while
    /// there is one ([`settle`]).
    unsettled: Arc<AtomicUsize>,
    closed: AtomicBool,
    /// This node's id.
    node: Arc<str>,
    /// This process's mark on its node row: a row another process took
    /// over (after this one was unseen for [`NODE_GONE_SECS`]) stops it.
    incarnation: Arc<[u8]>,
    /// The last change id when the store opened: the poller follows the
    /// changes after it (so none made while this node loads is missed).
    first_change: i64,
    /// The peers and reachability the poller saw last.
    seen: Arc<std::sync::Mutex<Seen>>,
    /// Stops the poller.
    stop: Arc<tokio::sync::Notify>,
}

/// What the poller last saw of the cluster.
#[derive(Default)]
struct Seen {
    peers: Vec<String>,
    reachable: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("connections", &self.pool.conns.len())
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The node lock released now, not when the server notices.
        let _ = self.close();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The first key after every key that starts with `prefix` (`None`: no
/// such key, the prefix is all `0xff`).
fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A key slot number as the database stores it.
fn slot_param(slot: u64) -> Result<i64, &'static str> {
    i64::try_from(slot).map_err(|_| "key slot number out of range")
}

fn keys_of(row: &tokio_postgres::Row) -> SlotKeys {
    let mut keys = Vec::new();
    for (v, k) in [("v0", "k0"), ("v1", "k1")] {
        let version: Option<i64> = row.get(v);
        let key: Option<Vec<u8>> = row.get(k);
        if let (Some(v), Some(k)) = (version.and_then(|v| u32::try_from(v).ok()), key) {
            keys.push((v, k));
        }
    }
    keys.sort_by_key(|(v, _)| *v);
    keys
}

impl PgStore {
    /// Connects, applies the migrations this binary knows, and refuses a
    /// database migrated by a newer one.
    pub fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        let config = parse_config(settings)?;
        let tls = settings.ca_file.as_deref().map(tls).transpose()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vault-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres runtime: {e}")))?;
        let pool = Arc::new(Pool {
            config,
            tls,
            conns: (0..settings.pool.max(1))
                .map(|_| Mutex::new(Conn { client: None }))
                .collect(),
            next: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            trips: std::sync::atomic::AtomicU64::new(0),
        });
        if settings.node.is_empty() || settings.node.len() > 128 {
            return Err(StoreError::Backend("node_id: 1 to 128 bytes".into()));
        }
        let mut incarnation = vec![0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut incarnation)
            .map_err(|_| StoreError::Backend("randomness for a node's incarnation".into()))?;
        let mut store = Self {
            pool,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            unsettled: Arc::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            node: Arc::from(settings.node.as_str()),
            incarnation: Arc::from(incarnation.as_slice()),
            first_change: 0,
            seen: Arc::new(std::sync::Mutex::new(Seen {
                peers: Vec::new(),
                reachable: true,
            })),
            stop: Arc::new(tokio::sync::Notify::new()),
        };
        let schema = settings.schema.clone();
        store.wait(|pool| async move { migrate(&pool, schema.as_deref()).await })?;
        store.register()?;
        store.first_change = store.wait(|pool| async move {
            pool.with(async |c| {
                let row = c
                    .query_typed_one("SELECT COALESCE(MAX(id), 0) FROM vault_changes", &[])
                    .await?;
                Ok(row.get::<_, i64>(0))
            })
            .await
        })?;
        tracing::warn!(
            node = %store.node,
            "storage on PostgreSQL: an erasure does not reach the database's old row versions, WAL or backups (docs/operations.md, PostgreSQL)"
        );
        Ok(store)
    }

    /// Enters this node in `vault_nodes`, refusing an id a live node has
    /// (one seen within [`NODE_GONE_SECS`]; a node that stops cleanly
    /// removes its row, one that died leaves it to age out).
    fn register(&self) -> Result<(), StoreError> {
        let node = self.node.to_string();
        let incarnation = self.incarnation.to_vec();
        let got = self.wait(|pool| async move {
            pool.with(async move |c| {
                let version = env!("CARGO_PKG_VERSION").to_owned();
                let n = c
                    .execute_typed(
                        &format!(
                            "INSERT INTO vault_nodes (node, incarnation, started, seen, version) VALUES ($1, $2, now(), now(), $3)
                             ON CONFLICT (node) DO UPDATE SET incarnation = excluded.incarnation, started = now(), seen = now(), version = excluded.version
                             WHERE vault_nodes.seen < now() - INTERVAL '{NODE_GONE_SECS} seconds'"
                        ),
                        &[(&node, Type::TEXT), (&incarnation, Type::BYTEA), (&version, Type::TEXT)],
                    )
                    .await?;
                Ok(n == 1)
            })
            .await
        })?;
        if got {
            return Ok(());
        }
        Err(StoreError::Backend(format!(
            "node id {} belongs to a node seen alive on this database in the last {NODE_GONE_SECS} s: give each node its own node_id (if that node died, start again after {NODE_GONE_SECS} s)",
            self.node
        )))
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if self.unsettled.load(Ordering::Acquire) > 0 {
            return Err(StoreError::Unsettled);
        }
        Ok(())
    }

    /// Runs `f` on the store's runtime and waits for it, from any thread.
    fn wait<T, F>(&self, f: impl FnOnce(Arc<Pool>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.pool.clone());
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let recv = move || rx.recv().unwrap_or(Err(StoreError::Closed));
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(recv)
            }
            _ => recv(),
        }
    }

    /// Runs `f` on the store's runtime, awaited.
    async fn run<T, F>(&self, f: impl FnOnce(Arc<Pool>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.handle
            .spawn(f(self.pool.clone()))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Calls `f` with every entry whose key is in `[start, end)` (`None`:
    /// no end), in key order, a page at a time.
    fn each_in(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        let mut from = start;
        loop {
            let page = self.scan(from, end.clone(), PAGE, false)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            from = last.clone();
            from.push(0);
            for (k, v) in &page {
                f(k, v);
            }
        }
    }

    fn scan(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: usize,
        descending: bool,
    ) -> Result<Entries, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.wait(move |pool| async move {
            pool.with(async move |c| {
                let order = if descending { "DESC" } else { "ASC" };
                let rows = match &end {
                    Some(end) => {
                        c.query_typed(
                            &format!("SELECT k, v FROM vault_kv WHERE k >= $1 AND k < $2 ORDER BY k {order} LIMIT $3"),
                            &[(&start, Type::BYTEA), (end, Type::BYTEA), (&limit, Type::INT8)],
                        )
                        .await?
                    }
                    None => {
                        c.query_typed(
                            &format!("SELECT k, v FROM vault_kv WHERE k >= $1 ORDER BY k {order} LIMIT $2"),
                            &[(&start, Type::BYTEA), (&limit, Type::INT8)],
                        )
                        .await?
                    }
                };
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            })
            .await
        })
    }
}

async fn migrate(pool: &Pool, schema: Option<&str>) -> Result<(), StoreError> {
    let known = MIGRATIONS.len();
    let applied = pool
        .with(async |c| {
            if let Some(schema) = schema {
                // Created only if missing: a user without the right to
                // create schemas can use one made for it.
                let exists = c
                    .query_opt(
                        "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
                        &[&schema],
                    )
                    .await?
                    .is_some();
                if !exists {
                    // An identifier checked by `is_identifier`.
                    c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                        .await?;
                }
            }
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS vault_schema (id INT PRIMARY KEY, version INT NOT NULL)",
            )
            .await?;
            let tx = c.transaction().await?;
            // One row, taken for update: two nodes starting at once migrate
            // one after the other.
            tx.execute(
                "INSERT INTO vault_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
                &[],
            )
            .await?;
            let row = tx
                .query_one("SELECT version FROM vault_schema WHERE id = 1 FOR UPDATE", &[])
                .await?;
            let version: i32 = row.get(0);
            let from = usize::try_from(version).unwrap_or(0);
            for sql in MIGRATIONS.iter().skip(from) {
                tx.batch_execute(sql).await?;
            }
            if from < known {
                let to = i32::try_from(known).unwrap_or(i32::MAX);
                tx.execute("UPDATE vault_schema SET version = $1 WHERE id = 1", &[&to])
                    .await?;
            }
            tx.commit().await?;
            Ok(from)
        })
        .await?;
    if applied > known {
        return Err(StoreError::Backend(format!(
            "the database's schema is at migration {applied}, newer than this binary's {known}: run the newer vaultd, or restore a backup into an empty database"
        )));
    }
    Ok(())
}

impl Store for PgStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.wait(move |pool| async move {
            pool.with(async move |c| {
                let row = c
                    .query_typed_opt(
                        "SELECT v FROM vault_kv WHERE k = $1",
                        &[(&key, Type::BYTEA)],
                    )
                    .await?;
                Ok(row.map(|r| r.get(0)))
            })
            .await
        })
    }

    fn keys(&self, slot: u64) -> Result<SlotKeys, StoreError> {
        let slot = slot_param(slot).map_err(|e| StoreError::Backend(e.into()))?;
        self.wait(move |pool| async move {
            pool.with(async move |c| {
                let row = c
                    .query_typed_opt(
                        "SELECT v0, k0, v1, k1 FROM vault_slots WHERE slot = $1",
                        &[(&slot, Type::INT8)],
                    )
                    .await?;
                Ok(row.as_ref().map(keys_of).unwrap_or_default())
            })
            .await
        })
    }

    fn for_each_key_slot(&self, f: &mut dyn FnMut(u64, &SlotKeys)) -> Result<(), StoreError> {
        let mut after = -1i64;
        let page = i64::try_from(PAGE).unwrap_or(i64::MAX);
        loop {
            let rows: Vec<(i64, SlotKeys)> = self.wait(move |pool| async move {
                pool.with(async move |c| {
                    let rows = c
                        .query_typed(
                            "SELECT slot, v0, k0, v1, k1 FROM vault_slots WHERE slot > $1 ORDER BY slot LIMIT $2",
                            &[(&after, Type::INT8), (&page, Type::INT8)],
                        )
                        .await?;
                    Ok(rows.iter().map(|r| (r.get(0), keys_of(r))).collect())
                })
                .await
            })?;
            let Some(&(last, _)) = rows.last() else {
                return Ok(());
            };
            for (slot, keys) in &rows {
                if !keys.is_empty() {
                    f(u64::try_from(*slot).unwrap_or(0), keys);
                }
            }
            after = last;
        }
    }

    fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Entries, StoreError> {
        self.scan(prefix.to_vec(), after_prefix(prefix), limit, false)
    }

    fn commit(&self, batch: Batch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.writable()?;
            let unsettled = self.unsettled.clone();
            let node = self.node.clone();
            self.run(move |pool| transact(pool, batch, unsettled, node))
                .await
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.writable()?;
        let unsettled = self.unsettled.clone();
        let node = self.node.clone();
        self.wait(move |pool| transact(pool, batch, unsettled, node))
    }

    fn durable(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // Every commit is durable when it returns (synchronous_commit).
        Box::pin(async { Ok(()) })
    }

    fn scan_from(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Entries, StoreError> {
        let from = if start > prefix { start } else { prefix };
        self.scan(from.to_vec(), after_prefix(prefix), limit, false)
    }

    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .scan(prefix.to_vec(), after_prefix(prefix), 1, true)?
            .into_iter()
            .next())
    }

    fn for_each_subject(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        let prefix = super::keys::SUBJECT_PREFIX;
        self.each_in(prefix.to_vec(), after_prefix(prefix), f)
    }

    fn for_each_entry(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        // Everything before the subject records, then everything after.
        let prefix = super::keys::SUBJECT_PREFIX;
        self.each_in(Vec::new(), Some(prefix.to_vec()), f)?;
        match after_prefix(prefix) {
            Some(after) => self.each_in(after, None, f),
            None => Ok(()),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        // Not portable (PostgreSQL's relation sizes): reported as unknown.
        Ok(0)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    fn reserve_slots(
        &self,
        floor: u64,
        count: u64,
    ) -> Result<Option<std::ops::Range<u64>>, StoreError> {
        let floor = slot_param(floor).map_err(|e| StoreError::Backend(e.into()))?;
        let count = slot_param(count).map_err(|e| StoreError::Backend(e.into()))?;
        let end: i64 = self.wait(move |pool| async move {
            pool.with(async move |c| {
                let row = c
                    .query_typed_one(
                        "INSERT INTO vault_counters (name, next) VALUES ('slot', $1 + $2)
                         ON CONFLICT (name) DO UPDATE SET next = GREATEST(vault_counters.next, $1) + $2
                         RETURNING next",
                        &[(&floor, Type::INT8), (&count, Type::INT8)],
                    )
                    .await?;
                Ok(row.get(0))
            })
            .await
        })?;
        let end = u64::try_from(end).map_err(|_| StoreError::Backend("slot counter".into()))?;
        Ok(Some(end.saturating_sub(count.unsigned_abs())..end))
    }

    fn watch(&self, listener: Listener) {
        let poller = Poller {
            pool: self.pool.clone(),
            conn: None,
            node: self.node.clone(),
            incarnation: self.incarnation.clone(),
            seen: self.seen.clone(),
            listener,
            last: self.first_change,
            holes: std::collections::BTreeMap::new(),
            last_ok: std::time::Instant::now(),
            cut_off: false,
        };
        let stop = self.stop.clone();
        self.handle.spawn(async move {
            tokio::select! {
                () = poller.run() => {}
                () = stop.notified() => {}
            }
        });
    }

    fn round_trips(&self) -> u64 {
        self.pool.trips.load(Ordering::Relaxed)
    }

    fn cluster(&self) -> Option<Cluster> {
        let seen = self.seen.lock().ok()?;
        Some(Cluster {
            node: self.node.to_string(),
            peers: seen.peers.clone(),
            reachable: seen.reachable,
        })
    }

    fn lease(
        &self,
        job: &str,
        hold: std::time::Duration,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let job = job.to_owned();
        let node = self.node.to_string();
        let millis = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
        Box::pin(async move {
            self.writable()?;
            self.run(move |pool| async move {
                pool.with(async move |c| {
                    // Taken where nobody holds it, kept by its holder, taken
                    // over once its holder let it run out.
                    let n = c
                        .execute_typed(
                            "INSERT INTO vault_leases (job, holder, until) VALUES ($1, $2, now() + $3 * INTERVAL '1 millisecond')
                             ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, until = excluded.until
                             WHERE vault_leases.holder = excluded.holder OR vault_leases.until < now()",
                            &[(&job, Type::TEXT), (&node, Type::TEXT), (&millis, Type::INT8)],
                        )
                        .await?;
                    Ok(n == 1)
                })
                .await
            })
            .await
        })
    }

    fn close(&self) -> Result<(), StoreError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop.notify_one();
        // This node's row goes, so that its id is free at once (a node that
        // dies leaves it to age out).
        let node = self.node.to_string();
        let incarnation = self.incarnation.to_vec();
        self.wait(|pool| async move {
            let _ = pool
                .probe(async move |c| {
                    // Only while the id is still this process's (not one
                    // another process took over).
                    c.execute_typed(
                        "DELETE FROM vault_leases WHERE holder = $1
                         AND EXISTS (SELECT 1 FROM vault_nodes WHERE node = $1 AND incarnation = $2)",
                        &[(&node, Type::TEXT), (&incarnation, Type::BYTEA)],
                    )
                    .await?;
                    c.execute_typed(
                        "DELETE FROM vault_nodes WHERE node = $1 AND incarnation = $2",
                        &[(&node, Type::TEXT), (&incarnation, Type::BYTEA)],
                    )
                    .await?;
                    Ok(())
                })
                .await;
            Ok(())
        })
    }
}

/// Follows the other nodes' changes ([`Store::watch`]) and says this node
/// is alive, on a connection of its own (never queued behind requests),
/// each round within [`ROUND_WITHIN`].
struct Poller {
    pool: Arc<Pool>,
    conn: Option<tokio_postgres::Client>,
    node: Arc<str>,
    incarnation: Arc<[u8]>,
    seen: Arc<std::sync::Mutex<Seen>>,
    listener: Listener,
    /// The highest change id seen.
    last: i64,
    /// Change ids below `last` not seen yet (a transaction under way, or
    /// rolled back), and when they were first missed.
    holes: std::collections::BTreeMap<i64, std::time::Instant>,
    /// When a round last succeeded.
    last_ok: std::time::Instant,
    /// Whether this node is cut off: the listener was told "everything",
    /// and is told again once the database answers.
    cut_off: bool,
}

/// Longest a round of the poller may take.
const ROUND_WITHIN: std::time::Duration = std::time::Duration::from_millis(750);

/// Past this long without a successful round, a node's caches may be
/// stale: it drops them and answers nothing from memory.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl Poller {
    async fn run(mut self) {
        let mut round: u64 = 0;
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = match tokio::time::timeout(ROUND_WITHIN, self.round(round)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Backend(
                    "postgres: the change poll did not finish in time".into(),
                )),
            };
            round = round.wrapping_add(1);
            match result {
                Ok(changes) => {
                    self.last_ok = std::time::Instant::now();
                    if self.cut_off {
                        // Back: what changed meanwhile is unknown (rows may
                        // even have been pruned): everything again, now
                        // that it can be read.
                        self.cut_off = false;
                        self.pool.down.store(false, Ordering::Release);
                        if let Ok(mut s) = self.seen.lock() {
                            s.reachable = true;
                        }
                        tracing::warn!(
                            "the database answers again: caches and credentials read again"
                        );
                        self.tell(Changes::Everything).await;
                    } else if let Some(changes) = changes {
                        self.tell(changes).await;
                    }
                }
                Err(StoreError::Closed) => {
                    // This node's id was taken over (it was not seen for
                    // longer than NODE_GONE_SECS): it serves no more.
                    self.cut_off = true;
                    self.pool.down.store(true, Ordering::Release);
                    if let Ok(mut s) = self.seen.lock() {
                        s.reachable = false;
                    }
                    tracing::error!(node = %self.node, "another vaultd took this node's id after it was unseen for a while: this node answers nothing from the database until restarted");
                    self.tell(Changes::Everything).await;
                    return;
                }
                Err(e) => {
                    self.conn = None;
                    if self.last_ok.elapsed() >= STALE_AFTER && !self.cut_off {
                        self.cut_off = true;
                        self.pool.down.store(true, Ordering::Release);
                        if let Ok(mut s) = self.seen.lock() {
                            s.reachable = false;
                        }
                        tracing::error!(error = %e, "the database does not answer: caches dropped, requests fail until it does");
                        self.tell(Changes::Everything).await;
                    }
                }
            }
        }
    }

    async fn tell(&self, changes: Changes) {
        let listener = self.listener.clone();
        let _ = tokio::task::spawn_blocking(move || listener(&changes)).await;
    }

    /// One round: the changes since the last one (every round), this
    /// node's heartbeat and its peers (every 8th), old changes and commit
    /// markers removed (every 240th). `Closed` when this node's row is no
    /// longer its own.
    async fn round(&mut self, round: u64) -> Result<Option<Changes>, StoreError> {
        if self
            .conn
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            self.conn = Some(self.pool.connect().await?);
        }
        let c = self.conn.as_mut().ok_or(StoreError::Closed)?;
        self.pool.trips.fetch_add(1, Ordering::Relaxed);
        let node = self.node.to_string();
        if round.is_multiple_of(8) {
            let incarnation = self.incarnation.to_vec();
            let mine = c
                .execute_typed(
                    "UPDATE vault_nodes SET seen = now() WHERE node = $1 AND incarnation = $2",
                    &[(&node, Type::TEXT), (&incarnation, Type::BYTEA)],
                )
                .await
                .map_err(|e| pg(&e))?;
            if mine != 1 {
                return Err(StoreError::Closed);
            }
            let rows = c
                .query_typed(
                    &format!("SELECT node FROM vault_nodes WHERE node <> $1 AND seen > now() - INTERVAL '{NODE_GONE_SECS} seconds' ORDER BY node"),
                    &[(&node, Type::TEXT)],
                )
                .await
                .map_err(|e| pg(&e))?;
            let peers = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            if let Ok(mut s) = self.seen.lock() {
                s.peers = peers;
            }
        }
        if round.is_multiple_of(240) {
            c.batch_execute(&format!(
                "DELETE FROM vault_changes WHERE at < now() - INTERVAL '{CHANGES_KEPT}';
                 DELETE FROM vault_commits WHERE at < now() - INTERVAL '{CHANGES_KEPT}'"
            ))
            .await
            .map_err(|e| pg(&e))?;
        }
        let now = std::time::Instant::now();
        self.holes
            .retain(|_, since| now.duration_since(*since) < HOLE_WAIT);
        let holes: Vec<i64> = self.holes.keys().copied().collect();
        let last = self.last;
        let rows = c
            .query_typed(
                "SELECT id, node, keys FROM vault_changes WHERE id > $1 OR id = ANY($2) ORDER BY id",
                &[(&last, Type::INT8), (&holes, Type::INT8_ARRAY)],
            )
            .await
            .map_err(|e| pg(&e))?;
        let mut keys = Vec::new();
        let mut everything = false;
        let mut top = last;
        for row in rows {
            let (id, from, packed): (i64, String, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
            if id > top {
                // The ids between were handed out to transactions not
                // committed yet (or never): looked for again.
                if id - top <= 10_000 {
                    for hole in top + 1..id {
                        self.holes.insert(hole, now);
                    }
                } else {
                    // Too many to follow one by one: whatever they were,
                    // caches are dropped.
                    everything = true;
                }
                top = id;
            } else {
                self.holes.remove(&id);
            }
            if from == node.as_str() {
                continue;
            }
            match unpack_keys(&packed) {
                Some(k) => keys.extend(k),
                None => everything = true,
            }
        }
        self.last = top;
        Ok(if everything {
            Some(Changes::Everything)
        } else if keys.is_empty() {
            None
        } else {
            Some(Changes::Keys(keys))
        })
    }
}

/// The keys a batch changes that other nodes may cache (not the index or
/// companion entries), packed as (u16 length, bytes)…; empty: too many to
/// list, "everything changed". `None`: nothing to announce.
fn pack_keys(batch: &Batch) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for op in &batch.ops {
        let key = match op {
            Op::Put(k, _) | Op::Delete(k) | Op::Insert(k, _) | Op::Expect(k, _) => k,
            Op::PutKey { .. } | Op::ShredKey { .. } => continue,
        };
        if key.starts_with(super::keys::INDEX_PREFIX)
            || key.starts_with(super::keys::COMPANION_PREFIX)
        {
            continue;
        }
        let Ok(len) = u16::try_from(key.len()) else {
            return Some(Vec::new());
        };
        if out.len() + key.len() + 2 > CHANGE_KEYS_MAX {
            return Some(Vec::new());
        }
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(key);
    }
    (!out.is_empty()).then_some(out)
}

/// The keys [`pack_keys`] packed; `None`: everything.
fn unpack_keys(mut packed: &[u8]) -> Option<Vec<Vec<u8>>> {
    if packed.is_empty() {
        return None;
    }
    let mut keys = Vec::new();
    while let [a, b, rest @ ..] = packed {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        let key = rest.get(..len)?;
        keys.push(key.to_vec());
        packed = rest.get(len..)?;
    }
    Some(keys)
}

/// `batch` as one transaction, on the store's runtime (so that it runs to
/// its end even if the request that asked for it goes away). Each commit
/// inserts a random marker into `vault_commits`: a connection lost during
/// `COMMIT` leaves the outcome unknown, and the marker settles it
/// ([`settle`]).
async fn transact(
    pool: Arc<Pool>,
    batch: Batch,
    unsettled: Arc<AtomicUsize>,
    node: Arc<str>,
) -> Result<(), StoreError> {
    let committing = AtomicBool::new(false);
    // The keys other nodes must drop from their caches, announced in the
    // same transaction (`vault_changes`).
    let announce = pack_keys(&batch);
    let node = node.to_string();
    let mut marker = vec![0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut marker)
        .map_err(|_| StoreError::Backend("randomness for a commit marker".into()))?;
    // Three round trips: BEGIN, the batch, COMMIT (`with` counts one).
    pool.trips.fetch_add(2, Ordering::Relaxed);
    let result = pool
        .with(async |c| {
            let tx = c.transaction().await?;
            // Sent together, in order (the driver pipelines the statements of
            // one connection): one round trip for the batch, not one each.
            let ops = futures::future::try_join_all(batch.ops.iter().map(|op| apply(&tx, op)));
            let bookkeeping = async {
                tx.execute_typed(
                    "INSERT INTO vault_commits (id, at) VALUES ($1, now())",
                    &[(&marker, Type::BYTEA)],
                )
                .await?;
                if let Some(keys) = &announce {
                    tx.execute_typed(
                        "INSERT INTO vault_changes (id, node, at, keys) VALUES (nextval('vault_change_ids'), $1, now(), $2)",
                        &[(&node, Type::TEXT), (keys, Type::BYTEA)],
                    )
                    .await?;
                }
                Ok::<_, PgError>(())
            };
            futures::future::try_join(ops, bookkeeping).await?;
            committing.store(true, Ordering::Release);
            match tx.commit().await {
                Ok(()) => Ok(()),
                Err(e) if e.as_db_error().is_none() => Err(PgError::Unknown),
                Err(e) => Err(e.into()),
            }
        })
        .await;
    // A connection lost during the COMMIT, or no answer to it in time:
    // the outcome is unknown.
    let unknown = match &result {
        Err(StoreError::Unsettled) => true,
        Err(StoreError::Backend(m)) => m == Pool::LATE && committing.load(Ordering::Acquire),
        _ => false,
    };
    if unknown {
        return settle(pool, marker, unsettled).await;
    }
    result
}

/// The outcome of a commit whose answer was lost, from its `marker`: this
/// inserts the marker itself, which waits for the lost transaction if it is
/// still under way (the primary key), then succeeds only if that one never
/// committed (and now never will), and finds it there if it did. Tried
/// for [`ANSWER_WITHIN`] (a database restarting); still unknown after that,
/// the store takes no writes until a task of its own settles it, whenever
/// the database answers again (no restart needed).
async fn settle(
    pool: Arc<Pool>,
    marker: Vec<u8>,
    unsettled: Arc<AtomicUsize>,
) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        match claim(&pool, &marker).await {
            Ok(true) => {
                return Err(StoreError::Backend(
                    "postgres: the connection broke during COMMIT, which did not happen".into(),
                ));
            }
            Ok(false) => {
                tracing::warn!("a commit whose answer was lost did happen");
                return Ok(());
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(_) => break,
        }
    }
    unsettled.fetch_add(1, Ordering::AcqRel);
    tracing::error!(
        "PostgreSQL did not say whether a COMMIT happened: the request failed UNAVAILABLE, and the store takes no writes until the database says"
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let Ok(inserted) = claim(&pool, &marker).await {
                if !inserted {
                    tracing::error!(
                        "a write answered UNAVAILABLE had been committed (its audit event says it failed)"
                    );
                }
                unsettled.fetch_sub(1, Ordering::AcqRel);
                tracing::info!("the database answered: the store takes writes again");
                return;
            }
        }
    });
    Err(StoreError::Unsettled)
}

/// Inserts commit `marker` (waiting for a transaction under way that holds
/// it): whether this inserted it (that transaction did not commit).
async fn claim(pool: &Pool, marker: &[u8]) -> Result<bool, StoreError> {
    let marker = marker.to_vec();
    pool.probe(async move |c| {
        let n = c
            .execute_typed(
                "INSERT INTO vault_commits (id, at) VALUES ($1, now()) ON CONFLICT (id) DO NOTHING",
                &[(&marker, Type::BYTEA)],
            )
            .await?;
        Ok(n == 1)
    })
    .await
}

/// One operation of a batch, in transaction `tx`.
async fn apply(tx: &tokio_postgres::Transaction<'_>, op: &Op) -> Result<(), PgError> {
    let slot_of = |slot: u64| slot_param(slot).map_err(PgError::Invalid);
    match op {
        Op::Put(k, v) => {
            tx.execute_typed(
                "INSERT INTO vault_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                &[(k, Type::BYTEA), (v, Type::BYTEA)],
            )
            .await?;
        }
        Op::Delete(k) => {
            tx.execute_typed("DELETE FROM vault_kv WHERE k = $1", &[(k, Type::BYTEA)])
                .await?;
        }
        Op::Insert(k, v) => {
            let n = tx
                .execute_typed(
                    "INSERT INTO vault_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING",
                    &[(k, Type::BYTEA), (v, Type::BYTEA)],
                )
                .await?;
            if n != 1 {
                return Err(PgError::Conflict);
            }
        }
        Op::Expect(k, v) => {
            // Locks the row until the end of the transaction: a writer on
            // another node that read the same value waits, then finds
            // another value (READ COMMITTED reads the row again).
            let n = tx
                .execute_typed(
                    "UPDATE vault_kv SET v = v WHERE k = $1 AND v = $2",
                    &[(k, Type::BYTEA), (v, Type::BYTEA)],
                )
                .await?;
            if n != 1 {
                return Err(PgError::Conflict);
            }
        }
        Op::PutKey {
            slot,
            version,
            wrapped,
        } => {
            let slot = slot_of(*slot)?;
            let v = i64::from(*version);
            let sql = if version % 2 == 0 {
                "INSERT INTO vault_slots (slot, v0, k0) VALUES ($1, $2, $3) ON CONFLICT (slot) DO UPDATE SET v0 = excluded.v0, k0 = excluded.k0"
            } else {
                "INSERT INTO vault_slots (slot, v1, k1) VALUES ($1, $2, $3) ON CONFLICT (slot) DO UPDATE SET v1 = excluded.v1, k1 = excluded.k1"
            };
            tx.execute_typed(
                sql,
                &[
                    (&slot, Type::INT8),
                    (&v, Type::INT8),
                    (wrapped, Type::BYTEA),
                ],
            )
            .await?;
        }
        Op::ShredKey { slot, version } => {
            let slot = slot_of(*slot)?;
            match version {
                None => {
                    tx.execute_typed(
                        "UPDATE vault_slots SET v0 = NULL, k0 = NULL, v1 = NULL, k1 = NULL WHERE slot = $1",
                        &[(&slot, Type::INT8)],
                    )
                    .await?;
                }
                Some(v) => {
                    let v = i64::from(*v);
                    let sql = if v % 2 == 0 {
                        "UPDATE vault_slots SET v0 = NULL, k0 = NULL WHERE slot = $1 AND v0 = $2"
                    } else {
                        "UPDATE vault_slots SET v1 = NULL, k1 = NULL WHERE slot = $1 AND v1 = $2"
                    };
                    tx.execute_typed(sql, &[(&slot, Type::INT8), (&v, Type::INT8)])
                        .await?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test database of `.ci/postgres start`, in a schema of this test's
    /// own; `None` (the test says it is skipped) when none is configured.
    fn settings(test: &str) -> Option<PgSettings> {
        let Ok(url) = std::env::var("TEST_VAULT_POSTGRES_URL") else {
            eprintln!("{test}: skipped: TEST_VAULT_POSTGRES_URL is not set (.ci/postgres start)");
            return None;
        };
        // A name no other run picks (the time, this process, a counter).
        static N: AtomicUsize = AtomicUsize::new(0);
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos()
            ^ std::process::id().rotate_left(16)
            ^ u32::try_from(N.fetch_add(1, Ordering::Relaxed)).unwrap_or(0);
        Some(PgSettings {
            url,
            password: std::env::var("TEST_VAULT_POSTGRES_PASSWORD")
                .ok()
                .map(Into::into),
            pool: 4,
            ca_file: None,
            schema: Some(format!("t_{test}_{nonce:08x}")),
            node: "test-node".into(),
        })
    }

    fn put(b: &mut Batch, k: &str, v: &str) {
        b.put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
    }

    #[test]
    fn a_url_with_a_password_or_a_remote_host_without_tls_is_refused() {
        let s = |url: &str, ca: bool| PgSettings {
            url: url.into(),
            password: None,
            pool: 1,
            ca_file: ca.then(|| "ca.pem".into()),
            schema: None,
            node: "n".into(),
        };
        let err = |s: PgSettings| {
            parse_config(&s)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(s("postgres://vault:secret@127.0.0.1/vault", false)).contains("password"));
        assert!(!err(s("postgres://vault:secret@127.0.0.1/vault", false)).contains("secret"));
        assert!(err(s("postgres://vault@db.example.com/vault", false)).contains("TLS"));
        assert!(parse_config(&s("postgres://vault@db.example.com/vault", true)).is_ok());
        assert!(parse_config(&s("postgres://vault@127.0.0.1:5432/vault", false)).is_ok());
        assert!(parse_config(&s("host=/run/postgresql user=vault", false)).is_ok());
        // A loopback name with a remote address, or a list with one remote
        // host, is remote.
        assert!(err(s("host=localhost hostaddr=10.1.2.3 user=vault", false)).contains("TLS"));
        assert!(err(s("host=127.0.0.1,db.example.com user=vault", false)).contains("TLS"));
        // With a CA: TLS required, never the driver's plaintext fallback.
        let tls = parse_config(&s("postgres://vault@db.example.com/vault", true)).unwrap();
        assert_eq!(tls.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert!(
            err(s(
                "postgres://vault@db.example.com/vault?sslmode=disable",
                true
            ))
            .contains("sslmode=disable")
        );
        // The vault sets the session's options (durable commits, timeouts,
        // its schema): a URL's own are refused.
        assert!(
            err(s(
                "postgres://vault@127.0.0.1/vault?options=-csearch_path%3Devil",
                false
            ))
            .contains("options")
        );
        let opts = parse_config(&s("postgres://vault@127.0.0.1/vault", false)).unwrap();
        assert!(
            opts.get_options()
                .unwrap_or_default()
                .contains("synchronous_commit=on")
        );
    }

    #[test]
    fn only_a_plain_identifier_names_the_schema() {
        for bad in [
            "x; drop table vault_kv",
            "Vault",
            "1st",
            "a-b",
            "",
            &"a".repeat(64),
        ] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
        for good in ["vault", "e2e_tmp1", "a"] {
            assert!(is_identifier(good), "{good:?}");
        }
        let mut bad = PgSettings {
            url: "postgres://vault@127.0.0.1/vault".into(),
            password: None,
            pool: 1,
            ca_file: None,
            schema: Some("x; drop table vault_kv".into()),
            node: "n".into(),
        };
        assert!(
            parse_config(&bad)
                .err()
                .unwrap()
                .to_string()
                .contains("postgres_schema")
        );
        bad.schema = Some("vault".into());
        assert!(parse_config(&bad).is_ok());
    }

    #[test]
    fn a_prefix_scan_ends_at_the_first_key_after_the_prefix() {
        assert_eq!(after_prefix(b"sub/"), Some(b"sub0".to_vec()));
        assert_eq!(after_prefix(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(after_prefix(&[0xff, 0xff]), None);
    }

    /// Shredding one version clears its half only while it still holds that
    /// version (a re-key's newer key in the same half is kept), and the
    /// scans that visit everything read past one page.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_shred_spares_a_newer_key_and_scans_page_through_everything() {
        let Some(settings) = settings("pages") else {
            return;
        };
        let s = PgStore::open(&settings).unwrap();
        let mut b = Batch::new();
        b.put_key(7, 1, b"key-one".to_vec());
        s.commit(b).await.unwrap();
        let mut b = Batch::new();
        b.put_key(7, 3, b"key-three".to_vec()); // the same half as version 1
        b.shred_key(7, Some(1));
        s.commit(b).await.unwrap();
        assert_eq!(s.keys(7).unwrap(), vec![(3, b"key-three".to_vec())]);

        let n = PAGE * 2 + 17;
        let mut b = Batch::new();
        for i in 0..n {
            put(&mut b, &format!("sub/{i:06}"), "r");
            b.put_key(100 + i as u64, 1, b"k".to_vec());
        }
        s.commit(b).await.unwrap();
        let mut subjects = 0;
        s.for_each_subject(&mut |_, _| subjects += 1).unwrap();
        assert_eq!(subjects, n);
        let mut slots = 0;
        s.for_each_key_slot(&mut |_, _| slots += 1).unwrap();
        assert_eq!(slots, n + 1);
    }

    /// One live node per id: a second store with the same node id on the
    /// same schema is refused while the first is open (another id opens
    /// beside it), and opens once it is closed. After `close`, and after a
    /// commit whose outcome is unknown, a store takes no writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_live_node_per_id_and_a_closed_store_takes_no_writes() {
        let Some(settings) = settings("closed") else {
            return;
        };
        let s = PgStore::open(&settings).unwrap();
        let e = PgStore::open(&settings).unwrap_err().to_string();
        assert!(
            e.contains("node id test-node belongs to a node seen alive"),
            "{e}"
        );
        // Another id shares the database.
        let other = PgStore::open(&PgSettings {
            node: "other-node".into(),
            ..settings.clone()
        })
        .unwrap();
        other.close().unwrap();
        s.close().unwrap();
        let mut b = Batch::new();
        put(&mut b, "k", "v");
        assert!(matches!(s.commit(b).await, Err(StoreError::Closed)));
        let fresh = PgStore::open(&settings).unwrap();
        fresh.unsettled.store(1, Ordering::Release);
        let mut b = Batch::new();
        put(&mut b, "k", "v");
        assert!(matches!(fresh.commit(b).await, Err(StoreError::Unsettled)));
        assert_eq!(fresh.get(b"k").unwrap(), None);
    }

    /// A commit whose answer was lost is settled by its marker: one that
    /// committed is found (the write happened), one that is still under way
    /// is waited for, one that never committed is claimed (and so never
    /// will); an unsettled store refuses writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_commit_is_settled_by_its_marker() {
        let Some(settings) = settings("settle") else {
            return;
        };
        let store = PgStore::open(&settings).unwrap();
        let pool = store.pool.clone();
        let outcome = store
            .run(|pool| async move {
                // Committed: its marker is there.
                pool.probe(async |c| {
                    let tx = c.transaction().await?;
                    tx.execute(
                        "INSERT INTO vault_commits (id, at) VALUES ('\\x01', now())",
                        &[],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await?;
                let committed = claim(&pool, &[1]).await?;
                // Never committed: claimed.
                let never = claim(&pool, &[2]).await?;
                // Under way on another connection, then rolled back: the
                // claim waits for it, then takes the marker.
                let config = pool.config.clone();
                let (mut other, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| pg(&e))?;
                tokio::spawn(conn);
                let tx = other.transaction().await.map_err(|e| pg(&e))?;
                tx.execute(
                    "INSERT INTO vault_commits (id, at) VALUES ('\\x03', now())",
                    &[],
                )
                .await
                .map_err(|e| pg(&e))?;
                let waiting = tokio::spawn({
                    let pool = pool.clone();
                    async move { claim(&pool, &[3]).await }
                });
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let waited = !waiting.is_finished();
                tx.rollback().await.map_err(|e| pg(&e))?;
                let after = waiting.await.map_err(|_| StoreError::Closed)??;
                Ok((committed, never, waited, after))
            })
            .await
            .unwrap();
        assert_eq!(outcome, (false, true, true, true));
        store.unsettled.store(1, Ordering::Release);
        let mut b = Batch::new();
        put(&mut b, "k", "v");
        assert!(matches!(store.commit(b).await, Err(StoreError::Unsettled)));
        store.unsettled.store(0, Ordering::Release);
        let _ = pool;
    }

    /// Two nodes on one database: an insert or an expectation another node
    /// defeated fails the whole commit (nothing of it stays); key slot
    /// blocks never overlap and start at the floor; a change on one node
    /// reaches the other's listener (and not its own) within a second; a
    /// lease has one holder until it runs out or its holder closes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_share_counters_changes_and_leases_and_detect_conflicts() {
        let Some(settings) = settings("nodes") else {
            return;
        };
        let a = PgStore::open(&settings).unwrap();
        let b = PgStore::open(&PgSettings {
            node: "node-b".into(),
            ..settings.clone()
        })
        .unwrap();
        assert!(a.shared());
        // Conflicts.
        let mut first = Batch::new();
        first.insert(b"sub/x".to_vec(), b"1".to_vec());
        a.commit(first).await.unwrap();
        let mut again = Batch::new();
        put(&mut again, "other", "v");
        again.insert(b"sub/x".to_vec(), b"2".to_vec());
        assert!(matches!(b.commit(again).await, Err(StoreError::Conflict)));
        assert_eq!(b.get(b"other").unwrap(), None);
        let mut stale = Batch::new();
        stale.expect(b"sub/x".to_vec(), b"0".to_vec());
        put(&mut stale, "sub/x", "3");
        assert!(matches!(b.commit(stale).await, Err(StoreError::Conflict)));
        let mut fresh = Batch::new();
        fresh.expect(b"sub/x".to_vec(), b"1".to_vec());
        put(&mut fresh, "sub/x", "4");
        b.commit(fresh).await.unwrap();
        assert_eq!(a.get(b"sub/x").unwrap().as_deref(), Some(&b"4"[..]));
        // Slot blocks.
        let one = a.reserve_slots(100, 10).unwrap().unwrap();
        let two = b.reserve_slots(1, 10).unwrap().unwrap();
        assert_eq!(one, 100..110);
        assert_eq!(two, 110..120);
        // Changes reach the other node only.
        let (tx, rx) = std::sync::mpsc::channel::<Changes>();
        let tx = std::sync::Mutex::new(tx);
        b.watch(Arc::new(move |c| {
            let _ = tx.lock().unwrap().send(c.clone());
        }));
        let (own_tx, own_rx) = std::sync::mpsc::channel::<Changes>();
        let own_tx = std::sync::Mutex::new(own_tx);
        a.watch(Arc::new(move |c| {
            let _ = own_tx.lock().unwrap().send(c.clone());
        }));
        let mut change = Batch::new();
        put(&mut change, "cred/c1", "v");
        change.put(super::super::keys::index(&[7; 32], "s"), b"".to_vec());
        a.commit(change).await.unwrap();
        // Everything A changed since B opened (A's insert of sub/x
        // included), without the index entry; B's own writes are not told.
        let got = tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            while !keys.contains(&b"cred/c1".to_vec()) {
                match rx.recv_timeout(std::time::Duration::from_secs(1)) {
                    Ok(Changes::Keys(k)) => keys.extend(k),
                    other => panic!("{other:?}"),
                }
            }
            keys
        })
        .await
        .unwrap();
        assert_eq!(got, vec![b"sub/x".to_vec(), b"cred/c1".to_vec()]);
        // A is told of B's writes to sub/x, never of its own cred/c1 (over
        // more than two poll periods).
        let told_a = tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            while let Ok(c) = own_rx.recv_timeout(std::time::Duration::from_millis(700)) {
                if let Changes::Keys(k) = c {
                    keys.extend(k);
                }
            }
            keys
        })
        .await
        .unwrap();
        assert!(told_a.contains(&b"sub/x".to_vec()), "{told_a:?}");
        assert!(!told_a.contains(&b"cred/c1".to_vec()), "{told_a:?}");
        // Peers.
        tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
        assert_eq!(a.cluster().unwrap().peers, vec!["node-b".to_owned()]);
        assert!(a.cluster().unwrap().reachable);
        // Leases.
        let hold = std::time::Duration::from_secs(60);
        assert!(a.lease("job", hold).await.unwrap());
        assert!(a.lease("job", hold).await.unwrap());
        assert!(!b.lease("job", hold).await.unwrap());
        assert!(
            b.lease("short", std::time::Duration::from_millis(100))
                .await
                .unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(a.lease("short", hold).await.unwrap());
        a.close().unwrap();
        assert!(b.lease("job", hold).await.unwrap());
        b.close().unwrap();
    }

    /// Entries and key slots as the sled store keeps them: commits visible
    /// at once and after a reopen, scans in key order within their prefix,
    /// two key versions per slot, shreds of one version or the whole slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_and_key_slots_commit_scan_and_survive_reopen() {
        let Some(settings) = settings("commit") else {
            return;
        };
        let s = PgStore::open(&settings).unwrap();
        let mut b = Batch::new();
        for i in 0..30 {
            put(&mut b, &format!("c/{i:03}"), &format!("v{i}"));
        }
        put(&mut b, "sub/s1", "record one");
        put(&mut b, "d/x", "other");
        put(&mut b, "tok/x", "after the subject records");
        b.put_key(7, 1, b"key-one".to_vec());
        b.put_key(7, 2, b"key-two".to_vec());
        b.put_key(8, 1, b"key-eight".to_vec());
        s.commit(b).await.unwrap();
        assert_eq!(s.get(b"c/005").unwrap().as_deref(), Some(&b"v5"[..]));
        assert_eq!(s.get(b"c/999").unwrap(), None);
        let all = s.scan_prefix(b"c/", 1000).unwrap();
        assert_eq!(all.len(), 30);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "key order");
        assert_eq!(s.scan_prefix(b"c/", 10).unwrap().len(), 10);
        let from = s.scan_from(b"c/", b"c/025", 100).unwrap();
        assert_eq!(from.len(), 5);
        assert_eq!(s.last_with_prefix(b"c/").unwrap().unwrap().0, b"c/029");
        assert_eq!(
            s.keys(7).unwrap(),
            vec![(1, b"key-one".to_vec()), (2, b"key-two".to_vec())]
        );

        let mut b = Batch::new();
        b.delete(b"c/000".to_vec());
        b.shred_key(7, Some(1));
        b.shred_key(8, None);
        s.commit(b).await.unwrap();
        drop(s);

        let s = PgStore::open(&settings).unwrap();
        assert_eq!(s.get(b"c/000").unwrap(), None);
        assert_eq!(s.scan_prefix(b"c/", 1000).unwrap().len(), 29);
        assert_eq!(s.keys(7).unwrap(), vec![(2, b"key-two".to_vec())]);
        assert!(s.keys(8).unwrap().is_empty());
        let mut slots = Vec::new();
        s.for_each_key_slot(&mut |slot, keys| slots.push((slot, keys.len())))
            .unwrap();
        assert_eq!(slots, vec![(7, 1)]);
        let mut subjects = Vec::new();
        s.for_each_subject(&mut |k, _| subjects.push(k.to_vec()))
            .unwrap();
        assert_eq!(subjects, vec![b"sub/s1".to_vec()]);
        let mut entries = 0;
        s.for_each_entry(&mut |k, _| {
            assert!(!k.starts_with(b"sub/"));
            entries += 1;
        })
        .unwrap();
        assert_eq!(entries, 31, "29 c/ entries, d/x and tok/x");
    }

    /// A commit that fails leaves nothing: its earlier operations are rolled
    /// back with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_leaves_nothing() {
        let Some(settings) = settings("failed") else {
            return;
        };
        let s = PgStore::open(&settings).unwrap();
        let mut b = Batch::new();
        put(&mut b, "sub/s1", "record");
        b.put_key(1, 1, b"key".to_vec());
        b.put_key(u64::MAX, 1, b"no such slot".to_vec());
        let e = s.commit(b).await.unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        assert_eq!(s.get(b"sub/s1").unwrap(), None);
        assert!(s.keys(1).unwrap().is_empty());
    }

    /// A database migrated by a newer binary is refused, with what to do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_schema_is_refused() {
        let Some(settings) = settings("newer") else {
            return;
        };
        let s = PgStore::open(&settings).unwrap();
        s.wait(|pool| async move {
            pool.with(async |c| {
                c.execute("UPDATE vault_schema SET version = 99 WHERE id = 1", &[])
                    .await?;
                Ok(())
            })
            .await
        })
        .unwrap();
        drop(s);
        let e = PgStore::open(&settings).unwrap_err().to_string();
        assert!(e.contains("migration 99"), "{e}");
        assert!(e.contains("newer"), "{e}");
    }

    /// The synchronous reads work from a current-thread runtime and from a
    /// plain thread too (the connections run on the store's own runtime).
    #[test]
    fn reads_work_outside_a_multi_threaded_runtime() {
        let Some(settings) = settings("threads") else {
            return;
        };
        let s = PgStore::open(&settings).unwrap();
        s.apply({
            let mut b = Batch::new();
            put(&mut b, "k", "v");
            b
        })
        .unwrap();
        assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..])) });
    }
}
