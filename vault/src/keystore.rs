//! The keyring's material in the store: reading the wrapped KEKs and seed
//! to open a [`Keyring`], writing a new vault's, a rotation's new KEK and a
//! retirement. The keyring itself does no I/O (see [`crate::crypto::keyring`]).

use crate::crypto::keyring::{Keyring, KeyringError, Material, Root, WrappedKek};
use crate::store::{Batch, Store, StoreError, keys};

fn store_error(e: StoreError) -> KeyringError {
    KeyringError::Store(Box::new(e))
}

/// Whether the store already holds vault keys (the data directory is initialised).
pub fn is_initialised(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store.get(keys::ACTIVE_KEK)?.is_some())
}

fn be_u32(bytes: &[u8], what: &'static str) -> Result<u32, KeyringError> {
    Ok(u32::from_be_bytes(
        bytes.try_into().map_err(|_| KeyringError::Damaged(what))?,
    ))
}

/// Reads the keyring's material from `store`.
pub fn read(store: &dyn Store) -> Result<Material, KeyringError> {
    let active = store
        .get(keys::ACTIVE_KEK)
        .map_err(store_error)?
        .ok_or(KeyringError::Damaged("no active KEK"))?;
    let active = be_u32(&active, "active KEK version")?;
    let mut keks = Vec::new();
    for (k, wrapped) in store
        .scan_prefix(keys::KEK_PREFIX, 100_000)
        .map_err(store_error)?
    {
        let version = be_u32(&k[keys::KEK_PREFIX.len()..], "KEK key")?;
        let created_at = match store.get(&keys::kek_meta(version)).map_err(store_error)? {
            Some(t) => Some(i64::from_be_bytes(
                t.as_slice()
                    .try_into()
                    .map_err(|_| KeyringError::Damaged("KEK creation time"))?,
            )),
            None => None,
        };
        keks.push(WrappedKek {
            version,
            wrapped,
            created_at,
        });
    }
    let seed = store
        .get(keys::SEED)
        .map_err(store_error)?
        .ok_or(KeyringError::Damaged("no derivation seed"))?;
    let (token_version, token_salts) = match store.get(keys::TOKEN_VERSION).map_err(store_error)? {
        Some(v) => {
            let (first, salts) = v
                .split_first()
                .ok_or(KeyringError::Damaged("token key version"))?;
            let (salts, rest) = salts.as_chunks::<16>();
            if !rest.is_empty() || salts.len() > usize::from(*first) {
                return Err(KeyringError::Damaged("token key salts"));
            }
            (*first, salts.to_vec())
        }
        None => (crate::crypto::keyring::TOKEN_KEY_VERSION, Vec::new()),
    };
    Ok(Material {
        active,
        keks,
        seed,
        token_version,
        token_salts,
    })
}

/// Opens the keyring of `store` under `root`, first writing a new vault's
/// material (KEK v1 and the seed) if the store has none yet, and recording
/// `now` as the creation time of a KEK made before those were recorded.
/// Refuses a store whose layout is newer than this code's, and moves the
/// layout version of one from before key slots on (the store refused it
/// already if it held any subject record of that layout).
async fn check_layout(store: &dyn Store) -> Result<(), KeyringError> {
    let format = store
        .get(keys::META_FORMAT)
        .map_err(store_error)?
        .and_then(|v| v.first().copied())
        .unwrap_or(1);
    if format > keys::LAYOUT_VERSION {
        return Err(KeyringError::Damaged(
            "the data directory was written by a newer version of the vault (its layout version is higher): run that version",
        ));
    }
    if format < keys::LAYOUT_VERSION {
        let mut b = Batch::new();
        b.put(keys::META_FORMAT, vec![keys::LAYOUT_VERSION]);
        store.commit(b).await.map_err(store_error)?;
    }
    Ok(())
}

pub async fn open(
    root: Root,
    store: &dyn Store,
    dek_cache: usize,
    now: i64,
) -> Result<Keyring, KeyringError> {
    if !is_initialised(store).map_err(store_error)? {
        let m = Material::fresh(&root, now)?;
        let mut b = Batch::new();
        b.put(keys::META_FORMAT, vec![keys::LAYOUT_VERSION]);
        for k in &m.keks {
            b.put(keys::kek(k.version), k.wrapped.clone());
            b.put(
                keys::kek_meta(k.version),
                k.created_at.unwrap_or(now).to_be_bytes().to_vec(),
            );
        }
        // (Inserted, not put: of nodes starting at once on an empty shared
        // store, one makes the keys and the others read them.)
        b.insert(keys::SEED, m.seed.clone());
        b.put(keys::ACTIVE_KEK, m.active.to_be_bytes().to_vec());
        match store.commit(b).await {
            Ok(()) | Err(crate::store::StoreError::Conflict) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    check_layout(store).await?;
    let material = read(store)?;
    let ring = Keyring::open(root, &material, dek_cache, now)?;
    let mut b = Batch::new();
    for k in material.keks.iter().filter(|k| k.created_at.is_none()) {
        b.put(keys::kek_meta(k.version), now.to_be_bytes().to_vec());
    }
    if !b.is_empty() {
        store.commit(b).await.map_err(store_error)?;
    }
    Ok(ring)
}

/// Makes a new KEK the one that wraps new DEKs: stored (with the note that
/// DEKs under older versions are to be rewrapped, [`keys::REWRAP`]), then
/// active in `ring`. Callers serialise rotations. Returns the new version.
pub async fn rotate(ring: &Keyring, store: &dyn Store, now: i64) -> Result<u32, KeyringError> {
    // Above every version ever made, retired ones included.
    let retired = store
        .scan_prefix(keys::KEK_RETIRED_PREFIX, 100_000)
        .map_err(store_error)?
        .iter()
        .filter_map(|(k, _)| {
            k.get(keys::KEK_RETIRED_PREFIX.len()..)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(u32::from_be_bytes)
        })
        .max()
        .unwrap_or(0);
    let kek = ring.new_kek(retired)?;
    let version = kek.version;
    let mut b = Batch::new();
    // (Inserted: two nodes rotating at once make one version, not two.)
    b.insert(keys::kek(version), kek.wrapped.clone());
    b.put(keys::ACTIVE_KEK, version.to_be_bytes().to_vec());
    b.put(keys::REWRAP, version.to_be_bytes().to_vec());
    b.put(keys::kek_meta(version), now.to_be_bytes().to_vec());
    store.commit(b).await.map_err(store_error)?;
    ring.activate(kek, now)
}

/// Destroys KEK `version` (never the active one): its wrapped form is
/// deleted from the store, the store records that it was retired, and the
/// key leaves `ring`. Callers check that nothing is wrapped under it.
pub async fn retire(
    ring: &Keyring,
    store: &dyn Store,
    version: u32,
    now: i64,
) -> Result<(), KeyringError> {
    if version == ring.active_kek_version() {
        return Err(KeyringError::Damaged("the active KEK cannot be retired"));
    }
    let mut b = Batch::new();
    b.delete(keys::kek(version));
    b.delete(keys::kek_meta(version));
    b.put(keys::kek_retired(version), now.to_be_bytes().to_vec());
    store.commit(b).await.map_err(store_error)?;
    ring.retire(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::RootKey;
    use crate::store::sled::{Durability, SledStore};

    /// A store of an older layout version (one the store itself accepted:
    /// no subject record of that layout) is moved on to this one; a store
    /// of a newer one is refused, saying so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_layout_is_refused_and_an_older_one_moved_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, Durability::Flush).unwrap();
        let root = || Root::Key(Box::new(RootKey::from_bytes(&[7; 32])));
        let format = |v: u8| {
            let mut b = Batch::new();
            b.put(keys::META_FORMAT, vec![v]);
            b
        };
        open(root(), &store, 4, 0).await.unwrap();
        store.commit(format(1)).await.unwrap();
        open(root(), &store, 4, 0).await.unwrap();
        assert_eq!(
            store.get(keys::META_FORMAT).unwrap(),
            Some(vec![keys::LAYOUT_VERSION])
        );
        store
            .commit(format(keys::LAYOUT_VERSION + 1))
            .await
            .unwrap();
        let err = open(root(), &store, 4, 0).await.unwrap_err().to_string();
        assert!(err.contains("newer version"), "{err}");
    }
}
