//! PCI DSS 10.2, 10.3 and 10.5: every action is one event, events follow the
//! schema and hold no value, a year of events is kept (90 days at once),
//! and an audit trail that cannot be written stops the vault from answering.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use std::time::{Duration, Instant};
use tonic::Code;
use vault_client::proto::{AuditEvent, ExplainRequest, QueryRequest};
use vault_client::verify_export::{
    ExportVerdict, checkpoint_line, event_line, header_line, verify_export,
};
use vault_client::{AuditExport, VaultClient};
use vault_tests::{TestVault, audit_events, card_number, scan_for};

const DAY: i64 = 86_400;

/// Every kept event (explicit time range: not only the last 90 days).
async fn every_event(auditor: &mut VaultClient) -> Vec<AuditEvent> {
    audit_events(
        auditor,
        QueryRequest {
            since_unix_micros: 1,
            ..Default::default()
        },
    )
    .await
}

fn export_text(x: &AuditExport) -> String {
    let mut lines = vec![header_line(x.after_seq, &x.start_prev_hash)];
    lines.extend(x.events.iter().map(event_line));
    lines.extend(x.checkpoint.iter().map(checkpoint_line));
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_10_2_1_each_action_is_exactly_one_event() {
    let mut vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    let mut clerk = vault.client_as("billing_clerk").await;
    let mut officer = vault.client_as("privacy_officer").await;
    let mut auditor = vault.client_as("auditor").await;
    let mut operator = vault.operator().await;

    let tokens = booking
        .tokenize(
            "one-1",
            &[
                ("email", "one@example.com"),
                ("card_number", "4111111111111111"),
            ],
            &["booking"],
            "2026-01",
        )
        .await
        .unwrap();
    let email = tokens[0].token.clone();
    clerk.detokenize(&[&email], "billing").await.unwrap();
    booking
        .lookup("email", "one@example.com", "booking")
        .await
        .unwrap();
    booking
        .update(&email, "two@example.com", "booking")
        .await
        .unwrap();
    officer
        .set_consent("one-1", &["marketing_email"], &[], "2026-02")
        .await
        .unwrap();
    booking.status().await.unwrap();
    booking.who_am_i().await.unwrap();
    // Invalid input, a denied call and refused credentials.
    assert_eq!(
        clerk.detokenize(&[&email], "").await.unwrap_err().code,
        Code::InvalidArgument
    );
    assert_eq!(
        clerk
            .set_consent("one-1", &["marketing_email"], &[], "")
            .await
            .unwrap_err()
            .code,
        Code::PermissionDenied
    );
    let mut stranger = vault.anonymous().await.with_token("vt1.nope").unwrap();
    assert_eq!(
        stranger.status().await.unwrap_err().code,
        Code::Unauthenticated
    );
    // Administration.
    let extra = operator
        .create_principal("extra", "auditor", 600)
        .await
        .unwrap();
    let extra_id = extra.principal.unwrap().id;
    operator.list_principals().await.unwrap();
    operator.revoke_principal(&extra_id).await.unwrap();
    operator.reload_policy().await.unwrap();
    operator
        .explain(ExplainRequest {
            role: "billing_clerk".into(),
            field: "email".into(),
            purpose: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Reads of the trail.
    auditor.audit_verify().await.unwrap();
    auditor.audit_public_key().await.unwrap();
    auditor.audit_export(0).await.unwrap();
    // Stop and start.
    assert!(vault.stop());
    vault.restart();
    let mut auditor = vault.client_as("auditor").await;
    let events = every_event(&mut auditor).await;

    let count = |pred: &dyn Fn(&AuditEvent) -> bool| events.iter().filter(|e| pred(e)).count();
    let rpc = |name: &'static str| {
        move |e: &AuditEvent| e.rpc.ends_with(name) && e.event_type != "auth_failure"
    };
    let ok_rpc = |name: &'static str| move |e: &AuditEvent| rpc(name)(e) && e.outcome == "ok";
    type Matcher = Box<dyn Fn(&AuditEvent) -> bool>;
    let cases: Vec<(&str, Matcher)> = vec![
        ("tokenize", Box::new(ok_rpc("/Tokenize"))),
        ("detokenize", Box::new(ok_rpc("/Detokenize"))),
        ("lookup", Box::new(ok_rpc("/Lookup"))),
        ("update", Box::new(ok_rpc("/Update"))),
        ("set consent", Box::new(ok_rpc("/SetConsent"))),
        ("status", Box::new(ok_rpc("SystemService/Status"))),
        ("whoami", Box::new(ok_rpc("/WhoAmI"))),
        (
            "invalid input",
            Box::new(|e| e.outcome == "invalid" && e.rpc.ends_with("/Detokenize")),
        ),
        ("denied call", Box::new(|e| e.outcome == "denied")),
        ("auth failure", Box::new(|e| e.event_type == "auth_failure")),
        (
            "principal create (extra)",
            Box::new(|e| e.event_type == "principal_create" && e.detail.contains("name extra ")),
        ),
        (
            "principal list",
            Box::new(|e| e.event_type == "principal_list"),
        ),
        (
            "principal revoke",
            Box::new(|e| e.event_type == "principal_revoke" && e.outcome == "ok"),
        ),
        (
            "policy reload",
            Box::new(|e| e.event_type == "policy_reload"),
        ),
        ("policy explain", Box::new(ok_rpc("/Explain"))),
        (
            "audit verify",
            Box::new(|e| e.event_type == "audit_verify" && e.principal == "auditor-test"),
        ),
        (
            "audit public key",
            Box::new(|e| e.event_type == "audit_public_key"),
        ),
        ("audit export", Box::new(|e| e.event_type == "audit_export")),
        (
            "vault stop",
            // Not the offline `vaultd officer` run's own stop.
            Box::new(|e| e.event_type == "vault_stop" && e.detail != "vaultd officer done"),
        ),
    ];
    for (what, pred) in &cases {
        assert_eq!(count(pred.as_ref()), 1, "exactly one event for {what}");
    }
    // Each role's token was issued once, and both starts are there.
    for role in [
        "booking_service",
        "billing_clerk",
        "privacy_officer",
        "auditor",
    ] {
        let name = format!("name {role}-test ");
        assert_eq!(
            count(&|e| e.event_type == "principal_create" && e.detail.contains(&name)),
            1,
            "{role}"
        );
    }
    // `vaultd officer` (the harness's officer, offline), then two serves.
    assert_eq!(count(&|e| e.event_type == "vault_start"), 3);
    // The stop wrote a checkpoint of the trail before it.
    let stop = events.iter().rposition(|e| e.event_type == "vault_stop");
    let cp = events
        .iter()
        .rposition(|e| e.event_type == "checkpoint")
        .unwrap();
    assert_eq!(Some(cp), stop.map(|s| s + 1), "checkpoint right after stop");
    assert!(auditor.audit_verify().await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_10_2_2_events_follow_the_schema_and_hold_no_value() {
    let vault = TestVault::start_full(
        &[("VAULT_AUDIT_CHECKPOINT_EVENTS", "7")],
        vault_tests::PolicyChoice::Default,
    );
    let mut booking = vault.client_as("booking_service").await;
    // Random values (a property test's generator): addresses and cards.
    let mut runner = TestRunner::deterministic();
    let strategy = "[A-Za-z0-9][A-Za-z0-9 ,.#/-]{15,60}";
    let mut secrets: Vec<String> = Vec::new();
    for i in 0..24u64 {
        let address = strategy
            .new_tree(&mut runner)
            .unwrap()
            .current()
            .trim()
            .to_owned();
        let card = card_number("4", 16, 9_000 + i);
        let subject = format!("prop-{i}");
        let tokens = booking
            .tokenize(
                &subject,
                &[("mailing_address", &address), ("card_number", &card)],
                &["booking"],
                "2026-01",
            )
            .await
            .unwrap();
        let all: Vec<&str> = tokens.iter().map(|t| t.token.as_str()).collect();
        let shown = booking.detokenize(&all, "booking").await.unwrap();
        assert_eq!(shown[0].value, address);
        let corrected = format!("{address} apt {i}");
        booking
            .update(&tokens[0].token, &corrected, "booking")
            .await
            .unwrap();
        secrets.extend([address, card, corrected]);
    }
    // A denied reveal: the clerk may not see an address for billing.
    let mut clerk = vault.client_as("billing_clerk").await;
    let address_token = {
        let t = booking
            .tokenize(
                "prop-denied",
                &[("mailing_address", secrets[0].as_str())],
                &["booking"],
                "2026-01",
            )
            .await
            .unwrap();
        t[0].token.clone()
    };
    let shown = clerk
        .detokenize(&[&address_token], "billing")
        .await
        .unwrap();
    assert!(shown[0].value.is_empty());
    let mut auditor = vault.client_as("auditor").await;
    let events = every_event(&mut auditor).await;
    let refusal = events
        .iter()
        .find(|e| e.principal == "billing_clerk-test" && e.action == "reveal")
        .expect("the denied reveal is an event");
    assert_eq!(refusal.role, "billing_clerk");
    assert!(refusal.peer.starts_with("127.0.0.1:"));
    assert_eq!(refusal.items[0].field, "mailing_address");
    assert_eq!(refusal.items[0].disclosure, "DENIED");
    assert_eq!(refusal.subject_id, "prop-denied");
    let export = auditor.audit_export(0).await.unwrap();
    let text = export_text(&export);
    let public = auditor.audit_public_key().await.unwrap();
    assert!(matches!(
        verify_export(text.lines(), &public),
        ExportVerdict::Valid { .. }
    ));

    // Schema: every event, field by field.
    let types = [
        "request",
        "auth_failure",
        "vault_start",
        "vault_stop",
        "checkpoint",
        "principal_create",
        "principal_list",
        "principal_revoke",
        "principal_approve",
        "principal_reject",
        "policy_reload",
        "policy_explain",
        "audit_query",
        "audit_verify",
        "audit_export",
        "audit_public_key",
        "audit_prune",
        "audit_refused",
        "write_failed",
    ];
    let outcomes = [
        "ok",
        "denied",
        "invalid",
        "unauthenticated",
        "not_found",
        "failed_precondition",
        "error",
    ];
    let disclosures = [
        "PLAIN",
        "MASKED",
        "DENIED",
        "NOT_FOUND",
        "STORED",
        "UPDATED",
        "FOUND",
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let mut checkpoints = 0;
    for (i, e) in events.iter().enumerate() {
        let at = format!("event {}: {e:?}", e.seq);
        assert_eq!(e.seq, i as u64 + 1, "{at}");
        assert!(
            e.time_unix_micros > now - 600_000_000 && e.time_unix_micros <= now + 60_000_000,
            "{at}"
        );
        if i > 0 {
            assert!(e.time_unix_micros >= events[i - 1].time_unix_micros, "{at}");
        }
        assert!(types.contains(&e.event_type.as_str()), "{at}");
        assert!(outcomes.contains(&e.outcome.as_str()), "{at}");
        assert_eq!(e.outcome == "ok", e.status_code == 0, "{at}");
        assert!(
            !e.principal.is_empty() || e.event_type == "auth_failure",
            "{at}"
        );
        if e.event_type == "request" || e.rpc.starts_with('/') {
            assert!(e.rpc.starts_with("/vault.v1."), "{at}");
            assert!(e.peer.starts_with("127.0.0.1:"), "{at}");
            assert!(!e.request_id.is_empty(), "{at}");
            assert!(
                ["bearer", "mtls", "none"].contains(&e.auth.as_str()),
                "{at}"
            );
        }
        for item in &e.items {
            assert!(disclosures.contains(&item.disclosure.as_str()), "{at}");
            assert!(item.field.is_empty() || !item.token.is_empty() || e.action == "lookup");
        }
        if e.event_type == "checkpoint" {
            let cp = e.checkpoint.as_ref().expect("a checkpoint event signs");
            assert_eq!(cp.seq + 1, e.seq, "{at}");
            checkpoints += 1;
        } else {
            assert!(e.checkpoint.is_none(), "{at}");
        }
    }
    assert!(
        checkpoints as usize >= events.len() / 8 - 1,
        "a checkpoint every 7 events: {checkpoints} in {}",
        events.len()
    );

    // No value in the trail's files, its query answers or its export.
    let needles: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
    let hits = scan_for(&vault.data_dir().join("audit"), &needles);
    assert!(hits.is_empty(), "values in the audit files: {hits:?}");
    let rendered = format!("{events:?}");
    for s in &secrets {
        assert!(!rendered.contains(s.as_str()), "a value in a query answer");
        assert!(!text.contains(s.as_str()), "a value in the export");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_10_5_1_a_year_is_kept_and_90_days_answer_at_once() {
    let mut vault = TestVault::start_with(&[("VAULT_MAX_TOKEN_TTL_SECS", "31622400")]);
    // Credentials that outlive the clock's jumps.
    let long = 366 * DAY as u64;
    let writer = vault.issue("writer", "core_tester", long).await;
    let connect = |v: &TestVault, token: String| {
        let addr = v.addr.clone();
        async move {
            VaultClient::connect(&addr)
                .await
                .unwrap()
                .with_token(&token)
                .unwrap()
        }
    };
    let mut w = connect(&vault, writer.clone()).await;
    w.tokenize("old-1", &[("email", "old@example.com")], &[], "")
        .await
        .unwrap();
    assert!(vault.stop());

    // 280 days later.
    vault.set_env("VAULT_TEST_CLOCK_OFFSET_SECS", &(280 * DAY).to_string());
    vault.restart();
    let mut w = connect(&vault, writer.clone()).await;
    w.tokenize("new-1", &[("email", "new@example.com")], &[], "")
        .await
        .unwrap();
    // A fresh auditor token for the next jump (a token lives at most 366 days).
    let reader = w
        .create_principal("reader-2", "auditor", long)
        .await
        .unwrap()
        .token;
    let mut r = connect(&vault, reader.clone()).await;
    let before = every_event(&mut r).await;
    let young: Vec<AuditEvent> = before
        .iter()
        .filter(|e| e.time_unix_micros >= before[0].time_unix_micros + 200 * DAY * 1_000_000)
        .cloned()
        .collect();
    assert!(young.iter().any(|e| e.subject_id == "new-1"));
    assert!(vault.stop());

    // 369 days after the start: the first run's events are past a year,
    // the second run's are 89 days old.
    vault.set_env("VAULT_TEST_CLOCK_OFFSET_SECS", &(369 * DAY).to_string());
    vault.restart();
    let mut r = connect(&vault, reader.clone()).await;
    let after = every_event(&mut r).await;
    let now = after.last().unwrap().time_unix_micros;
    let year = 365 * DAY * 1_000_000;
    assert!(
        after.iter().all(|e| now - e.time_unix_micros < year),
        "an event older than a year was kept"
    );
    assert!(
        !after.iter().any(|e| e.subject_id == "old-1"),
        "old-1 pruned"
    );
    for e in &young {
        assert!(
            after.iter().any(|a| a.seq == e.seq && a == e),
            "event {} (under a year old) was lost",
            e.seq
        );
    }
    let prune = after
        .iter()
        .find(|e| e.event_type == "audit_prune")
        .expect("pruning is audited");
    assert!(
        prune.detail.contains("older than 365 days"),
        "{}",
        prune.detail
    );
    // An 89-day-old event answers a query without a time range.
    let recent = r
        .audit_query(QueryRequest {
            subject_id: "new-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 1, "{recent:?}");
    // What remains still verifies, online and offline from the anchor.
    let v = r.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    let export = r.audit_export(0).await.unwrap();
    assert!(export.after_seq > 0, "the export starts at the anchor");
    let public = r.audit_public_key().await.unwrap();
    let verdict = verify_export(export_text(&export).lines(), &public);
    assert!(
        matches!(verdict, ExportVerdict::Valid { .. }),
        "{verdict:?}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_trail_refuses_reads_and_writes_in_time() {
    let vault = TestVault::start_with(&[
        ("VAULT_AUDIT_SEGMENT_BYTES", "4096"),
        ("VAULT_AUDIT_TIMEOUT_MS", "1000"),
    ]);
    let mut c = vault.client().await;
    let tokens = c
        .tokenize("unw-1", &[("email", "unw@example.com")], &[], "")
        .await
        .unwrap();
    let token = tokens[0].token.clone();
    let card = vault_tests::card_number("4", 16, 7);
    let cvv_token = c
        .tokenize(
            "unw-1",
            &[("card_number", &card), ("card_cvv", "123")],
            &[],
            "",
        )
        .await
        .unwrap()[1]
        .token
        .clone();
    // The next segment the vault opens is a disk that is always full.
    let dir = vault.data_dir().join("audit");
    let last = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap();
    let next = dir.join(format!("seg-{:012}.log", last + 1));
    std::os::unix::fs::symlink("/dev/full", &next).unwrap();

    // Reads go on until the current segment is full; then they fail.
    let mut refused = None;
    for _ in 0..500 {
        let started = Instant::now();
        match c.detokenize(&[&token], "booking").await {
            Ok(v) => assert_eq!(v[0].value, "unw@example.com"),
            Err(e) => {
                refused = Some((e, started.elapsed()));
                break;
            }
        }
    }
    let (err, took) = refused.expect("a full audit disk refuses reads");
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    assert!(!err.message.contains("unw@example.com"));
    // Writes are refused too, and change nothing.
    let started = Instant::now();
    let err = c
        .tokenize("unw-2", &[("email", "second@example.com")], &[], "")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = c
        .update(&token, "changed@example.com", "booking")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unavailable);
    // A CVV's one reveal is not used up by a reveal that disclosed nothing.
    let err = c
        .detokenize(&[&cvv_token], "payment_authorization")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unavailable);

    // The disk has room again: the vault recovers by itself.
    std::fs::remove_file(&next).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        match c.detokenize(&[&token], "booking").await {
            Ok(v) => break v,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    assert_eq!(shown[0].value, "unw@example.com", "the update was not made");
    let cvv = c
        .detokenize(&[&cvv_token], "payment_authorization")
        .await
        .unwrap();
    assert_eq!(cvv[0].value, "123", "the refused reveal was put back");
    assert!(
        c.lookup("email", "second@example.com", "booking")
            .await
            .unwrap()
            .is_empty(),
        "the refused tokenize stored nothing"
    );
    let mut auditor = vault.client_as("auditor").await;
    let events = every_event(&mut auditor).await;
    let note = events
        .iter()
        .find(|e| e.event_type == "audit_refused")
        .expect("the trail says which requests were refused");
    assert!(note.detail.contains("UNAVAILABLE"), "{}", note.detail);
    assert!(auditor.audit_verify().await.unwrap().ok);
}
