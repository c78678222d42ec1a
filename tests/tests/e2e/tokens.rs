//! Round trips, dedupe and look-up through the token API.

use vault_client::proto::Disclosure;
use vault_tests::{TestVault, example_values};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_the_schema_round_trips() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let values = example_values();
    let schema = vault::schema::Schema::default_schema(4096).unwrap();
    assert_eq!(
        values.len(),
        schema.len(),
        "the example covers every declared field"
    );
    let tokens = c
        .tokenize("cust-1", &values, &["booking"], "2026-01")
        .await
        .unwrap();
    assert_eq!(tokens.len(), values.len());
    for (t, (f, v)) in tokens.iter().zip(&values) {
        assert_eq!(&t.field, f, "tokens come back in request order");
        if *f == "card_number" {
            // Card-shaped: same length and last four, never a card number.
            assert_eq!(t.token.len(), v.len());
            assert!(t.token.ends_with(&v[v.len() - 4..]), "{}", t.token);
            assert!(!vault::cards::luhn_valid(&t.token), "{}", t.token);
            assert_eq!(t.brand, "visa");
        } else {
            assert!(
                t.token.starts_with("tok_") && t.token.len() == 26,
                "{}",
                t.token
            );
            assert!(t.brand.is_empty());
        }
    }
    let all: Vec<String> = tokens.iter().map(|t| t.token.clone()).collect();
    let shown = c.detokenize(&all, "customer_support").await.unwrap();
    assert_eq!(shown.len(), values.len());
    for (d, (f, v)) in shown.iter().zip(&values) {
        assert_eq!(d.disclosure, Disclosure::Plain as i32);
        assert_eq!(&d.field, f);
        assert_eq!(&d.value, v, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_come_back_canonical() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let input = [
        ("phone", "+1 (415) 555-0199"),
        ("card_number", "4111-1111 1111-1111"),
        ("country_of_residence", "de"),
        ("email", "  Bob@Example.com "),
    ];
    let tokens = c.tokenize("cust-2", &input, &[], "").await.unwrap();
    let all: Vec<_> = tokens.iter().map(|t| t.token.clone()).collect();
    let shown: Vec<_> = c
        .detokenize(&all, "billing")
        .await
        .unwrap()
        .into_iter()
        .map(|mut d| std::mem::take(&mut d.value))
        .collect();
    assert_eq!(
        shown,
        ["+14155550199", "4111111111111111", "DE", "Bob@Example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_fields_dedupe_per_subject_and_other_fields_do_not() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let a = c
        .tokenize(
            "cust-3",
            &[("email", "ann@example.com"), ("full_name", "Ann Lee")],
            &[],
            "",
        )
        .await
        .unwrap();
    let b = c
        .tokenize(
            "cust-3",
            &[("email", "ANN@example.COM"), ("full_name", "Ann Lee")],
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        a[0].token, b[0].token,
        "same e-mail (any case), same subject: same token"
    );
    assert_ne!(
        a[1].token, b[1].token,
        "full_name is not a look-up field: a new token each time"
    );
    let p1 = c
        .tokenize("cust-3", &[("phone", "+44 20 7946 0958")], &[], "")
        .await
        .unwrap();
    let p2 = c
        .tokenize("cust-3", &[("phone", "+442079460958")], &[], "")
        .await
        .unwrap();
    assert_eq!(p1[0].token, p2[0].token, "phone numbers compare in E.164");
    let other = c
        .tokenize("cust-4", &[("email", "ann@example.com")], &[], "")
        .await
        .unwrap();
    assert_ne!(
        other[0].token, a[0].token,
        "another subject gets its own token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_finds_tokens_by_exact_normalised_value() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let a = c
        .tokenize(
            "cust-5",
            &[("email", "Zed@Example.com"), ("phone", "+33 1 23 45 67 89")],
            &[],
            "",
        )
        .await
        .unwrap();
    let b = c
        .tokenize("cust-6", &[("email", "zed@example.com")], &[], "")
        .await
        .unwrap();
    let mut found = c
        .lookup("email", "ZED@EXAMPLE.COM", "customer_support")
        .await
        .unwrap();
    found.sort();
    let mut expected = vec![a[0].token.clone(), b[0].token.clone()];
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(
        c.lookup("phone", "+33123456789", "customer_support")
            .await
            .unwrap(),
        vec![a[1].token.clone()]
    );
    assert!(
        c.lookup("email", "nobody@example.com", "customer_support")
            .await
            .unwrap()
            .is_empty()
    );
    let err = c
        .lookup("full_name", "Ann Lee", "customer_support")
        .await
        .unwrap_err();
    assert_eq!(err.code, tonic::Code::InvalidArgument);
    assert_eq!(err.violations[0].0, "field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_16_update_corrects_the_value_and_keeps_the_token() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let t = c
        .tokenize("cust-7", &[("email", "old@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    assert_eq!(
        c.update(&t, "New@Example.com", "customer_support")
            .await
            .unwrap(),
        2
    );
    let shown = c
        .detokenize(&[t.as_str()], "customer_support")
        .await
        .unwrap();
    assert_eq!(shown[0].value, "New@Example.com");
    assert_eq!(shown[0].token, t);
    assert!(
        c.lookup("email", "old@example.com", "customer_support")
            .await
            .unwrap()
            .is_empty(),
        "old value gone"
    );
    assert_eq!(
        c.lookup("email", "new@example.com", "customer_support")
            .await
            .unwrap(),
        vec![t.clone()]
    );
    // Tokenizing the corrected value again finds the same token.
    let again = c
        .tokenize("cust-7", &[("email", "new@example.com")], &[], "")
        .await
        .unwrap();
    assert_eq!(again[0].token, t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_answer_denied_per_item_like_forbidden_ones() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let t = c
        .tokenize("cust-8", &[("gender", "X")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    let unknown = "tok_AAAAAAAAAAAAAAAAAAAAAA".to_owned();
    let shown = c
        .detokenize(
            &[unknown.clone(), t.clone(), unknown.clone()],
            "secure_flight",
        )
        .await
        .unwrap();
    let kinds: Vec<i32> = shown.iter().map(|d| d.disclosure).collect();
    assert_eq!(
        kinds,
        [
            Disclosure::Denied as i32,
            Disclosure::Plain as i32,
            Disclosure::Denied as i32
        ],
        "a caller is never told whether a token exists"
    );
    assert!(shown[0].value.is_empty() && shown[0].field.is_empty());
    assert_eq!(shown[1].value, "X");
    let err = c.update(&unknown, "M", "secure_flight").await.unwrap_err();
    assert_eq!(err.code, tonic::Code::PermissionDenied);
}

/// Concurrent tokenizes of one look-up value for one subject agree on one token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tokenizes_of_one_value_share_one_token() {
    let vault = TestVault::start();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = vault.client().await;
        tasks.push(tokio::spawn(async move {
            c.tokenize("race", &[("email", "race@example.com")], &[], "")
                .await
                .unwrap()
                .remove(0)
                .token
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let mut c = vault.client().await;
    assert_eq!(
        c.lookup("email", "race@example.com", "customer_support")
            .await
            .unwrap(),
        tokens
    );
}

/// One Detokenize whose tokens interleave three subjects, repeat a token and
/// hold an unknown and an erased subject's token: each answer is its own
/// token's, in order (tokens of a subject already reached in the request
/// are served from its record without a second look-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detokenize_across_subjects_answers_each_token_with_its_own_value() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let store = |subject: &'static str, email: &'static str, name: &'static str| {
        let mut c = c.clone();
        async move {
            let t = c
                .tokenize(subject, &[("email", email), ("full_name", name)], &[], "")
                .await
                .unwrap();
            (t[0].token.clone(), t[1].token.clone())
        }
    };
    let (a_mail, a_name) = store("mix-a", "a@example.com", "Ada").await;
    let (b_mail, b_name) = store("mix-b", "b@example.com", "Bob").await;
    let (g_mail, _) = store("mix-gone", "gone@example.com", "Gil").await;
    let mut officer = vault.client_as("privacy_officer").await;
    officer.erase("mix-gone", "test").await.unwrap();
    let unknown = "tok_AAAAAAAAAAAAAAAAAAAAAA".to_owned();
    let asked = [
        &a_mail, &b_mail, &a_name, &unknown, &g_mail, &b_name, &a_mail, &b_mail,
    ];
    let shown = c.detokenize(&asked, "booking").await.unwrap();
    let got: Vec<(&str, &str)> = shown
        .iter()
        .map(|d| (d.token.as_str(), d.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (a_mail.as_str(), "a@example.com"),
            (b_mail.as_str(), "b@example.com"),
            (a_name.as_str(), "Ada"),
            (unknown.as_str(), ""),
            (g_mail.as_str(), ""),
            (b_name.as_str(), "Bob"),
            (a_mail.as_str(), "a@example.com"),
            (b_mail.as_str(), "b@example.com"),
        ]
    );
    assert_eq!(shown[3].disclosure, Disclosure::Denied as i32);
    assert_eq!(shown[4].disclosure, Disclosure::Erased as i32);
}

/// Lookup scans every index entry of the value, not only the first 256:
/// 256 subjects whose ids sort first cannot hide another one behind them.
/// The answer is complete, or it is RESOURCE_EXHAUSTED, never a part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_cannot_hide_a_subject_behind_256_index_entries() {
    let vault = TestVault::start();
    let mut c = vault.client().await;
    for i in 0..256 {
        c.tokenize(
            &format!("a-{i:03}"),
            &[("email", "shared@example.com")],
            &[],
            "",
        )
        .await
        .unwrap();
    }
    let victim = c
        .tokenize("z-victim", &[("email", "shared@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    match c
        .lookup("email", "shared@example.com", "customer_support")
        .await
    {
        Ok(found) => assert!(found.contains(&victim), "the subject was left out"),
        Err(e) => assert_eq!(e.code, tonic::Code::ResourceExhausted, "{e}"),
    }
    // One fewer: all of them, the last one included.
    c.erase("a-000", "GDPR 17").await.unwrap();
    let found = c
        .lookup("email", "shared@example.com", "customer_support")
        .await
        .unwrap();
    assert_eq!(found.len(), 256);
    assert!(found.contains(&victim));
}

/// A value token carries its locator (key slot, field, counter) encrypted
/// under the vault's token key, with 32 check bits: one with any character
/// of its body changed, and one issued by another vault (whose subjects sit
/// in the same slots), answer exactly like an unknown token, for Detokenize
/// and Update alike, and never reveal another value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_flipped_and_foreign_tokens_answer_like_unknown_ones() {
    let a = TestVault::start();
    let b = TestVault::start();
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mine = ca
        .tokenize(
            "loc-1",
            &[("email", "loc@example.com"), ("phone", "+14155550123")],
            &[],
            "",
        )
        .await
        .unwrap();
    cb.tokenize("loc-1", &[("email", "other@example.com")], &[], "")
        .await
        .unwrap();
    let unknown = ca
        .detokenize(&["tok_AAAAAAAAAAAAAAAAAAAAAA"], "billing")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(unknown.disclosure, Disclosure::Denied as i32);
    let answer_of =
        |d: &vault_client::proto::Disclosed| (d.disclosure, d.field.clone(), d.value.clone());
    let like_unknown = answer_of(&unknown);
    for t in &mine {
        let shown = cb.detokenize(&[t.token.as_str()], "billing").await.unwrap();
        assert_eq!(answer_of(&shown[0]), like_unknown, "a foreign token");
        let err = cb.update(&t.token, "x@example.com", "billing").await;
        assert_eq!(err.unwrap_err().code, tonic::Code::PermissionDenied);
    }
    let token = &mine[0].token;
    let mut forged = Vec::new();
    for i in "tok_".len()..token.len() {
        for c in ['A', 'f', '9', '_'] {
            let mut chars: Vec<char> = token.chars().collect();
            if chars[i] != c {
                chars[i] = c;
                forged.push(chars.into_iter().collect::<String>());
            }
        }
    }
    assert!(forged.len() > 80);
    for f in &forged {
        let shown = ca.detokenize(&[f.as_str()], "billing").await.unwrap();
        assert_eq!(answer_of(&shown[0]), like_unknown, "{f}");
    }
    // The real ones still answer (the check can fail).
    let shown = ca
        .detokenize(&[mine[0].token.as_str(), mine[1].token.as_str()], "billing")
        .await
        .unwrap();
    assert_eq!(shown[0].value, "loc@example.com");
    assert_eq!(shown[1].value, "+14155550123");
}
