//! Identity and need-to-know under the built-in default policy: who may see
//! which field for which purpose (PCI DSS 7.2, GDPR 25), consent (GDPR 7),
//! and that a refusal never tells whether data exists.

use std::collections::HashMap;
use tonic::Code;
use vault_client::proto::Disclosure;
use vault_tests::{PURPOSES, TestVault, card_number, example_values};

/// Every role of the default policy, and one that no policy names.
const ROLES: [&str; 10] = [
    "booking_service",
    "payment_processor",
    "billing_clerk",
    "customer_service",
    "collections_agent",
    "marketing_mailer",
    "privacy_officer",
    "auditor",
    "operator",
    "intern",
];

/// What DESIGN.md's table of callers promises, written out independently
/// of the Cedar files: the disclosure `role` gets of `field` for `purpose`
/// for a subject who consented to `consented`.
fn expected(role: &str, field: &str, purpose: &str, consented: &[&str]) -> Disclosure {
    use Disclosure::{Denied, Masked, Partial, Plain};
    let one_of = |set: &[&str]| set.contains(&field);
    match (role, purpose) {
        ("booking_service", "booking") if field == "card_number" => Masked,
        ("booking_service", "booking")
            if one_of(&[
                "full_name",
                "email",
                "phone",
                "mailing_address",
                "postal_code",
            ]) =>
        {
            Plain
        }
        ("booking_service", "itinerary") if one_of(&["email", "phone", "mailing_address"]) => Plain,
        ("booking_service", "secure_flight")
            if one_of(&["full_name", "gender", "date_of_birth"]) =>
        {
            Plain
        }
        ("payment_processor", "payment_authorization")
            if one_of(&["card_number", "card_expiry", "cardholder_name", "card_cvv"]) =>
        {
            Plain
        }
        ("payment_processor", "fraud_prevention") if field == "card_number" => Partial,
        ("billing_clerk", "billing") if field == "card_number" => Masked,
        ("billing_clerk", "billing")
            if one_of(&["full_name", "billing_address", "email", "phone"]) =>
        {
            Plain
        }
        ("customer_service", "customer_support") if field == "card_number" => Masked,
        ("customer_service", "customer_support") if one_of(&["full_name", "email", "phone"]) => {
            Plain
        }
        ("collections_agent", "collections")
            if one_of(&["full_name", "billing_address", "phone"]) =>
        {
            Plain
        }
        ("marketing_mailer", "marketing_email")
            if field == "email" && consented.contains(&"marketing_email") =>
        {
            Plain
        }
        _ => Denied,
    }
}

fn all_values() -> Vec<(&'static str, String)> {
    example_values()
        .into_iter()
        .map(|(f, v)| {
            let v = if f == "card_number" {
                card_number("411111", 16, 987_654)
            } else {
                v.to_owned()
            };
            (f, v)
        })
        .collect()
}

/// Stores every field of one subject as the booking service; returns
/// field → (token, value).
async fn store_all(
    vault: &TestVault,
    subject: &str,
    consented: &[&str],
) -> HashMap<String, (String, String)> {
    let values = all_values();
    let pairs: Vec<(&str, &str)> = values.iter().map(|(f, v)| (*f, v.as_str())).collect();
    let tokens = vault
        .client_as("booking_service")
        .await
        .tokenize(subject, &pairs, consented, "2026-01")
        .await
        .unwrap();
    tokens
        .into_iter()
        .zip(values)
        .map(|(t, (f, v))| (f.to_owned(), (t.token, v)))
        .collect()
}

/// PCI DSS 7.2 / GDPR 25: every role × purpose × field cell of Detokenize
/// is plain, masked or denied exactly as the table of callers says; a role
/// no policy names gets nothing; masks show no more than the mask allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_7_2_gdpr_25_detokenize_matrix() {
    let vault = TestVault::start_default_policy();
    let consented = ["booking", "marketing_email"];
    let stored = store_all(&vault, "matrix-1", &consented).await;
    let fields: Vec<&String> = stored.keys().collect();
    let tokens: Vec<&str> = fields.iter().map(|f| stored[*f].0.as_str()).collect();
    let mut plain_cells = 0;
    for role in ROLES {
        let mut c = vault.client_as(role).await;
        for purpose in PURPOSES {
            let shown = c.detokenize(&tokens, purpose).await.unwrap();
            assert_eq!(shown.len(), tokens.len());
            for (field, d) in fields.iter().zip(&shown) {
                let want = expected(role, field, purpose, &consented);
                let value = &stored[*field].1;
                assert_eq!(
                    d.disclosure,
                    want as i32,
                    "{role} × {purpose} × {field}: got {:?}",
                    Disclosure::try_from(d.disclosure)
                );
                match want {
                    Disclosure::Plain => {
                        plain_cells += 1;
                        assert_eq!(&d.value, value, "{role} {purpose} {field}");
                    }
                    Disclosure::Partial => {
                        // BIN and last four: the first six and last four
                        // digits of the 16, nothing more.
                        assert_eq!(d.value.len(), value.len());
                        assert!(d.value.starts_with(&value[..6]), "{}", d.value);
                        assert!(d.value.ends_with(&value[value.len() - 4..]), "{}", d.value);
                        assert_eq!(d.value.chars().filter(|c| c.is_ascii_digit()).count(), 10);
                        assert_eq!(d.brand, "visa");
                    }
                    Disclosure::Masked => {
                        assert_ne!(&d.value, value);
                        assert!(d.value.ends_with(&value[value.len() - 4..]), "{}", d.value);
                        assert!(
                            d.value.chars().filter(|c| c.is_ascii_digit()).count() <= 4,
                            "a masked card shows at most its last four: {}",
                            d.value
                        );
                    }
                    _ => assert!(d.value.is_empty() && d.field.is_empty()),
                }
            }
        }
    }
    assert_eq!(
        plain_cells,
        5 + 3 + 3 + 4 + 4 + 3 + 3 + 1,
        "cells granted plain"
    );
}

/// Tokenize, Lookup and Update by role × field × purpose: only the granted
/// cells succeed; every other is PERMISSION_DENIED and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_7_2_tokenize_lookup_update_matrix() {
    let vault = TestVault::start_default_policy();
    let stored = store_all(&vault, "matrix-2", &["booking"]).await;
    let lookups = [("email", 0), ("phone", 1), ("card_number", 2)];
    for role in ROLES {
        let mut c = vault.client_as(role).await;
        // Tokenize: booking services only.
        let card = card_number("4", 16, 1);
        for (field, value) in all_values() {
            // A CVV comes only with its card.
            let mut pairs = vec![(field, value.as_str())];
            if field == "card_cvv" {
                pairs.insert(0, ("card_number", card.as_str()));
            }
            let r = c.tokenize(&format!("t-{role}"), &pairs, &[], "").await;
            if role == "booking_service" {
                assert!(r.is_ok(), "{role} tokenize {field}: {r:?}");
            } else {
                assert_eq!(
                    r.unwrap_err().code,
                    Code::PermissionDenied,
                    "{role} {field}"
                );
            }
        }
        for purpose in PURPOSES {
            for (field, _) in lookups {
                let value = &stored[field].1;
                let allowed = matches!(
                    (role, purpose, field),
                    ("booking_service", "booking", "email" | "phone")
                        | ("customer_service", "customer_support", "email" | "phone")
                );
                let r = c.lookup(field, value, purpose).await;
                if allowed {
                    assert!(
                        r.unwrap().contains(&stored[field].0),
                        "{role} {purpose} {field}"
                    );
                } else {
                    assert_eq!(
                        r.unwrap_err().code,
                        Code::PermissionDenied,
                        "{role} {purpose} {field}"
                    );
                }
            }
            for (field, (token, value)) in &stored {
                let allowed = matches!(
                    (role, purpose, field.as_str()),
                    (
                        "booking_service",
                        "booking",
                        "email" | "phone" | "mailing_address" | "postal_code"
                    ) | ("billing_clerk", "billing", "billing_address")
                );
                // The same value again: an allowed correction changes nothing visible.
                let r = c.update(token, value, purpose).await;
                if allowed {
                    assert!(r.is_ok(), "{role} {purpose} {field}: {r:?}");
                } else {
                    assert_eq!(
                        r.unwrap_err().code,
                        Code::PermissionDenied,
                        "{role} {purpose} {field}"
                    );
                }
            }
        }
    }
    // Nothing but the allowed corrections happened: every value is intact.
    let mut clerk = vault.client_as("billing_clerk").await;
    let shown = clerk
        .detokenize(&[stored["billing_address"].0.as_str()], "billing")
        .await
        .unwrap();
    assert_eq!(shown[0].value, stored["billing_address"].1);
}

/// A refusal is the same for a real token and a made-up one: DENIED per
/// item in Detokenize, PERMISSION_DENIED with the same message for Update
/// and Lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_never_tell_whether_data_exists() {
    let vault = TestVault::start_default_policy();
    let stored = store_all(&vault, "exists-1", &[]).await;
    let made_up = "tok_AAAAAAAAAAAAAAAAAAAAAA";
    let real_dob = stored["date_of_birth"].0.as_str();
    for role in ROLES {
        let mut c = vault.client_as(role).await;
        let shown = c.detokenize(&[real_dob, made_up], "billing").await.unwrap();
        assert_eq!(shown[0].disclosure, Disclosure::Denied as i32, "{role}");
        assert_eq!(shown[1].disclosure, Disclosure::Denied as i32, "{role}");
        assert_eq!(
            (&shown[0].field, &shown[0].value),
            (&shown[1].field, &shown[1].value),
            "{role}: nothing tells the two apart"
        );
        let real = c
            .update(real_dob, "1990-01-01", "billing")
            .await
            .unwrap_err();
        let fake = c
            .update(made_up, "1990-01-01", "billing")
            .await
            .unwrap_err();
        assert_eq!(
            (real.code, &real.message),
            (fake.code, &fake.message),
            "{role}"
        );
        assert_eq!(real.code, Code::PermissionDenied);
        if role != "booking_service" && role != "customer_service" {
            let real = c
                .lookup("email", &stored["email"].1, "billing")
                .await
                .unwrap_err();
            let fake = c
                .lookup("email", "nobody@example.com", "billing")
                .await
                .unwrap_err();
            assert_eq!(
                (real.code, &real.message),
                (fake.code, &fake.message),
                "{role}"
            );
            assert_eq!(real.code, Code::PermissionDenied);
        }
    }
}

/// GDPR 7: after the subject withdraws marketing_email, the mailer is
/// denied the e-mail address; the booking service still reads it. Consent
/// changes are for the privacy officer and booking services only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_7_withdrawn_consent_stops_the_mailer_only() {
    let vault = TestVault::start_default_policy();
    let stored = store_all(&vault, "consent-1", &["booking", "marketing_email"]).await;
    let email = stored["email"].0.as_str();
    let mut mailer = vault.client_as("marketing_mailer").await;
    let mut booking = vault.client_as("booking_service").await;
    let shown = mailer
        .detokenize(&[email], "marketing_email")
        .await
        .unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Plain as i32);
    assert_eq!(shown[0].value, stored["email"].1);

    let r = booking
        .set_consent("consent-1", &[], &["marketing_email"], "2026-02")
        .await
        .unwrap();
    assert_eq!(r.purposes, vec!["booking".to_owned()]);
    assert_eq!(r.policy_version, "2026-02");
    let shown = mailer
        .detokenize(&[email], "marketing_email")
        .await
        .unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Denied as i32);
    assert!(shown[0].value.is_empty());
    let shown = booking.detokenize(&[email], "itinerary").await.unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Plain as i32);

    // The privacy officer can grant it back; a billing clerk cannot touch consent.
    let mut officer = vault.client_as("privacy_officer").await;
    officer
        .set_consent("consent-1", &["marketing_email"], &[], "")
        .await
        .unwrap();
    let shown = mailer
        .detokenize(&[email], "marketing_email")
        .await
        .unwrap();
    assert_eq!(shown[0].disclosure, Disclosure::Plain as i32);
    let err = vault
        .client_as("billing_clerk")
        .await
        .set_consent("consent-1", &[], &["marketing_email"], "")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);
    let err = officer
        .set_consent("consent-1", &["no_such_purpose"], &[], "")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    // Consent is checked at collection too: undeclared purposes are refused.
    let err = booking
        .tokenize(
            "consent-2",
            &[("email", "x@example.com")],
            &["newsletter"],
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
}

/// The running policy explains itself: which policy permitted or forbade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_deciding_policy() {
    let vault = TestVault::start_default_policy();
    vault.token_for("billing_clerk").await;
    let mut op = vault.operator().await;
    let e = op
        .explain(vault_client::proto::ExplainRequest {
            principal: "billing_clerk-test".into(),
            field: "card_number".into(),
            purpose: "billing".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(e.role, "billing_clerk");
    assert_eq!(e.disclosure, Disclosure::Masked as i32);
    let masked = e
        .decisions
        .iter()
        .find(|d| d.action == "reveal_masked")
        .unwrap();
    assert!(masked.allowed);
    assert!(
        masked.policies[0].starts_with("billing_clerk_card_masked ("),
        "{:?}",
        masked.policies
    );
    let plain = e
        .decisions
        .iter()
        .find(|d| d.action == "reveal_plain")
        .unwrap();
    assert!(!plain.allowed && plain.policies.is_empty(), "default deny");
    // Explaining is for operators and auditors, not for the clerk.
    let err = vault
        .client_as("billing_clerk")
        .await
        .explain(Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied);
}
