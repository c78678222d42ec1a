//! Proto decoding (prost, as tonic decodes each request): every request
//! message of `proto/vault/v1/*.proto`, and the messages the vault and
//! vaultctl read back from disk or from a file (audit records, events and
//! checkpoints, erasure receipts, credential and subject records). The
//! first byte picks the type.
//!
//! Properties: decoding never panics; a message that decodes re-encodes to
//! `encoded_len` bytes, decodes again to an equal message, and encodes the
//! same way twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vault_proto::v1 as pb;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    let Ok(m) = M::decode(bytes) else {
        return;
    };
    let encoded = m.encode_to_vec();
    assert_eq!(encoded.len(), m.encoded_len());
    let again = M::decode(encoded.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, m);
    assert_eq!(again.encode_to_vec(), encoded);
}

/// Every type the target decodes, in the order the first byte picks them.
macro_rules! types {
    ($($t:ty),* $(,)?) => {
        const DECODERS: &[fn(&[u8])] = &[$(round_trip::<$t>),*];
    };
}

types!(
    pb::ApproveGrantRequest,
    pb::BackupRequest,
    pb::CreatePrincipalRequest,
    pb::DetokenizeRequest,
    pb::EraseRequest,
    pb::ExplainRequest,
    pb::ExportRequest,
    pb::KeyCompromisedRequest,
    pb::LifecycleReportRequest,
    pb::LinkCompanionRequest,
    pb::ListPrincipalsRequest,
    pb::LookupRequest,
    pb::PublicKeyRequest,
    pb::QueryRequest,
    pb::RejectGrantRequest,
    pb::ReloadPolicyRequest,
    pb::RestrictRequest,
    pb::RetireKeyRequest,
    pb::RevokePrincipalRequest,
    pb::RotateKeysRequest,
    pb::SealRequest,
    pb::SetConsentRequest,
    pb::SetLegalHoldRequest,
    pb::StatusRequest,
    pb::SubjectExportRequest,
    pb::SweepRequest,
    pb::TokenizeRequest,
    pb::UnsealRequest,
    pb::UpdateRequest,
    pb::VerifyRequest,
    pb::WhoAmIRequest,
    pb::AuditRecord,
    pb::AuditEvent,
    pb::Checkpoint,
    pb::ErasureReceipt,
    pb::ErasureReceiptBody,
    vault::auth::credentials::CredentialRecord,
    vault::engine::records::SubjectRecord,
);

fuzz_target!(|data: &[u8]| {
    let Some((pick, bytes)) = data.split_first() else {
        return;
    };
    DECODERS[usize::from(*pick) % DECODERS.len()](bytes);
});
