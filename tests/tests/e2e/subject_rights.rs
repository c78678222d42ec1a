//! A subject's copy of its data (GDPR 15 and 20), correction (GDPR 16) and
//! travel companions held on the account holder's word.

use serde_json::Value;
use tonic::Code;
use vault_client::proto::{Disclosure, QueryRequest};
use vault_tests::{TestVault, audit_events, scan_for};

/// What the booking service stores for the tests: canonical values.
const STORED: [(&str, &str); 8] = [
    ("full_name", "Ann Marie Lee"),
    ("email", "ann.lee@example.com"),
    ("phone", "+14155550123"),
    ("mailing_address", "1 Main Street\nSpringfield"),
    ("card_number", "4111111111111111"),
    ("card_expiry", "09/39"),
    ("cardholder_name", "Ann M Lee"),
    ("card_cvv", "731"),
];

fn field<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the export"))
}

async fn export(vault: &TestVault, subject: &str) -> Value {
    let mut officer = vault.client_as("privacy_officer").await;
    let json = officer
        .export_subject(subject, "GDPR 15 request 7")
        .await
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

/// GDPR 15 / 20: the export matches what was stored, field for field (in
/// clear; never a CVV), with consent, policy version, retention and expiry,
/// who stored and corrected each value, and who has been shown what, from
/// the audit trail; nothing of another subject. Refused to everyone but
/// the privacy officer, served while processing is restricted, audited
/// without values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_15_export_matches_what_was_stored_and_who_read_it() {
    let vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    let tokens = booking
        .tokenize(
            "cust-15",
            &STORED,
            &["booking", "marketing_email"],
            "2026-01",
        )
        .await
        .unwrap();
    let token = |f: &str| tokens.iter().find(|t| t.field == f).unwrap().token.clone();
    booking
        .tokenize(
            "cust-other",
            &[
                ("email", "someone.else@example.com"),
                ("phone", "+33142685300"),
            ],
            &["booking"],
            "2026-01",
        )
        .await
        .unwrap();
    let other = booking
        .lookup("email", "someone.else@example.com", "booking")
        .await
        .unwrap();
    booking
        .detokenize(&[other[0].as_str()], "booking")
        .await
        .unwrap();

    // Shown: email and phone in clear to the booking service, the card
    // masked to it and in clear (with the CVV, once) to the processor. The
    // marketing mailer is refused the phone.
    let shown = booking
        .detokenize(
            &[token("email"), token("phone"), token("card_number")],
            "booking",
        )
        .await
        .unwrap();
    assert_eq!(shown[2].disclosure, Disclosure::Masked as i32);
    let mut processor = vault.client_as("payment_processor").await;
    let paid = processor
        .detokenize(
            &[token("card_number"), token("card_cvv")],
            "payment_authorization",
        )
        .await
        .unwrap();
    assert_eq!(paid[1].value, "731");
    let mut mailer = vault.client_as("marketing_mailer").await;
    let refused = mailer
        .detokenize(&[token("phone")], "marketing_email")
        .await
        .unwrap();
    assert_eq!(refused[0].disclosure, Disclosure::Denied as i32);
    // Corrected: the export has the new value and who corrected it.
    booking
        .update(&token("email"), "ann.lee@example.org", "booking")
        .await
        .unwrap();

    let doc = export(&vault, "cust-15").await;
    assert_eq!(doc["format"], "vault.subject-export.v1");
    assert_eq!(doc["subject_id"], "cust-15");
    assert_eq!(doc["policy_version"], "2026-01");
    let purposes: Vec<&str> = doc["consented_purposes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, ["booking", "marketing_email"]);
    assert_eq!(doc["consented_purposes"][1]["basis"], "consent");
    assert_eq!(doc["restricted"], false);
    assert_eq!(doc["fields"].as_array().unwrap().len(), STORED.len());
    for (name, value) in STORED {
        let f = field(&doc, name);
        assert_eq!(f["token"], token(name), "{name}");
        assert_eq!(
            f["stored_by"]["principal"], "booking_service-test",
            "{name}"
        );
        assert_eq!(f["stored_by"]["role"], "booking_service", "{name}");
        assert!(f["class"].is_string() && f["retention"]["days"].as_u64().unwrap() > 0);
        assert!(!f["purposes"].as_array().unwrap().is_empty(), "{name}");
        match name {
            // Revealed once: gone, and never in an export.
            "card_cvv" => {
                assert_eq!(f["state"], "gone");
                assert!(f["value"].is_null());
            }
            "email" => {
                assert_eq!(f["value"], "ann.lee@example.org");
                assert_eq!(f["corrections"], 1);
                assert_eq!(f["corrected_by"]["principal"], "booking_service-test");
                assert!(f["corrected_at"].is_string());
            }
            _ => {
                assert_eq!(f["state"], "stored", "{name}");
                assert_eq!(f["value"], value, "{name}");
                assert_eq!(f["corrections"], 0);
                assert!(f["expires_at"].as_str().unwrap().ends_with('Z'), "{name}");
            }
        }
    }
    let text = doc.to_string();
    for absent in ["ann.lee@example.com", "someone.else", "cust-other"] {
        assert!(!text.contains(absent), "{absent} is in the export");
    }
    // The CVV is three digits, which timestamps and card tokens may hold by
    // chance: no value of the document is it.
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(&doc, &mut all);
    assert!(!all.iter().any(|s| s == "731"), "the CVV is in the export");

    // Recipients: who was shown which fields, for which purposes; not the
    // refused mailer. The history has every event, the refusal included.
    let recipients = doc["recipients"].as_array().unwrap();
    let who: Vec<(&str, Vec<&str>, Vec<&str>)> = recipients
        .iter()
        .map(|r| {
            let strs = |k: &str| {
                r[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect()
            };
            (
                r["principal"].as_str().unwrap(),
                strs("fields"),
                strs("purposes"),
            )
        })
        .collect();
    assert_eq!(
        who,
        [
            (
                "booking_service-test",
                vec!["card_number", "email", "phone"],
                vec!["booking"]
            ),
            (
                "payment_processor-test",
                vec!["card_cvv", "card_number"],
                vec!["payment_authorization"]
            ),
        ]
    );
    let history = doc["access_history"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = history
        .iter()
        .map(|e| {
            (
                e["principal"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("marketing_mailer-test", "ok")),
        "{actions:?}"
    );
    let refusal = history
        .iter()
        .find(|e| e["principal"] == "marketing_mailer-test")
        .unwrap();
    assert_eq!(refusal["fields"][0]["disclosure"], "DENIED");
    assert_eq!(history[0]["action"], "tokenize");
    assert_eq!(history[0]["fields"].as_array().unwrap().len(), STORED.len());
    assert!(doc["access_history_since"].is_string());
    assert_eq!(doc["access_history_truncated"], false);

    // Restricted: revealed to nobody, still exported for the subject.
    let mut officer = vault.client_as("privacy_officer").await;
    officer
        .restrict("cust-15", true, "GDPR 18 request 8")
        .await
        .unwrap();
    let hidden = booking
        .detokenize(&[token("phone")], "booking")
        .await
        .unwrap();
    assert_eq!(hidden[0].disclosure, Disclosure::Denied as i32);
    let doc = export(&vault, "cust-15").await;
    assert_eq!(doc["restricted"], true);
    // The first export is a disclosure too, to the privacy officer.
    let officers: Vec<&Value> = doc["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["role"] == "privacy_officer")
        .collect();
    assert_eq!(officers.len(), 1);
    assert_eq!(officers[0]["values_shown"], 7, "the CVV was withheld");
    assert_eq!(field(&doc, "phone")["value"], "+14155550123");

    // Only the privacy officer; bad input and unknown subjects are clear
    // errors.
    for role in [
        "booking_service",
        "payment_processor",
        "customer_support",
        "billing_clerk",
        "marketing_mailer",
        "auditor",
        "operator",
    ] {
        let err = vault
            .client_as(role)
            .await
            .export_subject("cust-15", "GDPR 15 request 7")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::PermissionDenied, "{role}");
    }
    let err = officer
        .export_subject("nobody", "request 9")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    let err = officer.export_subject("cust 15", "").await.unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    let paths: Vec<&str> = err.violations.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(paths, ["subject_id", "reason"]);

    // Audited: one event per export, its items name fields and tokens, no
    // value anywhere in the trail.
    let mut auditor = vault.client_as("auditor").await;
    let exports = audit_events(
        &mut auditor,
        QueryRequest {
            action: "export".into(),
            outcome: "ok".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[0].subject_id, "cust-15");
    assert_eq!(exports[0].detail, "reason: GDPR 15 request 7");
    let items: Vec<(&str, &str)> = exports[0]
        .items
        .iter()
        .map(|i| (i.field.as_str(), i.disclosure.as_str()))
        .collect();
    assert!(items.contains(&("email", "EXPORTED")), "{items:?}");
    assert!(items.contains(&("card_cvv", "WITHHELD")), "{items:?}");
    let needles: Vec<Vec<u8>> = ["Ann Marie Lee", "ann.lee@example.org", "+14155550123"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert!(scan_for(&vault.data_dir().join("audit"), &needles).is_empty());
}

/// Travel companions: a companion is linked to the account holder who
/// supplied its data, with the holder's attestation; the holder's export
/// lists the companion by id only, the companion's names its holder. Links
/// need both subjects, go away with an erased companion, and are refused to
/// roles without the need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_15_companions_are_listed_by_reference() {
    let vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    for (sid, name, email) in [
        ("holder-1", "Ann Lee", "ann@example.com"),
        ("comp-1", "Bo Lee", "bo@example.com"),
        ("comp-2", "Cy Lee", "cy@example.com"),
    ] {
        booking
            .tokenize(
                sid,
                &[("full_name", name), ("email", email)],
                &["booking"],
                "2026-01",
            )
            .await
            .unwrap();
    }
    for c in ["comp-1", "comp-2"] {
        let linked = booking
            .link_companion(c, "holder-1", "checkout consent box, terms v3 s4")
            .await
            .unwrap();
        assert_eq!(linked, "holder-1");
    }

    let holder = export(&vault, "holder-1").await;
    let companions: Vec<&str> = holder["companions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["subject_id"].as_str().unwrap())
        .collect();
    assert_eq!(companions, ["comp-1", "comp-2"]);
    assert!(holder["companions"][0]["linked_at"].is_string());
    assert!(holder["account_holder"].is_null());
    let text = holder.to_string();
    for absent in ["Bo Lee", "bo@example.com", "Cy Lee"] {
        assert!(
            !text.contains(absent),
            "a companion's {absent} is in the holder's export"
        );
    }
    let comp = export(&vault, "comp-1").await;
    assert_eq!(comp["account_holder"]["subject_id"], "holder-1");
    assert_eq!(
        comp["account_holder"]["attestation"],
        "checkout consent box, terms v3 s4"
    );
    assert_eq!(comp["account_holder"]["linked_by"], "booking_service-test");
    assert_eq!(field(&comp, "full_name")["value"], "Bo Lee");
    assert!(!comp.to_string().contains("Ann Lee"));

    // Clear refusals: unknown holder or companion, a subject its own
    // holder, no attestation, a role without the need.
    let err = booking
        .link_companion("comp-1", "nobody", "terms v3")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    let err = booking
        .link_companion("nobody", "holder-1", "terms v3")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    let err = booking
        .link_companion("comp-1", "comp-1", "")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    let paths: Vec<&str> = err.violations.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(paths, ["holder_id", "attestation"]);
    for role in ["customer_support", "auditor", "marketing_mailer"] {
        let err = vault
            .client_as(role)
            .await
            .link_companion("comp-1", "holder-1", "terms v3")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::PermissionDenied, "{role}");
    }

    // Unlinked, or erased: the holder lists it no more.
    assert_eq!(booking.link_companion("comp-2", "", "").await.unwrap(), "");
    let mut officer = vault.client_as("privacy_officer").await;
    officer.erase("comp-1", "GDPR 17 request 12").await.unwrap();
    let holder = export(&vault, "holder-1").await;
    assert_eq!(holder["companions"], serde_json::json!([]));
    assert!(export(&vault, "comp-2").await["account_holder"].is_null());
    // An erased holder: its companions keep their data and its id.
    booking
        .link_companion("comp-2", "holder-1", "terms v3")
        .await
        .unwrap();
    officer
        .erase("holder-1", "GDPR 17 request 13")
        .await
        .unwrap();
    let comp = export(&vault, "comp-2").await;
    assert_eq!(comp["account_holder"]["subject_id"], "holder-1");
    assert_eq!(field(&comp, "full_name")["value"], "Cy Lee");
    let err = officer
        .export_subject("holder-1", "request 14")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
}

/// GDPR 16: after Update the old value is unreadable through every RPC
/// (detokenize, look-up, export), before and after a restart; the subject
/// was re-keyed, so the key that sealed the old value is gone from the data
/// directory, and someone who kept a copy of the data directory from before
/// the correction cannot decrypt the old value with today's key slots. The
/// token is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_16_the_old_value_is_unreadable_through_every_rpc() {
    let mut vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    let tokens = booking
        .tokenize(
            "cust-16",
            &[("email", "old.16@example.com"), ("phone", "+14155550116")],
            &["booking"],
            "2026-01",
        )
        .await
        .unwrap();
    let (email, phone) = (tokens[0].token.clone(), tokens[1].token.clone());
    let other = booking
        .tokenize(
            "cust-16-other",
            &[("email", "other.16@example.com")],
            &[],
            "",
        )
        .await
        .unwrap();
    let before = crate::lifecycle::stored_record(&vault, "cust-16")
        .await
        .unwrap();
    let old_key: Vec<Vec<u8>> = before.deks.iter().map(|d| d.wrapped.clone()).collect();
    // A copy of the data directory as it was before the correction.
    let copies = tempfile::tempdir().unwrap();
    assert!(vault.stop());
    vault_tests::copy_tree(&vault.data_dir(), &copies.path().join("before"));
    vault.restart();
    let mut booking = vault.client_as("booking_service").await;

    booking
        .update(&email, "new.16@example.com", "booking")
        .await
        .unwrap();
    booking
        .update(&phone, "+14155550999", "booking")
        .await
        .unwrap();

    for round in ["running", "after restart"] {
        let mut booking = vault.client_as("booking_service").await;
        let shown = booking
            .detokenize(&[email.as_str(), phone.as_str()], "booking")
            .await
            .unwrap();
        assert_eq!(shown[0].value, "new.16@example.com", "{round}");
        assert_eq!(shown[1].value, "+14155550999", "{round}");
        assert_eq!((&shown[0].token, &shown[1].token), (&email, &phone));
        assert!(
            booking
                .lookup("email", "old.16@example.com", "booking")
                .await
                .unwrap()
                .is_empty(),
            "{round}"
        );
        assert_eq!(
            booking
                .lookup("email", "new.16@example.com", "booking")
                .await
                .unwrap(),
            std::slice::from_ref(&email),
            "{round}"
        );
        let doc = export(&vault, "cust-16").await;
        assert_eq!(field(&doc, "email")["value"], "new.16@example.com");
        let text = doc.to_string();
        assert!(
            !text.contains("old.16") && !text.contains("550116"),
            "{round}"
        );
        let after = crate::lifecycle::stored_record(&vault, "cust-16")
            .await
            .unwrap();
        assert!(after.entries.iter().all(|e| e.value_version == 2));
        assert!(
            scan_for(vault.data_dir().as_path(), &old_key).is_empty(),
            "{round}: the old key is still in the data directory"
        );
        let new_ciphertexts: Vec<Vec<u8>> =
            after.entries.iter().map(|e| e.ciphertext.clone()).collect();
        assert_eq!(
            scan_for(vault.data_dir().as_path(), &new_ciphertexts).len(),
            2,
            "the scan finds what is there"
        );
        if round == "running" {
            assert!(vault.stop());
            vault.restart();
        }
    }
    // Storing the old value again is a new value with a new token.
    let mut booking = vault.client_as("booking_service").await;
    let again = booking
        .tokenize("cust-16", &[("email", "old.16@example.com")], &[], "")
        .await
        .unwrap();
    assert_ne!(again[0].token, email);

    // The copy from before the correction holds the old values, sealed
    // under the old key: with today's key slots they do not decrypt; the
    // other subject's value does (the check can fail).
    assert!(vault.stop());
    vault_tests::swap_in_old_copy(&vault, &copies.path().join("before"));
    vault.restart();
    let mut booking = vault.client_as("booking_service").await;
    let old = [("email".to_owned(), email), ("phone".to_owned(), phone)];
    crate::lifecycle::assert_none_decrypts(&mut booking, &old, "booking").await;
    let shown = booking
        .detokenize(&[other[0].token.as_str()], "booking")
        .await
        .unwrap();
    assert_eq!(shown[0].value, "other.16@example.com");
}

/// GDPR 5(1)(c): only declared fields are stored. A tokenize naming an
/// undeclared field, or an undeclared purpose, is refused whole: nothing of
/// it is stored, for a new subject or an existing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_5_1_c_an_undeclared_field_is_refused_and_nothing_stored() {
    let vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    booking
        .tokenize(
            "cust-5c",
            &[("email", "kept.5c@example.com")],
            &["booking"],
            "",
        )
        .await
        .unwrap();
    let before = export(&vault, "cust-5c").await;
    for subject in ["cust-5c", "new-5c"] {
        let err = booking
            .tokenize(
                subject,
                &[
                    ("phone", "+14155550105"),
                    ("favourite_colour", "ultramarine-5c"),
                ],
                &["booking"],
                "",
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{subject}");
        assert_eq!(err.violations[0].0, "fields[1].field");
        let err = booking
            .tokenize(subject, &[("phone", "+14155550105")], &["profiling"], "")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{subject}");
        assert_eq!(err.violations[0].0, "purposes[0]");
    }
    let after = export(&vault, "cust-5c").await;
    assert_eq!(after["fields"], before["fields"]);
    assert_eq!(after["consented_purposes"], before["consented_purposes"]);
    let mut officer = vault.client_as("privacy_officer").await;
    let err = officer
        .export_subject("new-5c", "request 5")
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    assert!(
        booking
            .lookup("phone", "+14155550105", "booking")
            .await
            .unwrap()
            .is_empty()
    );
    let needles = vec![b"ultramarine-5c".to_vec(), b"+14155550105".to_vec()];
    assert!(scan_for(vault.data_dir().as_path(), &needles).is_empty());
}
