//! Acknowledged means durable: restarts and kills lose nothing acknowledged.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use vault_client::proto::Disclosure;
use vault_tests::TestVault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything() {
    let mut vault = TestVault::start();
    let mut c = vault.client().await;
    let mut stored = Vec::new();
    for i in 0..50 {
        let email = format!("r{i}@example.com");
        let t = c
            .tokenize(&format!("r-{i}"), &[("email", &email)], &["booking"], "v1")
            .await
            .unwrap();
        stored.push((t[0].token.clone(), email));
    }
    let corrected = c
        .update(&stored[0].0, "fixed@example.com", "booking")
        .await
        .unwrap();
    assert_eq!(corrected, 2);
    stored[0].1 = "fixed@example.com".into();
    assert!(vault.stop(), "SIGTERM: clean exit");
    assert!(vault.log().contains("vault stopping"), "shutdown is logged");
    vault.restart();
    let mut c = vault.client().await;
    let tokens: Vec<_> = stored.iter().map(|(t, _)| t.clone()).collect();
    let shown = c.detokenize(&tokens, "customer_support").await.unwrap();
    for (d, (_, v)) in shown.iter().zip(&stored) {
        assert_eq!(&d.value, v);
    }
    assert_eq!(
        c.lookup("email", "r7@example.com", "customer_support")
            .await
            .unwrap(),
        vec![stored[7].0.clone()]
    );
}

/// vaultd killed with SIGKILL in the middle of a stream of Tokenize calls:
/// after restart every acknowledged token detokenizes to its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_write() {
    let mut vault = TestVault::start();
    let acked: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    // E-mails of requests sent but never acknowledged (in flight at the kill).
    let unacked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = vault.client().await;
        let acked = acked.clone();
        let unacked = unacked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("Kill Test {}", ["Ada", "Bo", "Cy", "Di"][i % 4]);
                let email = format!("w{w}.n{i}@example.com");
                let subject = format!("kill-{w}-{i}");
                match c
                    .tokenize(
                        &subject,
                        &[("email", &email), ("full_name", &name)],
                        &[],
                        "",
                    )
                    .await
                {
                    Ok(t) => {
                        let mut a = acked.lock().unwrap();
                        a.push((t[0].token.clone(), email, subject.clone()));
                        a.push((t[1].token.clone(), name, subject));
                    }
                    Err(_) => {
                        unacked.lock().unwrap().push(email);
                        return;
                    }
                }
            }
        }));
    }
    // Let a good stream build up, then kill without warning.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 600 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    vault.kill();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 600,
        "the stream was running when killed ({} acks)",
        acked.len()
    );
    vault.restart();
    let mut c = vault.client().await;
    for chunk in acked.chunks(200) {
        let tokens: Vec<_> = chunk.iter().map(|(t, _, _)| t.clone()).collect();
        let shown = c.detokenize(&tokens, "customer_support").await.unwrap();
        for (d, (t, v, s)) in shown.iter().zip(chunk) {
            assert_eq!(
                d.disclosure,
                Disclosure::Plain as i32,
                "acknowledged token {t} of {s} lost"
            );
            assert_eq!(&d.value, v);
        }
    }
    // All or nothing: a request cut off by the kill left either nothing
    // visible, or (if its commit reached the disk before the kill) a token
    // that reads back in full; never an index entry without its value.
    let unacked = unacked.lock().unwrap().clone();
    assert!(!unacked.is_empty(), "requests were in flight at the kill");
    for email in &unacked {
        for t in c.lookup("email", email, "customer_support").await.unwrap() {
            let shown = c
                .detokenize(&[t.as_str()], "customer_support")
                .await
                .unwrap();
            assert_eq!(shown[0].disclosure, Disclosure::Plain as i32);
            assert_eq!(&shown[0].value, email);
        }
    }
    // Every stored subject, acknowledged or cut off, has its tokenize event
    // (the event is durable before the data), and the restart says the
    // previous run ended without a stop.
    let mut auditor = vault.client_as("auditor").await;
    let events = vault_tests::audit_events(
        &mut auditor,
        vault_client::proto::QueryRequest {
            action: "tokenize".into(),
            outcome: "ok".into(),
            ..Default::default()
        },
    )
    .await;
    let audited: std::collections::HashSet<&str> =
        events.iter().map(|e| e.subject_id.as_str()).collect();
    for (_, _, subject) in &acked {
        assert!(audited.contains(subject.as_str()), "{subject} has no event");
    }
    for email in &unacked {
        if !c
            .lookup("email", email, "customer_support")
            .await
            .unwrap()
            .is_empty()
        {
            let (w, n) = email
                .trim_end_matches("@example.com")
                .split_once('.')
                .unwrap();
            let subject = format!("kill-{}-{}", &w[1..], &n[1..]);
            assert!(audited.contains(subject.as_str()), "{subject} has no event");
        }
    }
    let start = auditor
        .audit_query(vault_client::proto::QueryRequest {
            event_type: "vault_start".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        start
            .last()
            .unwrap()
            .detail
            .contains("ended without a vault_stop"),
        "{start:?}"
    );
    // And the vault keeps working after recovery.
    c.tokenize("after-kill", &[("email", "after@example.com")], &[], "")
        .await
        .unwrap();
}

/// A write reported as failed did not happen. The fault-injection points
/// of vaultd-under-test make the store's flush fail once (`store.flush
/// fail-once`) under an Update, a Tokenize of a new subject and an Erase:
/// each fails `UNAVAILABLE` with a `write_failed` event, and none of them
/// is seen afterwards: not by reads, not carried to disk by a later
/// successful write of the same subject, not after a restart.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_is_not_applied() {
    use tonic::Code;
    let faults = tempfile::tempdir().unwrap();
    let fault_file = faults.path().join("faults");
    let mut vault = TestVault::start_with(&[("VAULT_FAULT_FILE", fault_file.to_str().unwrap())]);
    let mut c = vault.client().await;
    let stored = c
        .tokenize("fw-1", &[("email", "before@example.com")], &[], "")
        .await
        .unwrap();
    let token = stored[0].token.clone();
    let arm = || std::fs::write(&fault_file, "store.flush fail-once\n").unwrap();
    arm();
    let err = c
        .update(&token, "after@example.com", "booking")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    arm();
    let err = c
        .tokenize("fw-2", &[("email", "new@example.com")], &[], "")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert!(!fault_file.exists(), "each fault fired");

    let before = |shown: Vec<vault_client::proto::Disclosed>| {
        shown[0].disclosure == Disclosure::Plain as i32 && shown[0].value == "before@example.com"
    };
    assert!(before(c.detokenize(&[&token], "booking").await.unwrap()));
    // A later write of the same subject does not carry the failed one along.
    c.tokenize("fw-1", &[("phone", "+14155550123")], &[], "")
        .await
        .unwrap();
    assert!(before(c.detokenize(&[&token], "booking").await.unwrap()));
    assert!(
        c.lookup("email", "after@example.com", "booking")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        c.lookup("email", "before@example.com", "booking")
            .await
            .unwrap(),
        vec![token.clone()]
    );
    let mut officer = vault.client().await;
    assert_eq!(
        officer
            .export_subject("fw-2", "check")
            .await
            .unwrap_err()
            .code,
        Code::NotFound
    );

    // An erasure whose flush fails did not happen either.
    arm();
    let err = officer.erase("fw-1", "GDPR 17").await.unwrap_err();
    assert_eq!(err.code, Code::Unavailable, "{err}");
    assert!(before(c.detokenize(&[&token], "booking").await.unwrap()));
    c.tokenize("fw-3", &[("email", "other@example.com")], &[], "")
        .await
        .unwrap();
    assert!(before(c.detokenize(&[&token], "booking").await.unwrap()));

    let failed = vault_tests::audit_events(
        &mut vault.client_as("auditor").await,
        vault_client::proto::QueryRequest {
            event_type: "write_failed".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(failed.len(), 3, "{failed:?}");

    assert!(vault.stop());
    vault.restart();
    let mut c = vault.client().await;
    assert!(before(c.detokenize(&[&token], "booking").await.unwrap()));
    assert_eq!(
        c.export_subject("fw-2", "check").await.unwrap_err().code,
        Code::NotFound
    );
    // And the erasure, once it can be carried out, is.
    c.erase("fw-1", "GDPR 17").await.unwrap();
    let shown = c.detokenize(&[&token], "booking").await.unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Erased as i32);
}

/// kill -9 at each step of a commit (fault-injection points of
/// vaultd-under-test, `POINT abort`), under a Tokenize of a new subject, an
/// Update (which re-keys the subject) and an Erase: after the restart each
/// is all or nothing: the new subject is there whole or not at all, the
/// value is the old or the new one and readable, and no key older than the
/// one the record uses is left; the erasure is done (its journal reached
/// the disk) or not.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_every_step_of_a_commit_leaves_all_or_nothing() {
    use tonic::Code;
    let faults = tempfile::tempdir().unwrap();
    let fault_file = faults.path().join("faults");
    let mut vault = TestVault::start_with(&[("VAULT_FAULT_FILE", fault_file.to_str().unwrap())]);
    let mut c = vault.client().await;
    let email = c
        .tokenize("k9-1", &[("email", "one@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    let points = [
        "store.apply",
        "store.sync-keys",
        "store.flush",
        "store.shred",
    ];
    let mut current = "one@example.com".to_owned();
    for (n, point) in points.iter().enumerate() {
        // Update: the old or the new value, and only the key in use.
        std::fs::write(&fault_file, format!("{point} abort\n")).unwrap();
        let new_value = format!("new{n}@example.com");
        let answered = c.update(&email, &new_value, "booking").await.is_ok();
        std::fs::remove_file(&fault_file).unwrap();
        vault.kill();
        vault.restart();
        c = vault.client().await;
        let shown = c.detokenize(&[&email], "booking").await.unwrap();
        assert_eq!(shown[0].disclosure, Disclosure::Plain as i32, "{point}");
        assert!(
            shown[0].value == current || shown[0].value == new_value,
            "{point}: neither the old nor the new value: {}",
            shown[0].value
        );
        current = shown[0].value.clone();
        assert!(
            !answered,
            "{point}: the request was answered before the kill"
        );
        // The slot holds the record's key and no older one (the old key
        // of a re-key that reached the disk is shredded, at the latest by
        // the next start); a newer one a cut-short re-key wrote may stay
        // until the next re-key writes over it (it never opened a value
        // anyone was told was stored).
        let record = vault.stored_record("k9-1").await.unwrap();
        assert_eq!(record.deks.len(), 1, "{point}");
        let in_use = record.deks[0].version;
        let held = vault_tests::slot_keys(&vault, record.slot);
        assert!(held.contains(&in_use), "{point}: {held:?}");
        assert!(
            held.iter().all(|v| *v >= in_use),
            "{point}: an old key is left: {held:?} (in use: {in_use})"
        );

        // Tokenize of a new subject (it shreds nothing, so it never
        // reaches `store.shred`): whole or absent.
        if *point != "store.shred" {
            std::fs::write(&fault_file, format!("{point} abort\n")).unwrap();
            let sid = format!("k9-new-{n}");
            let answered = c
                .tokenize(
                    &sid,
                    &[("email", "n@example.com"), ("phone", "+14155550100")],
                    &[],
                    "",
                )
                .await
                .is_ok();
            let _ = std::fs::remove_file(&fault_file);
            assert!(!answered, "{point}: Tokenize was answered before the kill");
            vault.kill();
            vault.restart();
            c = vault.client().await;
            match c.export_subject(&sid, "check").await {
                Ok(doc) => {
                    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
                    assert_eq!(doc["fields"].as_array().unwrap().len(), 2, "{point}");
                }
                Err(e) => assert_eq!(e.code, Code::NotFound, "{point}: {e}"),
            }
        }

        // Erase (it writes no new key, so it never reaches
        // `store.sync-keys`): done whole (tokens ERASED, key slot zeros) or
        // not at all.
        if *point != "store.sync-keys" {
            let victim = format!("k9-erase-{n}");
            let t = c
                .tokenize(&victim, &[("email", "v@example.com")], &[], "")
                .await
                .unwrap()
                .remove(0)
                .token;
            let slot = vault.stored_record(&victim).await.unwrap().slot;
            std::fs::write(&fault_file, format!("{point} abort\n")).unwrap();
            let answered = c.erase(&victim, "GDPR 17").await.is_ok();
            let _ = std::fs::remove_file(&fault_file);
            assert!(!answered, "{point}: Erase was answered before the kill");
            vault.kill();
            vault.restart();
            c = vault.client().await;
            let shown = c.detokenize(&[&t], "booking").await.unwrap();
            if shown[0].disclosure == Disclosure::Erased as i32 {
                assert!(vault_tests::slot_keys(&vault, slot).is_empty(), "{point}");
            } else {
                assert_eq!(shown[0].value, "v@example.com", "{point}");
            }
        }
    }
}
