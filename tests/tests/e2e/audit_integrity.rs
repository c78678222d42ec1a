//! PCI DSS 10.3 (issue 17): the audit trail cannot be cut or poisoned.
//! Nothing a caller sends makes an event the reader refuses; damage in the
//! trail stops the vault from starting, named, instead of being cut away;
//! and an export whose start was cut, or with lines after its checkpoint,
//! does not verify offline.

use tonic::Code;
use vault_client::audit::{ExportVerdict, checkpoint_line, event_line, header_line, verify_export};
use vault_client::proto::{AuditEvent, QueryRequest};
use vault_client::{AuditExport, VaultClient};
use vault_tests::{TestVault, audit_events};

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

fn export_lines(x: &AuditExport) -> Vec<String> {
    let mut lines = vec![header_line(x.after_seq, &x.start_prev_hash)];
    lines.extend(x.events.iter().map(event_line));
    lines.extend(x.checkpoint.iter().map(checkpoint_line));
    lines
}

/// A multi-megabyte query filter gets a clear INVALID_ARGUMENT naming the
/// field and never reaches the trail; a filter within the limit but long
/// is recorded as its length and digest; a Detokenize of 10,000 tokens (the
/// most a vault can be configured to take) writes events the reader
/// accepts, every item kept. The trail reads and verifies, and after a
/// restart nothing is set aside and every event is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_10_3_oversized_event_cannot_truncate_the_trail() {
    let mut vault = TestVault::start_with(&[("VAULT_MAX_BATCH_ITEMS", "10000")]);
    let mut c = vault.client().await;
    let token = c
        .tokenize("big-1", &[("email", "big@example.com")], &[], "")
        .await
        .unwrap()[0]
        .token
        .clone();
    let mut auditor = vault.client_as("auditor").await;

    let huge = "p".repeat(3 << 20);
    let err = auditor
        .audit_query(QueryRequest {
            principal: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument, "{err}");
    assert!(
        err.violations.iter().any(|(f, _)| f == "principal"),
        "{err:?}"
    );
    // Within the limit, but longer than a filter is quoted.
    let long = "q".repeat(300);
    assert!(
        auditor
            .audit_query(QueryRequest {
                principal: long.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );

    // A field the vault does not validate before it is written down: the
    // method path of a call refused before any handler (no credentials).
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", vault.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let path = format!("/vault.v1.AuditService/{}", "X".repeat(8000));
    let refused = raw
        .unary::<QueryRequest, AuditEvent, _>(
            tonic::Request::new(QueryRequest::default()),
            tonic::codegen::http::uri::PathAndQuery::try_from(path.as_str()).unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Many items: more than one event can hold.
    let tokens = vec![token.as_str(); 10_000];
    let shown = c.detokenize(&tokens, "booking").await.unwrap();
    assert_eq!(shown.len(), 10_000);
    assert!(shown.iter().all(|d| d.value == "big@example.com"));

    let before = every_event(&mut auditor).await;
    let queries: Vec<&AuditEvent> = before
        .iter()
        .filter(|e| e.event_type == "audit_query")
        .collect();
    let refused = queries
        .iter()
        .find(|e| e.outcome == "invalid")
        .expect("the refused query is an event");
    assert_eq!(refused.detail, "principal");
    let quoted = queries
        .iter()
        .find(|e| e.detail.contains("principal <300 bytes, hmac-sha256 "))
        .expect("the long filter is recorded as its length and digest");
    assert!(!quoted.detail.contains("qqqq"), "{}", quoted.detail);
    assert!(before.iter().all(|e| !e.detail.contains("pppp")));
    let long_path = before
        .iter()
        .find(|e| e.event_type == "auth_failure" && e.rpc.starts_with('<'))
        .expect("the refused call is an event");
    assert!(
        long_path
            .rpc
            .starts_with(&format!("<{} bytes, hmac-sha256 ", path.len())),
        "{}",
        long_path.rpc
    );
    let reveal = before
        .iter()
        .find(|e| e.action == "reveal" && e.items.len() > 1)
        .expect("the big reveal");
    assert!(reveal.detail.contains("of 10000"), "{}", reveal.detail);
    let items: usize = before
        .iter()
        .filter(|e| e.request_id == reveal.request_id)
        .map(|e| e.items.len())
        .sum();
    assert_eq!(items, 10_000, "every revealed token is in the trail");
    assert!(
        before
            .iter()
            .any(|e| e.event_type == "items_continued" && e.request_id == reveal.request_id)
    );
    let v = auditor.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    let export = auditor.audit_export(0).await.unwrap();
    let public = auditor.audit_public_key().await.unwrap();
    let verdict = verify_export(export_lines(&export).iter().map(String::as_str), &public);
    assert!(
        matches!(verdict, ExportVerdict::Valid { .. }),
        "{verdict:?}"
    );

    assert!(vault.stop());
    vault.restart();
    let mut auditor = vault.client_as("auditor").await;
    let after = every_event(&mut auditor).await;
    let start = after
        .iter()
        .rev()
        .find(|e| e.event_type == "vault_start")
        .unwrap();
    assert!(!start.detail.contains("set aside"), "{}", start.detail);
    for e in &before {
        assert!(
            after.iter().any(|a| a == e),
            "event {} is gone after the restart",
            e.seq
        );
    }
    let v = auditor.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert!(v.good >= before.len() as u64);
}
