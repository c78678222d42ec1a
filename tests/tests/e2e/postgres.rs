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

/// Calls `check` every 20 ms until it returns true; how long that took, or
/// `None` if it still failed after `limit`.
async fn within<F: Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A vault on PostgreSQL stores, reveals, keeps its data across a restart
/// (none of it in the data directory: no sled files, no key-slot file), and
/// erases: the token answers ERASED and look-up finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_on_postgres_stores_reveals_restarts_and_erases() {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let Some(env) = vault_tests::postgres_env(&format!("basic_{nonce:08x}")) else {
        eprintln!("skipped: TEST_VAULT_POSTGRES_URL is not set (.ci/postgres start)");
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
