use super::*;
use crate::crypto::keyring::Keyring;
use crate::crypto::keys::RootKey;
use crate::engine::SystemClock;
use crate::store::Store;
use crate::store::sled::{Durability, SledStore};

async fn engine(dir: &std::path::Path) -> Arc<Engine> {
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.join("data"), 1 << 20, Durability::Flush).unwrap());
    let root = RootKey::from_bytes(&[7; 32]);
    let keyring = Keyring::open(&root, store.as_ref(), 16).await.unwrap();
    let schema = Arc::new(crate::schema::Schema::default_schema(4096).unwrap());
    Arc::new(Engine::new(
        store,
        keyring,
        schema,
        Arc::new(SystemClock),
        16,
    ))
}

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        event_type: "request".into(),
        principal: format!("p{i}"),
        rpc: "/vault.v1.TokenService/Detokenize".into(),
        outcome: "ok".into(),
        ..Default::default()
    }
}

fn records(e: &Engine) -> Vec<(u64, AuditRecord)> {
    e.store()
        .scan_prefix(keys::AUDIT_PREFIX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            (
                decode_seq(&k).unwrap(),
                AuditRecord::decode(v.as_slice()).unwrap(),
            )
        })
        .collect()
}

fn put(e: &Engine, seq: u64, r: &AuditRecord) {
    let mut b = Batch::new();
    b.put(keys::audit(seq), r.encode_to_vec());
    e.store().apply(b).unwrap();
}

#[tokio::test]
async fn the_chain_continues_across_reopen_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let log = AuditLog::open(e.clone(), DEFAULT_TIMEOUT).unwrap();
    let seqs = log
        .record((1..=5).map(event).collect(), Batch::new())
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let log = AuditLog::open(e.clone(), DEFAULT_TIMEOUT).unwrap();
    assert_eq!(log.next_seq(), 6);
    let mut then = Batch::new();
    then.put(b"meta/x".to_vec(), b"y".to_vec());
    log.record(vec![event(6)], then).await.unwrap();
    assert_eq!(
        e.store().get(b"meta/x").unwrap().as_deref(),
        Some(&b"y"[..])
    );
    let v = log.verify().unwrap();
    assert_eq!((v.good, v.first_bad), (6, None));
    // Offline, without the MAC key, the hashes alone also check out.
    assert_eq!(verify_chain(records(&e), 1, [0; 32], None).first_bad, None);
}

#[tokio::test]
async fn pci_10_3_any_change_is_found_at_the_first_bad_event() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let log = AuditLog::open(e.clone(), DEFAULT_TIMEOUT).unwrap();
    log.record((1..=8).map(event).collect(), Batch::new())
        .await
        .unwrap();
    let original = records(&e);
    let restore = |e: &Engine| {
        for (seq, r) in &original {
            put(e, *seq, r);
        }
    };
    let first_bad = |e: &Engine| {
        verify_chain(records(e), 1, [0; 32], Some(e.keyring().audit()))
            .first_bad
            .map(|b| b.0)
    };

    // A flipped byte in event 4.
    let mut r = original[3].1.clone();
    let last = r.event.len() - 1;
    r.event[last] ^= 1;
    put(&e, 4, &r);
    assert_eq!(first_bad(&e), Some(4));
    restore(&e);
    assert_eq!(first_bad(&e), None);

    // Event 4 deleted.
    let mut b = Batch::new();
    b.delete(keys::audit(4));
    e.store().apply(b).unwrap();
    assert_eq!(first_bad(&e), Some(4));
    restore(&e);

    // Events 3 and 5 swapped.
    put(&e, 3, &original[4].1);
    put(&e, 5, &original[2].1);
    assert_eq!(first_bad(&e), Some(3));
    restore(&e);

    // An event forged at 6 by someone without the key: the hash chain can be
    // recomputed, the MAC cannot.
    let mut forged = event(99);
    forged.seq = 6;
    let bytes = forged.encode_to_vec();
    let prev: [u8; 32] = original[4].1.hash.as_slice().try_into().unwrap();
    let hash = chain_hash(&prev, &bytes);
    put(
        &e,
        6,
        &AuditRecord {
            event: bytes,
            hash: hash.to_vec(),
            mac: vec![0; 32],
        },
    );
    assert_eq!(first_bad(&e), Some(6));
    restore(&e);

    // An extra event inserted between 6 and 7 (everything after renumbered).
    let mut inserted = original.clone();
    let mut extra = event(100);
    extra.seq = 7;
    inserted.insert(
        6,
        (
            7,
            AuditRecord {
                event: extra.encode_to_vec(),
                hash: vec![0; 32],
                mac: vec![0; 32],
            },
        ),
    );
    for (i, (seq, _)) in inserted.iter_mut().enumerate() {
        *seq = i as u64 + 1;
    }
    let v = verify_chain(inserted, 1, [0; 32], Some(e.keyring().audit()));
    assert_eq!(v.first_bad.map(|b| b.0), Some(7));
    assert_eq!(v.good, 6);
}
