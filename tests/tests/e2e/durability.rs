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
