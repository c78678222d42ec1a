//! The vault on PostgreSQL (issue 20, first step: keyed data and key slots
//! in the database). Runs when `TEST_VAULT_POSTGRES_URL` names a database
//! (`.ci/postgres start`; `.ci/run` starts one); each test in a schema of
//! its own.

use vault_proto::v1::Disclosure;
use vault_tests::TestVault;

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
