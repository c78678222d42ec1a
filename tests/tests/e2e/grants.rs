//! Separation of duties (PCI DSS 7.2, 8.2; DESIGN "Who may grant what"): no
//! single principal can come to see personal or card data it could not see
//! before. A token for a data role is requested by one principal and
//! approved by a second, independent one; each holds only half the token.

use tonic::Code;
use vault_client::VaultClient;
use vault_client::proto::QueryRequest;
use vault_tests::{OFFICER_NAME, TestVault, audit_events};

/// The roles of the shipped policy that may act on personal data.
const DATA_ROLES: [&str; 7] = [
    "booking_service",
    "payment_processor",
    "billing_clerk",
    "customer_service",
    "collections_agent",
    "marketing_mailer",
    "privacy_officer",
];

async fn who(vault: &TestVault, token: &str) -> Result<String, Code> {
    let mut c = vault.anonymous().await.with_token(token).unwrap();
    c.who_am_i().await.map(|w| w.role).map_err(|e| e.code)
}

/// A 22-character part that is not the approver's.
const FORGED_PART: &str = "AAAAAAAAAAAAAAAAAAAAAA";

/// An operator (the bootstrap one, or any other) cannot come to hold a
/// token of a role that sees personal data: its request stays pending, its
/// half of the token authenticates nothing, it cannot approve its own
/// request, nor through a principal it issued alone, even where a company's
/// policy lets operators approve; and it cannot ask a data role for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sod_operator_cannot_mint_data_roles() {
    let vault = TestVault::start_default_policy();
    let mut op = vault.operator().await;
    for role in DATA_ROLES {
        let asked = op
            .create_principal(&format!("{role}-by-op"), role, 3600)
            .await
            .unwrap();
        assert!(asked.pending, "{role} is issued by one principal");
        let id = asked.principal.as_ref().unwrap().id.clone();
        assert_eq!(asked.principal.unwrap().state, "pending");
        // The requester's part alone, or with a forged second part, is nothing.
        assert_eq!(who(&vault, &asked.token).await, Err(Code::Unauthenticated));
        assert_eq!(
            who(&vault, &format!("{}{FORGED_PART}", asked.token)).await,
            Err(Code::Unauthenticated),
            "{role}"
        );
        // Nor can the requester approve it.
        let err = op
            .approve_grant(&id, &format!("{role}-by-op"), role)
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::PermissionDenied, "{role}");
    }
    // A data role for the requester's own name is refused outright.
    let me = op.who_am_i().await.unwrap().name;
    let err = op
        .create_principal(&me, "payment_processor", 3600)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);

    // Roles that see no personal data are issued at once, by one operator.
    let op2 = op
        .create_principal("op-two", "operator", 3600)
        .await
        .unwrap();
    assert!(!op2.pending);
    assert_eq!(who(&vault, &op2.token).await.as_deref(), Ok("operator"));
    let aud = op
        .create_principal("aud-one", "auditor", 3600)
        .await
        .unwrap();
    assert!(!aud.pending);

    // Neither can approve what the first operator asks for.
    let asked = op
        .create_principal("card-reader", "payment_processor", 3600)
        .await
        .unwrap();
    let id = asked.principal.unwrap().id;
    for token in [&op2.token, &aud.token] {
        let mut c = vault.anonymous().await.with_token(token).unwrap();
        assert_eq!(
            c.approve_grant(&id, "card-reader", "payment_processor")
                .await
                .unwrap_err()
                .code,
            Code::PermissionDenied
        );
    }
    let listed = op.list_principals().await.unwrap();
    let p = listed.iter().find(|p| p.id == id).unwrap();
    assert_eq!(p.state, "pending", "still pending after the refusals");

    // A company that lets operators approve grants gets no further: an
    // operator issued by one principal is no independent approver.
    drop(vault);
    let vault = TestVault::start_with_extra_policy(
        "@id(\"operators_approve\")\n\
         permit (principal in Vault::Role::\"operator\", action == Vault::Action::\"approve_grant\", resource);\n",
    );
    let mut op = vault.operator().await;
    let op2 = op
        .create_principal("op-two", "operator", 3600)
        .await
        .unwrap();
    let asked = op
        .create_principal("card-reader", "payment_processor", 3600)
        .await
        .unwrap();
    let id = asked.principal.unwrap().id;
    let mut c = vault.anonymous().await.with_token(&op2.token).unwrap();
    assert_eq!(
        c.approve_grant(&id, "card-reader", "payment_processor")
            .await
            .unwrap_err()
            .code,
        Code::PermissionDenied
    );
    assert_eq!(
        op.approve_grant(&id, "card-reader", "payment_processor")
            .await
            .unwrap_err()
            .code,
        Code::PermissionDenied
    );
}

/// A grant of a data role needs two different principals: an operator
/// requests, a privacy officer (here the one `vaultd officer` issued)
/// approves; the grantee's token is the two parts joined; each step is
/// audited; a grant is approved once, can be rejected, and lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sod_grant_needs_two_principals() {
    let mut vault = TestVault::start_default_policy();
    let mut op = vault.operator().await;
    let mut po = vault.officer().await;

    let asked = op
        .create_principal("clerk-1", "billing_clerk", 3600)
        .await
        .unwrap();
    let id = asked.principal.unwrap().id;
    // The approver says what it approves: an id passed on for another
    // grant (another name, or another role) approves nothing.
    for (name, role) in [
        ("clerk-1", "payment_processor"),
        ("clerk-9", "billing_clerk"),
    ] {
        assert_eq!(
            po.approve_grant(&id, name, role).await.unwrap_err().code,
            Code::FailedPrecondition
        );
    }
    let approved = po
        .approve_grant(&id, "clerk-1", "billing_clerk")
        .await
        .unwrap();
    let info = approved.principal.unwrap();
    assert_eq!(info.state, "active");
    assert_eq!(info.granted_via, "dual_control");
    assert_eq!(info.approved_by, OFFICER_NAME);
    let token = format!("{}{}", asked.token, approved.token_part);
    assert_eq!(who(&vault, &token).await.as_deref(), Ok("billing_clerk"));
    // Each part alone, or the parts swapped, is nothing.
    assert_eq!(who(&vault, &asked.token).await, Err(Code::Unauthenticated));
    let (prefix, part1) = asked.token.rsplit_once('.').unwrap();
    assert_eq!(
        who(&vault, &format!("{prefix}.{}{part1}", approved.token_part)).await,
        Err(Code::Unauthenticated)
    );
    // Approved once only.
    assert_eq!(
        po.approve_grant(&id, "clerk-1", "billing_clerk")
            .await
            .unwrap_err()
            .code,
        Code::FailedPrecondition
    );

    // The approver is neither the requester nor the grantee, and the
    // officer cannot request (it approves, operators request).
    let asked = op
        .create_principal(OFFICER_NAME, "payment_processor", 3600)
        .await
        .unwrap();
    assert_eq!(
        po.approve_grant(
            &asked.principal.unwrap().id,
            OFFICER_NAME,
            "payment_processor"
        )
        .await
        .unwrap_err()
        .code,
        Code::PermissionDenied
    );
    assert_eq!(
        po.create_principal("anyone", "billing_clerk", 3600)
            .await
            .unwrap_err()
            .code,
        Code::PermissionDenied
    );
    // Nor does an officer approve the roles that run the vault (they need
    // no approval, and the policy gives the officer none over them).

    // A privacy officer granted under dual control approves in turn.
    let asked = op
        .create_principal("po-2", "privacy_officer", 3600)
        .await
        .unwrap();
    let part2 = po
        .approve_grant(&asked.principal.unwrap().id, "po-2", "privacy_officer")
        .await
        .unwrap()
        .token_part;
    let po2_token = format!("{}{part2}", asked.token);
    let mut po2 = vault.anonymous().await.with_token(&po2_token).unwrap();
    let asked = op
        .create_principal("agent-1", "customer_service", 3600)
        .await
        .unwrap();
    let part2 = po2
        .approve_grant(&asked.principal.unwrap().id, "agent-1", "customer_service")
        .await
        .unwrap()
        .token_part;
    assert_eq!(
        who(&vault, &format!("{}{part2}", asked.token))
            .await
            .as_deref(),
        Ok("customer_service")
    );

    // Rejected: never approvable afterwards.
    let asked = op
        .create_principal("clerk-2", "billing_clerk", 3600)
        .await
        .unwrap();
    let rejected_id = asked.principal.unwrap().id;
    let r = po
        .reject_grant(&rejected_id, "no ticket for this access")
        .await
        .unwrap();
    assert_eq!(r.state, "rejected");
    assert_eq!(
        po.approve_grant(&rejected_id, "clerk-2", "billing_clerk")
            .await
            .unwrap_err()
            .code,
        Code::FailedPrecondition
    );

    // Audited: the request by the operator, the approval by the officer,
    // the refused approvals, the rejection.
    let mut auditor = vault.client_as("auditor").await;
    let events = audit_events(&mut auditor, QueryRequest::default()).await;
    let requested = events
        .iter()
        .find(|e| e.event_type == "principal_create" && e.detail.contains("name clerk-1 "))
        .expect("request audited");
    assert_eq!(requested.role, "operator");
    assert!(requested.detail.contains("requested"));
    let approval = events
        .iter()
        .find(|e| {
            e.event_type == "principal_approve" && e.outcome == "ok" && e.detail.contains(&id)
        })
        .expect("approval audited");
    assert_eq!(approval.principal, OFFICER_NAME);
    assert!(approval.detail.contains("requested by"));
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "principal_approve" && e.outcome == "denied"),
        "a refused approval is audited"
    );
    assert!(events.iter().any(|e| e.event_type == "principal_reject"
        && e.outcome == "ok"
        && e.detail.contains("no ticket for this access")));

    // Lapsed: a request not approved within a day is void.
    let asked = op
        .create_principal("clerk-3", "billing_clerk", 3600)
        .await
        .unwrap();
    let late_id = asked.principal.unwrap().id;
    vault.stop();
    vault.set_env("VAULT_TEST_CLOCK_OFFSET_SECS", &(25 * 3600).to_string());
    vault.restart();
    let mut po = vault.officer().await;
    assert_eq!(
        po.approve_grant(&late_id, "clerk-3", "billing_clerk")
            .await
            .unwrap_err()
            .code,
        Code::FailedPrecondition
    );
}

/// The first privacy officer comes from `vaultd officer`, run by the
/// holder of the root key on the stopped vault: audited, and its token is
/// refused once the vault knows it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_privacy_officer_comes_from_the_root_key_holder() {
    let vault = TestVault::start_default_policy();
    assert_eq!(
        who(&vault, vault.officer_token()).await.as_deref(),
        Ok("privacy_officer")
    );
    let mut op: VaultClient = vault.operator().await;
    let listed = op.list_principals().await.unwrap();
    let officer = listed.iter().find(|p| p.name == OFFICER_NAME).unwrap();
    assert_eq!(officer.granted_via, "root_key");
    let mut auditor = vault.client_as("auditor").await;
    let events = audit_events(&mut auditor, QueryRequest::default()).await;
    assert!(events.iter().any(|e| e.event_type == "principal_create"
        && e.principal == "vaultd officer"
        && e.detail.contains(OFFICER_NAME)));
}

/// A Tokenize for a stored subject changes its consent (purposes or policy
/// version) only for a caller that may also `set_consent`, and its event
/// says what the consent became; for any other caller the values are stored
/// and the consent stays as held (not refused: a refusal would tell whether
/// the guessed consent matched), and the event says it was not applied.
/// Consent given with a new subject's data needs only `tokenize`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_changes_consent_only_with_set_consent() {
    let vault = TestVault::start_with_extra_policy(
        "@id(\"intake_collects\")\n\
         permit (principal in Vault::Role::\"intake\", action == Vault::Action::\"tokenize\", resource);\n",
    );
    let mut intake = vault.client_as("intake").await;
    intake
        .tokenize(
            "cons-1",
            &[("email", "c@example.com")],
            &["marketing_email"],
            "2026-01",
        )
        .await
        .unwrap();
    for (purposes, version) in [
        (&["booking"][..], "2026-01"),
        (&["marketing_email"][..], "2027-01"),
    ] {
        intake
            .tokenize("cons-1", &[("postal_code", "SW1A 1AA")], purposes, version)
            .await
            .unwrap();
    }
    let mut po = vault.officer().await;
    let export: serde_json::Value =
        serde_json::from_str(&po.export_subject("cons-1", "check").await.unwrap()).unwrap();
    let consented = |e: &serde_json::Value| -> Vec<String> {
        e["consented_purposes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["purpose"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(consented(&export), ["marketing_email"]);
    assert_eq!(export["policy_version"], "2026-01");
    let mut auditor = vault.client_as("auditor").await;
    let events = audit_events(&mut auditor, QueryRequest::default()).await;
    let not_applied = events
        .iter()
        .filter(|e| {
            e.principal == "intake-test"
                && e.detail
                    .contains("consent given with the values not applied")
        })
        .count();
    assert_eq!(not_applied, 2);

    // A booking service may set consent: its Tokenize changes it, audited.
    let mut booking = vault.client_as("booking_service").await;
    booking
        .tokenize(
            "cons-1",
            &[("phone", "+14155550111")],
            &["booking"],
            "2026-01",
        )
        .await
        .unwrap();
    let events = audit_events(&mut auditor, QueryRequest::default()).await;
    assert!(events.iter().any(|e| {
        e.principal == "booking_service-test"
            && e.detail
                .contains("consent changed by tokenize: purposes [booking]")
    }));
    let export: serde_json::Value =
        serde_json::from_str(&po.export_subject("cons-1", "check").await.unwrap()).unwrap();
    assert_eq!(consented(&export), ["booking"]);
}

/// The grant rules are the policy's, and `policy explain --grant` says them:
/// whether a role is a data role and which permits make it one, and who may
/// request and approve it (offline from the policy files, and online).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_explain_shows_the_grant_rules() {
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let out = std::process::Command::new(vault_tests::bin("vaultctl-under-test"))
        .args([
            "--json", "policy", "explain", "--role", "operator", "--grant",
        ])
        .arg("payment_processor")
        .arg("--dir")
        .arg(&policies)
        .output()
        .unwrap();
    let text = vault_tests::assert_success(&out);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["data_role"], true);
    let because = v["because"][0].as_str().unwrap();
    assert!(
        because.starts_with("payment_processor_authorization (")
            && because.contains("payments.cedar:"),
        "{because}"
    );
    assert_eq!(v["request"]["allowed"], true);
    assert_eq!(v["approve"]["allowed"], false);

    let vault = TestVault::start_default_policy();
    let mut op = vault.operator().await;
    let e = op
        .explain(vault_client::proto::ExplainRequest {
            role: "privacy_officer".into(),
            grant_role: "auditor".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let g = e.grant.unwrap();
    assert!(!g.data_role && g.because.is_empty());
    assert!(!g.request.unwrap().allowed);
    assert!(
        !g.approve.unwrap().allowed,
        "an officer approves data roles only"
    );
}

/// A token issued by one principal never acts on personal data, whatever
/// the policy says later: an operator that issues a role no policy names
/// (so, at once) and then reloads a policy that lets the role reveal values
/// sees nothing; the same role granted by two principals does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_issued_alone_cannot_become_a_data_role_by_reload() {
    let vault = TestVault::start_with_extra_policy("// nothing yet\n");
    let mut op = vault.operator().await;
    let alone = op
        .create_principal("helper", "ops_helper", 3600)
        .await
        .unwrap();
    assert!(!alone.pending, "no policy names ops_helper yet");
    let mut booking = vault.client_as("booking_service").await;
    let token = booking
        .tokenize("rel-1", &[("email", "rel@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    std::fs::write(
        vault.dir().join("company-policies/company.cedar"),
        "@id(\"helper_reads_email\")\n\
         permit (principal in Vault::Role::\"ops_helper\", action == Vault::Action::\"reveal_plain\", resource == Vault::Field::\"email\")\n\
         when { context.purpose == \"booking\" };\n",
    )
    .unwrap();
    op.reload_policy().await.unwrap();
    let mut helper = vault.anonymous().await.with_token(&alone.token).unwrap();
    let shown = helper.detokenize(&[&token], "booking").await.unwrap();
    assert_eq!(
        shown[0].disclosure,
        vault_client::proto::Disclosure::Denied as i32
    );
    assert!(shown[0].value.is_empty());
    // Granted by two, the same role sees what the policy now says.
    let granted = vault.issue("helper-2", "ops_helper", 3600).await;
    let mut helper2 = vault.anonymous().await.with_token(&granted).unwrap();
    let shown = helper2.detokenize(&[&token], "booking").await.unwrap();
    assert_eq!(shown[0].value, "rel@example.com");
}

/// A credential record edited in the data directory (by someone with the
/// files but not the keys) cannot turn a token into one that reads cards:
/// the record's grant is MACed under the credential key, and an edited one
/// stops the start, named. Deleting the bootstrap marker does not mint a new
/// operator token either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_credential_record_stops_the_start() {
    use prost::Message;
    use vault::auth::credentials::CredentialRecord;
    use vault::store::Store;
    let mut vault = TestVault::start_default_policy();
    let token = vault.issue("aud-edit", "auditor", 3600).await;
    let id = token.split('.').nth(1).unwrap().to_owned();
    assert!(vault.stop());
    // (sled's file lock may outlive a closed store for a moment, while
    // its last background work ends: tried for a few seconds.)
    let open = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match vault::store::sled::SledStore::open(
                &vault.data_dir(),
                1 << 20,
                vault::store::sled::Durability::Fsync,
            ) {
                Ok(s) => break s,
                Err(e)
                    if std::time::Instant::now() < deadline && e.to_string().contains("lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    // The bootstrap marker deleted: still no new operator token.
    {
        let store = open();
        let mut b = vault::store::Batch::new();
        b.delete(vault::store::keys::BOOTSTRAPPED.to_vec());
        store.apply(b).unwrap();
        store.close().unwrap();
    }
    let key = vault::store::keys::credential(&id);
    let original = {
        let store = open();
        let bytes = store.get(&key).unwrap().unwrap();
        store.close().unwrap();
        bytes
    };
    let mut record = CredentialRecord::decode(original.as_slice()).unwrap();
    record.role = "payment_processor".into();
    record.granted_via = "root_key".into();
    {
        let store = open();
        let mut b = vault::store::Batch::new();
        b.put(key.clone(), record.encode_to_vec());
        store.apply(b).unwrap();
        store.close().unwrap();
    }
    let (ok, stderr) = vault.serve_until_exit().expect("vaultd refuses to start");
    assert!(!ok);
    assert!(
        stderr.contains(&format!("credential record {id} fails its MAC")),
        "{stderr}"
    );
    // Put back as it was: the vault starts, and prints no bootstrap token.
    {
        let store = open();
        let mut b = vault::store::Batch::new();
        b.put(key, original);
        store.apply(b).unwrap();
        store.close().unwrap();
    }
    let out = vault.log().len();
    vault.restart();
    assert!(!vault.log()[out..].contains("issued the bootstrap operator token"));
    let mut c = vault.anonymous().await.with_token(&token).unwrap();
    assert_eq!(c.who_am_i().await.unwrap().role, "auditor");
}

/// Even where a company's policy lets privacy officers request grants too,
/// nobody approves its own request: a second officer must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requester_never_approves_its_own_grant() {
    let vault = TestVault::start_with_extra_policy(
        "@id(\"officers_request\")\n\
         permit (principal in Vault::Role::\"privacy_officer\", action == Vault::Action::\"request_grant\", resource);\n",
    );
    let mut po = vault.officer().await;
    let asked = po
        .create_principal("clerk-po", "billing_clerk", 3600)
        .await
        .unwrap();
    assert!(asked.pending);
    let id = asked.principal.unwrap().id;
    assert_eq!(
        po.approve_grant(&id, "clerk-po", "billing_clerk")
            .await
            .unwrap_err()
            .code,
        Code::PermissionDenied,
        "its own request"
    );
    let second = vault.issue("po-second", "privacy_officer", 3600).await;
    let mut po2 = vault.anonymous().await.with_token(&second).unwrap();
    let part = po2
        .approve_grant(&id, "clerk-po", "billing_clerk")
        .await
        .unwrap()
        .token_part;
    assert_eq!(
        who(&vault, &format!("{}{part}", asked.token))
            .await
            .as_deref(),
        Ok("billing_clerk")
    );
}
