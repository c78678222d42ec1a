//! A root key that lives in a PKCS#11 token (an HSM; SoftHSM in tests).
//!
//! The key is an AES-256 secret key object made inside the token, marked
//! sensitive and not extractable: its bytes never leave the token. The
//! vault asks the token to seal and open KEKs and the derivation seed with
//! `CKM_AES_GCM`, in the same envelope format as a root key held in memory
//! (format byte, key version 0, 96-bit nonce, ciphertext and tag; the header
//! and a context are the AAD), so stores need no other layout.

use super::envelope::{self, HEADER_LEN, NONCE_LEN, OVERHEAD};
use super::{CryptoError, random_array};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// Where the root key is: the PKCS#11 module, the token and the key's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmSettings {
    /// The PKCS#11 module (shared library), e.g.
    /// `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: std::path::PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The root key object's label in the token.
    pub key_label: String,
}

/// Why the HSM could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The PKCS#11 library or token failed (the module's error code).
    #[error("HSM: {0}")]
    Pkcs11(String),
    /// No token has that label.
    #[error("HSM: no token labelled {0:?}")]
    NoToken(String),
    /// The token has no root key of that label.
    #[error("HSM: the token has no key labelled {0:?}")]
    NoKey(String),
}

fn p11(e: cryptoki::error::Error) -> HsmError {
    HsmError::Pkcs11(e.to_string())
}

/// An open session on the token, logged in, and the root key's handle.
pub struct HsmRoot {
    session: Mutex<Session>,
    key: ObjectHandle,
    // Kept last: the library must outlive the session.
    _context: Pkcs11,
}

impl std::fmt::Debug for HsmRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HsmRoot(..)")
    }
}

impl HsmRoot {
    /// Opens the token of `settings`, logs in with `pin` and finds the root
    /// key; with `create`, makes it in the token if it is not there.
    pub fn open(settings: &HsmSettings, pin: &str, create: bool) -> Result<Self, HsmError> {
        let context = Pkcs11::new(&settings.module).map_err(p11)?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(p11)?;
        let slot = context
            .get_slots_with_token()
            .map_err(p11)?
            .into_iter()
            .find(|s| {
                context
                    .get_token_info(*s)
                    .is_ok_and(|t| t.label().trim_end() == settings.token_label)
            })
            .ok_or_else(|| HsmError::NoToken(settings.token_label.clone()))?;
        let session = context.open_rw_session(slot).map_err(p11)?;
        session
            .login(UserType::User, Some(&AuthPin::from(pin.to_owned())))
            .map_err(p11)?;
        let label = settings.key_label.as_bytes().to_vec();
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.clone()),
            ])
            .map_err(p11)?;
        let key = match found.first() {
            Some(k) => *k,
            None if create => session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Label(label),
                    ],
                )
                .map_err(p11)?,
            None => return Err(HsmError::NoKey(settings.key_label.clone())),
        };
        Ok(Self {
            session: Mutex::new(session),
            key,
            _context: context,
        })
    }

    /// Seals `secret` in the token (AES-256-GCM), key version 0.
    pub(crate) fn wrap(&self, context: &[u8], secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce: [u8; NONCE_LEN] = random_array()?;
        let mut out = Vec::with_capacity(secret.len() + OVERHEAD);
        out.extend_from_slice(&envelope::header(0));
        out.extend_from_slice(&nonce);
        let aad = envelope::aad(&out[..HEADER_LEN], context);
        let params = GcmParams::new(&mut nonce, &aad, 128.into())
            .map_err(|_| CryptoError::Internal("AES-GCM parameters for the HSM"))?;
        let sealed = self
            .session
            .lock()
            .map_err(|_| CryptoError::Internal("HSM session lock poisoned"))?
            .encrypt(&Mechanism::AesGcm(params), self.key, secret)
            .map_err(|_| CryptoError::EncryptionFailed)?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`HsmRoot::wrap`] sealed.
    pub(crate) fn unwrap(
        &self,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (header, nonce, ct) = envelope::split(sealed).ok_or(CryptoError::DecryptionFailed)?;
        let mut nonce = nonce.to_vec();
        let aad = envelope::aad(header, context);
        let params = GcmParams::new(&mut nonce, &aad, 128.into())
            .map_err(|_| CryptoError::Internal("AES-GCM parameters for the HSM"))?;
        let plain = self
            .session
            .lock()
            .map_err(|_| CryptoError::Internal("HSM session lock poisoned"))?
            .decrypt(&Mechanism::AesGcm(params), self.key, ct)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        Ok(Zeroizing::new(plain))
    }
}
