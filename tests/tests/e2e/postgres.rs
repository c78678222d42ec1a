//! The vault on PostgreSQL (issue 20): one node, and several nodes on one
//! database. Runs when `TEST_VAULT_POSTGRES_URL` names a database
//! (`.ci/postgres start`; `.ci/run` starts one); each test in a schema of
//! its own.

use std::time::{Duration, Instant};
use tonic::Code;
use vault_proto::v1::Disclosure;
use vault_tests::TestVault;

/// The environment of a vault on the test database, in a schema named
/// after `test` and the time; `None` (the test says it is skipped) when
/// no database is configured.
fn pg_env(test: &str) -> Option<Vec<(String, String)>> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let env = vault_tests::postgres_env(&format!("{test}_{nonce:08x}"));
    if env.is_none() {
        eprintln!("skipped: TEST_VAULT_POSTGRES_URL is not set (.ci/postgres start)");
    }
    env
}

/// Calls `check` every 20 ms until it returns true; when the check that
/// succeeded began (from now), or `None` if none that began within `limit`
/// succeeded.
async fn within<F: Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let began = start.elapsed();
        if began > limit {
            return None;
        }
        if check().await {
            return Some(began);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A vault on PostgreSQL stores, reveals, keeps its data across a restart
/// (none of it in the data directory: no sled files, no key-slot file), and
/// erases: the token answers ERASED and look-up finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_on_postgres_stores_reveals_restarts_and_erases() {
    let Some(env) = pg_env("basic") else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut vault = TestVault::start_with(&env);
    let mut c = vault.client().await;
    let tokens = c
        .tokenize(
            "pg-1",
            &[("email", "pg@example.com"), ("phone", "+14155550100")],
            &[],
            "",
        )
        .await
        .unwrap();
    let email = tokens[0].token.clone();
    let shown = c.detokenize(&[&email], "booking").await.unwrap();
    assert_eq!(shown[0].value, "pg@example.com");
    assert!(
        !vault.data_dir().join("keyslots").exists(),
        "key slots in the database"
    );
    assert!(!vault.data_dir().join("db").exists(), "no sled store");

    assert!(vault.stop());
    vault.restart();
    c = vault.client().await;
    let shown = c.detokenize(&[&email], "booking").await.unwrap();
    assert_eq!(shown[0].value, "pg@example.com", "after a restart");
    let found = c
        .lookup("email", "pg@example.com", "booking")
        .await
        .unwrap();
    assert_eq!(found, vec![email.clone()]);

    let mut officer = vault.officer().await;
    officer.erase("pg-1", "GDPR 17").await.unwrap();
    let shown = c.detokenize(&[&email], "booking").await.unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Erased as i32);
    assert!(
        c.lookup("email", "pg@example.com", "booking")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Three nodes on one database: a subject tokenized on A reveals on B; a
/// field first numbered on B reveals on A; a KEK rotated on A wraps the
/// data keys B makes, which C opens; each node's Status names it and sees
/// the other two; a credential revoked on A is refused on B and C within
/// 1 s; a subject erased on C answers ERASED on A and B (which had it
/// cached) within 1 s; each node's audit trail verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_tokens_keys_revocations_and_erasures() {
    let Some(env) = pg_env("three") else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let a = TestVault::start_with(&env);
    let mut on_a = a.client().await;
    let watched = a.issue("watched", vault_tests::CORE_ROLE, 3600).await;
    let b = a.join();
    let c = a.join();
    let (mut on_b, mut on_c) = (b.client().await, c.client().await);

    // Tokenize on A, reveal on B (and C).
    let t = on_a
        .tokenize("three-1", &[("email", "three@example.com")], &[], "")
        .await
        .unwrap();
    let email = t[0].token.clone();
    for node in [&mut on_b, &mut on_c] {
        let shown = node.detokenize(&[&email], "booking").await.unwrap();
        assert_eq!(shown[0].value, "three@example.com");
    }
    // A field numbered on B (A read its numbers before) reveals on A.
    let t = on_b
        .tokenize("three-2", &[("phone", "+14155550111")], &[], "")
        .await
        .unwrap();
    let phone = t[0].token.clone();
    let shown = on_a.detokenize(&[&phone], "booking").await.unwrap();
    assert_eq!(shown[0].value, "+14155550111");

    // A KEK rotated on A wraps what B stores next; C opens it.
    let rotated = a.operator().await.rotate_keys().await.unwrap();
    let new_kek = rotated.active_kek_version;
    let took = within(Duration::from_secs(2), || {
        let b = &b;
        async move {
            b.operator()
                .await
                .status()
                .await
                .unwrap()
                .active_kek_version
                == new_kek
        }
    })
    .await;
    assert!(took.is_some(), "B takes the rotated KEK");
    let t = on_b
        .tokenize("three-3", &[("email", "after@example.com")], &[], "")
        .await
        .unwrap();
    let shown = on_c.detokenize(&[&t[0].token], "booking").await.unwrap();
    assert_eq!(shown[0].value, "after@example.com");

    // Status: the backend, the node, its peers.
    let mut ids = Vec::new();
    for node in [&a, &b, &c] {
        let seen = within(Duration::from_secs(5), || async {
            node.operator().await.status().await.unwrap().peers.len() == 2
        })
        .await;
        assert!(seen.is_some(), "each node sees the other two");
        let st = node.operator().await.status().await.unwrap();
        assert_eq!(st.storage, "postgres");
        assert!(st.database_reachable);
        assert!(!st.peers.contains(&st.node_id));
        ids.push(st.node_id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three node ids");

    // A revocation on A refuses the credential on B and C within 1 s.
    let mut watched_b = b.anonymous().await.with_token(&watched).unwrap();
    let mut watched_c = c.anonymous().await.with_token(&watched).unwrap();
    watched_b.detokenize(&[&email], "booking").await.unwrap();
    watched_c.detokenize(&[&email], "booking").await.unwrap();
    let id = vault::auth::credentials::credential_id(&watched).unwrap();
    a.operator().await.revoke_principal(id).await.unwrap();
    for (name, node) in [("B", &watched_b), ("C", &watched_c)] {
        let took = within(Duration::from_secs(1), || {
            let mut node = node.clone();
            let email = email.clone();
            async move {
                node.detokenize(&[&email], "booking")
                    .await
                    .is_err_and(|e| e.code == Code::Unauthenticated)
            }
        })
        .await;
        eprintln!("revocation on A refused on {name} after {took:?}");
        assert!(
            took.is_some(),
            "revoked on A, still accepted on {name} after 1 s"
        );
    }

    // An erasure on C: ERASED on A and B (both had the subject cached)
    // within 1 s.
    c.officer().await.erase("three-1", "GDPR 17").await.unwrap();
    for (name, node) in [("A", &on_a), ("B", &on_b)] {
        let took = within(Duration::from_secs(1), || {
            let mut node = node.clone();
            let email = email.clone();
            async move {
                node.detokenize(&[&email], "booking")
                    .await
                    .is_ok_and(|shown| {
                        shown[0].disclosure == Disclosure::Erased as i32
                            && shown[0].value.is_empty()
                    })
            }
        })
        .await;
        eprintln!("erasure on C seen on {name} after {took:?}");
        assert!(
            took.is_some(),
            "erased on C, still revealed on {name} after 1 s"
        );
    }

    // Each node's audit trail verifies.
    for node in [&a, &b, &c] {
        let verified = node
            .client_as("auditor")
            .await
            .audit_verify()
            .await
            .unwrap();
        assert!(verified.ok, "{verified:?}");
    }
}

/// What one load task saw.
#[derive(Debug, Default)]
struct Load {
    /// Acknowledged writes: subject, token, value.
    acked: Vec<(String, String, String)>,
    /// Acknowledged after `mark` was set.
    acked_after_mark: usize,
    /// The codes of refused requests.
    refused: Vec<Code>,
}

/// Tokenizes a new subject after another through `client` until `stop`.
fn load(
    mut client: vault_client::VaultClient,
    tag: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mark: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Load> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let mut seen = Load::default();
        let mut i = 0u32;
        while !stop.load(Ordering::Acquire) {
            i += 1;
            let subject = format!("{tag}-{i}");
            let value = format!("{tag}-{i}@example.com");
            let answer = tokio::time::timeout(
                Duration::from_secs(20),
                client.tokenize(&subject, &[("email", value.as_str())], &[], ""),
            )
            .await;
            match answer {
                Ok(Ok(t)) => {
                    if mark.load(Ordering::Acquire) {
                        seen.acked_after_mark += 1;
                    }
                    seen.acked.push((subject, t[0].token.clone(), value));
                }
                Ok(Err(e)) => {
                    seen.refused.push(e.code);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => seen.refused.push(Code::DeadlineExceeded),
            }
        }
        seen
    })
}

/// Every acknowledged write of `loads` reveals through `client` with its
/// value.
async fn all_acknowledged_reveal(client: &mut vault_client::VaultClient, loads: &[Load]) -> usize {
    let acked: Vec<&(String, String, String)> = loads.iter().flat_map(|l| &l.acked).collect();
    for chunk in acked.chunks(200) {
        let tokens: Vec<&str> = chunk.iter().map(|(_, t, _)| t.as_str()).collect();
        let shown = client.detokenize(&tokens, "booking").await.unwrap();
        for (d, (subject, _, value)) in shown.iter().zip(chunk) {
            assert_eq!(&d.value, value, "{subject}: an acknowledged write lost");
        }
    }
    acked.len()
}

/// kill -9 of one of three nodes under load: every write a client was told
/// succeeded (on any node, the killed one included) reveals afterwards, and
/// the two others keep serving without a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_acknowledged_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(env) = pg_env("kill") else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let a = TestVault::start_with(&env);
    let mut on_a = a.client().await;
    let mut b = a.join();
    let c = a.join();
    let (stop, killed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut tasks = Vec::new();
    for (name, node) in [("a", &a), ("b", &b), ("c", &c)] {
        for k in 0..2 {
            let client = node.client().await;
            tasks.push((
                name,
                load(
                    client,
                    format!("kill-{name}{k}"),
                    stop.clone(),
                    killed.clone(),
                ),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.kill();
    killed.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    let mut loads = Vec::new();
    for (name, task) in tasks {
        let seen = task.await.unwrap();
        if name != "b" {
            assert!(
                seen.refused.is_empty(),
                "node {name} refused {:?}",
                seen.refused
            );
            assert!(seen.acked_after_mark > 0, "node {name} kept serving");
        }
        loads.push(seen);
    }
    let n = all_acknowledged_reveal(&mut on_a, &loads).await;
    eprintln!("{n} acknowledged writes, all revealed after kill -9 of one node");
    assert!(n > 0);
}

/// A PostgreSQL crash and restart under load (a cluster of the test's own,
/// down until health says NOT_SERVING, and a second more): requests are
/// refused UNAVAILABLE and nothing else, health says NOT_SERVING meanwhile, both nodes serve again without a restart,
/// and every acknowledged write reveals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_is_unavailable_then_recovers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tonic_health::pb::health_check_response::ServingStatus;
    let Some(pg) = vault_tests::PrivatePostgres::start() else {
        eprintln!("skipped: TEST_VAULT_POSTGRES_URL is not set (.ci/postgres start)");
        return;
    };
    let pg = Arc::new(pg);
    let env = vault_tests::postgres_env_at(&pg.url, Some(&pg.password), "pause");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let a = TestVault::start_with(&env);
    let on_a = a.client().await;
    let b = a.join();
    let mut on_b = b.client().await;
    let (stop, back) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut tasks = Vec::new();
    for (name, node) in [("a", &a), ("b", &b)] {
        for k in 0..2 {
            let client = node.client().await;
            tasks.push(load(
                client,
                format!("pause-{name}{k}"),
                stop.clone(),
                back.clone(),
            ));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::spawn_blocking({
        let pg = pg.clone();
        move || pg.crash()
    })
    .await
    .unwrap();
    let not_serving = within(Duration::from_secs(10), || {
        let mut c = on_a.clone();
        async move {
            c.health("")
                .await
                .is_ok_and(|s| s == ServingStatus::NotServing)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::spawn_blocking({
        let pg = pg.clone();
        move || pg.resume()
    })
    .await
    .unwrap();
    let serving = within(Duration::from_secs(15), || {
        let (mut ca, mut cb) = (on_a.clone(), on_b.clone());
        async move {
            ca.health("")
                .await
                .is_ok_and(|s| s == ServingStatus::Serving)
                && cb
                    .health("")
                    .await
                    .is_ok_and(|s| s == ServingStatus::Serving)
        }
    })
    .await;
    eprintln!("NOT_SERVING after {not_serving:?}; SERVING again {serving:?} after the restart");
    assert!(
        not_serving.is_some(),
        "health said NOT_SERVING while the database was down"
    );
    assert!(
        serving.is_some(),
        "both nodes serve again without a restart"
    );
    back.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    let mut loads = Vec::new();
    for task in tasks {
        let seen = task.await.unwrap();
        assert!(
            seen.refused.iter().all(|c| *c == Code::Unavailable),
            "refused other than UNAVAILABLE: {:?}",
            seen.refused
        );
        assert!(seen.acked_after_mark > 0, "writes go on after the restart");
        loads.push(seen);
    }
    let n = all_acknowledged_reveal(&mut on_b, &loads).await;
    eprintln!("{n} acknowledged writes, all revealed after the database restart");
    assert!(n > 0);
    let st = a.operator().await.status().await.unwrap();
    assert!(st.database_reachable);
}

/// PCI 3.4 / 3.6.1 on PostgreSQL, without pgcrypto: the database's files
/// (tables, indexes, the WAL, which keeps every row version written, and
/// the server's log), after a clean stop writes every page out, hold no
/// stored value in clear and no unwrapped key (root, KEK, seed, data keys,
/// the erased subject's included): neither what the vault wrote before the
/// erasure (in the WAL) nor after it; the wrapped data keys are found in
/// the WAL (the scan reads it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_files_and_wal_hold_no_plaintext_and_no_unwrapped_key() {
    use base64::Engine as _;
    use prost::Message as _;
    use vault::store::{Store, keys};
    let Some(pg) = vault_tests::PrivatePostgres::start() else {
        eprintln!("skipped: TEST_VAULT_POSTGRES_URL is not set (.ci/postgres start)");
        return;
    };
    let env = vault_tests::postgres_env_at(&pg.url, Some(&pg.password), "files");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut vault = TestVault::start_with(&env);
    let mut c = vault.client().await;
    let mut plain: Vec<Vec<u8>> = Vec::new();
    for i in 0..10 {
        let email = format!("pgscan-{i}-marker@example.com");
        let name = format!("Marker Pgscan{}", char::from(b'a' + i));
        c.tokenize(
            &format!("scan-{i}"),
            &[("email", email.as_str()), ("full_name", name.as_str())],
            &[],
            "",
        )
        .await
        .unwrap();
        plain.push(email.into_bytes());
        plain.push(name.into_bytes());
    }
    // The stored keys, read beside the running vault (another node's view).
    let store = vault::store::postgres::PgStore::open(&vault::store::postgres::PgSettings {
        url: pg.url.clone(),
        password: Some(pg.password.clone().into()),
        pool: 1,
        ca_file: None,
        schema: Some("e2e_files".into()),
        node: "scanner".into(),
    })
    .unwrap();
    let text = std::fs::read_to_string(vault.key_file()).unwrap();
    let root = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.split_whitespace().last().unwrap())
        .unwrap();
    let wrapped_kek = store.get(&keys::kek(1)).unwrap().unwrap();
    let wrapped_seed = store.get(keys::SEED).unwrap().unwrap();
    let mut kek_context = b"vault/v1/kek/".to_vec();
    kek_context.extend_from_slice(&1u32.to_be_bytes());
    let kek = crate::keys::open_envelope(&root, &kek_context, &wrapped_kek);
    let seed = crate::keys::open_envelope(&root, b"vault/v1/seed", &wrapped_seed);
    let mut raw = vec![root.clone(), kek.clone(), seed];
    let mut wrapped = Vec::new();
    for i in 0..10 {
        let sid = format!("scan-{i}");
        let bytes = store.get(&keys::subject(&sid)).unwrap().unwrap();
        let record = vault::engine::records::SubjectRecord::decode(bytes.as_slice()).unwrap();
        for (version, w) in store.keys(record.slot).unwrap() {
            let mut context = b"vault/v1/dek/".to_vec();
            context.extend_from_slice(&version.to_be_bytes());
            context.extend_from_slice(sid.as_bytes());
            raw.push(crate::keys::open_envelope(&kek, &context, &w));
            wrapped.push(w);
        }
    }
    store.close().unwrap();
    drop(store);
    vault
        .officer()
        .await
        .erase("scan-0", "GDPR 17")
        .await
        .unwrap();
    assert!(vault.stop());
    pg.halt();
    // The cluster's directory: tables, indexes, WAL and the server's log.
    let files = pg.dir();
    let wal = files.join("db").join("pg_wal");
    assert!(wal.is_dir());
    let hits = vault_tests::scan_for(&files, &plain);
    assert!(
        hits.is_empty(),
        "values in clear in the database's files: {hits:?}"
    );
    let hits = vault_tests::scan_for(&files, &raw);
    assert!(
        hits.is_empty(),
        "unwrapped keys in the database's files: {hits:?}"
    );
    assert!(
        !vault_tests::scan_for(&wal, &wrapped).is_empty(),
        "the wrapped data keys are found in the WAL (the scan reads it)"
    );
}

/// A grant rejected on node A and approved on node B at once (before B has
/// heard of the rejection): the approval is refused, and the grant never
/// becomes a token that B or A accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_rejected_on_one_node_is_not_approved_on_another() {
    let Some(env) = pg_env("grant") else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let a = TestVault::start_with(&env);
    let b = a.join();
    let created = a
        .operator()
        .await
        .create_principal("raced", vault_tests::CORE_ROLE, 3600)
        .await
        .unwrap();
    assert!(created.pending);
    let id = created.principal.unwrap().id;
    // B knows the grant as pending (it reads the list), then A rejects it
    // and B is asked to approve it at once.
    let listed = within(Duration::from_secs(2), || {
        let (b, id) = (&b, &id);
        async move {
            let listed = b.operator().await.list_principals().await.unwrap();
            listed.iter().any(|p| &p.id == id)
        }
    })
    .await;
    assert!(listed.is_some(), "B lists the pending grant");
    a.officer().await.reject_grant(&id, "raced").await.unwrap();
    let approved = b
        .officer()
        .await
        .approve_grant(&id, "raced", vault_tests::CORE_ROLE)
        .await;
    assert_eq!(
        approved.unwrap_err().code,
        Code::FailedPrecondition,
        "a rejected grant approved on another node"
    );
    let mut c = b.anonymous().await.with_token(&created.token).unwrap();
    assert_eq!(c.who_am_i().await.unwrap_err().code, Code::Unauthenticated);
}
