//! Every bad input gets INVALID_ARGUMENT naming the item, and changes nothing.

use vault_client::proto::{
    DetokenizeRequest, ExplainRequest, FieldValue, QueryRequest, TokenizeRequest,
};
use vault_client::{ClientError, VaultClient};
use vault_tests::{TestVault, audit_events};

fn fv(field: &str, value: &str) -> FieldValue {
    FieldValue {
        field: field.into(),
        value: value.into(),
    }
}

fn req(subject: &str, fields: Vec<FieldValue>) -> TokenizeRequest {
    TokenizeRequest {
        subject_id: subject.into(),
        fields,
        purposes: vec![],
        policy_version: String::new(),
        travel_end_date: String::new(),
    }
}

fn assert_invalid(err: &ClientError, field: &str) {
    assert_eq!(err.code, tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.violations.iter().any(|(f, _)| f == field),
        "no violation at {field}: {:?}",
        err.violations
    );
}

/// A marker e-mail that is sent with each bad request, then looked up to
/// prove nothing was stored.
async fn nothing_stored(c: &mut VaultClient, marker: &str) {
    assert!(
        c.lookup("email", marker, "customer_support")
            .await
            .unwrap()
            .is_empty(),
        "{marker} was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokenize_requests_store_nothing() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let long = "x".repeat(4097);
    let cases: Vec<(&str, TokenizeRequest, &str)> = vec![
        (
            "empty subject",
            req("", vec![fv("email", "m1@example.com")]),
            "subject_id",
        ),
        (
            "subject with @",
            req("a@b.com", vec![fv("email", "m2@example.com")]),
            "subject_id",
        ),
        (
            "subject too long",
            req(&"s".repeat(129), vec![fv("email", "m3@example.com")]),
            "subject_id",
        ),
        (
            "unknown field",
            req(
                "s",
                vec![fv("email", "m4@example.com"), fv("passport_number", "X1")],
            ),
            "fields[1].field",
        ),
        (
            "empty field name",
            req("s", vec![fv("email", "m5@example.com"), fv("", "X1")]),
            "fields[1].field",
        ),
        (
            "validator",
            req(
                "s",
                vec![
                    fv("email", "m6@example.com"),
                    fv("date_of_birth", "1984-13-01"),
                ],
            ),
            "fields[1].value",
        ),
        (
            "card luhn",
            req(
                "s",
                vec![
                    fv("email", "m7@example.com"),
                    fv("card_number", "4111111111111112"),
                ],
            ),
            "fields[1].value",
        ),
        (
            "field twice",
            req(
                "s",
                vec![
                    fv("email", "m8@example.com"),
                    fv("email", "m8b@example.com"),
                ],
            ),
            "fields[1].field",
        ),
        (
            "value over 4 KiB",
            req(
                "s",
                vec![fv("email", "m9@example.com"), fv("mailing_address", &long)],
            ),
            "fields[1].value",
        ),
        ("no fields", req("s", vec![]), "fields"),
        (
            "bad purpose",
            TokenizeRequest {
                purposes: vec!["Not A Purpose".into()],
                ..req("s", vec![fv("email", "m10@example.com")])
            },
            "purposes[0]",
        ),
    ];
    for (name, r, field) in cases {
        let err = c.tokenize_request(r).await.expect_err(name);
        assert_invalid(&err, field);
        assert!(
            !err.message.contains("m4@")
                && !err.message.contains("1984-13")
                && !err.message.contains("4111"),
            "{name}: message echoes a value: {}",
            err.message
        );
    }
    for i in 1..=10 {
        nothing_stored(&mut c, &format!("m{i}@example.com")).await;
    }
    // Several problems at once: each is named.
    let err = c
        .tokenize_request(req("", vec![fv("nope", "1"), fv("gender", "Q")]))
        .await
        .unwrap_err();
    for f in ["subject_id", "fields[0].field", "fields[1].value"] {
        assert_invalid(&err, f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_request_size_limits() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    // 257 fields: over the default batch limit of 256.
    let fields: Vec<FieldValue> = (0..257).map(|_| fv("full_name", "Ann Lee")).collect();
    let err = c.tokenize_request(req("big", fields)).await.unwrap_err();
    assert_invalid(&err, "fields");
    // A request over 1 MiB (values each under the 4 KiB limit).
    let fields: Vec<FieldValue> = (0..300)
        .map(|_| fv("mailing_address", &"y".repeat(4000)))
        .collect();
    let err = c.tokenize_request(req("huge", fields)).await.unwrap_err();
    assert_invalid(&err, "request");
    // Detokenize: 257 tokens, malformed token, missing purpose.
    let tokens: Vec<String> = (0..257)
        .map(|_| "tok_AAAAAAAAAAAAAAAAAAAAAA".to_owned())
        .collect();
    let err = c.detokenize(&tokens, "billing").await.unwrap_err();
    assert_invalid(&err, "tokens");
    let err = c
        .detokenize(&["tok_AAAAAAAAAAAAAAAAAAAAAA", "not-a-token"], "billing")
        .await
        .unwrap_err();
    assert_invalid(&err, "tokens[1]");
    let err = c
        .detokenize(&["tok_AAAAAAAAAAAAAAAAAAAAAA"], "")
        .await
        .unwrap_err();
    assert_invalid(&err, "purpose");
    let err = c.detokenize::<String>(&[], "billing").await.unwrap_err();
    assert_invalid(&err, "tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_configured_batch_limit_is_enforced() {
    let vault = TestVault::start_with(&[("VAULT_MAX_BATCH_ITEMS", "2")]);
    let mut c = vault.client().await;
    c.tokenize(
        "lim",
        &[("gender", "F"), ("email", "lim@example.com")],
        &[],
        "",
    )
    .await
    .unwrap();
    let err = c
        .tokenize(
            "lim",
            &[
                ("gender", "F"),
                ("email", "lim2@example.com"),
                ("phone", "+14155550100"),
            ],
            &[],
            "",
        )
        .await
        .unwrap_err();
    assert_invalid(&err, "fields");
    nothing_stored(&mut c, "lim2@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lookup_and_update_requests() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let t = c
        .tokenize("u", &[("email", "keep@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    assert_invalid(&c.lookup("", "x", "billing").await.unwrap_err(), "field");
    assert_invalid(
        &c.lookup("passport", "x", "billing").await.unwrap_err(),
        "field",
    );
    assert_invalid(
        &c.lookup("email", "not-an-email", "billing")
            .await
            .unwrap_err(),
        "value",
    );
    assert_invalid(
        &c.lookup("email", "keep@example.com", "").await.unwrap_err(),
        "purpose",
    );
    assert_invalid(
        &c.update("tok_bad", "x@example.com", "billing")
            .await
            .unwrap_err(),
        "token",
    );
    assert_invalid(
        &c.update(&t, "x@example.com", "").await.unwrap_err(),
        "purpose",
    );
    assert_invalid(
        &c.update(&t, "x@example.com", "no_such_purpose")
            .await
            .unwrap_err(),
        "purpose",
    );
    assert_invalid(
        &c.detokenize(&[t.as_str()], "no_such_purpose")
            .await
            .unwrap_err(),
        "purpose",
    );
    assert_invalid(
        &c.update(&t, "not-an-email", "billing").await.unwrap_err(),
        "value",
    );
    assert_invalid(
        &c.update(&t, &"z".repeat(5000), "billing")
            .await
            .unwrap_err(),
        "value",
    );
    // The failed corrections changed nothing.
    assert_eq!(
        c.detokenize(&[t], "billing").await.unwrap()[0].value,
        "keep@example.com"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_garbage_does_not_panic_the_server() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let weird = [
        "\u{0}",
        "\u{202e}",
        "💳",
        "tok_💳💳💳💳💳💳💳💳💳💳💳",
        "tok_",
        "tok_==================",
    ];
    for w in weird {
        let _ = c.tokenize_request(req(w, vec![fv(w, w)])).await;
        let _ = c.detokenize(&[w], w).await;
        let _ = c.lookup(w, w, w).await;
        let _ = c.update(w, w, w).await;
    }
    let r = DetokenizeRequest {
        tokens: vec![String::new()],
        purpose: "x".into(),
    };
    let _ = c.clone().detokenize(&r.tokens, &r.purpose).await;
    // Still serving.
    assert!(c.status().await.is_ok());
}

/// Every free-text filter of an audit query has a limit (docs/limits.md):
/// over it, INVALID_ARGUMENT naming the filter, and nothing long reaches
/// the trail (a 3 MB principal filter once made an event no reader could
/// read). At the limits, the query runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_query_filters_are_bounded() {
    let vault = TestVault::start();
    let mut auditor = vault.client_as("auditor").await;
    let long = |n: usize| "p".repeat(n);
    let err = auditor
        .audit_query(QueryRequest {
            principal: long(129),
            role: long(65),
            subject_id: long(129),
            field: long(65),
            action: long(65),
            outcome: long(65),
            event_type: long(65),
            ..Default::default()
        })
        .await
        .unwrap_err();
    for f in [
        "principal",
        "role",
        "subject_id",
        "field",
        "action",
        "outcome",
        "event_type",
    ] {
        assert_invalid(&err, f);
    }
    auditor
        .audit_query(QueryRequest {
            principal: long(128),
            role: long(64),
            subject_id: long(128),
            field: long(64),
            action: long(64),
            outcome: long(64),
            event_type: long(64),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = auditor
        .audit_query(QueryRequest {
            principal: long(3 << 20),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "principal");
    // The trail stays readable and whole, every event small.
    let all = audit_events(&mut auditor, QueryRequest::default()).await;
    assert!(all.iter().all(|e| prost::Message::encoded_len(e) < 4096));
    assert!(auditor.audit_verify().await.unwrap().ok);
}

/// Policy explain: the principal, field and purpose it looks up, and the
/// lists it takes, are bounded before anything is looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_requests_are_bounded() {
    let vault = TestVault::start();
    let mut op = vault.operator().await;
    let base = ExplainRequest {
        role: "billing_clerk".into(),
        field: "email".into(),
        purpose: "billing".into(),
        ..Default::default()
    };
    op.explain(base.clone()).await.unwrap();
    let cases = [
        (
            ExplainRequest {
                principal: "p".repeat(129),
                ..base.clone()
            },
            "principal",
        ),
        (
            ExplainRequest {
                field: "f".repeat(65),
                ..base.clone()
            },
            "field",
        ),
        (
            ExplainRequest {
                purpose: "b".repeat(65),
                ..base.clone()
            },
            "purpose",
        ),
        (
            ExplainRequest {
                consented: vec!["billing".into(); 65],
                ..base.clone()
            },
            "consented",
        ),
        (
            ExplainRequest {
                actions: vec!["reveal_plain".into(); 33],
                ..base.clone()
            },
            "actions",
        ),
    ];
    for (r, field) in cases {
        assert_invalid(&op.explain(r).await.unwrap_err(), field);
    }
    // A list of a hundred thousand items costs one violation, not one each.
    let err = op
        .explain(ExplainRequest {
            consented: vec![String::new(); 100_000],
            ..base
        })
        .await
        .unwrap_err();
    assert_invalid(&err, "consented");
    assert_eq!(err.violations.len(), 1, "{:?}", err.violations);
}

/// A grant's rejection reason goes to the audit trail: 1 to 256 bytes,
/// no control characters; ids are at most 64 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_reasons_and_ids_are_bounded() {
    let vault = TestVault::start();
    let mut op = vault.operator().await;
    let asked = op
        .create_principal("limits-clerk", vault_tests::CORE_ROLE, 3600)
        .await
        .unwrap();
    assert!(asked.pending);
    let id = asked.principal.unwrap().id;
    for (reason, why) in [
        ("", "empty"),
        ("two\nlines", "control character"),
        (&*"r".repeat(257), "too long"),
    ] {
        let err = op.reject_grant(&id, reason).await.expect_err(why);
        assert_invalid(&err, "reason");
    }
    assert_invalid(
        &op.reject_grant(&"i".repeat(65), "no").await.unwrap_err(),
        "id",
    );
    assert_invalid(
        &op.approve_grant(&"i".repeat(65), "x", "y")
            .await
            .unwrap_err(),
        "id",
    );
    assert_invalid(
        &op.revoke_principal(&"i".repeat(65)).await.unwrap_err(),
        "id",
    );
    // Still pending; a proper reason withdraws it.
    op.reject_grant(&id, "withdrawn: opened by mistake")
        .await
        .unwrap();
}

/// An Unseal share longer than any real one (256 bytes) is INVALID_ARGUMENT
/// naming `share`, and unseals nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_unseal_share_is_invalid() {
    let (vault, shares) = TestVault::start_sealed(2, 2, &[]);
    let mut anon = vault.anonymous().await;
    let padded = format!("{}{}", shares[0], " ".repeat(300));
    let err = anon.unseal(&padded).await.unwrap_err();
    assert_invalid(&err, "share");
    let err = anon.unseal(&"x".repeat(60 << 10)).await.unwrap_err();
    assert_invalid(&err, "share");
    // Beyond 64 KiB the sealed vault does not even decode the request.
    assert!(anon.unseal(&"x".repeat(1 << 20)).await.is_err());
    let s = anon.status().await.unwrap();
    assert_eq!((s.sealed, s.unseal_progress), (true, 0));
    assert!(anon.unseal(&shares[0]).await.unwrap().sealed);
}

/// Request metadata (`authorization`, `x-request-id`, ...) is bounded by the
/// transport at 16 KiB per request; an `x-request-id` that is not 1 to 64
/// characters of `[A-Za-z0-9._:-]` is replaced by the vault's own id, never
/// written down as sent. The vault keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metadata_is_bounded() {
    use vault_client::proto::StatusRequest;
    use vault_client::proto::system_service_client::SystemServiceClient;
    let vault = TestVault::start();
    let token = vault.token_for(vault_tests::CORE_ROLE).await;
    let connect = || async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", vault.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        SystemServiceClient::new(channel)
    };
    let call = |request_id: String| {
        let mut r = tonic::Request::new(StatusRequest {});
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r.metadata_mut()
            .insert("x-request-id", request_id.parse().unwrap());
        r
    };
    assert!(
        connect()
            .await
            .status(call("a".repeat(20 << 10)))
            .await
            .is_err()
    );
    let mut raw = connect().await;
    let too_long = format!("rid-{}", "b".repeat(61));
    raw.status(call(too_long.clone())).await.unwrap();
    raw.status(call("rid-ok-1".into())).await.unwrap();
    let mut auditor = vault.client_as("auditor").await;
    let events = audit_events(&mut auditor, QueryRequest::default()).await;
    assert!(events.iter().any(|e| e.request_id == "rid-ok-1"));
    assert!(!format!("{events:?}").contains(&too_long));
    // Still serving, on a new connection too.
    vault.client().await.status().await.unwrap();
}
