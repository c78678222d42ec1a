//! A subject's lifecycle: erasure by crypto-shredding with a signed receipt
//! (GDPR 17), restriction (GDPR 18), legal holds.

use tonic::Code;
use vault::engine::records::SubjectRecord;
use vault_client::VaultClient;
use vault_client::proto::{Disclosure, QueryRequest};
use vault_tests::{
    TestVault, audit_events, card_number, copy_tree, example_values, files_below, outcome,
    scan_for, swap_in_old_copy,
};

/// The stored record of `subject` with its wrapped DEK
/// ([`TestVault::stored_record`]).
pub(crate) async fn stored_record(vault: &TestVault, subject: &str) -> Option<SubjectRecord> {
    vault.stored_record(subject).await
}

/// Every ciphertext and wrapped DEK of a record (erasure removes the DEK;
/// the ciphertexts may linger in the store's log, opened by no key).
fn secrets(r: &SubjectRecord) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = r
        .entries
        .iter()
        .filter(|e| !e.ciphertext.is_empty())
        .map(|e| e.ciphertext.clone())
        .collect();
    out.extend(r.deks.iter().map(|d| d.wrapped.clone()));
    out
}

async fn store_everything(vault: &TestVault, subject: &str) -> Vec<(String, String)> {
    let mut c = vault.client().await;
    let card = card_number("4", 16, subject.len() as u64);
    let mut values: Vec<(&str, String)> = example_values()
        .into_iter()
        .map(|(f, v)| (f, v.to_owned()))
        .collect();
    for (f, v) in &mut values {
        match *f {
            "card_number" => *v = card.clone(),
            "email" => *v = format!("{subject}@example.com"),
            _ => {}
        }
    }
    let pairs: Vec<(&str, &str)> = values.iter().map(|(f, v)| (*f, v.as_str())).collect();
    c.tokenize(subject, &pairs, &["booking"], "2026-01")
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.field, t.token))
        .collect()
}

/// GDPR 17: after Erase every token of the subject answers ERASED, nothing
/// is found by look-up, the subject's wrapped DEK is nowhere in the data
/// directory (its key slot is overwritten), and nothing of it decrypts even
/// for someone who kept a copy of the data directory from before the
/// erasure and takes today's key slots; the receipt verifies with the
/// vault's public key, and the audit trail keeps the events, without
/// personal data. Another subject is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_17_erasure_shreds_the_subject_and_signs_a_receipt() {
    let mut vault = TestVault::start();
    let gone = store_everything(&vault, "erase-me").await;
    let kept = store_everything(&vault, "keep-me").await;
    let before = stored_record(&vault, "erase-me").await.expect("stored");
    assert_eq!(
        secrets(&before).len(),
        15 + 1,
        "15 ciphertexts (no CVV) and a DEK"
    );
    let key_of =
        |r: &SubjectRecord| -> Vec<Vec<u8>> { r.deks.iter().map(|d| d.wrapped.clone()).collect() };
    let erased_key = key_of(&before);
    let kept_key = key_of(&stored_record(&vault, "keep-me").await.unwrap());
    // A copy of the data directory as it was before the erasure.
    let copies = tempfile::tempdir().unwrap();
    assert!(vault.stop());
    copy_tree(&vault.data_dir(), &copies.path().join("before"));
    vault.restart();
    let mut c = vault.client().await;

    let mut officer = vault.client_as("privacy_officer").await;
    let receipt = officer
        .erase("erase-me", "GDPR 17 request 118")
        .await
        .unwrap();
    let mut auditor = vault.client_as("auditor").await;
    let public_key = auditor.audit_public_key().await.unwrap();
    let body = vault_proto::receipt::verify_erasure(&public_key, &receipt).expect("signed");
    assert_eq!(body.subject_id, "erase-me");
    assert_eq!(
        (body.fields, body.tokens, body.index_entries, body.keys),
        (15, 16, 3, 1)
    );
    assert_eq!(body.reason, "GDPR 17 request 118");
    let mut forged = receipt.clone();
    forged.body[3] ^= 1;
    assert!(vault_proto::receipt::verify_erasure(&public_key, &forged).is_none());

    // Every token: ERASED, field named, no value; the other subject is intact.
    let tokens: Vec<&str> = gone.iter().map(|(_, t)| t.as_str()).collect();
    for d in c.detokenize(&tokens, "billing").await.unwrap() {
        assert_eq!(d.disclosure, Disclosure::Erased as i32, "{}", d.field);
        assert!(d.value.is_empty() && !d.field.is_empty());
    }
    let kept_tokens: Vec<&str> = kept.iter().map(|(_, t)| t.as_str()).collect();
    // (the copy was taken with a restart: a CVV does not outlive it)
    assert_plain_but_cvv(&c.detokenize(&kept_tokens, "billing").await.unwrap());
    assert!(
        c.lookup("email", "erase-me@example.com", "billing")
            .await
            .unwrap()
            .is_empty()
    );
    let err = c
        .update(&gone[3].1, "new@example.com", "billing")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);
    // Erasing again: nothing left to erase.
    let err = officer.erase("erase-me", "again").await.unwrap_err();
    assert_eq!(err.code, Code::NotFound);

    // The audit trail keeps what happened, and the erasure, without values.
    let events = audit_events(
        &mut auditor,
        QueryRequest {
            subject_id: "erase-me".into(),
            ..Default::default()
        },
    )
    .await;
    let erase = events
        .iter()
        .find(|e| e.action == "erase")
        .expect("erase event");
    assert_eq!(erase.principal, "privacy_officer-test");
    assert!(erase.detail.contains("fields=15"), "{}", erase.detail);
    assert!(events.iter().any(|e| e.action == "tokenize"));
    let all = format!("{events:?}");
    assert!(!all.contains("erase-me@example.com"));

    // After a clean stop the subject's key is nowhere in the data
    // directory; the other subject's is (the scan can fail).
    assert!(vault.stop());
    if !vault_tests::on_postgres() {
        // (On PostgreSQL the keys are in the database, and an erasure is
        // an UPDATE: docs/operations.md, "PostgreSQL".)
        assert!(scan_for(&vault.data_dir(), &erased_key).is_empty());
        assert_eq!(scan_for(&vault.data_dir(), &kept_key).len(), 1);
    }
    // And it stays erased after a restart.
    vault.restart();
    let mut c = vault.client().await;
    let d = c.detokenize(&tokens[..1], "billing").await.unwrap();
    assert_eq!(d[0].disclosure, Disclosure::Erased as i32);
    drop(c);
    if vault_tests::on_postgres() {
        // (The copy of the data directory below is the embedded store's.)
        return;
    }

    // The copy from before the erasure still holds the record and its
    // ciphertexts, but with today's key slots nothing of it decrypts;
    // the other subject does (the check can fail).
    assert!(vault.stop());
    swap_in_old_copy(&vault, &copies.path().join("before"));
    vault.restart();
    let mut c = vault.client().await;
    assert_none_decrypts(&mut c, &gone, "billing").await;
    assert_plain_but_cvv(&c.detokenize(&kept_tokens, "billing").await.unwrap());
}

/// Every value of `shown` but a CVV's (which does not outlive a restart)
/// is shown in clear.
fn assert_plain_but_cvv(shown: &[vault_client::proto::Disclosed]) {
    for d in shown.iter().filter(|d| d.field != "card_cvv") {
        assert_eq!(d.disclosure, Disclosure::Plain as i32, "{}", d.field);
    }
}

/// Detokenizes each of `tokens` alone, on a copy of the data directory
/// taken before the subject's key was shredded (so its record is there):
/// each one whose value was stored fails `DATA_LOSS` (its key is not in its
/// slot), a CVV answers `EXPIRED` (it lived in memory only); none shows a
/// value, and none answers `ERASED` (the copy is the older one).
pub(crate) async fn assert_none_decrypts(
    c: &mut VaultClient,
    tokens: &[(String, String)],
    purpose: &str,
) {
    for (field, token) in tokens {
        match c.detokenize(&[token.as_str()], purpose).await {
            Err(e) => assert_eq!(e.code, tonic::Code::DataLoss, "{field}: {e}"),
            Ok(shown) => {
                assert_eq!(field, "card_cvv", "{field} answered: {shown:?}");
                assert_eq!(shown[0].disclosure, Disclosure::Expired as i32);
                assert!(shown[0].value.is_empty());
            }
        }
    }
}

/// A legal hold blocks erasure until released; one case at a time; only
/// the privacy officer sets holds, restricts and erases; every change is
/// audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legal_hold_blocks_erasure_and_only_the_privacy_officer_acts() {
    let vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    booking
        .tokenize("held-1", &[("email", "held@example.com")], &[], "")
        .await
        .unwrap();
    for role in ["booking_service", "customer_service", "auditor", "operator"] {
        let mut c = vault.client_as(role).await;
        assert_eq!(
            c.erase("held-1", "no").await.unwrap_err().code,
            Code::PermissionDenied
        );
        assert_eq!(
            c.restrict("held-1", true, "no").await.unwrap_err().code,
            Code::PermissionDenied
        );
        assert_eq!(
            c.set_legal_hold("held-1", true, "c", "no")
                .await
                .unwrap_err()
                .code,
            Code::PermissionDenied
        );
    }
    let mut officer = vault.client_as("privacy_officer").await;
    let held = officer
        .set_legal_hold("held-1", true, "CASE-7", "litigation")
        .await
        .unwrap();
    assert!(held.held);
    let err = officer.erase("held-1", "asked").await.unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);
    assert!(err.message.contains("legal hold"), "{}", err.message);
    let err = officer
        .set_legal_hold("held-1", true, "CASE-8", "other")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);
    // Bad input is named, never echoed.
    let err = officer
        .set_legal_hold("held-1", true, "", "x")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.violations.iter().any(|(f, _)| f == "case_id"));
    let err = officer.erase("held-1", "").await.unwrap_err();
    assert!(err.violations.iter().any(|(f, _)| f == "reason"));
    assert_eq!(
        officer.erase("nobody", "asked").await.unwrap_err().code,
        Code::NotFound
    );
    let released = officer
        .set_legal_hold("held-1", false, "", "settled")
        .await
        .unwrap();
    assert_eq!(released.case_id, "CASE-7");
    officer.erase("held-1", "asked").await.unwrap();

    let mut auditor = vault.client_as("auditor").await;
    let events = audit_events(
        &mut auditor,
        QueryRequest {
            subject_id: "held-1".into(),
            ..Default::default()
        },
    )
    .await;
    let actions: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.principal == "privacy_officer-test")
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("legal_hold", "ok"),
            ("erase", "failed_precondition"),
            ("legal_hold", "failed_precondition"),
            ("release_legal_hold", "ok"),
            ("erase", "ok"),
        ]
    );
}

/// GDPR 18: a restricted subject's data stays stored but is revealed to
/// nobody and found by no look-up until the restriction is lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_18_restricted_data_is_revealed_to_nobody_until_lifted() {
    let vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    let t = booking
        .tokenize(
            "restrict-1",
            &[("email", "r@example.com"), ("full_name", "Ann Lee")],
            &["booking"],
            "",
        )
        .await
        .unwrap();
    let tokens = [t[0].token.as_str(), t[1].token.as_str()];
    let mut officer = vault.client_as("privacy_officer").await;
    assert!(
        officer
            .restrict("restrict-1", true, "accuracy contested")
            .await
            .unwrap()
    );
    for (role, purpose) in [
        ("booking_service", "booking"),
        ("customer_service", "customer_support"),
        ("billing_clerk", "billing"),
    ] {
        let mut c = vault.client_as(role).await;
        let shown = c.detokenize(&tokens, purpose).await.unwrap();
        assert!(
            shown
                .iter()
                .all(|d| d.disclosure == Disclosure::Denied as i32),
            "{role}"
        );
    }
    assert!(
        booking
            .lookup("email", "r@example.com", "booking")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !officer
            .restrict("restrict-1", false, "resolved")
            .await
            .unwrap()
    );
    let shown = booking.detokenize(&tokens, "booking").await.unwrap();
    assert_eq!(shown[0].value, "r@example.com");
    assert_eq!(
        booking
            .lookup("email", "r@example.com", "booking")
            .await
            .unwrap(),
        vec![t[0].token.clone()]
    );
}

pub(crate) const DAY: i64 = 86_400;

/// Clients whose bearer tokens outlive the clock's jumps (a year).
struct LongLived {
    core: String,
    officer: String,
}

async fn long_lived(vault: &TestVault) -> LongLived {
    let year = 365 * DAY as u64;
    LongLived {
        core: vault.issue("core-long", vault_tests::CORE_ROLE, year).await,
        officer: vault.issue("officer-long", "privacy_officer", year).await,
    }
}

/// A client of `vault` with bearer token `token`.
pub(crate) async fn as_token(vault: &TestVault, token: &str) -> vault_client::VaultClient {
    vault.anonymous().await.with_token(token).unwrap()
}

/// Moves the vault's clock `days` ahead of the real one (a restart).
pub(crate) fn jump(vault: &mut TestVault, days: i64) {
    assert!(vault.stop());
    vault.set_env("VAULT_TEST_CLOCK_OFFSET_SECS", &(days * DAY).to_string());
    vault.restart();
}

fn class<'a>(
    r: &'a vault_client::proto::LifecycleReportResponse,
    name: &str,
) -> &'a vault_client::proto::ClassReport {
    r.classes.iter().find(|c| c.class == name).unwrap()
}

/// PCI DSS 3.2.1: card data is kept 120 days after collection, then made
/// unrecoverable: past it, detokenize answers EXPIRED at once, look-up finds
/// nothing, the report counts it overdue; the sweeper deletes the
/// ciphertexts (gone from the data directory) and the report shows nothing
/// overdue. Contact data (3 years) is untouched; a legal hold keeps a
/// subject's card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_3_2_1_card_data_is_shredded_after_its_retention() {
    let mut vault = TestVault::start_with(&[
        ("VAULT_MAX_TOKEN_TTL_SECS", "31622400"),
        ("VAULT_RETENTION_SWEEP_SECS", "0"),
    ]);
    let keys = long_lived(&vault).await;
    let mut c = as_token(&vault, &keys.core).await;
    let card = card_number("4", 16, 321);
    let fields = [
        ("card_number", card.as_str()),
        ("card_expiry", "12/99"),
        ("cardholder_name", "Ann Lee"),
        ("email", "kept@example.com"),
    ];
    let t = c.tokenize("card-1", &fields, &[], "").await.unwrap();
    let held = c.tokenize("card-held", &fields, &[], "").await.unwrap();
    let stored = stored_record(&vault, "card-1").await.unwrap();
    let card_ciphertexts = stored
        .entries
        .iter()
        .filter(|e| e.field.starts_with("card"))
        .count();
    assert_eq!(card_ciphertexts, 3, "number, expiry, holder");
    // Shredding values re-keys the subject: the key that sealed them goes
    // (their ciphertexts may linger in the store's log, unreadable).
    let old_key: Vec<Vec<u8>> = stored.deks.iter().map(|d| d.wrapped.clone()).collect();
    let mut officer = as_token(&vault, &keys.officer).await;
    officer
        .set_legal_hold("card-held", true, "CASE-1", "chargeback dispute")
        .await
        .unwrap();
    let tokens: Vec<&str> = t.iter().map(|x| x.token.as_str()).collect();
    let report = officer.lifecycle_report(30).await.unwrap();
    assert_eq!(class(&report, "card").live, 6);
    assert_eq!(class(&report, "card").retention, "120d after collection");

    jump(&mut vault, 119);
    let mut c = as_token(&vault, &keys.core).await;
    let shown = c.detokenize(&tokens, "billing").await.unwrap();
    assert!(
        shown
            .iter()
            .all(|d| d.disclosure == Disclosure::Plain as i32),
        "day 119"
    );
    let mut officer = as_token(&vault, &keys.officer).await;
    assert_eq!(
        class(&officer.lifecycle_report(30).await.unwrap(), "card").due,
        6
    );

    jump(&mut vault, 121);
    let mut c = as_token(&vault, &keys.core).await;
    let shown = c.detokenize(&tokens, "billing").await.unwrap();
    for d in &shown[..3] {
        assert_eq!(d.disclosure, Disclosure::Expired as i32, "{}", d.field);
        assert!(d.value.is_empty());
    }
    assert_eq!(
        shown[3].value, "kept@example.com",
        "contact data stays 3 years"
    );
    // Only the held subject's card is still found.
    assert_eq!(
        c.lookup("card_number", &card, "billing").await.unwrap(),
        vec![held[0].token.clone()]
    );
    let held_tokens: Vec<&str> = held.iter().map(|x| x.token.as_str()).collect();
    let shown = c.detokenize(&held_tokens, "billing").await.unwrap();
    assert_eq!(shown[0].value, card, "a legal hold keeps it");
    let err = c
        .update(&t[2].token, "Ann B Lee", "billing")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);
    let mut officer = as_token(&vault, &keys.officer).await;
    let before = officer.lifecycle_report(30).await.unwrap();
    assert_eq!(
        (class(&before, "card").overdue, class(&before, "card").held),
        (3, 3)
    );
    let swept = officer.sweep().await.unwrap();
    assert_eq!((swept.subjects, swept.fields, swept.held), (1, 3, 1));
    let after = officer.lifecycle_report(30).await.unwrap();
    assert!(
        after.classes.iter().all(|c| c.overdue == 0),
        "nothing overdue"
    );
    assert_eq!(class(&after, "card").shredded, 3);
    assert_eq!(officer.sweep().await.unwrap().fields, 0, "idempotent");
    let shown = c.detokenize(&tokens, "billing").await.unwrap();
    assert!(
        shown[..3]
            .iter()
            .all(|d| d.disclosure == Disclosure::Expired as i32)
    );

    // The sweep is in the audit trail; the ciphertexts are gone from disk.
    // (The bootstrap operator token is long expired on this clock.)
    let auditor = c
        .create_principal("auditor-later", "auditor", 3600)
        .await
        .unwrap()
        .token;
    let mut auditor = as_token(&vault, &auditor).await;
    let events = audit_events(
        &mut auditor,
        QueryRequest {
            since_unix_micros: 1,
            ..Default::default()
        },
    )
    .await;
    let sweep = events
        .iter()
        .find(|e| e.event_type == "retention_sweep" && e.detail.contains("fields=3"))
        .expect("the sweep is audited");
    assert!(sweep.detail.contains("held=1"), "{}", sweep.detail);
    assert!(vault.stop());
    if !vault_tests::on_postgres() {
        // (On PostgreSQL the old key's row version outlives the UPDATE:
        // docs/operations.md, "PostgreSQL".)
        assert!(scan_for(&vault.data_dir(), &old_key).is_empty());
    }
}

/// GDPR 5(1)(e): Secure Flight data is kept 30 days after the end of travel
/// (the Tokenize anchor), else 30 days after collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_5_1_e_secure_flight_data_expires_after_travel_end() {
    let mut vault = TestVault::start_with(&[
        ("VAULT_MAX_TOKEN_TTL_SECS", "31622400"),
        ("VAULT_RETENTION_SWEEP_SECS", "0"),
    ]);
    let keys = long_lived(&vault).await;
    let mut c = as_token(&vault, &keys.core).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Travel ends in 10 days: kept until 41 days from now.
    let travel_end = {
        let day = now / DAY + 10;
        let (y, m) = vault::cards::year_month(day * DAY);
        // The day of the month: count back to the first of the month.
        let first = (0..31)
            .map(|k| day - k)
            .find(|d| vault::cards::year_month((d - 1) * DAY) != (y, m))
            .unwrap();
        format!("{y:04}-{m:02}-{:02}", day - first + 1)
    };
    let mut req = vault_client::proto::TokenizeRequest {
        subject_id: "traveller-1".into(),
        fields: vec![vault_client::proto::FieldValue {
            field: "date_of_birth".into(),
            value: "1984-06-01".into(),
        }],
        travel_end_date: travel_end.clone(),
        ..Default::default()
    };
    let anchored = c.tokenize_request(req.clone()).await.unwrap().tokens[0]
        .token
        .clone();
    req.subject_id = "traveller-2".into();
    req.travel_end_date = String::new();
    let unanchored = c.tokenize_request(req.clone()).await.unwrap().tokens[0]
        .token
        .clone();
    req.subject_id = "traveller-3".into();
    req.travel_end_date = "2026-02-30".into();
    let err = c.tokenize_request(req).await.unwrap_err();
    assert!(
        err.violations.iter().any(|(f, _)| f == "travel_end_date"),
        "{err:?}"
    );

    jump(&mut vault, 35);
    let mut c = as_token(&vault, &keys.core).await;
    let shown = c
        .detokenize(&[&anchored, &unanchored], "secure_flight")
        .await
        .unwrap();
    assert_eq!(
        shown[0].value, "1984-06-01",
        "travel ended 25 days ago ({travel_end})"
    );
    assert_eq!(
        shown[1].disclosure,
        Disclosure::Expired as i32,
        "collected 35 days ago"
    );

    jump(&mut vault, 42);
    let mut c = as_token(&vault, &keys.core).await;
    let shown = c.detokenize(&[&anchored], "secure_flight").await.unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Expired as i32);
    let mut officer = as_token(&vault, &keys.officer).await;
    let swept = officer.sweep().await.unwrap();
    assert_eq!(swept.fields, 2);
    let report = officer.lifecycle_report(30).await.unwrap();
    assert_eq!(class(&report, "secure_flight").shredded, 2);
}

/// Runs `vaultd restore` into `data_dir` with the test vault's key file.
fn restore(
    vault: &TestVault,
    data_dir: &std::path::Path,
    from: &std::path::Path,
    journals: &[&std::path::Path],
) -> (bool, String) {
    let mut cmd = std::process::Command::new(vault_tests::bin("vaultd-under-test"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("--root-key-file")
        .arg(vault.key_file())
        .env_remove("VAULT_CONFIG")
        .arg("restore")
        .arg("--from")
        .arg(from);
    for j in journals {
        cmd.arg("--erasure-journal").arg(j);
    }
    let out = cmd.output().unwrap();
    outcome(&out)
}

/// GDPR 17 and PCI 3.6: backup, erase, restore. A backup holds no raw
/// value (ciphertexts stay ciphertexts); restored with the erasure journal
/// taken after the erasure, the erased subject stays erased (its tokens
/// answer ERASED, its wrapped DEK is not in the restored data directory) while the other subject is back whole. Restored without
/// that journal, the subject would come back: the journal is what keeps it
/// erased. A changed backup, and a non-empty data directory, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_17_a_restored_backup_keeps_erased_subjects_erased() {
    if vault_tests::sled_only("restores on PostgreSQL are the next step of issue 20") {
        return;
    }
    let mut vault = TestVault::start();
    let gone = store_everything(&vault, "bk-gone").await;
    let kept = store_everything(&vault, "bk-kept").await;
    let gone_record = stored_record(&vault, "bk-gone").await.unwrap();
    let gone_secrets = secrets(&gone_record);
    let gone_key: Vec<Vec<u8>> = gone_record.deks.iter().map(|d| d.wrapped.clone()).collect();
    let kept_secrets = secrets(&stored_record(&vault, "bk-kept").await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (full, journal) = (dir.path().join("full.vbk"), dir.path().join("journal.vbk"));

    let mut operator = vault.operator().await;
    let mut file = std::fs::File::create(&full).unwrap();
    let mut seen = 0;
    operator
        .backup(false, &mut file, |done, _| seen = done)
        .await
        .unwrap();
    assert!(seen > 0);
    let bytes = std::fs::read(&full).unwrap();
    assert!(bytes.starts_with(vault::backup::MAGIC));
    for needle in ["bk-gone@example.com", "Ann Marie Lee"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} in clear in the backup"
        );
    }
    assert!(
        vault
            .client_as("auditor")
            .await
            .backup(false, &mut Vec::new(), |_, _| {})
            .await
            .is_err()
    );

    let mut officer = vault.client_as("privacy_officer").await;
    officer
        .erase("bk-gone", "GDPR 17 request 77")
        .await
        .unwrap();
    let mut file = std::fs::File::create(&journal).unwrap();
    operator.backup(true, &mut file, |_, _| {}).await.unwrap();
    assert!(vault.stop());

    // Without the newer journal the subject would come back.
    let control = dir.path().join("control");
    let (ok, err) = restore(&vault, &control, &full, &[]);
    assert!(ok, "{err}");
    assert_eq!(scan_for(&control, &gone_secrets).len(), gone_secrets.len());

    // A changed backup is refused and writes nothing.
    let mut changed = bytes.clone();
    let mid = changed.len() / 2;
    changed[mid] ^= 1;
    let bad = dir.path().join("changed.vbk");
    std::fs::write(&bad, &changed).unwrap();
    let refused = dir.path().join("refused");
    let (ok, err) = restore(&vault, &refused, &bad, &[]);
    assert!(!ok);
    assert!(err.contains("not a valid backup"), "{err}");
    assert!(
        files_below(&refused)
            .iter()
            .all(|f| !f.ends_with("keyslots"))
    );
    // A data directory in use is refused.
    let (ok, err) = restore(&vault, &vault.data_dir(), &full, &[]);
    assert!(!ok);
    assert!(err.contains("not empty"), "{err}");

    // The restore: the old data directory gone, the backup and the journal.
    std::fs::remove_dir_all(vault.data_dir()).unwrap();
    let (ok, err) = restore(&vault, &vault.data_dir(), &full, &[&journal]);
    assert!(ok, "{err}");
    assert!(err.contains("1 subjects erased again"), "{err}");
    // Its key is not in the restored directory (the restore's copies of
    // its ciphertexts may linger in the store's log, unreadable).
    let hits = scan_for(&vault.data_dir(), &gone_key);
    assert!(
        hits.is_empty(),
        "the erased subject's key came back: {hits:?}"
    );
    assert_eq!(
        scan_for(&vault.data_dir(), &kept_secrets).len(),
        kept_secrets.len()
    );
    vault.restart();
    let mut c = vault.client().await;
    let gone_tokens: Vec<&str> = gone.iter().map(|(_, t)| t.as_str()).collect();
    for d in c.detokenize(&gone_tokens, "billing").await.unwrap() {
        assert_eq!(d.disclosure, Disclosure::Erased as i32, "{}", d.field);
    }
    let kept_tokens: Vec<&str> = kept.iter().map(|(_, t)| t.as_str()).collect();
    for d in c.detokenize(&kept_tokens, "billing").await.unwrap() {
        // A CVV never survives a restart, let alone a backup.
        let want = if d.field == "card_cvv" {
            Disclosure::Expired
        } else {
            Disclosure::Plain
        };
        assert_eq!(d.disclosure, want as i32, "{}", d.field);
    }
    // Tokens minted after the restore are under the next token key
    // version: the restored key slots and counters are the backup's, and a
    // token handed out after the backup must never be minted again for
    // another value. The tokens of before keep working (above).
    let again = c
        .tokenize("bk-new", &[("email", "after.restore@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    let version = vault::tokens::locator::version_of;
    assert_eq!(version(&again), Some(2));
    let before = kept.iter().find(|(f, _)| f == "email").unwrap();
    assert_eq!(version(&before.1), Some(1));
}

/// A vault on the shipped schema with contact data kept 10 days after the
/// last activity (3 years as shipped), so that one clock jump passes it, and
/// no background sweep; and the directory holding that schema.
fn short_contact_retention() -> (TestVault, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let shipped = include_str!("../../../policies/fields.toml");
    let short = shipped.replacen(
        "retention = \"3y\"\nafter = \"last_activity\"",
        "retention = \"10d\"\nafter = \"last_activity\"",
        1,
    );
    assert_ne!(short, shipped);
    let schema = dir.path().join("fields.toml");
    std::fs::write(&schema, short).unwrap();
    let vault = TestVault::start_with(&[
        ("VAULT_SCHEMA_FILE", schema.to_str().unwrap()),
        ("VAULT_RETENTION_SWEEP_SECS", "0"),
    ]);
    (vault, dir)
}

/// GDPR 5(1)(e): a value whose retention runs from the subject's last
/// activity, once expired, stays expired: a later Tokenize, consent change
/// or correction for the same subject does not revive it, and storing the
/// same value anew gets a new token, never the expired one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_5_1_e_activity_does_not_revive_expired() {
    let (mut vault, _schema) = short_contact_retention();
    let core = vault
        .issue("core-long", vault_tests::CORE_ROLE, 20 * DAY as u64)
        .await;
    let mut c = as_token(&vault, &core).await;
    let stored = c
        .tokenize("rev-1", &[("email", "rev@example.com")], &[], "")
        .await
        .unwrap();
    let old = stored[0].token.clone();
    jump(&mut vault, 11);
    let mut c = as_token(&vault, &core).await;
    let expired = |shown: Vec<vault_client::proto::Disclosed>| {
        shown[0].disclosure == Disclosure::Expired as i32 && shown[0].value.is_empty()
    };
    assert!(expired(c.detokenize(&[&old], "booking").await.unwrap()));

    // Activity of every kind for the same subject.
    let phone = c
        .tokenize("rev-1", &[("phone", "+14155550199")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    assert!(expired(c.detokenize(&[&old], "booking").await.unwrap()));
    c.set_consent("rev-1", &["marketing_email"], &[], "")
        .await
        .unwrap();
    assert!(expired(c.detokenize(&[&old], "booking").await.unwrap()));
    c.update(&phone, "+14155550100", "booking").await.unwrap();
    assert!(expired(c.detokenize(&[&old], "booking").await.unwrap()));
    assert_eq!(
        c.update(&old, "new@example.com", "booking")
            .await
            .unwrap_err()
            .code,
        tonic::Code::FailedPrecondition,
        "an expired value is stored anew, not corrected"
    );

    // Stored anew: a new token that answers, never the expired one.
    let again = c
        .tokenize("rev-1", &[("email", "rev@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    assert_ne!(again, old);
    let shown = c.detokenize(&[&again, &old], "booking").await.unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Plain as i32);
    assert_eq!(shown[0].value, "rev@example.com");
    assert!(expired(shown[1..].to_vec()));
    // And a restart (which rebuilds nothing from the old value) agrees.
    jump(&mut vault, 12);
    let mut c = as_token(&vault, &core).await;
    assert!(expired(c.detokenize(&[&old], "booking").await.unwrap()));
}

/// Erasure leaves no key behind, and a subject id used again after an
/// erasure (at once: in the same second) is a new subject with a key of its
/// own: its values read back, before and after a restart (a value sealed
/// under a stale cached key would fail there, where only the record's own
/// wrapped key exists), its old tokens answer ERASED, and the erasure
/// journal does not shred the new subject at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_no_key_behind() {
    let mut vault = TestVault::start();
    let mut c = vault.client().await;
    let old = c
        .tokenize("reuse-1", &[("email", "first@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    let shown = c.detokenize(&[&old], "booking").await.unwrap();
    assert_eq!(shown[0].value, "first@example.com");
    let first = stored_record(&vault, "reuse-1").await.unwrap();
    c.erase("reuse-1", "GDPR 17").await.unwrap();
    let new = c
        .tokenize("reuse-1", &[("email", "second@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    let second = stored_record(&vault, "reuse-1").await.unwrap();
    assert_ne!(first.deks[0].wrapped, second.deks[0].wrapped);
    let check = |shown: Vec<vault_client::proto::Disclosed>| {
        assert_eq!(shown[0].disclosure, Disclosure::Erased as i32);
        assert!(shown[0].value.is_empty());
        assert_eq!(shown[1].disclosure, Disclosure::Plain as i32);
        assert_eq!(shown[1].value, "second@example.com");
    };
    check(c.detokenize(&[&old, &new], "booking").await.unwrap());
    assert!(vault.stop());
    vault.restart();
    let mut c = vault.client().await;
    check(c.detokenize(&[&old, &new], "booking").await.unwrap());
}

/// A legal hold keeps the held value: an Update under the hold is refused
/// FAILED_PRECONDITION and the value stays; once the hold is released the
/// correction goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_under_a_legal_hold_keeps_the_held_value() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let token = c
        .tokenize("hold-upd-1", &[("email", "held@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    c.set_legal_hold("hold-upd-1", true, "case-9", "dispute")
        .await
        .unwrap();
    let err = c
        .update(&token, "changed@example.com", "booking")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition, "{err}");
    assert!(!err.message.contains("example.com"));
    let shown = c.detokenize(&[&token], "booking").await.unwrap();
    assert_eq!(shown[0].value, "held@example.com");
    assert_eq!(
        stored_record(&vault, "hold-upd-1").await.unwrap().entries[0].value_version,
        1
    );

    c.set_legal_hold("hold-upd-1", false, "case-9", "settled")
        .await
        .unwrap();
    assert_eq!(
        c.update(&token, "changed@example.com", "booking")
            .await
            .unwrap(),
        2
    );
    let shown = c.detokenize(&[&token], "booking").await.unwrap();
    assert_eq!(shown[0].value, "changed@example.com");
}

/// A legal hold keeps a value past its retention readable, and activity
/// during the hold does not extend the retention: once the hold is lifted,
/// the value is expired at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_5_1_e_activity_under_a_legal_hold_does_not_extend_retention() {
    let (mut vault, _schema) = short_contact_retention();
    let core = vault
        .issue("core-long", vault_tests::CORE_ROLE, 20 * DAY as u64)
        .await;
    let mut c = as_token(&vault, &core).await;
    let held = c
        .tokenize("hold-rev", &[("email", "hold@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    c.set_legal_hold("hold-rev", true, "CASE-9", "litigation")
        .await
        .unwrap();
    jump(&mut vault, 11);
    let mut c = as_token(&vault, &core).await;
    let shown = c.detokenize(&[&held], "booking").await.unwrap();
    assert_eq!(shown[0].value, "hold@example.com", "the hold keeps it");
    // Activity under the hold: a new value for the subject.
    c.tokenize("hold-rev", &[("phone", "+14155550177")], &[], "")
        .await
        .unwrap();
    c.set_legal_hold("hold-rev", false, "CASE-9", "settled")
        .await
        .unwrap();
    let shown = c.detokenize(&[&held], "booking").await.unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Expired as i32);
    assert!(shown[0].value.is_empty());
}
