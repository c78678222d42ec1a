//! PCI DSS 10.3 (issue 17): the audit trail cannot be cut or poisoned.
//! Nothing a caller sends makes an event the reader refuses; damage in the
//! trail stops the vault from starting, named, instead of being cut away;
//! and an export whose start was cut, or with lines after its checkpoint,
//! does not verify offline.

use std::path::Path;
use tonic::Code;
use vault_client::proto::{AuditEvent, QueryRequest};
use vault_client::verify_export::{
    ExportVerdict, checkpoint_line, event_line, header_line, verify_export,
};
use vault_client::{AuditExport, VaultClient};
use vault_tests::{TestVault, assert_success, audit_events};

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

/// A multi-megabyte query filter gets a clear INVALID_ARGUMENT naming the
/// field and never reaches the trail; a Detokenize of 10,000 tokens (the
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
    // A refused query's event names the refused filters only.
    assert_eq!(refused.detail, "principal");
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

/// An export verifies offline only whole: a cut start is refused whether
/// the header is left as it was or rewritten to match the cut, so is a
/// signed start edited to match, and so are lines after the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_10_3_offline_verify_refuses_a_cut_start() {
    let vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    for i in 0..6 {
        booking
            .tokenize(&format!("cut-{i}"), &[("email", "c@example.com")], &[], "")
            .await
            .unwrap();
    }
    let auditor_token = vault.token_for("auditor").await;
    let run = |args: &[&str]| vault_tests::vaultctl(&vault, &auditor_token, args, None);
    let text = assert_success(&run(&["audit", "export"]));
    let pubkey = assert_success(&run(&["audit", "pubkey"]));
    let key = vault_client::verify_export::unhex(pubkey.trim()).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let check = |ls: &[String]| verify_export(ls, &key);
    assert!(
        matches!(check(&lines), ExportVerdict::Valid { .. }),
        "{:?}",
        check(&lines)
    );
    let json = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap();
    let n = 4;

    // The first n events dropped, the header as it was.
    let mut cut = lines.clone();
    cut.drain(1..=n);
    assert!(
        matches!(check(&cut), ExportVerdict::BadEvent { seq: 1, .. }),
        "{:?}",
        check(&cut)
    );
    // … and the header rewritten to start after event n, with its hash.
    let hash_n = json(&lines[n])["hash"].as_str().unwrap().to_owned();
    cut[0] = serde_json::json!({"vault_audit_export": 2, "after_seq": n,
        "start_prev_hash": hash_n})
    .to_string();
    let verdict = check(&cut);
    assert!(
        matches!(&verdict, ExportVerdict::Bad(m) if m.contains("events missing at the start")),
        "{verdict:?}"
    );
    // … and the checkpoint's signed start edited to match: its signature fails.
    let last = cut.len() - 1;
    let mut cp = json(&cut[last]);
    cp["checkpoint"]["start_after_seq"] = serde_json::json!(n);
    cp["checkpoint"]["start_prev_hash"] = serde_json::json!(hash_n);
    cut[last] = cp.to_string();
    let verdict = check(&cut);
    assert!(
        matches!(&verdict, ExportVerdict::Bad(m) if m.contains("signature invalid")),
        "{verdict:?}"
    );
    // A start that claims to be the chain's beginning with another hash.
    let mut zero = lines.clone();
    zero[0] = header_line(0, &[1; 32]);
    assert!(matches!(check(&zero), ExportVerdict::Bad(_)));
    // A version 1 export is refused: its start was never signed.
    let mut v1 = lines.clone();
    v1[0] = v1[0].replace("\"vault_audit_export\":2", "\"vault_audit_export\":1");
    assert_ne!(v1[0], lines[0]);
    assert!(matches!(check(&v1), ExportVerdict::Bad(m) if m.contains("version 1")));
    // Lines after the checkpoint, an event's or anything else.
    for extra in [lines[2].clone(), "{}".to_owned(), "garbage".to_owned()] {
        let mut more = lines.clone();
        more.push(extra);
        let verdict = check(&more);
        assert!(
            matches!(&verdict, ExportVerdict::Bad(m) if m.contains("lines after the checkpoint")),
            "{verdict:?}"
        );
    }

    // A genuine export that starts later verifies, and says where it starts.
    let later = assert_success(&run(&["audit", "export", "--after", &n.to_string()]));
    let later_lines: Vec<String> = later.lines().map(str::to_owned).collect();
    assert_eq!(json(&later_lines[0])["after_seq"], serde_json::json!(n));
    assert!(matches!(check(&later_lines), ExportVerdict::Valid { .. }));

    // The command line refuses the cut file, and says why.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cut.jsonl");
    let mut rewritten = lines.clone();
    rewritten.drain(1..=n);
    rewritten[0] = serde_json::json!({"vault_audit_export": 2, "after_seq": n,
        "start_prev_hash": hash_n})
    .to_string();
    std::fs::write(&file, rewritten.join("\n")).unwrap();
    let out = run(&[
        "audit",
        "verify",
        file.to_str().unwrap(),
        "--pubkey",
        pubkey.trim(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("events missing at the start"), "{said}");
    let whole = dir.path().join("whole.jsonl");
    std::fs::write(&whole, format!("{}\n", lines.join("\n"))).unwrap();
    let ok = assert_success(&run(&[
        "audit",
        "verify",
        whole.to_str().unwrap(),
        "--pubkey",
        pubkey.trim(),
    ]));
    assert!(ok.contains("after event 0, as the vault signed"), "{ok}");
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
    // The newest segment: this run's events (the harness's offline
    // `vaultd officer` run wrote the first).
    let mut segs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .collect();
    segs.sort();
    let seg = segs.pop().unwrap();
    let name = seg.file_name().unwrap().to_str().unwrap().to_owned();
    // Its first event follows those of the segments before it.
    let first = 1 + segs.iter().map(|p| frames(p).len() as u64).sum::<u64>();
    let fs = frames(&seg);
    assert!(fs.len() > 6, "{fs:?}");
    let (offset, len) = fs[3];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offset + 4 + len / 2] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    let (ok, stderr) = vault.serve_until_exit().expect("vaultd refuses to start");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{name} at byte offset {offset}, where event {} should be",
            first + 3
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was cut");

    std::fs::write(dir.join("set-aside"), format!("{name}:{offset}\n")).unwrap();
    vault.restart();
    let mut auditor = vault.client_as("auditor").await;
    let events = every_event(&mut auditor).await;
    let start = events
        .iter()
        .find(|e| e.event_type == "vault_start" && e.detail.contains("operator's decision"))
        .expect("the start says what was set aside");
    assert!(
        start
            .detail
            .contains(&format!("where event {} should be", first + 3)),
        "{}",
        start.detail
    );
    assert!(dir.join(format!("{name}.damaged-{offset}")).exists());
    assert!(events.iter().any(|e| e.seq == first + 2));
    let v = auditor.audit_verify().await.unwrap();
    assert!(v.ok, "{v:?}");
}

/// An auditor who opens audit exports and never reads them ties up at most
/// a few of the vault's threads: beyond `MAX_CONCURRENT_EXPORTS` streaming
/// at once, an export answers RESOURCE_EXHAUSTED, while everything else is
/// served; once the streams are dropped, exports work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_audit_exports_cannot_starve_the_vault() {
    let vault = TestVault::start_with(&[("VAULT_MAX_BATCH_ITEMS", "10000")]);
    let mut c = vault.client().await;
    let token = c
        .tokenize("slow-1", &[("email", "slow@example.com")], &[], "")
        .await
        .unwrap()[0]
        .token
        .clone();
    // A trail of several megabytes: more than an export holds ahead of a
    // client that does not read.
    let tokens = vec![token.as_str(); 10_000];
    for _ in 0..6 {
        c.detokenize(&tokens, "booking").await.unwrap();
    }
    // Each unread export on its own connection (streams that share one
    // would also share, and fill, its flow-control window).
    let mut held = Vec::new();
    for _ in 0..vault::api::MAX_CONCURRENT_EXPORTS {
        let mut a = vault.client_as("auditor").await;
        held.push((a.audit_export_stream(0).await.unwrap(), a));
    }
    let mut auditor = vault.client_as("auditor").await;
    let err = auditor.audit_export_stream(0).await.unwrap_err();
    assert_eq!(err.code, Code::ResourceExhausted, "{err}");
    // Everything else is served meanwhile.
    c.detokenize(&[&token], "booking").await.unwrap();
    assert!(auditor.audit_verify().await.unwrap().ok);
    drop(held);
    let mut served = false;
    for _ in 0..100 {
        if auditor.audit_export(0).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "exports work again once the unread ones are dropped"
    );
}
