//! Backup reading (`vault::backup`): `vaultd restore` and `vaultctl backup`
//! files, read before and while restoring.
//!
//! Two kinds of input. Raw bytes: reading never panics and never accepts
//! (the tag cannot be forged), and a header that parses starts with the
//! magic. A backup built here with the right tag from fuzzed parts (the
//! format written out independently of the vault's writer): it verifies
//! exactly when it is well formed (known frame kinds, each kind matching its
//! key, journals only in a journal backup, the right frame count, nothing
//! cut or appended, a seed within bounds), and then yields exactly the
//! frames and counts that went in.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use vault::backup::{self, BackupError, MAGIC};
use vault::crypto::keys::{BackupKey, DerivationSeed};
use vault::store::keys::{ERASED_PREFIX, REVOKED_PREFIX, SUBJECT_PREFIX};

const PREFIXES: [&[u8]; 6] = [
    SUBJECT_PREFIX,
    b"tok/",
    ERASED_PREFIX,
    REVOKED_PREFIX,
    b"",
    b"key/",
];

#[derive(Debug, Arbitrary)]
struct Frame {
    kind: u8,
    prefix: u8,
    key: Vec<u8>,
    value: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(Vec<u8>),
    Built {
        journal_only: bool,
        seed: Vec<u8>,
        frames: Vec<Frame>,
        count_off_by: i8,
        appended: Vec<u8>,
        cut: u16,
    },
}

fn be32(n: usize) -> [u8; 4] {
    u32::try_from(n).expect("small").to_be_bytes()
}

fuzz_target!(|input: Input| {
    let key = BackupKey::derive(&DerivationSeed::from_bytes(&[5; 32]));
    match input {
        Input::Raw(bytes) => {
            assert!(
                backup::verify(bytes.as_slice(), &key).is_err(),
                "forged backup accepted"
            );
            if backup::header(bytes.as_slice()).is_ok() {
                assert!(bytes.starts_with(MAGIC));
            }
        }
        Input::Built {
            journal_only,
            seed,
            frames,
            count_off_by,
            appended,
            cut,
        } => {
            let mut file = MAGIC.to_vec();
            file.push(if journal_only { b'J' } else { b'F' });
            file.extend_from_slice(&be32(seed.len()));
            file.extend_from_slice(&seed);
            let mut wanted = Vec::new();
            let mut well_formed = seed.len() <= 4096;
            for f in &frames {
                let kind = f.kind % 4;
                let mut k = PREFIXES[usize::from(f.prefix) % PREFIXES.len()].to_vec();
                k.extend_from_slice(&f.key);
                file.push(kind);
                file.extend_from_slice(&be32(k.len()));
                file.extend_from_slice(&k);
                file.extend_from_slice(&be32(f.value.len()));
                file.extend_from_slice(&f.value);
                let record = kind == 2;
                let journal = k.starts_with(ERASED_PREFIX) || k.starts_with(REVOKED_PREFIX);
                well_formed &= (kind == 1 || kind == 2)
                    && record == k.starts_with(SUBJECT_PREFIX)
                    && (!journal_only || journal);
                wanted.push((record, k, f.value.clone()));
            }
            file.push(0);
            let count = (frames.len() as u64).wrapping_add_signed(i64::from(count_off_by));
            well_formed &= count_off_by == 0;
            file.extend_from_slice(&count.to_be_bytes());
            let mut mac = key.start();
            mac.update(&file);
            file.extend_from_slice(&mac.finish());
            // Cut some bytes off the end, then append others: well formed
            // only if that gave back the same file.
            let whole = file.clone();
            file.truncate(file.len().saturating_sub(usize::from(cut)));
            file.extend_from_slice(&appended);
            well_formed &= file == whole;

            let mut got = Vec::new();
            let read = backup::read(file.as_slice(), &key, |record, k, v| {
                got.push((record, k, v));
                Ok(())
            });
            match read {
                Ok((header, stats)) => {
                    assert!(well_formed, "an ill-formed backup verified");
                    assert_eq!(header.journal_only, journal_only);
                    assert_eq!(header.wrapped_seed, seed);
                    assert_eq!(got, wanted);
                    let records = wanted.iter().filter(|f| f.0).count() as u64;
                    assert_eq!(
                        (stats.records, stats.entries),
                        (records, wanted.len() as u64 - records)
                    );
                    let erasures = wanted
                        .iter()
                        .filter(|f| f.1.starts_with(ERASED_PREFIX))
                        .count();
                    let revocations = wanted
                        .iter()
                        .filter(|f| f.1.starts_with(REVOKED_PREFIX))
                        .count();
                    assert_eq!(
                        (stats.erasures, stats.revocations),
                        (erasures as u64, revocations as u64)
                    );
                    assert!(backup::verify(file.as_slice(), &key).is_ok());
                    let other = BackupKey::derive(&DerivationSeed::from_bytes(&[6; 32]));
                    assert!(matches!(
                        backup::verify(file.as_slice(), &other),
                        Err(BackupError::NotAuthentic(_))
                    ));
                }
                Err(e) => {
                    assert!(!well_formed, "a well-formed backup refused: {e}");
                    assert!(
                        !matches!(e, BackupError::Io(_)),
                        "reading memory failed: {e}"
                    );
                }
            }
        }
    }
});
