//! End-to-end test harness: starts real `vaultd` processes on `127.0.0.1:0`
//! with a temporary data directory and root key, and hands out
//! `vault-client` connections to them. Nothing is mocked.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vault_client::VaultClient;

/// The Cedar schema of the repository's `policies/`.
pub const CEDAR_SCHEMA: &str = include_str!("../../policies/vault.cedarschema");

/// The role the core tests call with. Its policy (written by the harness,
/// never shipped) permits every action on every field for any purpose, with
/// none of the default policy's guards: the core tests test storage, tokens
/// and crypto, not the access policy. Tests of the access policy start the
/// vault with [`TestVault::start_default_policy`].
pub const CORE_ROLE: &str = "core_tester";

const HARNESS_POLICY: &str = "// Test harness only: the core tests' role may do everything.\n\
@id(\"harness_core_tester\")\n\
permit (principal in Vault::Role::\"core_tester\", action, resource);\n\
@id(\"harness_status\")\n\
permit (principal, action == Vault::Action::\"status\", resource);\n";

const GOVERNANCE_POLICY: &str = include_str!("../../policies/governance.cedar");

/// The name of the harness's privacy officer (`vaultd officer`).
pub const OFFICER_NAME: &str = "harness-officer";

/// Which access policy a test vault runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChoice {
    /// The harness's all-access `core_tester` policy.
    Harness,
    /// The vault's built-in default policy.
    Default,
}

/// Path of a binary built by this package (`vaultd-under-test`, `vaultctl-under-test`).
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo builds it with the tests)",
        path.display()
    );
    path
}

/// A running vaultd and the temporary directory that holds its data, root
/// key and log.
#[derive(Debug)]
pub struct TestVault {
    child: Option<Child>,
    /// `127.0.0.1:PORT` the vault listens on.
    pub addr: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// The bootstrap operator token the first start printed.
    operator_token: Option<String>,
    /// The harness's privacy officer (`vaultd officer`), who approves the
    /// grants of data roles that [`TestVault::token_for`] asks for.
    officer_token: Option<String>,
    /// Bearer tokens issued per role by [`TestVault::token_for`].
    tokens: Mutex<HashMap<String, String>>,
}

impl TestVault {
    /// Starts a vault in a new temporary directory.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a vault with extra environment variables.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_full(env, PolicyChoice::Harness)
    }

    /// Starts a vault with the built-in default access policy.
    pub fn start_default_policy() -> Self {
        Self::start_full(&[], PolicyChoice::Default)
    }

    /// Starts a vault with the shipped policies plus one more file,
    /// `extra` (a company's own rules, e.g. a role of its own).
    pub fn start_with_extra_policy(extra: &str) -> Self {
        let mut v = Self::prepare(&[], PolicyChoice::Default);
        let pdir = v.dir.path().join("company-policies");
        std::fs::create_dir_all(&pdir).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        for e in std::fs::read_dir(&shipped).unwrap() {
            let p = e.unwrap().path();
            if p.extension()
                .is_some_and(|x| x == "cedar" || x == "cedarschema")
            {
                std::fs::copy(&p, pdir.join(p.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(pdir.join("company.cedar"), extra).unwrap();
        v.env
            .push(("VAULT_POLICY_DIR".into(), pdir.display().to_string()));
        v.issue_officer(&[]);
        v.spawn();
        v
    }

    /// Starts a vault with extra environment variables and a policy choice
    /// (a `VAULT_POLICY_DIR` in `env` wins over both).
    pub fn start_full(env: &[(&str, &str)], policy: PolicyChoice) -> Self {
        let mut v = Self::prepare(env, policy);
        v.issue_officer(&[]);
        v.spawn();
        v
    }

    /// Issues the harness's privacy officer offline (`vaultd officer`, with
    /// `shares` on standard input for a vault under shares), before the
    /// vault serves; on a new directory this is also its first start, which
    /// prints the bootstrap operator token.
    fn issue_officer(&mut self, shares: &[String]) {
        let mut child = self
            .command()
            .args(["officer", "--name", OFFICER_NAME, "--ttl", "604800"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vaultd officer");
        let mut stdin = child.stdin.take().expect("stdin");
        for s in shares {
            writeln!(stdin, "{s}").expect("share to vaultd officer");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("vaultd officer");
        let stdout = assert_success(&out);
        for line in stdout.lines() {
            if let Some(t) = line.strip_prefix(vault::BOOTSTRAP_LINE_PREFIX) {
                self.operator_token = Some(t.to_owned());
            }
            if let Some(t) = line.strip_prefix(vault::OFFICER_LINE_PREFIX) {
                self.officer_token = Some(t.to_owned());
            }
        }
        assert!(
            self.officer_token.is_some(),
            "vaultd officer printed no token"
        );
    }

    /// Issues the harness's privacy officer again, offline (the vault must
    /// be stopped), for a data directory that was replaced (a restore):
    /// the tokens issued before are forgotten.
    pub fn reissue_officer(&mut self) {
        self.tokens.lock().unwrap().clear();
        self.issue_officer(&[]);
    }

    /// Starts a vault initialised (`vaultd init --shares n --threshold k`)
    /// under a root key split into shares: it starts sealed. Returns the
    /// vault and the shares' text, share 1 first.
    pub fn start_sealed(n: u8, k: u8, env: &[(&str, &str)]) -> (Self, Vec<String>) {
        let mut v = Self::prepare(env, PolicyChoice::Harness);
        let shares_dir = v.dir.path().join("shares");
        let out = v
            .command()
            .args([
                "init",
                "--shares",
                &n.to_string(),
                "--threshold",
                &k.to_string(),
            ])
            .arg("--shares-dir")
            .arg(&shares_dir)
            .output()
            .expect("vaultd init");
        let stdout = assert_success(&out);
        v.operator_token = stdout
            .lines()
            .find_map(|l| l.strip_prefix(vault::BOOTSTRAP_LINE_PREFIX))
            .map(str::to_owned);
        assert!(!v.key_file().exists(), "no root key file with shares");
        let shares: Vec<String> = (1..=n)
            .map(|i| {
                std::fs::read_to_string(shares_dir.join(format!("share-{i}.txt")))
                    .expect("share file")
                    .trim()
                    .to_owned()
            })
            .collect();
        v.issue_officer(&shares[..usize::from(k)]);
        v.spawn();
        (v, shares)
    }

    fn prepare(env: &[(&str, &str)], policy: PolicyChoice) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The whole harness on PostgreSQL: TEST_VAULT_BACKEND=postgres (each
        // vault in a schema of its own).
        if on_postgres() && !env.iter().any(|(k, _)| k == "VAULT_STORAGE") {
            let name: String = dir
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            env.extend(postgres_env(&name).expect(
                "TEST_VAULT_BACKEND=postgres needs TEST_VAULT_POSTGRES_URL (.ci/postgres start)",
            ));
        }
        if policy == PolicyChoice::Harness && !env.iter().any(|(k, _)| k == "VAULT_POLICY_DIR") {
            let pdir = dir.path().join("harness-policies");
            std::fs::create_dir_all(&pdir).unwrap();
            std::fs::write(pdir.join("vault.cedarschema"), CEDAR_SCHEMA).unwrap();
            std::fs::write(pdir.join("harness.cedar"), HARNESS_POLICY).unwrap();
            // Operators, auditors and the privacy officer as shipped.
            std::fs::write(pdir.join("governance.cedar"), GOVERNANCE_POLICY).unwrap();
            env.push(("VAULT_POLICY_DIR".into(), pdir.display().to_string()));
        }
        Self {
            child: None,
            addr: String::new(),
            dir,
            env,
            operator_token: None,
            officer_token: None,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The bootstrap operator token.
    pub fn operator_token(&self) -> &str {
        self.operator_token
            .as_deref()
            .expect("the first start printed a bootstrap token")
    }

    /// The temporary directory (data, key and log live below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The development root key file.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("root.key")
    }

    /// Everything vaultd has logged so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vaultd.log")).unwrap_or_default()
    }

    /// The command that starts vaultd on this directory, without starting it.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("vaultd-under-test"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--root-key-file")
            .arg(self.key_file())
            .env_remove("VAULT_CONFIG")
            .env("VAULT_LOG", "debug")
            .env("VAULT_LOG_FORMAT", "json");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("vaultd.log"))
            .expect("log file");
        let mut child = self
            .command()
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn vaultd");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            // The bootstrap token line (first start only), then "listening".
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                let listening = line.starts_with("vaultd listening on ");
                let _ = tx.send(line);
                if listening {
                    break;
                }
            }
            // Keep draining so vaultd never blocks on a full pipe.
            for _ in lines {}
        });
        let line = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => match l.strip_prefix(vault::BOOTSTRAP_LINE_PREFIX) {
                    Some(token) => self.operator_token = Some(token.to_owned()),
                    None => break l,
                },
                Err(_) => {
                    let _ = child.kill();
                    panic!("vaultd did not start; log:\n{}", self.log());
                }
            }
        };
        self.addr = line
            .strip_prefix("vaultd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        self.child = Some(child);
    }

    /// A new client connection as the core tests' all-access role
    /// (see [`CORE_ROLE`]).
    pub async fn client(&self) -> VaultClient {
        self.client_as(CORE_ROLE).await
    }

    /// Every subject record the vault holds, with its wrapped data keys
    /// inside, as a backup holds them: taken with a backup as the bootstrap
    /// operator while the vault runs (its store is locked then), read from
    /// the store itself while it is stopped.
    pub async fn stored_records(&self) -> HashMap<String, vault::engine::records::SubjectRecord> {
        if self.child.is_none() {
            return self.records_on_disk();
        }
        self.stored_records_as(self.operator_token()).await
    }

    /// [`TestVault::stored_records`] of a running vault, the backup taken
    /// with the operator token `operator`.
    pub async fn stored_records_as(
        &self,
        operator: &str,
    ) -> HashMap<String, vault::engine::records::SubjectRecord> {
        use prost::Message;
        let mut bytes = Vec::new();
        self.anonymous()
            .await
            .with_token(operator)
            .unwrap()
            .backup(false, &mut bytes, |_, _| {})
            .await
            .expect("backup");
        let root = vault::crypto::keyring::Root::Key(Box::new(
            vault::crypto::rootkey::load_dev_key_file(&self.key_file()).expect("root key file"),
        ));
        let header = vault::backup::header(bytes.as_slice()).expect("backup header");
        let key =
            vault::crypto::keyring::backup_key(&root, &header.wrapped_seed).expect("backup key");
        let mut out = HashMap::new();
        vault::backup::read(bytes.as_slice(), &key, |record, k, v| {
            if record && let Some(sid) = k.strip_prefix(b"sub/") {
                out.insert(
                    String::from_utf8(sid.to_vec()).expect("subject id"),
                    vault::engine::records::SubjectRecord::decode(v.as_slice()).expect("record"),
                );
            }
            Ok(())
        })
        .expect("backup reads");
        out
    }

    /// The subject records of a stopped vault's store, each with its keys.
    fn records_on_disk(&self) -> HashMap<String, vault::engine::records::SubjectRecord> {
        use prost::Message;
        use vault::store::Store;
        assert!(
            !on_postgres(),
            "the embedded store's files, not PostgreSQL's"
        );
        let store = vault::store::sled::SledStore::open(
            &self.data_dir(),
            1 << 20,
            vault::store::sled::Durability::Flush,
        )
        .expect("open the stopped vault's store");
        let mut out = HashMap::new();
        store
            .for_each_subject(&mut |k, v| {
                let mut r = vault::engine::records::SubjectRecord::decode(v).expect("record");
                assert!(r.fill_keys(&store.keys(r.slot).expect("key slot")));
                let sid = k.strip_prefix(b"sub/").expect("a subject key");
                out.insert(String::from_utf8(sid.to_vec()).expect("subject id"), r);
            })
            .expect("read the records");
        store.close().expect("close the store");
        out
    }

    /// The record of `subject` ([`TestVault::stored_records`]), if the vault
    /// holds it.
    pub async fn stored_record(
        &self,
        subject: &str,
    ) -> Option<vault::engine::records::SubjectRecord> {
        self.stored_records().await.remove(subject)
    }

    /// A new client connection as the bootstrap operator.
    pub async fn operator(&self) -> VaultClient {
        self.anonymous()
            .await
            .with_token(self.operator_token())
            .unwrap()
    }

    /// The harness's privacy officer token (see [`OFFICER_NAME`]).
    pub fn officer_token(&self) -> &str {
        self.officer_token
            .as_deref()
            .expect("vaultd officer issued the harness's officer")
    }

    /// A new client connection as the harness's privacy officer.
    pub async fn officer(&self) -> VaultClient {
        self.anonymous()
            .await
            .with_token(self.officer_token())
            .unwrap()
    }

    /// A bearer token for `name` in `role`, valid `ttl` seconds: requested
    /// by the bootstrap operator and, for a data role, approved by the
    /// harness's privacy officer (the token is then the two parts joined).
    pub async fn issue(&self, name: &str, role: &str, ttl: u64) -> String {
        let created = self
            .operator()
            .await
            .create_principal(name, role, ttl)
            .await
            .unwrap_or_else(|e| panic!("issuing a token for {role}: {e}"));
        if !created.pending {
            return created.token;
        }
        let id = created.principal.expect("principal").id;
        let approved = self
            .officer()
            .await
            .approve_grant(&id, name, role)
            .await
            .unwrap_or_else(|e| panic!("approving the grant of {role}: {e}"));
        format!("{}{}", created.token, approved.token_part)
    }

    /// A bearer token for a principal `ROLE-test` in `role` (issued once per
    /// role, valid for an hour): requested by the bootstrap operator and,
    /// for a data role, approved by the harness's privacy officer (the
    /// token is then the two parts joined).
    pub async fn token_for(&self, role: &str) -> String {
        if let Some(t) = self.tokens.lock().unwrap().get(role) {
            return t.clone();
        }
        let token = self.issue(&format!("{role}-test"), role, 3600).await;
        self.tokens
            .lock()
            .unwrap()
            .insert(role.to_owned(), token.clone());
        token
    }

    /// A new client connection as a principal in `role`.
    pub async fn client_as(&self, role: &str) -> VaultClient {
        let token = self.token_for(role).await;
        self.anonymous().await.with_token(&token).unwrap()
    }

    /// A new client connection without credentials.
    pub async fn anonymous(&self) -> VaultClient {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match VaultClient::connect(&self.addr).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => {
                    let log = self.log();
                    let mut from = log.len().saturating_sub(3000);
                    while !log.is_char_boundary(from) {
                        from += 1;
                    }
                    let tail = &log[from..];
                    panic!(
                        "cannot connect to {}: {e}; vaultd's log ends:\n{tail}",
                        self.addr
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Stops vaultd with SIGTERM and waits for it to exit; returns whether it
    /// exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The running vaultd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills vaultd with SIGKILL, at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sets (or replaces) an environment variable for the next restart.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Runs `vaultd serve` on the (stopped) vault's directory and waits for
    /// it to exit, for a start that should be refused: whether it exited
    /// successfully and its standard error; `None` if it was still running
    /// after 30 s (then killed).
    pub fn serve_until_exit(&self) -> Option<(bool, String)> {
        let mut child = self
            .command()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vaultd");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for vaultd") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Some((status.success(), err));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts another node of this vault (which must be on PostgreSQL): a
    /// directory of its own (its data directory holds only its audit
    /// trail), the same root key, the same database and schema, the same
    /// settings, and the harness's tokens (credentials live in the
    /// database).
    pub fn join(&self) -> TestVault {
        assert!(
            self.env
                .iter()
                .any(|(k, v)| k == "VAULT_STORAGE" && v == "postgres"),
            "only a vault on PostgreSQL has several nodes"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = Self {
            child: None,
            addr: String::new(),
            dir,
            env: self.env.clone(),
            operator_token: self.operator_token.clone(),
            officer_token: self.officer_token.clone(),
            tokens: Mutex::new(self.tokens.lock().unwrap().clone()),
        };
        std::fs::copy(self.key_file(), node.key_file()).expect("root key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(node.key_file(), std::fs::Permissions::from_mode(0o600))
                .expect("root key mode");
        }
        node.spawn();
        node
    }

    /// Starts vaultd again on the same directory (after stop or kill).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }
}

impl Drop for TestVault {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the harness runs its vaults on PostgreSQL
/// (`TEST_VAULT_BACKEND=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("TEST_VAULT_BACKEND").is_ok_and(|b| b == "postgres")
}

/// For a test of what only the embedded store does (its files), or of what
/// the PostgreSQL backend does not do yet (`why`): on PostgreSQL, says so
/// and returns `true` (the test then ends; it runs on sled in the main pass).
pub fn sled_only(why: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("not run on PostgreSQL: {why}");
    }
    skip
}

/// The settings of a vault on the test database (`.ci/postgres start`), in
/// schema `e2e_<name>`; `None` when `TEST_VAULT_POSTGRES_URL` is not set.
pub fn postgres_env(name: &str) -> Option<Vec<(String, String)>> {
    let url = std::env::var("TEST_VAULT_POSTGRES_URL").ok()?;
    let password = std::env::var("TEST_VAULT_POSTGRES_PASSWORD").ok();
    Some(postgres_env_at(&url, password.as_deref(), name))
}

/// The settings of a vault on the database at `url` (with `password`), in
/// schema `e2e_<name>`.
pub fn postgres_env_at(url: &str, password: Option<&str>, name: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("VAULT_STORAGE".to_owned(), "postgres".to_owned()),
        ("VAULT_POSTGRES_URL".to_owned(), url.to_owned()),
        ("VAULT_POSTGRES_SCHEMA".to_owned(), format!("e2e_{name}")),
        ("VAULT_POSTGRES_POOL".to_owned(), "4".to_owned()),
    ];
    if let Some(p) = password {
        env.push(("VAULT_POSTGRES_PASSWORD".to_owned(), p.to_owned()));
    }
    env
}

/// A PostgreSQL cluster of one test's own (`.ci/postgres start`, as root),
/// for a test that crashes, restarts or reads it; stopped and removed when
/// dropped. `None` (the test is skipped) unless the shared test database
/// was started the same way (`TEST_VAULT_POSTGRES_DIR` set: the machine can
/// run one).
#[derive(Debug)]
pub struct PrivatePostgres {
    /// `postgres://vault@127.0.0.1:PORT/vault`.
    pub url: String,
    /// The `vault` role's password.
    pub password: String,
    dir: String,
}

impl PrivatePostgres {
    /// Starts one.
    pub fn start() -> Option<Self> {
        std::env::var("TEST_VAULT_POSTGRES_DIR").ok()?;
        let stdout = Self::script(&["start"]);
        let value = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!(".ci/postgres start printed no {name}"))
                .to_owned()
        };
        Some(Self {
            url: value("TEST_VAULT_POSTGRES_URL"),
            password: value("TEST_VAULT_POSTGRES_PASSWORD"),
            dir: value("TEST_VAULT_POSTGRES_DIR"),
        })
    }

    /// Runs `.ci/postgres` with `args`; its standard output.
    fn script(args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/postgres");
        let out = Command::new(&script)
            .args(args)
            .output()
            .expect(".ci/postgres");
        assert_success(&out)
    }

    /// Kills the cluster (an immediate stop: a crash).
    pub fn crash(&self) {
        Self::script(&["crash", &self.dir]);
    }

    /// Starts it again after [`PrivatePostgres::crash`] or
    /// [`PrivatePostgres::halt`].
    pub fn resume(&self) {
        Self::script(&["resume", &self.dir]);
    }

    /// Stops the cluster cleanly (a checkpoint writes every page out),
    /// keeping its files.
    pub fn halt(&self) {
        Self::script(&["halt", &self.dir]);
    }

    /// The cluster's directory: its files (`db`, with the WAL in
    /// `db/pg_wal`) and its server log.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(&self.dir)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/postgres");
        let _ = Command::new(&script).args(["stop", &self.dir]).output();
    }
}

/// Runs `vaultctl` against `vault` as the bearer of `token`, with `args`
/// and, if given, `stdin` on its standard input; waits for it.
pub fn vaultctl(vault: &TestVault, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin("vaultctl-under-test"));
    cmd.env("VAULTCTL_ADDR", &vault.addr)
        .env("VAULTCTL_TOKEN", token)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Every purpose the shipped `policies/fields.toml` declares, for tests
/// that go through role × purpose × field (a unit test keeps the two equal).
pub const PURPOSES: [&str; 12] = [
    "booking",
    "itinerary",
    "secure_flight",
    "billing",
    "payment_authorization",
    "customer_support",
    "collections",
    "marketing_email",
    "site_administration",
    "fraud_prevention",
    "personalisation",
    "aggregate_analytics",
];

/// Whether a finished command succeeded, and its standard error as text.
pub fn outcome(out: &Output) -> (bool, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that a finished command succeeded (showing its standard error
/// and output if not); returns its standard output as text.
#[track_caller]
pub fn assert_success(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "command failed ({}): {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The key versions key slot `slot` of `vault`'s data directory holds (read
/// from the key-slot file, which the running vault does not lock).
pub fn slot_keys(vault: &TestVault, slot: u64) -> Vec<u32> {
    let slots =
        vault::store::slots::SlotFile::open(&vault.data_dir().join(vault::store::sled::SLOT_FILE))
            .expect("the key-slot file");
    slots
        .read(slot)
        .expect("read a key slot")
        .into_iter()
        .map(|(v, _)| v)
        .collect()
}

/// Copies the directory tree `from` to `to` (which must not exist).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("make the copy's directory");
    for e in std::fs::read_dir(from).expect("read the directory") {
        let e = e.expect("directory entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy a file");
        }
    }
}

/// Puts `stored` (a copy of a data directory) in place of `vault`'s data
/// directory, with the key-slot file of `vault`'s own (stopped) data
/// directory: what an attacker who kept an older copy of the data
/// directory and got today's key slots would hold.
pub fn swap_in_old_copy(vault: &TestVault, stored: &Path) {
    let data = vault.data_dir();
    let slots = std::fs::read(data.join(vault::store::sled::SLOT_FILE)).expect("the key-slot file");
    std::fs::remove_dir_all(&data).expect("remove the data directory");
    copy_tree(stored, &data);
    std::fs::write(data.join(vault::store::sled::SLOT_FILE), slots).expect("today's key slots");
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Which `needles` occur anywhere in the bytes of the files below `dir`:
/// `(file, needle index)` for each hit.
pub fn scan_for(dir: &Path, needles: &[Vec<u8>]) -> Vec<(PathBuf, usize)> {
    let mut hits = Vec::new();
    for f in files_below(dir) {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for (i, n) in needles.iter().enumerate() {
            if !n.is_empty() && memchr::memmem::find(&bytes, n).is_some() {
                hits.push((f.clone(), i));
            }
        }
    }
    hits
}

/// A Luhn-valid card number of `len` digits starting with `prefix`, unique per `n`.
pub fn card_number(prefix: &str, len: usize, n: u64) -> String {
    let mut digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    let body = format!("{n:0width$}", width = len - 1 - digits.len());
    digits.extend(body.bytes().map(|b| b - b'0'));
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut d = u32::from(*d);
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    let check = (10 - sum % 10) % 10;
    let mut s: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    s.push(char::from(b'0' + u8::try_from(check).unwrap()));
    s
}

/// One valid example value for every field of the default schema.
pub fn example_values() -> Vec<(&'static str, &'static str)> {
    vec![
        ("full_name", "Ann Marie Lee"),
        ("gender", "F"),
        ("date_of_birth", "1984-06-01"),
        ("email", "ann.lee@example.com"),
        ("phone", "+14155550123"),
        ("mailing_address", "1 Main Street\nSpringfield"),
        ("billing_address", "2 Side Street, Springfield"),
        ("postal_code", "SW1A 1AA"),
        ("ip_address", "192.0.2.77"),
        ("card_number", "4111111111111111"),
        ("card_expiry", "09/29"),
        ("card_cvv", "123"),
        ("cardholder_name", "Ann M Lee"),
        ("age_range", "35-44"),
        ("country_of_residence", "FR"),
        ("preferred_language", "fr-FR"),
    ]
}

/// Every audit event that passes `query`'s filters, page by page (the
/// query's `after_seq` and `limit` are set here). Each query is itself an
/// event, so a short page is the end.
pub async fn audit_events(
    auditor: &mut VaultClient,
    mut query: vault_client::proto::QueryRequest,
) -> Vec<vault_client::proto::AuditEvent> {
    const PAGE: u32 = 10_000;
    query.limit = PAGE;
    let mut out: Vec<vault_client::proto::AuditEvent> = Vec::new();
    loop {
        query.after_seq = out.last().map_or(0, |e| e.seq);
        let page = auditor
            .audit_query(query.clone())
            .await
            .expect("audit query");
        let done = page.len() < PAGE as usize;
        out.extend(page);
        if done {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_are_those_the_shipped_schema_declares() {
        let schema = vault::schema::Schema::default_schema(1024).unwrap();
        let mut declared: Vec<&str> = schema.purposes().map(|p| p.name.as_str()).collect();
        let mut listed = PURPOSES.to_vec();
        declared.sort_unstable();
        listed.sort_unstable();
        assert_eq!(listed, declared);
    }

    #[test]
    fn card_numbers_are_luhn_valid() {
        for n in 0..100 {
            let c = card_number("4", 16, n);
            assert_eq!(c.len(), 16);
            assert!(
                vault::schema::Validator::CardNumber
                    .normalize(&c, 32)
                    .is_ok(),
                "{c}"
            );
        }
    }
}
