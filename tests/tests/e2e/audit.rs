//! The audit trail (first part of PCI DSS 10): events for reveals, writes,
//! refusals and administration, read back by an auditor, never a value.

use tonic::Code;
use vault_client::proto::{AuditEvent, QueryRequest};
use vault_tests::{TestVault, assert_success};

async fn all_events(vault: &TestVault) -> Vec<AuditEvent> {
    vault
        .client_as("auditor")
        .await
        .audit_query(QueryRequest {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accesses_refusals_and_administration_are_audited_without_values() {
    let vault = TestVault::start_default_policy();
    let marker = "audit.marker.4711@example.com";
    let card = "4111111111111111";
    let tokens = vault
        .client_as("booking_service")
        .await
        .tokenize(
            "aud-1",
            &[("email", marker), ("card_number", card), ("gender", "F")],
            &["booking"],
            "2026-01",
        )
        .await
        .unwrap();
    let all: Vec<&str> = tokens.iter().map(|t| t.token.as_str()).collect();
    let mut clerk = vault.client_as("billing_clerk").await;
    clerk.detokenize(&all, "billing").await.unwrap();
    // A refused credential and a refused call.
    let mut bad = vault.anonymous().await.with_token("vt1.nope").unwrap();
    assert_eq!(bad.status().await.unwrap_err().code, Code::Unauthenticated);
    assert_eq!(
        clerk
            .set_consent("aud-1", &["marketing_email"], &[], "")
            .await
            .unwrap_err()
            .code,
        Code::PermissionDenied
    );

    let events = all_events(&vault).await;
    // Numbered from 1 without gaps; the vault's start comes first.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert!(e.time_unix_micros > 0);
    }
    assert_eq!(events[0].event_type, "vault_start");
    let one = |pred: &dyn Fn(&AuditEvent) -> bool, what: &str| {
        let hits: Vec<_> = events.iter().filter(|e| pred(e)).collect();
        assert_eq!(hits.len(), 1, "exactly one {what}: {hits:#?}");
        hits[0].clone()
    };
    let created = one(
        &|e| e.event_type == "principal_create" && e.detail.contains("role billing_clerk"),
        "principal_create for the clerk",
    );
    assert_eq!(created.role, "operator");
    let stored = one(&|e| e.action == "tokenize", "tokenize");
    assert_eq!(stored.principal, "booking_service-test");
    assert_eq!(stored.subject_id, "aud-1");
    assert_eq!(stored.items.len(), 3);
    assert!(stored.items.iter().all(|i| i.disclosure == "STORED"));
    let reveal = one(&|e| e.action == "reveal", "reveal");
    assert_eq!(
        (
            reveal.principal.as_str(),
            reveal.role.as_str(),
            reveal.auth.as_str()
        ),
        ("billing_clerk-test", "billing_clerk", "bearer")
    );
    assert_eq!(reveal.purpose, "billing");
    assert_eq!(reveal.rpc, "/vault.v1.TokenService/Detokenize");
    assert!(reveal.peer.starts_with("127.0.0.1:"), "{}", reveal.peer);
    let disclosures: Vec<(&str, &str)> = reveal
        .items
        .iter()
        .map(|i| (i.field.as_str(), i.disclosure.as_str()))
        .collect();
    assert_eq!(
        disclosures,
        [
            ("email", "PLAIN"),
            ("card_number", "MASKED"),
            ("gender", "DENIED")
        ]
    );
    // Items of one subject name it once, on the event.
    assert_eq!(reveal.subject_id, "aud-1");
    let refused = one(&|e| e.event_type == "auth_failure", "auth_failure");
    assert_eq!(refused.outcome, "unauthenticated");
    assert_eq!(refused.rpc, "/vault.v1.SystemService/Status");
    let denied = one(&|e| e.outcome == "denied", "denied call");
    assert_eq!(denied.rpc, "/vault.v1.SubjectService/SetConsent");
    assert_eq!(denied.principal, "billing_clerk-test");

    // No value anywhere in the trail (nor in its debug rendering).
    let text = format!("{events:?}");
    for v in [marker, card] {
        assert!(!text.contains(v), "{v} appears in the audit trail");
    }

    // Reading the trail is itself audited; others may not read it.
    let again = all_events(&vault).await;
    assert!(
        again
            .iter()
            .any(|e| e.event_type == "audit_query" && e.principal == "auditor-test")
    );
    let err = clerk
        .audit_query(QueryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);

    // Filters, and resuming after a sequence number.
    let mut auditor = vault.client_as("auditor").await;
    let only = auditor
        .audit_query(QueryRequest {
            field: "gender".into(),
            action: "reveal".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    let after = auditor
        .audit_query(QueryRequest {
            after_seq: reveal.seq,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [reveal.seq + 1, reveal.seq + 2]
    );

    let v = auditor.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert!(v.good >= again.len() as u64);
}

/// A restart continues the chain: the stop and the next start are events,
/// and the whole trail still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_survives_a_restart() {
    let mut vault = TestVault::start_default_policy();
    let before = all_events(&vault).await.len();
    assert!(vault.stop());
    vault.restart();
    let events = all_events(&vault).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    // `vaultd officer` (offline, for the harness's officer), then two serves.
    assert!(
        types.contains(&"vault_stop") && types.iter().filter(|t| **t == "vault_start").count() == 3,
        "{types:?}"
    );
    assert!(events.len() > before);
    let v = vault
        .client_as("auditor")
        .await
        .audit_verify()
        .await
        .unwrap();
    assert!(v.ok, "{v:?}");
}

/// PCI DSS 10.3 offline: an export verifies with the vault's public key
/// alone; changing, deleting, reordering or cutting it is found, at the first
/// bad event where there is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_10_3_an_export_verifies_offline_and_tampering_is_named() {
    use vault_client::verify_export::{ExportVerdict, verify_export};
    let vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    for i in 0..5 {
        booking
            .tokenize(&format!("x-{i}"), &[("email", "x@example.com")], &[], "")
            .await
            .unwrap();
    }
    let auditor_token = vault.token_for("auditor").await;
    let run = |args: &[&str]| vault_tests::vaultctl(&vault, &auditor_token, args, None);
    let export = run(&["audit", "export"]);
    assert_success(&export);
    let text = String::from_utf8(export.stdout).unwrap();
    let pubkey = String::from_utf8(run(&["audit", "pubkey"]).stdout).unwrap();
    let key = vault_client::verify_export::unhex(pubkey.trim()).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let events = lines.len() as u64 - 2;
    assert!(events >= 8, "{text}");
    let check = |ls: &[String]| verify_export(ls.iter().map(String::as_str), &key);
    assert_eq!(
        check(&lines),
        ExportVerdict::Valid {
            events,
            checkpoint_seq: events
        }
    );
    let bad_at = |v: ExportVerdict| match v {
        ExportVerdict::BadEvent { seq, .. } => seq,
        other => panic!("{other:?}"),
    };
    // Line i + 1 holds event i (line 0 is the header).
    let mut changed = lines.clone();
    changed[4] = changed[4].replace("\"outcome\":\"ok\"", "\"outcome\":\"denied\"");
    assert_ne!(changed[4], lines[4]);
    assert_eq!(bad_at(check(&changed)), 4);
    let mut deleted = lines.clone();
    deleted.remove(6);
    assert_eq!(bad_at(check(&deleted)), 6);
    let mut swapped = lines.clone();
    swapped.swap(3, 5);
    assert_eq!(bad_at(check(&swapped)), 3);
    let mut inserted = lines.clone();
    inserted.insert(7, lines[2].clone());
    assert_eq!(bad_at(check(&inserted)), 7);
    let cut = lines[..lines.len() - 1].to_vec();
    assert!(matches!(check(&cut), ExportVerdict::Bad(_)));
    let mut wrong_key = key.clone();
    wrong_key[0] ^= 1;
    // Refused at the first signed checkpoint, whether an event carrying one
    // (a stop's) or the export's closing line.
    assert!(matches!(
        verify_export(lines.iter().map(String::as_str), &wrong_key),
        ExportVerdict::Bad(_) | ExportVerdict::BadEvent { .. }
    ));

    // The command line says the same, and fails.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&good, lines.join("\n")).unwrap();
    std::fs::write(&bad, changed.join("\n")).unwrap();
    let ok = run(&[
        "audit",
        "verify",
        good.to_str().unwrap(),
        "--pubkey",
        pubkey.trim(),
    ]);
    assert_success(&ok);
    let broken = run(&[
        "audit",
        "verify",
        bad.to_str().unwrap(),
        "--pubkey",
        pubkey.trim(),
    ]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stdout).contains("BROKEN at event 4"));
    // Only auditors export.
    let err = booking.audit_export(0).await.unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);
}
