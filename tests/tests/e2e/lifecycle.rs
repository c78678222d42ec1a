//! A subject's lifecycle: erasure by crypto-shredding with a signed receipt
//! (GDPR 17), restriction (GDPR 18), legal holds.

use prost::Message;
use tonic::Code;
use vault::engine::records::SubjectRecord;
use vault_client::proto::{Disclosure, QueryRequest};
use vault_tests::{TestVault, audit_events, card_number, example_values, files_below, scan_for};

/// The stored record of `subject`, read from its file in the data directory.
fn record_file(vault: &TestVault, subject: &str) -> Option<SubjectRecord> {
    let key = format!("sub/{subject}");
    files_below(&vault.data_dir().join("subjects"))
        .into_iter()
        .filter_map(|f| std::fs::read(f).ok())
        .find_map(|bytes| {
            let n = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            (bytes.get(2..2 + n) == Some(key.as_bytes()))
                .then(|| SubjectRecord::decode(&bytes[2 + n..]).unwrap())
        })
}

/// Every ciphertext and wrapped DEK of a record: what erasure must remove.
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
/// is found by look-up, neither a ciphertext nor the wrapped DEK of the
/// subject is anywhere in the data directory, the receipt verifies with the
/// vault's public key, and the audit trail keeps the events, without
/// personal data. Another subject is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_17_erasure_shreds_the_subject_and_signs_a_receipt() {
    let mut vault = TestVault::start();
    let gone = store_everything(&vault, "erase-me").await;
    let kept = store_everything(&vault, "keep-me").await;
    let mut c = vault.client().await;
    let before = record_file(&vault, "erase-me").expect("the record is a file of its own");
    let erased_secrets = secrets(&before);
    assert_eq!(
        erased_secrets.len(),
        15 + 1,
        "15 ciphertexts (no CVV) and a DEK"
    );
    let kept_secrets = secrets(&record_file(&vault, "keep-me").unwrap());

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
    let shown = c.detokenize(&kept_tokens, "billing").await.unwrap();
    assert!(
        shown
            .iter()
            .all(|d| d.disclosure == Disclosure::Plain as i32)
    );
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

    // After a clean stop nothing of the subject's keys or ciphertexts is in
    // the data directory; the other subject's are (the scan can fail).
    assert!(vault.stop());
    assert!(record_file(&vault, "erase-me").is_none());
    let hits = scan_for(&vault.data_dir(), &erased_secrets);
    assert!(hits.is_empty(), "found after erasure: {hits:?}");
    assert_eq!(
        scan_for(&vault.data_dir(), &kept_secrets).len(),
        kept_secrets.len(),
        "the scan finds what is there"
    );
    // And it stays erased after a restart.
    vault.restart();
    let mut c = vault.client().await;
    let d = c.detokenize(&tokens[..1], "billing").await.unwrap();
    assert_eq!(d[0].disclosure, Disclosure::Erased as i32);
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
