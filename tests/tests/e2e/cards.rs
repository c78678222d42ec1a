//! Payment cards to PCI DSS 3: card tokens (PCI-TOK), what each role sees of
//! a card (3.4.1), a CVV that never touches disk and is revealed once
//! (3.3.1), and card input that is refused without storing anything.

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tonic::Code;
use vault_client::proto::{Disclosure, QueryRequest};
use vault_tests::{PURPOSES, TestVault, audit_events, files_below};

const ROLES: [&str; 9] = [
    "booking_service",
    "payment_processor",
    "billing_clerk",
    "customer_service",
    "collections_agent",
    "marketing_mailer",
    "privacy_officer",
    "auditor",
    "operator",
];

/// `n` random decimal digits.
fn random_digits(rng: &SystemRandom, n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 32];
        rng.fill(&mut b).unwrap();
        out.extend(
            b.iter()
                .filter(|b| **b < 250)
                .map(|b| char::from(b'0' + b % 10))
                .take(n - out.len()),
        );
    }
    out
}

/// A random Luhn-valid card number of `len` digits starting with `prefix`.
fn random_card(rng: &SystemRandom, prefix: &str, len: usize) -> String {
    let head = format!("{prefix}{}", random_digits(rng, len - 1 - prefix.len()));
    (0..10)
        .map(|d| format!("{head}{d}"))
        .find(|c| vault::cards::luhn_valid(c))
        .unwrap()
}

/// An expiry `MM/YY` a year from now.
fn next_year() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (y, m) = vault::cards::year_month(i64::try_from(now).unwrap());
    format!("{m:02}/{:02}", (y + 1) % 100)
}

/// Occurrences of the digits `marker` in `haystack` that are not part of a
/// longer run of digits (a CVV is a number of its own; a timestamp that
/// happens to contain the same four digits is not a leak).
fn standalone(haystack: &[u8], marker: &[u8]) -> bool {
    haystack.windows(marker.len()).enumerate().any(|(i, w)| {
        w == marker
            && (i == 0 || !haystack[i - 1].is_ascii_digit())
            && haystack
                .get(i + marker.len())
                .is_none_or(|b| !b.is_ascii_digit())
    })
}

/// Every form of `marker` to look for: hex of its bytes (both cases) and
/// its base64 at each of the three alignments (only the characters that
/// depend on the marker alone).
fn encodings(marker: &str) -> Vec<String> {
    let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![hex.clone(), hex.to_uppercase()];
    for k in 0..3usize {
        let mut bytes = vec![b'x'; k];
        bytes.extend_from_slice(marker.as_bytes());
        let enc = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let first = (8 * k).div_ceil(6);
        let last = (8 * (k + marker.len())) / 6;
        out.push(enc[first..last].to_owned());
    }
    out
}

/// Which files below `dir`, the log and the audit export hold `marker` in
/// clear, hex or base64.
fn find_marker(marker: &str, dir: &Path, texts: &[(&str, &str)]) -> Vec<String> {
    let encoded = encodings(marker);
    let mut hits = Vec::new();
    let mut look = |name: String, bytes: &[u8]| {
        if standalone(bytes, marker.as_bytes()) {
            hits.push(format!("{name}: plain"));
        }
        for e in &encoded {
            if bytes.windows(e.len()).any(|w| w == e.as_bytes()) {
                hits.push(format!("{name}: {e}"));
            }
        }
    };
    for f in files_below(dir) {
        if let Ok(bytes) = std::fs::read(&f) {
            look(f.display().to_string(), &bytes);
        }
    }
    for (name, text) in texts {
        look((*name).to_owned(), text.as_bytes());
    }
    hits
}

/// PCI DSS 3.3.1: a CVV holding a unique marker is revealed once to the
/// payment processor; then neither the data directory, nor the log, nor the
/// audit trail or its export holds the marker in clear, hex or base64, and
/// a second reveal is EXPIRED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_3_3_1_a_cvv_is_revealed_once_and_never_stored() {
    let rng = SystemRandom::new();
    let mut vault = TestVault::start_default_policy();
    // An American Express CVV has four digits; a leading zero makes a
    // marker that no JSON number, port or counter in the log can be.
    let cvv = format!("0{}", random_digits(&rng, 3));
    let card = random_card(&rng, "37", 15);
    let expiry = next_year();
    let mut booking = vault.client_as("booking_service").await;
    let tokens = booking
        .tokenize(
            "cvv-1",
            &[
                ("card_number", card.as_str()),
                ("card_cvv", cvv.as_str()),
                ("card_expiry", expiry.as_str()),
                ("cardholder_name", "Ann Lee"),
            ],
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(tokens[0].brand, "amex");
    let cvv_token = tokens[1].token.clone();
    assert!(cvv_token.starts_with("tok_"));

    // No one else sees it, and asking does not use it up.
    for role in ROLES {
        let mut c = vault.client_as(role).await;
        for purpose in PURPOSES {
            if (role, purpose) == ("payment_processor", "payment_authorization") {
                continue;
            }
            let d = &c.detokenize(&[&cvv_token], purpose).await.unwrap()[0];
            assert_eq!(d.disclosure, Disclosure::Denied as i32, "{role} {purpose}");
            assert!(d.value.is_empty());
        }
    }
    let mut processor = vault.client_as("payment_processor").await;
    let all: Vec<&str> = tokens.iter().map(|t| t.token.as_str()).collect();
    let first = processor
        .detokenize(&all, "payment_authorization")
        .await
        .unwrap();
    assert_eq!(first[0].value, card);
    assert_eq!(first[1].disclosure, Disclosure::Plain as i32);
    assert_eq!(first[1].value, cvv, "revealed once, in clear");
    assert_eq!(first[2].value, expiry);
    let second = processor
        .detokenize(&all, "payment_authorization")
        .await
        .unwrap();
    assert_eq!(second[1].disclosure, Disclosure::Expired as i32);
    assert!(second[1].value.is_empty());
    assert_eq!(second[1].field, "card_cvv");
    assert_eq!(second[0].value, card, "the card itself stays");

    // The audit trail says who got it and when, without the value.
    let mut auditor = vault.client_as("auditor").await;
    let events = audit_events(
        &mut auditor,
        QueryRequest {
            subject_id: "cvv-1".into(),
            ..Default::default()
        },
    )
    .await;
    let cvv_items: Vec<&str> = events
        .iter()
        .flat_map(|e| &e.items)
        .filter(|i| i.token == cvv_token)
        .map(|i| i.disclosure.as_str())
        .collect();
    assert!(cvv_items.contains(&"STORED"), "{cvv_items:?}");
    assert!(cvv_items.contains(&"PLAIN"), "{cvv_items:?}");
    assert!(cvv_items.contains(&"EXPIRED"), "{cvv_items:?}");
    let export = auditor.audit_export(0).await.unwrap();
    let lines: String = export
        .events
        .iter()
        .map(vault_client::verify_export::event_line)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(lines.contains(&cvv_token), "the export is the real one");

    assert!(vault.stop());
    let log = vault.log();
    assert!(log.contains("vault serving"), "the log is the real one");
    let hits = find_marker(
        &cvv,
        &vault.data_dir(),
        &[("vaultd log", &log), ("audit export", &lines)],
    );
    assert!(hits.is_empty(), "the CVV was found: {hits:?}");
    if vault_tests::on_postgres() {
        // Nor in the database's files (tables and WAL).
        let cluster = std::env::var("TEST_VAULT_POSTGRES_DIR").unwrap();
        let hits = find_marker(&cvv, std::path::Path::new(&cluster), &[]);
        assert!(hits.is_empty(), "the CVV was found in PostgreSQL: {hits:?}");
    }
    // The same search finds each form where it is: it can fail.
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("cvv:{cvv}"));
    let hexed: String = cvv.bytes().map(|b| format!("{b:02X}")).collect();
    for control in [format!("\"cvv\":{cvv},"), b64, hexed] {
        let empty = tempfile::tempdir().unwrap();
        assert!(
            !find_marker(&cvv, empty.path(), &[("control", &control)]).is_empty(),
            "{control}"
        );
    }

    // After a restart the token is still known, the CVV is not.
    vault.restart();
    let mut processor = vault.client_as("payment_processor").await;
    let d = &processor
        .detokenize(&[&cvv_token], "payment_authorization")
        .await
        .unwrap()[0];
    assert_eq!(d.disclosure, Disclosure::Expired as i32);
}

/// A CVV waits only for its time to live, and a restart drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cvv_expires_after_its_time_to_live_and_with_a_restart() {
    let rng = SystemRandom::new();
    let mut vault = TestVault::start_full(
        &[("VAULT_CVV_TTL_SECS", "3")],
        vault_tests::PolicyChoice::Default,
    );
    let expiry = next_year();
    // Both callers ready first: with a TTL of 3 s, granting a role between
    // storing a CVV and revealing it could outlast it (on a slow store).
    let mut processor = vault.client_as("payment_processor").await;
    let mut booking = vault.client_as("booking_service").await;
    let mut store = async |subject: &str| {
        let card = random_card(&rng, "4", 16);
        booking
            .tokenize(
                subject,
                &[
                    ("card_number", &card),
                    ("card_cvv", "123"),
                    ("card_expiry", &expiry),
                ],
                &[],
                "",
            )
            .await
            .unwrap()[1]
            .token
            .clone()
    };
    let waited = store("ttl-1").await;
    // (Issued before the clock passes the CVV's time to live.)
    let restarted = store("ttl-2").await;
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let fresh = store("ttl-3").await;
    let d = processor
        .detokenize(&[&waited, &fresh], "payment_authorization")
        .await
        .unwrap();
    assert_eq!(
        d[0].disclosure,
        Disclosure::Expired as i32,
        "past its time to live"
    );
    assert_eq!(d[1].value, "123", "within its time to live");

    assert!(vault.stop());
    vault.set_env("VAULT_CVV_TTL_SECS", "900");
    vault.restart();
    let mut processor = vault.client_as("payment_processor").await;
    let d = processor
        .detokenize(&[&restarted], "payment_authorization")
        .await
        .unwrap();
    assert_eq!(
        d[0].disclosure,
        Disclosure::Expired as i32,
        "a restart drops CVVs"
    );
}

/// PCI DSS 3.4.1: a card revealed as every role for every purpose shows
/// more than BIN and last four only to the payment processor authorising a
/// payment; BIN and last four only where the policy documents the need
/// (fraud screening); every other non-empty answer shows the last four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_3_4_1_a_card_shows_at_most_bin_and_last_four() {
    let rng = SystemRandom::new();
    let vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    let cards = [
        random_card(&rng, "4", 16),
        random_card(&rng, "37", 15),
        random_card(&rng, "36", 14),
        random_card(&rng, "62", 19),
        random_card(&rng, "5", 12),
    ];
    let mut tokens = Vec::new();
    for (i, card) in cards.iter().enumerate() {
        let t = booking
            .tokenize(
                &format!("pan-{i}"),
                &[("card_number", card)],
                &["booking"],
                "",
            )
            .await
            .unwrap();
        tokens.push(t[0].token.clone());
    }
    let mut seen = HashMap::new();
    for role in ROLES.iter().chain(&["intern"]) {
        let mut c = vault.client_as(role).await;
        for purpose in PURPOSES {
            let shown = c.detokenize(&tokens, purpose).await.unwrap();
            for (card, d) in cards.iter().zip(&shown) {
                let kind = Disclosure::try_from(d.disclosure).unwrap();
                *seen.entry(kind).or_insert(0) += 1;
                let n = card.len();
                let visible: Vec<(usize, char)> = d
                    .value
                    .chars()
                    .enumerate()
                    .filter(|(_, ch)| ch.is_ascii_digit())
                    .collect();
                match kind {
                    Disclosure::Plain => {
                        assert_eq!(
                            (*role, purpose),
                            ("payment_processor", "payment_authorization")
                        );
                        assert_eq!(&d.value, card);
                    }
                    Disclosure::Partial => {
                        assert_eq!((*role, purpose), ("payment_processor", "fraud_prevention"));
                        let bin = vault::cards::bin_len(n);
                        assert_eq!(d.value.len(), n);
                        assert_eq!(visible.len(), bin + 4, "{}", d.value);
                        assert!(n - visible.len() >= 6, "at least six digits hidden");
                        for (i, ch) in visible {
                            assert!(i < bin || i >= n - 4, "{}", d.value);
                            assert_eq!(card.as_bytes()[i], ch as u8);
                        }
                    }
                    Disclosure::Masked => {
                        assert!(visible.len() <= 4, "{role} {purpose}: {}", d.value);
                        assert!(d.value.ends_with(&card[n - 4..]), "{}", d.value);
                    }
                    Disclosure::Denied => assert!(d.value.is_empty()),
                    other => panic!("{role} {purpose}: {other:?}"),
                }
                if !d.value.is_empty() {
                    assert_eq!(d.brand, vault::cards::Brand::of(card).name());
                } else {
                    assert!(d.brand.is_empty(), "a denied card has no brand either");
                }
            }
        }
    }
    let cells = cards.len();
    assert_eq!(seen[&Disclosure::Plain], cells);
    assert_eq!(seen[&Disclosure::Partial], cells);
    assert_eq!(
        seen[&Disclosure::Masked],
        3 * cells,
        "booking, billing, support"
    );
}

/// PCI-TOK through the vault: random valid card numbers of every length get
/// tokens that keep length and last four, fail the Luhn check and never
/// equal their number; the same number of the same customer gets the same
/// token back; a token is no card number to the vault either; an
/// unauthorised reveal is denied and audited.
///
/// 10,000 numbers here (about 20 s against the debug build CI tests);
/// the token generator itself is checked on 100,000 in
/// `vault::tokens::tests::pci_tok_card_tokens_keep_length_and_last_four_and_fail_luhn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_tok_card_tokens_through_the_vault() {
    const CARDS: usize = 10_000;
    const TASKS: usize = 16;
    let vault = TestVault::start_default_policy();
    let token = vault.token_for("booking_service").await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let c = vault.anonymous().await.with_token(&token).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut c = c;
            let rng = SystemRandom::new();
            let mut out = Vec::new();
            for i in (task..CARDS).step_by(TASKS) {
                let card = random_card(&rng, "", 12 + i % 8);
                let subject = format!("tok-{i}");
                let t = c
                    .tokenize(&subject, &[("card_number", &card)], &[], "")
                    .await
                    .unwrap()
                    .remove(0);
                out.push((subject, card, t.token));
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(CARDS);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut unique = HashSet::new();
    for (_, card, token) in &all {
        let n = card.len();
        assert_eq!(token.len(), n, "{token}");
        assert_eq!(token[n - 4..], card[n - 4..]);
        assert!(token.bytes().all(|b| b.is_ascii_digit()));
        assert!(!vault::cards::luhn_valid(token), "{token}");
        assert_ne!(token, card);
        assert!(!token.contains(card.as_str()));
        assert!(unique.insert(token.clone()), "tokens are unique");
    }
    // The same card again, for the same customer, from a booking service
    // (which sees cards only masked): a new card-shaped token, never the
    // stored one, which would confirm the number (PCI DSS 3.4.1; see
    // pci_3_4_1_tokenize_is_not_an_equality_oracle).
    let mut booking = vault.client_as("booking_service").await;
    for (subject, card, token) in all.iter().step_by(CARDS / 200) {
        let spaced: String = card
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i > 0 && i % 4 == 0).then_some(' ').into_iter().chain([c]))
            .collect();
        let again = booking
            .tokenize(subject, &[("card_number", &spaced)], &[], "")
            .await
            .unwrap();
        let again = &again[0].token;
        assert_ne!(again, token);
        assert_eq!(again.len(), card.len());
        assert_eq!(again[card.len() - 4..], card[card.len() - 4..]);
        assert!(!vault::cards::luhn_valid(again), "{again}");
    }
    // A card number is not a token: refused as malformed, not looked up.
    let (_, card, token) = &all[0];
    let err = booking.detokenize(&[card], "booking").await.unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(!err.message.contains(card.as_str()));
    // Unauthorised: denied, and the audit trail has it.
    let mut support = vault.client_as("customer_service").await;
    let d = support
        .detokenize(&[token], "marketing_email")
        .await
        .unwrap();
    assert_eq!(d[0].disclosure, Disclosure::Denied as i32);
    let mut auditor = vault.client_as("auditor").await;
    let events = audit_events(
        &mut auditor,
        QueryRequest {
            principal: "customer_service-test".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(events.iter().any(|e| {
        e.action == "reveal"
            && e.purpose == "marketing_email"
            && e.items
                .iter()
                .any(|i| &i.token == token && i.disclosure == "DENIED")
    }));
}

/// A refused request: what is wrong, its card fields, and where the
/// violation must point.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);

/// Card input that is wrong is refused with INVALID_ARGUMENT naming the
/// field, and nothing of the request is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_card_input_is_refused_and_nothing_is_stored() {
    let rng = SystemRandom::new();
    let vault = TestVault::start_default_policy();
    let visa = random_card(&rng, "4", 16);
    let amex = random_card(&rng, "34", 15);
    let bad_luhn = {
        let last = visa.as_bytes()[15] - b'0';
        format!("{}{}", &visa[..15], (last + 1) % 10)
    };
    let expiry = next_year();
    let cases: Vec<Case> = vec![
        (
            "bad Luhn",
            vec![("card_number", bad_luhn)],
            "fields[1].value",
        ),
        (
            "letters",
            vec![("card_number", format!("4111a{}", &visa[5..]))],
            "fields[1].value",
        ),
        (
            "too short",
            vec![("card_number", visa[..11].to_owned())],
            "fields[1].value",
        ),
        (
            "too long",
            vec![("card_number", format!("{visa}1234"))],
            "fields[1].value",
        ),
        (
            "past expiry",
            vec![
                ("card_number", visa.clone()),
                ("card_expiry", "01/20".into()),
            ],
            "fields[2].value",
        ),
        (
            "expiry month",
            vec![("card_expiry", "13/30".into())],
            "fields[1].value",
        ),
        (
            "CVV without a card",
            vec![("card_cvv", "123".into())],
            "fields[1].field",
        ),
        (
            "CVV with an invalid card",
            vec![
                ("card_number", visa[..11].to_owned()),
                ("card_cvv", "123".into()),
            ],
            "fields[1].value",
        ),
        (
            "three digits for American Express",
            vec![("card_number", amex.clone()), ("card_cvv", "123".into())],
            "fields[2].value",
        ),
        (
            "four digits for Visa",
            vec![("card_number", visa.clone()), ("card_cvv", "1234".into())],
            "fields[2].value",
        ),
        (
            "CVV letters",
            vec![("card_number", visa.clone()), ("card_cvv", "12a".into())],
            "fields[2].value",
        ),
    ];
    let mut booking = vault.client_as("booking_service").await;
    for (i, (what, fields, at)) in cases.iter().enumerate() {
        let email = format!("refused-{i}@example.com");
        let mut pairs = vec![("email", email.as_str())];
        pairs.extend(fields.iter().map(|(f, v)| (*f, v.as_str())));
        let err = booking
            .tokenize(&format!("bad-{i}"), &pairs, &[], "")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{what}");
        assert!(
            err.violations.iter().any(|(f, _)| f == at),
            "{what}: {:?}",
            err.violations
        );
        for (_, v) in fields {
            assert!(
                !err.message.contains(v.as_str()),
                "{what}: the value is not echoed"
            );
        }
        // Nothing stored: not even the valid e-mail of the same request.
        let found = booking.lookup("email", &email, "booking").await.unwrap();
        assert!(found.is_empty(), "{what}: something was stored");
    }
    // The same request, valid, is stored: the checks above could fail.
    let ok = booking
        .tokenize(
            "good-1",
            &[
                ("email", "good@example.com"),
                ("card_number", &visa),
                ("card_expiry", &expiry),
                ("card_cvv", "123"),
            ],
            &[],
            "",
        )
        .await
        .unwrap();
    assert_eq!(ok[1].brand, "visa");
    assert_eq!(
        booking
            .lookup("email", "good@example.com", "booking")
            .await
            .unwrap(),
        vec![ok[0].token.clone()]
    );
}

/// Expiry is checked against the vault's clock (injectable): with the clock
/// 40 days on, this month's expiry is in the past; next year's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_expiry_is_checked_against_the_vault_clock() {
    let rng = SystemRandom::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (y, m) = vault::cards::year_month(i64::try_from(now).unwrap());
    let this_month = format!("{m:02}/{:02}", y % 100);
    let card = random_card(&rng, "4", 16);
    let today = TestVault::start_default_policy();
    let mut booking = today.client_as("booking_service").await;
    booking
        .tokenize(
            "exp-1",
            &[("card_number", &card), ("card_expiry", &this_month)],
            &[],
            "",
        )
        .await
        .unwrap();
    let later = TestVault::start_full(
        &[("VAULT_TEST_CLOCK_OFFSET_SECS", &(40 * 86_400).to_string())],
        vault_tests::PolicyChoice::Default,
    );
    let mut booking = later.client_as("booking_service").await;
    let err = booking
        .tokenize(
            "exp-1",
            &[("card_number", &card), ("card_expiry", &this_month)],
            &[],
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert_eq!(err.violations[0].0, "fields[1].value");
    booking
        .tokenize(
            "exp-1",
            &[("card_number", &card), ("card_expiry", &next_year())],
            &[],
            "",
        )
        .await
        .unwrap();
}

/// A card number is not corrected (its token keeps the last four) and a
/// CVV never is (it is not stored): FAILED_PRECONDITION even for a role
/// that may correct everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_and_cvvs_cannot_be_corrected() {
    let rng = SystemRandom::new();
    let vault = TestVault::start();
    let mut c = vault.client().await;
    let card = random_card(&rng, "4", 16);
    let t = c
        .tokenize(
            "fix-1",
            &[
                ("card_number", &card),
                ("card_cvv", "123"),
                ("email", "a@example.com"),
            ],
            &[],
            "",
        )
        .await
        .unwrap();
    let other = random_card(&rng, "4", 16);
    for (token, value) in [(&t[0].token, other.as_str()), (&t[1].token, "456")] {
        let err = c.update(token, value, "billing").await.unwrap_err();
        assert_eq!(err.code, Code::FailedPrecondition);
    }
    c.update(&t[2].token, "b@example.com", "billing")
        .await
        .unwrap();
    let shown = c
        .detokenize(&[&t[0].token, &t[1].token], "billing")
        .await
        .unwrap();
    assert_eq!(shown[0].value, card, "unchanged");
    assert_eq!(shown[1].value, "123", "still waiting for its one reveal");
}

/// PCI DSS 3.4.1: a booking service sees cards only masked, so Tokenize must
/// not tell it whether a guessed number equals the subject's stored card:
/// the same number and another number both get a new token. A value the
/// caller may see in clear anyway (the booking service's e-mail for
/// `booking`) keeps its token as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_3_4_1_tokenize_is_not_an_equality_oracle() {
    let vault = TestVault::start_default_policy();
    let mut booking = vault.client_as("booking_service").await;
    let card = vault_tests::card_number("4", 16, 4711);
    let guess = vault_tests::card_number("4", 16, 4712);
    let store = |number: String| {
        let mut b = booking.clone();
        async move {
            b.tokenize(
                "oracle-1",
                &[("card_number", number.as_str()), ("card_expiry", "12/99")],
                &[],
                "",
            )
            .await
            .unwrap()
            .remove(0)
            .token
        }
    };
    let first = store(card.clone()).await;
    let same = store(card.clone()).await;
    let other = store(guess).await;
    assert_ne!(same, first, "the same number is not confirmed");
    assert_ne!(other, first);
    assert_ne!(same, other);
    // Each token still answers the card masked, as the policy says.
    let shown = booking
        .detokenize(&[&first, &same], "booking")
        .await
        .unwrap();
    for d in &shown {
        assert_eq!(d.disclosure, Disclosure::Masked as i32);
        assert!(d.value.ends_with(&card[12..]) && !d.value.contains(&card[..6]));
    }
    let email = |b: &mut vault_client::VaultClient| {
        let mut b = b.clone();
        async move {
            b.tokenize("oracle-1", &[("email", "o@example.com")], &[], "")
                .await
                .unwrap()
                .remove(0)
                .token
        }
    };
    assert_eq!(email(&mut booking).await, email(&mut booking).await);
}
