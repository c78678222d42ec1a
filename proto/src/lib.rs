//! The vault's gRPC contract, package `vault.v1`, generated from `proto/vault/v1/*.proto`.
//!
//! The `.proto` files are the single source of truth; this crate only compiles
//! them (with protox, no `protoc`) and exposes the encoded descriptor set so the
//! server can answer gRPC reflection.

#![forbid(unsafe_code)]
#![allow(missing_docs, missing_debug_implementations)]

/// Package `vault.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("vault.v1");
}

/// Messages that carry personal or card data in clear wipe it when they are
/// dropped: a Detokenize answer, a subject export, and the values of the
/// requests that store, correct or look one up. Whoever owns the message
/// (the vault until tonic has encoded it, a client once it has decoded it)
/// leaves no copy of the value behind in freed memory. (The bytes of the
/// encoded message are the transport's: see docs/security.md.)
mod wipe {
    use super::v1;
    use zeroize::Zeroize;

    macro_rules! wipe_on_drop {
        ($($ty:ident . $field:ident),* $(,)?) => {$(
            impl Drop for v1::$ty {
                fn drop(&mut self) {
                    self.$field.zeroize();
                }
            }
            impl zeroize::ZeroizeOnDrop for v1::$ty {}
        )*};
    }

    wipe_on_drop!(
        Disclosed.value,
        SubjectExportResponse.json,
        FieldValue.value,
        UpdateRequest.value,
        LookupRequest.value,
    );
}

/// Encoded `FileDescriptorSet` of every `vault.v1` file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vault_descriptor.bin"));

/// The audit trail's hash chain and checkpoint messages: fixed by the
/// protocol, shared by the vault (which writes them) and by anyone who
/// verifies an export offline.
pub mod audit {
    /// Domain separation of the chain hash.
    pub const CHAIN_LABEL: &[u8] = b"vault/v1/audit";
    /// Domain separation of checkpoint signatures.
    pub const CHECKPOINT_LABEL: &[u8] = b"vault/v1/audit-checkpoint";

    /// `SHA-256(CHAIN_LABEL ‖ prev ‖ event)`: the chain hash of an encoded
    /// event after the hash `prev` (32 zero bytes before the first event).
    pub fn chain_hash(prev: &[u8; 32], event: &[u8]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(CHAIN_LABEL);
        ctx.update(prev);
        ctx.update(event);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The message a checkpoint signs: `CHECKPOINT_LABEL ‖ seq (u64 BE) ‖ hash`.
    pub fn checkpoint_message(seq: u64, hash: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(CHECKPOINT_LABEL.len() + 8 + hash.len());
        m.extend_from_slice(CHECKPOINT_LABEL);
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(hash);
        m
    }

    /// Whether `signature` is the checkpoint key `public_key`'s signature of
    /// `(seq, hash)`.
    pub fn verify_checkpoint(public_key: &[u8], seq: u64, hash: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
            .verify(&checkpoint_message(seq, hash), signature)
            .is_ok()
    }

    /// Domain separation of the signature that ends an export.
    pub const EXPORT_LABEL: &[u8] = b"vault/v1/audit-export";

    /// The message the checkpoint ending an export signs: `EXPORT_LABEL ‖
    /// after_seq (u64 BE) ‖ start_prev_hash ‖ seq (u64 BE) ‖ hash ‖
    /// time_unix_micros (i64 BE)`: the export's start (the sequence number and
    /// chain hash before its first event) bound to its end, so that a cut
    /// start is found offline.
    pub fn export_message(
        after_seq: u64,
        start_prev_hash: &[u8],
        seq: u64,
        hash: &[u8],
        time_unix_micros: i64,
    ) -> Vec<u8> {
        let mut m =
            Vec::with_capacity(EXPORT_LABEL.len() + 24 + start_prev_hash.len() + hash.len());
        m.extend_from_slice(EXPORT_LABEL);
        m.extend_from_slice(&after_seq.to_be_bytes());
        m.extend_from_slice(start_prev_hash);
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(hash);
        m.extend_from_slice(&time_unix_micros.to_be_bytes());
        m
    }

    /// Whether `c` is the checkpoint of an export (its start, end and time)
    /// signed by the checkpoint key `public_key`: both its chain checkpoint
    /// signature and its export signature check out, and both hashes are
    /// 32 bytes.
    pub fn verify_export_checkpoint(public_key: &[u8], c: &crate::v1::Checkpoint) -> bool {
        c.hash.len() == 32
            && c.start_prev_hash.len() == 32
            && verify_checkpoint(public_key, c.seq, &c.hash, &c.signature)
            && ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
                .verify(
                    &export_message(
                        c.start_after_seq,
                        &c.start_prev_hash,
                        c.seq,
                        &c.hash,
                        c.time_unix_micros,
                    ),
                    &c.export_signature,
                )
                .is_ok()
    }
}

/// Erasure receipts: the message the vault signs, shared with anyone who
/// verifies a receipt offline (`vaultctl subject verify-receipt`).
pub mod receipt {
    /// Domain separation of erasure receipt signatures.
    pub const ERASURE_LABEL: &[u8] = b"vault/v1/erasure-receipt\0";

    /// The message an erasure receipt signs: `ERASURE_LABEL ‖ body`.
    pub fn erasure_message(body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(ERASURE_LABEL.len() + body.len());
        m.extend_from_slice(ERASURE_LABEL);
        m.extend_from_slice(body);
        m
    }

    /// The receipt's body, if `signature` is the vault key `public_key`'s
    /// signature of it.
    pub fn verify_erasure(
        public_key: &[u8],
        receipt: &crate::v1::ErasureReceipt,
    ) -> Option<crate::v1::ErasureReceiptBody> {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
            .verify(&erasure_message(&receipt.body), &receipt.signature)
            .ok()?;
        prost::Message::decode(receipt.body.as_slice()).ok()
    }
}
