//! PCI DSS 10.3 (issue 17): the audit trail cannot be cut or poisoned.
//! Nothing a caller sends makes an event the reader refuses; damage in the
//! trail stops the vault from starting, named, instead of being cut away;
//! and an export whose start was cut, or with lines after its checkpoint,
//! does not verify offline.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
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

/// The frames of an audit segment file: `(offset, record length)`.
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let n = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if n == 0 || at + 4 + n > bytes.len() {
            break;
        }
        out.push((at, n));
        at += 4 + n;
    }
    out
}

/// Runs `vaultd serve` on the vault's directory (stopped) and waits for
/// it to exit; `None` if it was still running after 30 s (then killed).
fn start_and_wait_for_exit(vault: &TestVault) -> Option<(bool, String)> {
    let mut child = vault
        .command()
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return Some((status.success(), err));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    assert!(
        !start.detail.contains("set aside") && !start.detail.contains("ended without"),
        "{}",
        start.detail
    );
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

/// A damaged frame in the middle of a segment (not a torn end) stops the
/// vault from starting, with a message that names the segment file, the
/// offset and the event; nothing is cut. Naming that place in the
/// set-aside file is the operator's decision: the vault then starts, keeps
/// the damaged bytes as evidence and says so in its start event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_10_3_damage_in_the_trail_stops_the_start_and_is_named() {
    let mut vault = TestVault::start();
    let mut c = vault.client().await;
    for i in 0..5 {
        c.tokenize(&format!("dmg-{i}"), &[("email", "d@example.com")], &[], "")
            .await
            .unwrap();
    }
    assert!(vault.stop());
    let dir = vault.data_dir().join("audit");
    let seg = dir.join("seg-000000000001.log");
    let fs = frames(&seg);
    assert!(fs.len() > 6, "{fs:?}");
    let (offset, len) = fs[3];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offset + 4 + len / 2] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    let (ok, stderr) = start_and_wait_for_exit(&vault).expect("vaultd refuses to start");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "seg-000000000001.log at byte offset {offset}, where event 4 should be"
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was cut");

    std::fs::write(
        dir.join("set-aside"),
        format!("seg-000000000001.log:{offset}\n"),
    )
    .unwrap();
    vault.restart();
    let mut auditor = vault.client_as("auditor").await;
    let events = every_event(&mut auditor).await;
    let start = events
        .iter()
        .find(|e| e.event_type == "vault_start" && e.detail.contains("operator's decision"))
        .expect("the start says what was set aside");
    assert!(
        start.detail.contains("where event 4 should be"),
        "{}",
        start.detail
    );
    assert!(
        dir.join(format!("seg-000000000001.log.damaged-{offset}"))
            .exists()
    );
    assert!(events.iter().any(|e| e.seq == 3));
    let v = auditor.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
}
