//! Key custody: KEK rotation and the rewrap of every data key.

use tonic::Code;
use vault::crypto::envelope::key_version;
use vault_client::VaultClient;
use vault_client::proto::QueryRequest;
use vault_tests::{TestVault, audit_events};

/// The KEK versions that wrap `subject`'s DEKs, from its record file.
fn kek_versions(vault: &TestVault, subject: &str) -> Vec<u32> {
    crate::lifecycle::record_file(vault, subject)
        .unwrap()
        .deks
        .iter()
        .map(|d| key_version(&d.wrapped).unwrap())
        .collect()
}

async fn wait_for_rewrap(operator: &mut VaultClient) -> u64 {
    for _ in 0..600 {
        let s = operator.status().await.unwrap();
        if !s.rewrap_pending && !s.rewrap_running {
            return s.rewrap_done;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the rewrap did not finish");
}

/// NIST SP 800-57 / PCI 3.7.4: after a rotation new data keys are wrapped
/// by the new KEK version, every existing data key is rewrapped under it in
/// the background (old values still decrypt), the rotation and the rewrap
/// are audited, only operators rotate, and a rewrap cut short by a crash
/// resumes at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nist_57_rotation_rewraps_every_data_key() {
    let mut vault = TestVault::start();
    let mut c = vault.client().await;
    let subjects: Vec<String> = (0..40).map(|i| format!("rot-{i}")).collect();
    let mut tokens = Vec::new();
    for s in &subjects {
        let email = format!("{s}@example.com");
        let t = c
            .tokenize(
                s,
                &[("email", email.as_str()), ("full_name", "Ro Tate")],
                &[],
                "",
            )
            .await
            .unwrap();
        tokens.push((t[0].token.clone(), email));
    }
    assert_eq!(kek_versions(&vault, "rot-0"), [1]);

    for role in ["auditor", "privacy_officer"] {
        let err = vault.client_as(role).await.rotate_keys().await.unwrap_err();
        assert_eq!(err.code, Code::PermissionDenied, "{role}");
    }
    let mut operator = vault.operator().await;
    let r = operator.rotate_keys().await.unwrap();
    assert_eq!((r.previous_kek_version, r.active_kek_version), (1, 2));
    assert_eq!(wait_for_rewrap(&mut operator).await, 40);
    let status = operator.status().await.unwrap();
    assert_eq!(status.active_kek_version, 2);
    assert_eq!(status.kek_versions, [1, 2]);
    for s in &subjects {
        assert_eq!(kek_versions(&vault, s), [2], "{s}");
    }
    c.tokenize("rot-new", &[("email", "new@example.com")], &[], "")
        .await
        .unwrap();
    assert_eq!(kek_versions(&vault, "rot-new"), [2]);
    let all: Vec<&str> = tokens.iter().map(|(t, _)| t.as_str()).collect();
    let shown = c.detokenize(&all, "billing").await.unwrap();
    for (d, (_, email)) in shown.iter().zip(&tokens) {
        assert_eq!(&d.value, email);
    }
    let mut auditor = vault.client_as("auditor").await;
    let rotations = audit_events(
        &mut auditor,
        QueryRequest {
            action: "rotate_keys".into(),
            ..Default::default()
        },
    )
    .await;
    let outcomes: Vec<(&str, &str)> = rotations
        .iter()
        .map(|e| (e.outcome.as_str(), e.detail.as_str()))
        .collect();
    assert!(outcomes.contains(&("ok", "kek v1 -> v2")), "{outcomes:?}");
    assert!(outcomes.iter().any(|(o, _)| *o == "denied"), "{outcomes:?}");
    let rewraps = audit_events(
        &mut auditor,
        QueryRequest {
            event_type: "kek_rewrap".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rewraps.len(), 1);
    assert!(
        rewraps[0]
            .detail
            .starts_with("kek_version=2 subjects=40 deks=40"),
        "{}",
        rewraps[0].detail
    );

    // Rotate and crash at once: the next start finishes the rewrap.
    let r = operator.rotate_keys().await.unwrap();
    assert_eq!(r.active_kek_version, 3);
    vault.kill();
    vault.restart();
    let mut operator = vault.operator().await;
    wait_for_rewrap(&mut operator).await;
    for s in subjects
        .iter()
        .chain(std::iter::once(&"rot-new".to_owned()))
    {
        assert_eq!(kek_versions(&vault, s), [3], "{s}");
    }
    let mut c = vault.client().await;
    let shown = c.detokenize(&all, "billing").await.unwrap();
    for (d, (_, email)) in shown.iter().zip(&tokens) {
        assert_eq!(&d.value, email);
    }
}
