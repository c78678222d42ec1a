//! What is on disk: ciphertexts only, bound to where they belong.

use prost::Message;
use ring::digest::{SHA256, digest};
use vault::engine::records::SubjectRecord;
use vault::store::sled::{Durability, SledStore};
use vault::store::{Batch, Store, keys};
use vault_client::proto::{Disclosure, FieldValue, TokenizeRequest};
use vault_tests::{TestVault, card_number, files_below, scan_for};

/// GDPR-32 and PCI-3.5.1: 1,000 distinct known values, card numbers among
/// them; no byte of the data directory (or the log) holds any of them, nor the
/// unkeyed SHA-256 of any card number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdpr_32_pci_3_5_1_no_value_or_card_hash_on_disk() {
    let mut vault = TestVault::start();
    let mut c = vault.client().await;
    let mut needles: Vec<Vec<u8>> = Vec::new();
    let mut card_hashes: Vec<Vec<u8>> = Vec::new();
    for i in 0..200u64 {
        let card = card_number("4", 16, 7_300_000_000 + i * 7919);
        let email = format!("traveller.{i}.zq@example.org");
        let phone = format!("+1646{:07}", 1_000_000 + i * 37);
        let name = format!(
            "Quintessa Marlowe{}",
            ["a", "b", "c", "d", "e"][(i % 5) as usize].repeat(1 + (i / 5) as usize % 7)
        );
        let address = format!("{} Rue Zephyrine {}", 100 + i, i * 13);
        for v in [&card, &email, &phone, &name, &address] {
            needles.push(v.as_bytes().to_vec());
        }
        card_hashes.push(digest(&SHA256, card.as_bytes()).as_ref().to_vec());
        c.tokenize(
            &format!("scan-{i}"),
            &[
                ("card_number", &card),
                ("email", &email),
                ("phone", &phone),
                ("full_name", &name),
                ("billing_address", &address),
            ],
            &["booking"],
            "2026-01",
        )
        .await
        .unwrap();
    }
    assert_eq!(needles.len(), 1000);
    let hex_hashes: Vec<Vec<u8>> = card_hashes
        .iter()
        .map(|h| {
            h.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes()
        })
        .collect();
    // A backup too (PCI 3.5.1 names backups): written into the scanned
    // directory's parent, scanned with the rest below.
    let backup_dir = tempfile::tempdir().unwrap();
    let mut backup = std::fs::File::create(backup_dir.path().join("scan.vbk")).unwrap();
    let mut operator = vault.operator().await;
    operator
        .backup(false, &mut backup, |_, _| {})
        .await
        .unwrap();
    drop((backup, operator, c));
    assert!(vault.stop(), "clean shutdown");
    let files = files_below(&vault.data_dir());
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        total > 100_000,
        "the scan reads a data directory that holds the data ({total} bytes)"
    );
    let mut all = needles.clone();
    all.extend(card_hashes);
    all.extend(hex_hashes);
    let mut hits = scan_for(&vault.data_dir(), &all);
    hits.extend(scan_for(backup_dir.path(), &all));
    assert!(
        hits.is_empty(),
        "plaintext or unkeyed hash on disk or in the backup: {:?}",
        &hits[..hits.len().min(5)]
    );
    assert!(
        std::fs::metadata(backup_dir.path().join("scan.vbk"))
            .unwrap()
            .len()
            > 100_000,
        "the backup holds the data"
    );
    let log = vault.log();
    assert!(!log.is_empty());
    for n in &needles {
        assert!(
            !log.contains(std::str::from_utf8(n).unwrap()),
            "a value reached the log"
        );
    }
    // The root key is kept apart from the data.
    assert!(!vault.key_file().starts_with(vault.data_dir()));
}

/// Reads the subject record of `subject` straight from a stopped vault's store.
async fn with_store<R>(vault: &TestVault, f: impl AsyncFnOnce(&SledStore) -> R) -> R {
    let store = SledStore::open(&vault.data_dir(), 1 << 20, Durability::Fsync).unwrap();
    let r = f(&store).await;
    store.close().unwrap();
    r
}

fn record(store: &SledStore, subject: &str) -> SubjectRecord {
    SubjectRecord::decode(
        store
            .get(&keys::subject(subject))
            .unwrap()
            .unwrap()
            .as_slice(),
    )
    .unwrap()
}

async fn put_record(store: &SledStore, subject: &str, r: &SubjectRecord) {
    let mut b = Batch::new();
    b.put(keys::subject(subject), r.encode_to_vec());
    store.commit(b).await.unwrap();
}

/// NIST-GCM-2: a flipped bit, or a ciphertext copied to another subject or
/// another field, fails decryption, always with the same generic error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nist_gcm_2_tampered_or_moved_ciphertexts_fail_alike() {
    let mut vault = TestVault::start();
    let mut c = vault.client().await;
    let a = c
        .tokenize(
            "alice",
            &[("email", "alice@example.com"), ("phone", "+14155550001")],
            &[],
            "",
        )
        .await
        .unwrap();
    let b = c
        .tokenize("bob", &[("email", "bob@example.com")], &[], "")
        .await
        .unwrap();
    let (a_email, a_phone, b_email) = (a[0].token.clone(), a[1].token.clone(), b[0].token.clone());
    assert!(vault.stop());

    let original = with_store(&vault, async |s| record(s, "alice")).await;
    let bob_original = with_store(&vault, async |s| record(s, "bob")).await;
    let ciphertext = |r: &SubjectRecord, token: &str| {
        r.entries
            .iter()
            .find(|e| e.token == token)
            .unwrap()
            .ciphertext
            .clone()
    };

    // 1. One bit of alice's e-mail ciphertext flipped.
    let mut flipped = ciphertext(&original, &a_email);
    *flipped.last_mut().unwrap() ^= 0x01;
    // 2. Bob's e-mail ciphertext in alice's e-mail entry (another subject).
    let moved_subject = ciphertext(&bob_original, &b_email);
    // 3. Alice's e-mail ciphertext in her phone entry (another field).
    let moved_field = ciphertext(&original, &a_email);
    let cases = [
        (&a_email, flipped),
        (&a_email, moved_subject),
        (&a_phone, moved_field),
    ];

    let mut messages = Vec::new();
    for (token, bad) in cases {
        with_store(&vault, async |s| {
            let mut r = original.clone();
            r.entries
                .iter_mut()
                .find(|e| &e.token == token)
                .unwrap()
                .ciphertext = bad;
            put_record(s, "alice", &r).await;
        })
        .await;
        vault.restart();
        let mut c = vault.client().await;
        let err = c
            .detokenize(&[token.as_str()], "customer_support")
            .await
            .unwrap_err();
        assert_eq!(err.code, tonic::Code::DataLoss);
        messages.push(err.message);
        // Bob is untouched.
        let bob = c
            .detokenize(&[b_email.as_str()], "customer_support")
            .await
            .unwrap();
        assert_eq!(bob[0].value, "bob@example.com");
        assert!(vault.stop());
    }

    assert!(
        messages.iter().all(|m| m == &messages[0]),
        "one generic error: {messages:?}"
    );
    assert!(!messages[0].contains("alice") && !messages[0].contains("bob@"));

    // Restoring the original record makes everything readable again.
    with_store(&vault, async |s| put_record(s, "alice", &original).await).await;
    vault.restart();
    let mut c = vault.client().await;
    let shown = c
        .detokenize(&[a_email, a_phone], "customer_support")
        .await
        .unwrap();
    assert!(
        shown
            .iter()
            .all(|d| d.disclosure == Disclosure::Plain as i32)
    );
}

/// The store holds only wrapped keys: the raw root key from the key file is
/// not in the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_root_key_in_the_data_directory() {
    use base64::Engine as _;
    let mut vault = TestVault::start();
    let mut c = vault.client().await;
    c.tokenize_request(TokenizeRequest {
        subject_id: "k-1".into(),
        fields: vec![FieldValue {
            field: "email".into(),
            value: "k@example.com".into(),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(vault.stop());
    let text = std::fs::read_to_string(vault.key_file()).unwrap();
    let encoded = text.split_whitespace().nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .unwrap();
    assert_eq!(raw.len(), 32);
    assert!(scan_for(&vault.data_dir(), &[raw, encoded.as_bytes().to_vec()]).is_empty());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(vault.key_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the key file is readable by its owner only");
        let mode = std::fs::metadata(vault.data_dir())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "the data directory is its owner's only");
    }
}

/// NIST GCM limit: with the limit of encryptions per DEK lowered to 3, the
/// fourth value a subject seals re-keys it: a new DEK version seals every
/// value again and the old version is gone from the key slot. A correction
/// re-keys too (GDPR 16). The values read the same before and after a
/// restart, and erasure destroys the one key left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nist_gcm_1_a_dek_is_replaced_at_its_limit() {
    let mut vault = TestVault::start_with(&[("VAULT_DEK_MAX_ENCRYPTIONS", "3")]);
    let mut c = vault.client().await;
    let mut tokens = Vec::new();
    for pairs in [
        &[("email", "gcm@example.com"), ("phone", "+14155550101")][..],
        &[("full_name", "Gal Cem")][..],
    ] {
        for t in c.tokenize("gcm-1", pairs, &[], "").await.unwrap() {
            tokens.push(t.token);
        }
    }
    let keys_of = |r: &vault::engine::records::SubjectRecord| -> Vec<(u32, u64)> {
        r.deks.iter().map(|d| (d.version, d.encryptions)).collect()
    };
    let record = crate::lifecycle::stored_record(&vault, "gcm-1")
        .await
        .unwrap();
    assert_eq!(keys_of(&record), [(1, 3)]);
    let first_key = record.deks[0].wrapped.clone();
    for t in c
        .tokenize("gcm-1", &[("postal_code", "SW1A 1AA")], &[], "")
        .await
        .unwrap()
    {
        tokens.push(t.token);
    }
    let record = crate::lifecycle::stored_record(&vault, "gcm-1")
        .await
        .unwrap();
    let versions: Vec<u32> = record.entries.iter().map(|e| e.dek_version).collect();
    assert_eq!(
        versions,
        [2, 2, 2, 2],
        "the fourth value re-keys the subject"
    );
    assert_eq!(keys_of(&record), [(2, 4)]);
    assert_ne!(record.deks[0].wrapped, first_key);
    // A correction re-keys (its key then has sealed the four values once
    // more and the new one).
    c.update(&tokens[0], "gcm2@example.com", "billing")
        .await
        .unwrap();
    c.update(&tokens[1], "+14155550102", "billing")
        .await
        .unwrap();
    c.update(&tokens[0], "gcm3@example.com", "billing")
        .await
        .unwrap();
    let record = crate::lifecycle::stored_record(&vault, "gcm-1")
        .await
        .unwrap();
    let versions: Vec<u32> = record.entries.iter().map(|e| e.dek_version).collect();
    assert_eq!(versions, [5, 5, 5, 5]);
    assert_eq!(keys_of(&record), [(5, 5)]);
    let expected = ["gcm3@example.com", "+14155550102", "Gal Cem", "SW1A 1AA"];
    for round in ["running", "restarted"] {
        let mut c = vault.client().await;
        let shown = c.detokenize(&tokens, "billing").await.unwrap();
        let values: Vec<&str> = shown.iter().map(|d| d.value.as_str()).collect();
        assert_eq!(values, expected, "{round}");
        if round == "running" {
            assert!(vault.stop());
            vault.restart();
        }
    }
    let mut officer = vault.client_as("privacy_officer").await;
    let receipt = officer.erase("gcm-1", "GDPR 17 request 1").await.unwrap();
    let body: vault_client::proto::ErasureReceiptBody =
        prost::Message::decode(receipt.body.as_slice()).unwrap();
    assert_eq!(body.keys, 1, "the one DEK is destroyed");
}

/// The key-slot file, and every other file and directory the vault makes
/// in its data directory, are their owner's only (0600 / 0700), whoever
/// made the directory and whatever umask the vault was started with: here
/// the data directory and the key-slot file were opened up (0755 / 0644)
/// between two runs, as an operator's own `mkdir` or copy would leave them.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_slots_and_every_file_are_owner_only_whoever_created_the_directory() {
    use std::os::unix::fs::PermissionsExt;
    let mut vault = TestVault::start();
    let mut c = vault.client().await;
    let t = c
        .tokenize("perm-1", &[("email", "perm@example.com")], &[], "")
        .await
        .unwrap()
        .remove(0)
        .token;
    assert!(vault.stop());
    let open_up = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(vault.data_dir(), open_up.clone()).unwrap();
    std::fs::set_permissions(
        vault.data_dir().join("keyslots"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    vault.restart();
    let mut c = vault.client().await;
    c.tokenize("perm-2", &[("email", "perm2@example.com")], &[], "")
        .await
        .unwrap();
    c.update(&t, "perm.new@example.com", "booking")
        .await
        .unwrap();
    assert!(vault.stop());

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let data = vault.data_dir();
    assert_eq!(mode(&data), 0o700);
    let mut dirs = vec![data.clone()];
    let mut files = 0;
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                dirs.push(p);
            } else {
                assert_eq!(mode(&p) & 0o077, 0, "{} is {:o}", p.display(), mode(&p));
                files += 1;
            }
        }
    }
    assert!(files > 2);
    assert_eq!(mode(&data.join("keyslots")), 0o600);
}

/// A data directory of the layout before key slots (one record file per
/// subject) is refused at start, with a message that says how to move it.
/// The way is a backup made by the previous version, restored by this one
/// (tests/fixtures/pre-slots, made by the previous version): each subject
/// gets a key slot, its values read as they were stored (value tokens and
/// the card token are the same), the subject erased before the backup stays
/// erased, and erasing the moved subject overwrites its key slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_old_layout_moves_by_backup_and_restore() {
    let mut vault = TestVault::start();
    assert!(vault.stop());
    let old = vault.data_dir().join("subjects").join("ab").join("cd");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("0123.rec"), b"a record of the old layout").unwrap();
    let out = vault.command().output().unwrap();
    let (ok, err) = vault_tests::outcome(&out);
    assert!(!ok, "vaultd started on a data directory of the old layout");
    assert!(err.contains("layout before key slots"), "{err}");
    assert!(err.contains("Upgrading the storage layout"), "{err}");

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pre-slots");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("tokens.json")).unwrap()).unwrap();
    std::fs::remove_dir_all(vault.data_dir()).unwrap();
    // A checkout does not keep the fixture's mode: copy the bytes and make
    // the copy owner-only, as vaultd requires of a root key file.
    std::fs::copy(fixture.join("root.key"), vault.key_file()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(vault.key_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = std::process::Command::new(vault_tests::bin("vaultd-under-test"))
        .arg("--data-dir")
        .arg(vault.data_dir())
        .arg("--root-key-file")
        .arg(vault.key_file())
        .env_remove("VAULT_CONFIG")
        .arg("restore")
        .arg("--from")
        .arg(fixture.join("pre-slots.backup"))
        .output()
        .unwrap();
    let (ok, err) = vault_tests::outcome(&out);
    assert!(ok, "{err}");
    let slots = vault.data_dir().join("keyslots");
    assert!(std::fs::read(&slots).unwrap().iter().any(|b| *b != 0));
    vault.reissue_officer();
    vault.restart();

    let mut officer = vault.officer().await;
    let doc: serde_json::Value = serde_json::from_str(
        &officer
            .export_subject("legacy-1", "layout upgrade check")
            .await
            .unwrap(),
    )
    .unwrap();
    let fields = doc["fields"].as_array().unwrap();
    for (name, value) in expected["values"].as_object().unwrap() {
        let f = fields
            .iter()
            .find(|f| f["field"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in the export"));
        assert_eq!(f["value"], *value, "{name}");
        assert_eq!(f["token"], expected["tokens"][name], "{name}");
    }
    assert_eq!(
        officer
            .export_subject("legacy-2", "layout upgrade check")
            .await
            .unwrap_err()
            .code,
        tonic::Code::NotFound
    );
    officer
        .erase("legacy-1", "layout upgrade check")
        .await
        .unwrap();
    assert!(vault.stop());
    assert!(
        std::fs::read(&slots).unwrap().iter().all(|b| *b == 0),
        "the moved subject's key slot is overwritten"
    );
}
