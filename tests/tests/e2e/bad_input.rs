//! Every bad input gets INVALID_ARGUMENT naming the item, and changes nothing.

use vault_client::proto::{DetokenizeRequest, FieldValue, TokenizeRequest};
use vault_client::{ClientError, VaultClient};
use vault_tests::TestVault;

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
