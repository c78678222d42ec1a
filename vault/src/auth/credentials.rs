//! Bearer tokens the vault issues: `vt1.<id>.<secret>`.
//!
//! The store keeps, per token, its id, name, role, expiry, revocation and
//! the keyed hash HMAC(credential key, id ‖ 0 ‖ secret), never the secret.
//!
//! A token for a data role is made by two principals (split knowledge and
//! dual control): the requester gets `vt1.<id>.<A>` and the approver `<B>`
//! (A and B: 16 random bytes each, base64url), and the grantee's token is
//! `vt1.<id>.<A><B>`. The store keeps HMAC(id.1 ‖ 0 ‖ A) from the request
//! and HMAC(id.2 ‖ 0 ‖ B) from the approval: neither party, nor the store,
//! ever holds the whole token.
//! Every credential is held in memory too (they are few), so checking a
//! token costs one HMAC and one map look-up; the hashes are compared in
//! constant time.
//!
//! A revocation is also written to the revocation journal (`revoked/<id>`,
//! in the same batch, before the record): backups carry it, and a restore
//! replays it ([`replay_revocations`]) so that a backup taken before a
//! revocation does not bring the token back.

use crate::crypto::keys::CredentialKey;
use crate::crypto::{ct_eq, random_array};
use crate::error::Audited;
use crate::error::{Error, Result};
use crate::model::journal;
use crate::model::{AuthMethod, Principal};
use crate::store::Store;
use crate::store::{Batch, keys};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// Prefix of every bearer token (format version 1).
pub const TOKEN_PREFIX: &str = "vt1.";
/// Length of a credential id (12 random bytes, base64url).
const ID_LEN: usize = 16;
/// Length of a secret (32 random bytes, base64url).
const SECRET_LEN: usize = 43;
/// Length of one part of a two-part secret (16 random bytes, base64url).
const PART_LEN: usize = 22;
/// How long a grant request waits for its approval.
pub const GRANT_REQUEST_TTL_SECS: i64 = 24 * 3600;
/// `granted_via` of a token issued by one principal (roles that see no
/// personal data).
pub const VIA_SINGLE: &str = "single";
/// `granted_via` of a token requested by one principal, approved by another.
pub const VIA_DUAL_CONTROL: &str = "dual_control";
/// `granted_via` of a token issued offline by the holder of the root key
/// (`vaultd officer`).
pub const VIA_ROOT_KEY: &str = "root_key";
/// Name of the operator token issued at first start.
pub const BOOTSTRAP_NAME: &str = "bootstrap-operator";
/// Life of the bootstrap operator token.
pub const BOOTSTRAP_TTL_SECS: u64 = 24 * 3600;

/// One issued credential as stored (prost; the secret's keyed hash only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CredentialRecord {
    /// The public id (the middle part of the token).
    #[prost(string, tag = "1")]
    pub id: String,
    /// The principal's name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// The principal's role.
    #[prost(string, tag = "3")]
    pub role: String,
    /// Unix seconds.
    #[prost(int64, tag = "4")]
    pub created_at: i64,
    /// Unix seconds; the token is refused from then on.
    #[prost(int64, tag = "5")]
    pub expires_at: i64,
    /// Unix seconds, or 0 if not revoked.
    #[prost(int64, tag = "6")]
    pub revoked_at: i64,
    /// Who issued it.
    #[prost(string, tag = "7")]
    pub created_by: String,
    /// HMAC(credential key, id ‖ 0 ‖ secret); for a two-part token, of the
    /// requester's part (with `id.1` for the id).
    #[prost(bytes = "vec", tag = "8")]
    pub hash: Vec<u8>,
    /// How it came to be: [`VIA_SINGLE`] ("" in records older than grants),
    /// [`VIA_DUAL_CONTROL`] or [`VIA_ROOT_KEY`].
    #[prost(string, tag = "9")]
    pub granted_via: String,
    /// Who approved it ("" unless dual control, or not yet).
    #[prost(string, tag = "10")]
    pub approved_by: String,
    /// Unix seconds (0: not approved).
    #[prost(int64, tag = "11")]
    pub approved_at: i64,
    /// Unix seconds: a request not approved by then is void.
    #[prost(int64, tag = "12")]
    pub approval_deadline: i64,
    /// The life asked for, counted from the approval.
    #[prost(uint64, tag = "13")]
    pub ttl_secs: u64,
    /// HMAC(credential key, id.2 ‖ 0 ‖ approver's part), set at approval.
    #[prost(bytes = "vec", tag = "14")]
    pub approval_hash: Vec<u8>,
    /// Whether the request was rejected or withdrawn (with `revoked_at`).
    #[prost(bool, tag = "15")]
    pub rejected: bool,
    /// HMAC under the credential key of the record's grant ([`record_mac`]):
    /// who, which role, how granted, until when. A record edited outside
    /// the vault (a role changed, an expiry moved, a single grant passed off
    /// as dual control) stops the start. Empty only in records older than
    /// the MAC, which act as single grants (never on personal data).
    #[prost(bytes = "vec", tag = "16")]
    pub mac: Vec<u8>,
}

/// The MAC of a credential record: HMAC(credential key, 0x01 "record" ‖ 0 ‖
/// the record encoded without its MAC, revocation and rejection). Those are
/// left out because they only take access away and the revocation journal
/// restores them at every start (a restored older backup, a crash).
pub fn record_mac(key: &crate::crypto::keys::CredentialKey, r: &CredentialRecord) -> [u8; 32] {
    let grant = CredentialRecord {
        mac: Vec::new(),
        revoked_at: 0,
        rejected: false,
        ..r.clone()
    };
    // Ids are base64url: "\u{1}record" is no id and no part id.
    key.hash("\u{1}record", &grant.encode_to_vec())
}

impl CredentialRecord {
    /// Whether the token is made of two parts and waits for (or had) an
    /// approval.
    pub fn dual(&self) -> bool {
        self.granted_via == VIA_DUAL_CONTROL
    }

    /// Whether the grant waits for its approval at `now`.
    pub fn pending(&self, now: i64) -> bool {
        self.dual() && self.approved_at == 0 && self.revoked_at == 0 && now < self.approval_deadline
    }

    /// "active", "pending", "revoked", "rejected" or "expired" at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.rejected {
            "rejected"
        } else if self.revoked_at != 0 {
            "revoked"
        } else if self.pending(now) {
            "pending"
        } else if (self.dual() && self.approved_at == 0) || self.expires_at <= now {
            "expired"
        } else {
            "active"
        }
    }

    /// Whether this credential's authority came from more than one
    /// principal (dual control) or from the root key's holder: only such a
    /// credential may act on personal data or approve a grant
    /// ([`Principal::data_capable`]).
    pub fn data_capable(&self) -> bool {
        (self.dual() && self.approved_at != 0) || self.granted_via == VIA_ROOT_KEY
    }
}

/// A newly issued token, shown once.
pub struct IssuedToken(SecretString);

impl IssuedToken {
    /// The token's text, to hand to its holder.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedToken(..)")
    }
}

/// Checks a principal name: 1 to 128 characters of `[A-Za-z0-9._:@/-]`.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 128 {
        return Err("name must be 1 to 128 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".:_@/-".contains(&b))
    {
        return Err("name may contain only letters, digits and . _ : @ / -");
    }
    Ok(())
}

/// Checks a role name: 1 to 64 characters of `[a-z0-9_]`.
pub fn check_role(role: &str) -> Result<(), &'static str> {
    if role.is_empty()
        || role.len() > 64
        || !role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("role must be 1 to 64 characters of a-z, 0-9 and _");
    }
    Ok(())
}

/// The secret of a token: whole, or the two parts of a dual-control grant.
pub(crate) enum Secret {
    Whole(Zeroizing<Vec<u8>>),
    Parts(Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>),
}

fn decode_exact(text: &str, len: usize) -> Option<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(text).ok()?);
    (bytes.len() == len).then_some(bytes)
}

/// The id and secret of a well-formed token.
pub(crate) fn parse(token: &str) -> Option<(&str, Secret)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    if id.len() != ID_LEN {
        return None;
    }
    URL_SAFE_NO_PAD.decode(id).ok()?;
    match secret.len() {
        SECRET_LEN => Some((id, Secret::Whole(decode_exact(secret, 32)?))),
        n if n == 2 * PART_LEN => {
            let (a, b) = (secret.get(..PART_LEN)?, secret.get(PART_LEN..)?);
            Some((
                id,
                Secret::Parts(decode_exact(a, 16)?, decode_exact(b, 16)?),
            ))
        }
        _ => None,
    }
}

/// The credential id a token names, if its first two parts are well-formed
/// (`vt1.` and 16 base64url characters): what failures are counted by,
/// read without decoding or checking the secret. Public, never a secret.
pub fn credential_id(token: &str) -> Option<&str> {
    let (id, _) = token.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
    (id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(id)
}

/// The id under which part `n` (1: the requester's, 2: the approver's) of a
/// two-part token is hashed (ids have no `.`, so it is no other id).
fn part_id(id: &str, n: u8) -> String {
    format!("{id}.{n}")
}

/// One credential in memory: its record and the principal it stands for
/// (built once, shared by every request that presents it).
#[derive(Debug, Clone)]
struct Issued {
    record: Arc<CredentialRecord>,
    principal: Arc<Principal>,
}

impl Issued {
    fn new(record: Arc<CredentialRecord>) -> Self {
        let principal = Arc::new(Principal {
            name: Arc::from(record.name.as_str()),
            role: Arc::from(record.role.as_str()),
            method: AuthMethod::Bearer,
            credential_id: Some(Arc::from(record.id.as_str())),
            data_capable: record.data_capable(),
        });
        Self { record, principal }
    }
}

/// The issued credentials.
pub struct CredentialStore {
    store: Arc<dyn Store>,
    key: Arc<CredentialKey>,
    records: RwLock<HashMap<String, Issued>>,
    /// Held while a grant is approved or rejected, so one decision counts.
    change: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialStore(..)")
    }
}

impl CredentialStore {
    /// Loads every credential from `store`, checking each record's MAC
    /// under `key`, after replaying the revocation journal
    /// ([`replay_revocations`]).
    pub fn open(store: Arc<dyn Store>, key: Arc<CredentialKey>) -> Result<Self> {
        let (batch, revoked_again) = replay_revocations(store.as_ref())?;
        if !batch.is_empty() {
            // Replaying is idempotent: a start that loses this write redoes it.
            store.apply(batch)?;
        }
        if revoked_again > 0 {
            tracing::warn!(
                credentials = revoked_again,
                "revoked credentials the revocation journal records"
            );
        }
        let records = load_all(store.as_ref(), &key)?;
        Ok(Self {
            store,
            key,
            records: RwLock::new(records),
            change: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads credential `id` again from the store (another node issued,
    /// approved or revoked it); one that is gone or fails its MAC is
    /// dropped (refused from now on).
    pub fn refresh(&self, id: &str) {
        let loaded = self
            .store
            .get(&keys::credential(id))
            .map_err(Error::from)
            .and_then(|b| b.map(|b| load_record(&self.key, &b)).transpose())
            .and_then(|r| match r {
                Some(mut r) => self.keep_revoked(&mut r).map(|()| Some(r)),
                None => Ok(None),
            });
        match loaded {
            Ok(Some(r)) if r.id == id => {
                self.write().insert(r.id.clone(), Issued::new(Arc::new(r)));
            }
            Ok(_) => {
                self.write().remove(id);
            }
            Err(e) => {
                self.write().remove(id);
                tracing::error!(error = %e, "a credential another node changed could not be read: refused here until it can");
            }
        }
    }

    /// Reads every credential again (another node changed an unknown
    /// set); on failure, keeps what it had and says so.
    pub fn refresh_all(&self) {
        match load_all(self.store.as_ref(), &self.key) {
            Ok(records) => *self.write() = records,
            Err(e) => {
                tracing::error!(error = %e, "could not read the credentials again");
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Issued>> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Issued>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The principal a bearer token stands for at time `now`, or why it
    /// is refused (malformed, unknown id, wrong secret, not approved,
    /// revoked, expired: for the log only; the caller is told "invalid
    /// credentials" whatever the reason).
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Principal>, &'static str> {
        let Some((id, secret)) = parse(token) else {
            return Err("malformed");
        };
        let key = &self.key;
        let Some(Issued { record, principal }) = self.read().get(id).cloned() else {
            return Err("unknown id");
        };
        let right = match (&secret, record.dual()) {
            (Secret::Whole(s), false) => ct_eq(&key.hash(id, s), &record.hash),
            (Secret::Parts(a, b), true) => {
                // Both parts are checked, whatever the first gives.
                let first = ct_eq(&key.hash(&part_id(id, 1), a), &record.hash);
                let second = ct_eq(&key.hash(&part_id(id, 2), b), &record.approval_hash);
                first & second
            }
            _ => false,
        };
        if !right {
            return Err("wrong secret");
        }
        // One rule for what a token is now, the one List shows.
        match record.state(now) {
            "active" => Ok(principal),
            "pending" => Err("grant not approved"),
            other => Err(other),
        }
    }

    /// Issues a token as `who` says: at once by one principal
    /// ([`VIA_SINGLE`], only for roles that see no personal data: the caller
    /// has checked that with [`crate::policy::PolicyEngine::data_role`]), by
    /// the root key's holder ([`VIA_ROOT_KEY`], `vaultd officer`), or as a
    /// pending request for a data role ([`VIA_DUAL_CONTROL`]) that another
    /// principal approves ([`CredentialStore::approve`]) within
    /// [`GRANT_REQUEST_TTL_SECS`], the token returned then being its first
    /// part only. With `audit`, its event is durable before the token is
    /// stored.
    pub async fn issue(
        &self,
        who: &Issue<'_>,
        now: i64,
        audit: Option<Audited<'_>>,
    ) -> Result<(Arc<CredentialRecord>, IssuedToken)> {
        self.create_with(who, now, Batch::new(), audit).await
    }

    async fn create_with(
        &self,
        who: &Issue<'_>,
        now: i64,
        batch: Batch,
        audit: Option<Audited<'_>>,
    ) -> Result<(Arc<CredentialRecord>, IssuedToken)> {
        let Issue {
            name,
            role,
            ttl_secs,
            created_by,
            via,
        } = *who;
        let dual = via == VIA_DUAL_CONTROL;
        let id = URL_SAFE_NO_PAD.encode(random_array::<12>().map_err(rand_error)?);
        let (hash, text) = if dual {
            let part = Zeroizing::new(random_array::<16>().map_err(rand_error)?);
            let hash = self.key.hash(&part_id(&id, 1), part.as_ref());
            let text = format!(
                "{TOKEN_PREFIX}{id}.{}",
                URL_SAFE_NO_PAD.encode(part.as_ref())
            );
            (hash, Zeroizing::new(text))
        } else {
            let secret = Zeroizing::new(random_array::<32>().map_err(rand_error)?);
            let hash = self.key.hash(&id, secret.as_ref());
            let text = format!(
                "{TOKEN_PREFIX}{id}.{}",
                URL_SAFE_NO_PAD.encode(secret.as_ref())
            );
            (hash, Zeroizing::new(text))
        };
        let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let record = CredentialRecord {
            id: id.clone(),
            name: name.to_owned(),
            role: role.to_owned(),
            created_at: now,
            // A pending grant's life starts at its approval.
            expires_at: if dual { 0 } else { now.saturating_add(ttl) },
            revoked_at: 0,
            created_by: created_by.to_owned(),
            hash: hash.to_vec(),
            granted_via: via.to_owned(),
            approval_deadline: if dual {
                now.saturating_add(GRANT_REQUEST_TTL_SECS)
            } else {
                0
            },
            ttl_secs,
            ..Default::default()
        };
        let detail = if dual {
            format!(
                "id {} name {} role {} requested; approve by {}",
                record.id, record.name, record.role, record.approval_deadline
            )
        } else {
            format!(
                "id {} name {} role {} expires_at {} granted_via {}",
                record.id, record.name, record.role, record.expires_at, via
            )
        };
        let record = self.put_in(batch, record, detail, audit).await?;
        Ok((record, IssuedToken(SecretString::from(text.as_str()))))
    }

    /// The credential `id`, as stored now.
    pub fn get(&self, id: &str) -> Option<Arc<CredentialRecord>> {
        self.read().get(id).map(|i| i.record.clone())
    }

    /// Approves the pending grant `id` by `approver` at `now`: its life
    /// starts, and the token's second part is returned (shown once). The
    /// caller has checked who may approve; this checks that the grant is
    /// still pending, under a lock, so that only one approval counts.
    pub async fn approve(
        &self,
        id: &str,
        approver: &str,
        now: i64,
        audit: Option<Audited<'_>>,
    ) -> Result<(Arc<CredentialRecord>, IssuedToken)> {
        let _one = self.change.lock().await;
        let (current, stored) = self.current(id, "grant")?;
        if !current.pending(now) {
            return Err(Error::FailedPrecondition(
                "the grant is not pending (approved, rejected, revoked or past its approval time)",
            ));
        }
        let part = Zeroizing::new(random_array::<16>().map_err(rand_error)?);
        let mut record = CredentialRecord::clone(&current);
        record.approval_hash = self.key.hash(&part_id(id, 2), part.as_ref()).to_vec();
        record.approved_by = approver.to_owned();
        record.approved_at = now;
        record.expires_at = now.saturating_add(i64::try_from(record.ttl_secs).unwrap_or(i64::MAX));
        let detail = format!(
            "id {} name {} role {} approved; requested by {}; expires_at {}",
            record.id, record.name, record.role, record.created_by, record.expires_at
        );
        let record = self.put(record, stored, detail, audit).await?;
        let text = URL_SAFE_NO_PAD.encode(part.as_ref());
        Ok((record, IssuedToken(SecretString::from(text))))
    }

    /// Rejects (or, by its requester, withdraws) the pending grant `id`.
    pub async fn reject(
        &self,
        id: &str,
        reason: &str,
        now: i64,
        audit: Option<Audited<'_>>,
    ) -> Result<Arc<CredentialRecord>> {
        let _one = self.change.lock().await;
        let (current, stored) = self.current(id, "grant")?;
        if !current.pending(now) {
            return Err(Error::FailedPrecondition(
                "the grant is not pending (approved, rejected, revoked or past its approval time)",
            ));
        }
        let mut record = CredentialRecord::clone(&current);
        record.rejected = true;
        record.revoked_at = now;
        let detail = format!(
            "id {} name {} role {} rejected; requested by {}; reason: {reason}",
            record.id, record.name, record.role, record.created_by
        );
        self.put(record, stored, detail, audit).await
    }

    /// Credential `id` (`what` names it in a `NOT_FOUND`) as a change starts
    /// from it, and, on a store several nodes share, the stored bytes it was
    /// read from (the change then holds only if they are unchanged: an
    /// approval on one node cannot write back a grant another node rejected
    /// or revoked meanwhile). On such a store it is read from the store,
    /// not memory, which another node's change may not have reached yet.
    fn current(
        &self,
        id: &str,
        what: &'static str,
    ) -> Result<(Arc<CredentialRecord>, Option<Vec<u8>>)> {
        if !self.store.shared() {
            return Ok((self.get(id).ok_or(Error::NotFound(what))?, None));
        }
        let bytes = self
            .store
            .get(&keys::credential(id))?
            .ok_or(Error::NotFound(what))?;
        let mut record = load_record(&self.key, &bytes)?;
        self.keep_revoked(&mut record)?;
        let record = Arc::new(record);
        self.write()
            .insert(record.id.clone(), Issued::new(record.clone()));
        Ok((record, Some(bytes)))
    }

    /// A record the revocation journal names stays revoked, whatever the
    /// record itself says (a record written back unrevoked, by a race or
    /// by hand, does not bring the credential back).
    fn keep_revoked(&self, record: &mut CredentialRecord) -> Result<()> {
        if record.revoked_at == 0
            && let Some(at) = self.store.get(&keys::revoked(&record.id))?
        {
            record.revoked_at = at
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .unwrap_or(1)
                .max(1);
        }
        Ok(())
    }

    /// Stores a changed `record` (its event, with `detail`, durable first)
    /// and keeps the memory copy in step. A revoked (or rejected) record
    /// gets its revocation journal entry in the same batch, first: a crash
    /// between the two leaves a revocation the next start finishes, and a
    /// restored older backup cannot bring the credential back.
    async fn put(
        &self,
        record: CredentialRecord,
        stored: Option<Vec<u8>>,
        detail: String,
        audit: Option<Audited<'_>>,
    ) -> Result<Arc<CredentialRecord>> {
        let mut batch = Batch::new();
        if let Some(stored) = stored {
            batch.expect(keys::credential(&record.id), stored);
        }
        self.put_in(batch, record, detail, audit).await
    }

    /// [`CredentialStore::put`] with `batch` written in the same commit.
    async fn put_in(
        &self,
        mut batch: Batch,
        mut record: CredentialRecord,
        detail: String,
        audit: Option<Audited<'_>>,
    ) -> Result<Arc<CredentialRecord>> {
        record.mac = record_mac(&self.key, &record).to_vec();
        if record.revoked_at != 0 {
            batch.put(
                keys::revoked(&record.id),
                record.revoked_at.to_be_bytes().to_vec(),
            );
        }
        batch.put(keys::credential(&record.id), record.encode_to_vec());
        let write = async { self.store.commit(batch).await.map_err(Error::from) };
        let audit = audit.map(|mut a| {
            a.event.detail = detail;
            a
        });
        journal::commit(audit, write).await?;
        let record = Arc::new(record);
        self.write()
            .insert(record.id.clone(), Issued::new(record.clone()));
        Ok(record)
    }

    /// Issues the bootstrap operator token if none was ever issued.
    pub async fn bootstrap(&self, now: i64) -> Result<Option<IssuedToken>> {
        // Only on a store that never held a credential: deleting the marker
        // outside the vault does not mint a new operator token.
        if self.store.get(keys::BOOTSTRAPPED)?.is_some() || !self.read().is_empty() {
            return Ok(None);
        }
        let mut batch = Batch::new();
        // (Inserted: of nodes starting at once on an empty shared store,
        // one issues the token.)
        batch.insert(keys::BOOTSTRAPPED, now.to_be_bytes().to_vec());
        let created = self
            .create_with(
                &Issue {
                    name: BOOTSTRAP_NAME,
                    role: "operator",
                    ttl_secs: BOOTSTRAP_TTL_SECS,
                    created_by: "vaultd",
                    via: VIA_SINGLE,
                },
                now,
                batch,
                None,
            )
            .await;
        match created {
            Ok((_, token)) => Ok(Some(token)),
            Err(Error::Aborted(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The principal of the newest valid (unrevoked, unexpired at `now`)
    /// token issued to `name`.
    pub fn newest_valid(&self, name: &str, now: i64) -> Option<Arc<Principal>> {
        self.read()
            .values()
            .filter(|i| i.record.name == name && i.record.state(now) == "active")
            .max_by(|a, b| {
                (a.record.created_at, &a.record.id).cmp(&(b.record.created_at, &b.record.id))
            })
            .map(|i| i.principal.clone())
    }

    /// How many grants `requester` has waiting for approval at `now`.
    pub fn pending_by(&self, requester: &str, now: i64) -> usize {
        self.read()
            .values()
            .filter(|i| i.record.created_by == requester && i.record.pending(now))
            .count()
    }

    /// Every credential, oldest first.
    pub fn list(&self) -> Vec<Arc<CredentialRecord>> {
        let mut all: Vec<_> = self.read().values().map(|i| i.record.clone()).collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    /// Revokes credential `id` at `now`; revoking twice keeps the first time.
    /// With `audit`, its event is durable before the change.
    pub async fn revoke(
        &self,
        id: &str,
        now: i64,
        audit: Option<Audited<'_>>,
    ) -> Result<Arc<CredentialRecord>> {
        // Under the same lock as approvals: an approval that read the record
        // before this revocation cannot write it back unrevoked after it.
        let _one = self.change.lock().await;
        let (current, stored) = self.current(id, "credential")?;
        if current.revoked_at != 0 {
            if let Some(mut a) = audit {
                a.event.detail =
                    format!("id {} name {} (already revoked)", current.id, current.name);
                journal::commit(Some(a), async { Ok(()) }).await?;
            }
            return Ok(current);
        }
        let mut record = CredentialRecord::clone(&current);
        record.revoked_at = now;
        let detail = format!("id {} name {}", record.id, record.name);
        self.put(record, stored, detail, audit).await
    }
}

/// A stored credential record, its MAC checked under `key`.
fn load_record(key: &CredentialKey, bytes: &[u8]) -> Result<CredentialRecord> {
    let mut r = CredentialRecord::decode(bytes).map_err(|e| Error::decode("credential", e))?;
    if r.mac.is_empty() {
        // From before record MACs: a single grant, whatever it says.
        r.granted_via = VIA_SINGLE.to_owned();
    } else if !ct_eq(&r.mac, &record_mac(key, &r)) {
        return Err(Error::state(format!(
            "credential record {} fails its MAC: it was edited outside the vault; restore the data directory from a backup, and find out who edited it",
            r.id
        )));
    }
    Ok(r)
}

/// Every stored credential record, MACs checked; one the revocation
/// journal names is revoked whatever it says.
fn load_all(store: &dyn Store, key: &CredentialKey) -> Result<HashMap<String, Issued>> {
    let mut revoked = HashMap::new();
    for (k, at) in store.scan_prefix(keys::REVOKED_PREFIX, usize::MAX)? {
        if let Some(id) = k.strip_prefix(keys::REVOKED_PREFIX) {
            let at = at
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .unwrap_or(1);
            revoked.insert(id.to_vec(), at.max(1));
        }
    }
    let mut records = HashMap::new();
    for (_, bytes) in store.scan_prefix(keys::CREDENTIAL_PREFIX, usize::MAX)? {
        let mut r = load_record(key, &bytes)?;
        if r.revoked_at == 0
            && let Some(at) = revoked.get(r.id.as_bytes())
        {
            r.revoked_at = *at;
        }
        records.insert(r.id.clone(), Issued::new(Arc::new(r)));
    }
    Ok(records)
}

/// Brings the credentials in `store` and the revocation journal into line:
/// a credential the journal names that is not revoked (a restored backup
/// older than the revocation, or a crash between the two writes) is revoked
/// at the journal's time, and a revoked credential without a journal entry
/// (revoked before the journal existed) gets one. Returns the batch to
/// write and how many credentials it revokes again.
pub fn replay_revocations(store: &dyn crate::store::Store) -> Result<(Batch, u64)> {
    let damaged = || Error::state("damaged revocation journal entry");
    let mut batch = Batch::new();
    let mut journal = HashMap::new();
    for (key, value) in store.scan_prefix(keys::REVOKED_PREFIX, usize::MAX)? {
        let id = key
            .strip_prefix(keys::REVOKED_PREFIX)
            .and_then(|s| std::str::from_utf8(s).ok())
            .ok_or_else(damaged)?;
        let at = <[u8; 8]>::try_from(value.as_slice()).map_err(|_| damaged())?;
        journal.insert(id.to_owned(), i64::from_be_bytes(at));
    }
    let mut again = 0;
    for (key, bytes) in store.scan_prefix(keys::CREDENTIAL_PREFIX, usize::MAX)? {
        let mut r = CredentialRecord::decode(bytes.as_slice())
            .map_err(|e| Error::decode("credential", e))?;
        match (journal.get(&r.id), r.revoked_at) {
            (Some(&at), 0) => {
                r.revoked_at = at.max(1);
                batch.put(key, r.encode_to_vec());
                again += 1;
            }
            (None, at) if at != 0 => batch.put(keys::revoked(&r.id), at.to_be_bytes().to_vec()),
            _ => {}
        }
    }
    Ok((batch, again))
}

/// Who a new token is for, and how it is granted.
#[derive(Debug, Clone, Copy)]
pub struct Issue<'a> {
    /// The principal's name.
    pub name: &'a str,
    /// Its role.
    pub role: &'a str,
    /// Its life in seconds (from the approval, for a dual-control grant).
    pub ttl_secs: u64,
    /// Who issues (or requests) it.
    pub created_by: &'a str,
    /// [`VIA_SINGLE`], [`VIA_DUAL_CONTROL`] or [`VIA_ROOT_KEY`].
    pub via: &'static str,
}

fn rand_error(e: crate::crypto::CryptoError) -> Error {
    crate::error::Internal::Randomness(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_well_formed_tokens() {
        let id = "A".repeat(16);
        let secret = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert!(parse(&format!("vt1.{id}.{secret}")).is_some());
        assert!(parse(&format!("vt2.{id}.{secret}")).is_none());
        assert!(parse(&format!("vt1.{id}{secret}")).is_none());
        assert!(parse(&format!("vt1.{id}.{}", &secret[1..])).is_none());
        assert!(parse(&format!("vt1.{id}.{secret}=")).is_none());
        assert!(parse("").is_none());
        // Two parts of 16 bytes each, one after the other.
        let part = URL_SAFE_NO_PAD.encode([9u8; 16]);
        assert!(matches!(
            parse(&format!("vt1.{id}.{part}{part}")),
            Some((_, Secret::Parts(..)))
        ));
        assert!(parse(&format!("vt1.{id}.{part}")).is_none());
        assert!(parse(&format!("vt1.{id}.{part}{part}A")).is_none());
        assert!(parse(&format!("vt1.{id}.{part}!{}", &part[1..])).is_none());
    }

    #[test]
    fn names_and_roles() {
        assert!(check_name("alice@travel.example").is_ok());
        assert!(check_name("spiffe://travel.example/booking").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_role("billing_clerk").is_ok());
        assert!(check_role("Billing").is_err());
    }

    /// The journal revokes what it names, and a revocation without an
    /// entry gets one; a second replay has nothing to do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocation_journal_replays_both_ways() {
        use crate::store::Store;
        use crate::store::sled::{Durability, SledStore};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20, Durability::Flush).unwrap();
        let record = |id: &str, revoked_at| CredentialRecord {
            id: id.into(),
            name: format!("{id}-name"),
            revoked_at,
            expires_at: i64::MAX,
            ..Default::default()
        };
        let mut b = Batch::new();
        b.put(keys::credential("a"), record("a", 0).encode_to_vec());
        b.put(keys::revoked("a"), 42i64.to_be_bytes().to_vec());
        b.put(keys::credential("b"), record("b", 43).encode_to_vec());
        b.put(keys::credential("c"), record("c", 0).encode_to_vec());
        store.commit(b).await.unwrap();
        let (batch, again) = replay_revocations(&store).unwrap();
        assert_eq!(again, 1);
        store.commit(batch).await.unwrap();
        let get = |id: &str| {
            CredentialRecord::decode(
                store
                    .get(&keys::credential(id))
                    .unwrap()
                    .unwrap()
                    .as_slice(),
            )
            .unwrap()
        };
        assert_eq!(get("a").revoked_at, 42);
        assert_eq!(get("c").revoked_at, 0);
        assert_eq!(
            store.get(&keys::revoked("b")).unwrap().unwrap(),
            43i64.to_be_bytes()
        );
        assert!(store.get(&keys::revoked("c")).unwrap().is_none());
        let (batch, again) = replay_revocations(&store).unwrap();
        assert!(batch.is_empty());
        assert_eq!(again, 0);
    }

    #[test]
    fn issued_token_debug_is_redacted() {
        let t = IssuedToken(SecretString::from("vt1.secret"));
        assert!(!format!("{t:?}").contains("secret"));
    }
}
