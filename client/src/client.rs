//! [`VaultClient`]: one connection to a vault, a typed method per RPC, the
//! bearer token sent (marked sensitive) on every call.

use crate::{ClientError, TlsOptions, endpoint_uri, is_plaintext_addr, proto};
use proto::audit_service_client::AuditServiceClient;
use proto::policy_service_client::PolicyServiceClient;
use proto::principal_service_client::PrincipalServiceClient;
use proto::subject_service_client::SubjectServiceClient;
use proto::system_service_client::SystemServiceClient;
use proto::token_service_client::TokenServiceClient;
use proto::{
    ApproveGrantRequest, ApproveGrantResponse, CreatePrincipalRequest, CreatePrincipalResponse,
    DetokenizeRequest, Disclosed, ExplainRequest, ExplainResponse, FieldToken, FieldValue,
    ListPrincipalsRequest, LookupRequest, PrincipalInfo, RejectGrantRequest, ReloadPolicyRequest,
    ReloadPolicyResponse, RevokePrincipalRequest, SetConsentRequest, SetConsentResponse,
    StatusRequest, StatusResponse, TokenizeRequest, TokenizeResponse, UpdateRequest, WhoAmIRequest,
    WhoAmIResponse,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Largest message the client accepts or sends (above the vault's default
/// 1 MiB request limit, so that the vault itself judges requests).
const MAX_MESSAGE: usize = 8 << 20;

/// A connection to one vault. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct VaultClient {
    tokens: TokenServiceClient<Channel>,
    system: SystemServiceClient<Channel>,
    principals: PrincipalServiceClient<Channel>,
    subjects: SubjectServiceClient<Channel>,
    policies: PolicyServiceClient<Channel>,
    audits: AuditServiceClient<Channel>,
    health: HealthClient<Channel>,
    /// `Bearer <token>`, marked sensitive (never indexed by HPACK).
    bearer: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("bearer", &self.bearer.as_ref().map(|_| "(set)"))
            .finish_non_exhaustive()
    }
}

/// An export of the audit trail, as [`VaultClient::audit_export`] got it.
#[derive(Debug, Clone, Default)]
pub struct AuditExport {
    /// The sequence number before the first event.
    pub after_seq: u64,
    /// The chain hash before the first event.
    pub start_prev_hash: Vec<u8>,
    /// The events.
    pub events: Vec<proto::ExportedEvent>,
    /// The signed checkpoint over the last event.
    pub checkpoint: Option<proto::Checkpoint>,
}

impl VaultClient {
    /// Connects to the vault at `addr` (`host:port` or `http://host:port`).
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, None).await
    }

    /// Connects to the vault at `addr` over TLS if `tls` is given (then
    /// `https://` is used), presenting a client certificate if it has one.
    /// TLS settings with an `http://` address are refused
    /// (`INVALID_ARGUMENT`, nothing sent), never used for a plaintext
    /// connection.
    pub async fn connect_with(addr: &str, tls: Option<&TlsOptions>) -> Result<Self, ClientError> {
        if tls.is_some() && is_plaintext_addr(addr) {
            return Err(ClientError {
                code: tonic::Code::InvalidArgument,
                message: "TLS settings with a plaintext (http://) address: use https://HOST:PORT or HOST:PORT".into(),
                violations: Vec::new(),
            });
        }
        let uri = match tls {
            Some(_) if !addr.contains("://") => format!("https://{addr}"),
            _ => endpoint_uri(addr),
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(ClientError::from)?
            .tcp_nodelay(true);
        if let Some(t) = tls {
            let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&t.ca_pem));
            if let (Some(cert), Some(key)) = (&t.client_cert_pem, &t.client_key_pem) {
                cfg = cfg.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = &t.domain {
                cfg = cfg.domain_name(d.clone());
            }
            endpoint = endpoint.tls_config(cfg)?;
        }
        let channel = endpoint.connect().await?;
        Ok(Self::from_channel(channel))
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            tokens: TokenServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            system: SystemServiceClient::new(channel.clone()),
            principals: PrincipalServiceClient::new(channel.clone()),
            subjects: SubjectServiceClient::new(channel.clone()),
            policies: PolicyServiceClient::new(channel.clone()),
            audits: AuditServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE),
            health: HealthClient::new(channel),
            bearer: None,
        }
    }

    /// This client, sending `token` as its bearer token on every call.
    pub fn with_token(mut self, token: &str) -> Result<Self, ClientError> {
        let mut v: AsciiMetadataValue =
            format!("Bearer {}", token.trim())
                .parse()
                .map_err(|_| ClientError {
                    code: tonic::Code::InvalidArgument,
                    message: "the bearer token has characters a header cannot carry".into(),
                    violations: Vec::new(),
                })?;
        v.set_sensitive(true);
        self.bearer = Some(v);
        Ok(self)
    }

    /// This client without a bearer token (mTLS or nothing).
    pub fn without_token(mut self) -> Self {
        self.bearer = None;
        self
    }

    /// `msg` as a request carrying the bearer token, if any.
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(b) = &self.bearer {
            r.metadata_mut().insert("authorization", b.clone());
        }
        r
    }

    /// Stores `fields` (name, value) of `subject_id`; one token per field, in order.
    pub async fn tokenize(
        &mut self,
        subject_id: &str,
        fields: &[(&str, &str)],
        purposes: &[&str],
        policy_version: &str,
    ) -> Result<Vec<FieldToken>, ClientError> {
        let req = TokenizeRequest {
            subject_id: subject_id.to_owned(),
            fields: fields
                .iter()
                .map(|(f, v)| FieldValue {
                    field: (*f).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
            purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
            policy_version: policy_version.to_owned(),
            travel_end_date: String::new(),
        };
        Ok(self.tokenize_request(req).await?.tokens)
    }

    /// Sends a raw `TokenizeRequest`.
    pub async fn tokenize_request(
        &mut self,
        req: TokenizeRequest,
    ) -> Result<TokenizeResponse, ClientError> {
        let r = self.req(req);
        Ok(self.tokens.tokenize(r).await?.into_inner())
    }

    /// Reveals `tokens` for `purpose`; one result per token, in order.
    pub async fn detokenize<S: AsRef<str>>(
        &mut self,
        tokens: &[S],
        purpose: &str,
    ) -> Result<Vec<Disclosed>, ClientError> {
        let req = DetokenizeRequest {
            tokens: tokens.iter().map(|t| t.as_ref().to_owned()).collect(),
            purpose: purpose.to_owned(),
        };
        let r = self.req(req);
        Ok(self.tokens.detokenize(r).await?.into_inner().values)
    }

    /// The tokens holding exactly `value` in `field`.
    pub async fn lookup(
        &mut self,
        field: &str,
        value: &str,
        purpose: &str,
    ) -> Result<Vec<String>, ClientError> {
        let req = LookupRequest {
            field: field.to_owned(),
            value: value.to_owned(),
            purpose: purpose.to_owned(),
        };
        let r = self.req(req);
        Ok(self.tokens.lookup(r).await?.into_inner().tokens)
    }

    /// Corrects the value behind `token`; returns the new value version.
    pub async fn update(
        &mut self,
        token: &str,
        value: &str,
        purpose: &str,
    ) -> Result<u32, ClientError> {
        let req = UpdateRequest {
            token: token.to_owned(),
            value: value.to_owned(),
            purpose: purpose.to_owned(),
        };
        let r = self.req(req);
        Ok(self.tokens.update(r).await?.into_inner().value_version)
    }

    /// The vault's status.
    pub async fn status(&mut self) -> Result<StatusResponse, ClientError> {
        let r = self.req(StatusRequest {});
        Ok(self.system.status(r).await?.into_inner())
    }

    /// Retention per field class: live, due within `due_within_days`,
    /// overdue, held, shredded (privacy officer, operators).
    pub async fn lifecycle_report(
        &mut self,
        due_within_days: u32,
    ) -> Result<proto::LifecycleReportResponse, ClientError> {
        let r = self.req(proto::LifecycleReportRequest { due_within_days });
        Ok(self.system.lifecycle_report(r).await?.into_inner())
    }

    /// Runs the retention sweeper now (privacy officer, operators).
    pub async fn sweep(&mut self) -> Result<proto::SweepResponse, ClientError> {
        let r = self.req(proto::SweepRequest {});
        Ok(self.system.sweep(r).await?.into_inner())
    }

    /// Submits one custodian's unseal share to a sealed vault; returns the
    /// progress (`sealed`, shares given, threshold).
    pub async fn unseal(&mut self, share: &str) -> Result<proto::UnsealResponse, ClientError> {
        let r = self.req(proto::UnsealRequest {
            share: share.to_owned(),
        });
        Ok(self.system.unseal(r).await?.into_inner())
    }

    /// Streams a backup of the store into `out` (operators); `progress`
    /// sees the bytes so far and the size estimate. Returns the bytes
    /// written.
    pub async fn backup(
        &mut self,
        journal_only: bool,
        out: &mut (impl std::io::Write + Send),
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, ClientError> {
        let r = self.req(proto::BackupRequest { journal_only });
        let mut stream = self.system.backup(r).await?.into_inner();
        let (mut written, mut estimate) = (0u64, 0u64);
        while let Some(chunk) = stream.message().await? {
            if chunk.size_estimate > 0 {
                estimate = chunk.size_estimate;
            }
            out.write_all(&chunk.data).map_err(|e| ClientError {
                code: tonic::Code::Internal,
                message: format!("writing the backup: {e}"),
                violations: Vec::new(),
            })?;
            written += chunk.data.len() as u64;
            progress(written, estimate.max(written));
        }
        Ok(written)
    }

    /// Seals the vault (operators): keys dropped, shares needed again.
    pub async fn seal(&mut self) -> Result<(), ClientError> {
        let r = self.req(proto::SealRequest {});
        self.system.seal(r).await?;
        Ok(())
    }

    /// Rotates the key-encrypting key (operators): a new KEK version wraps
    /// new data keys; existing ones are rewrapped in the background
    /// (progress in [`VaultClient::status`]).
    pub async fn rotate_keys(&mut self) -> Result<proto::RotateKeysResponse, ClientError> {
        let r = self.req(proto::RotateKeysRequest {});
        Ok(self.system.rotate_keys(r).await?.into_inner())
    }

    /// Retires KEK `version` (operators): refused for the active version
    /// and while data keys are wrapped under it.
    pub async fn retire_key(&mut self, version: u32) -> Result<(), ClientError> {
        let r = self.req(proto::RetireKeyRequest {
            kek_version: version,
        });
        self.system.retire_key(r).await?;
        Ok(())
    }

    /// Replaces compromised KEK `version` (operators): new data keys for the
    /// subjects under it, their values re-encrypted, the version retired.
    pub async fn key_compromised(
        &mut self,
        version: u32,
    ) -> Result<proto::KeyCompromisedResponse, ClientError> {
        let r = self.req(proto::KeyCompromisedRequest {
            kek_version: version,
        });
        Ok(self.system.key_compromised(r).await?.into_inner())
    }

    /// Issues a bearer token for `name` in `role` (operators).
    pub async fn create_principal(
        &mut self,
        name: &str,
        role: &str,
        ttl_seconds: u64,
    ) -> Result<CreatePrincipalResponse, ClientError> {
        let r = self.req(CreatePrincipalRequest {
            name: name.to_owned(),
            role: role.to_owned(),
            ttl_seconds,
        });
        Ok(self.principals.create(r).await?.into_inner())
    }

    /// Approves the pending grant `id` (a second principal): the token's
    /// second part is in the response, once.
    /// `name` and `role` are what the approver means to approve: the vault
    /// refuses a grant for anything else.
    pub async fn approve_grant(
        &mut self,
        id: &str,
        name: &str,
        role: &str,
    ) -> Result<ApproveGrantResponse, ClientError> {
        let r = self.req(ApproveGrantRequest {
            id: id.to_owned(),
            name: name.to_owned(),
            role: role.to_owned(),
        });
        Ok(self.principals.approve(r).await?.into_inner())
    }

    /// Rejects the pending grant `id` (an approver), or withdraws it (its
    /// requester), saying why.
    pub async fn reject_grant(
        &mut self,
        id: &str,
        reason: &str,
    ) -> Result<PrincipalInfo, ClientError> {
        let r = self.req(RejectGrantRequest {
            id: id.to_owned(),
            reason: reason.to_owned(),
        });
        Ok(self
            .principals
            .reject(r)
            .await?
            .into_inner()
            .principal
            .unwrap_or_default())
    }

    /// Every issued bearer token (operators).
    pub async fn list_principals(&mut self) -> Result<Vec<PrincipalInfo>, ClientError> {
        let r = self.req(ListPrincipalsRequest {});
        Ok(self.principals.list(r).await?.into_inner().principals)
    }

    /// Revokes the bearer token `id` (operators).
    pub async fn revoke_principal(&mut self, id: &str) -> Result<PrincipalInfo, ClientError> {
        let r = self.req(RevokePrincipalRequest { id: id.to_owned() });
        Ok(self
            .principals
            .revoke(r)
            .await?
            .into_inner()
            .principal
            .unwrap_or_default())
    }

    /// Who the vault thinks this client is.
    pub async fn who_am_i(&mut self) -> Result<WhoAmIResponse, ClientError> {
        let r = self.req(WhoAmIRequest {});
        Ok(self.principals.who_am_i(r).await?.into_inner())
    }

    /// Grants and withdraws consented purposes of `subject_id`.
    pub async fn set_consent(
        &mut self,
        subject_id: &str,
        grant: &[&str],
        withdraw: &[&str],
        policy_version: &str,
    ) -> Result<SetConsentResponse, ClientError> {
        let r = self.req(SetConsentRequest {
            subject_id: subject_id.to_owned(),
            grant: grant.iter().map(|p| (*p).to_owned()).collect(),
            withdraw: withdraw.iter().map(|p| (*p).to_owned()).collect(),
            policy_version: policy_version.to_owned(),
        });
        Ok(self.subjects.set_consent(r).await?.into_inner())
    }

    /// Erases a subject (privacy officer); returns the signed receipt.
    pub async fn erase(
        &mut self,
        subject_id: &str,
        reason: &str,
    ) -> Result<proto::ErasureReceipt, ClientError> {
        let r = self.req(proto::EraseRequest {
            subject_id: subject_id.to_owned(),
            reason: reason.to_owned(),
        });
        self.subjects
            .erase(r)
            .await?
            .into_inner()
            .receipt
            .ok_or_else(|| ClientError {
                code: tonic::Code::Internal,
                message: "the vault sent no receipt".into(),
                violations: Vec::new(),
            })
    }

    /// Exports everything the vault holds about a subject (privacy
    /// officer; GDPR 15 and 20): the JSON document, schema
    /// `vault.subject-export.v1`.
    pub async fn export_subject(
        &mut self,
        subject_id: &str,
        reason: &str,
    ) -> Result<String, ClientError> {
        let r = self.req(proto::SubjectExportRequest {
            subject_id: subject_id.to_owned(),
            reason: reason.to_owned(),
        });
        // The message wipes its copy when dropped; the document is moved out.
        Ok(std::mem::take(
            &mut self.subjects.export(r).await?.into_inner().json,
        ))
    }

    /// Links travel companion `companion_id` to account holder `holder_id`
    /// with the holder's attestation of the companion's consent, or (empty
    /// `holder_id` and `attestation`) removes the link. Returns the holder
    /// now linked.
    pub async fn link_companion(
        &mut self,
        companion_id: &str,
        holder_id: &str,
        attestation: &str,
    ) -> Result<String, ClientError> {
        let r = self.req(proto::LinkCompanionRequest {
            companion_id: companion_id.to_owned(),
            holder_id: holder_id.to_owned(),
            attestation: attestation.to_owned(),
        });
        Ok(self
            .subjects
            .link_companion(r)
            .await?
            .into_inner()
            .holder_id)
    }

    /// Restricts processing of a subject, or lifts it (privacy officer).
    pub async fn restrict(
        &mut self,
        subject_id: &str,
        restrict: bool,
        reason: &str,
    ) -> Result<bool, ClientError> {
        let r = self.req(proto::RestrictRequest {
            subject_id: subject_id.to_owned(),
            restrict,
            reason: reason.to_owned(),
        });
        Ok(self.subjects.restrict(r).await?.into_inner().restricted)
    }

    /// Sets or releases a legal hold (privacy officer).
    pub async fn set_legal_hold(
        &mut self,
        subject_id: &str,
        hold: bool,
        case_id: &str,
        reason: &str,
    ) -> Result<proto::SetLegalHoldResponse, ClientError> {
        let r = self.req(proto::SetLegalHoldRequest {
            subject_id: subject_id.to_owned(),
            hold,
            reason: reason.to_owned(),
            case_id: case_id.to_owned(),
        });
        Ok(self.subjects.set_legal_hold(r).await?.into_inner())
    }

    /// Reloads the vault's access policy (operators).
    pub async fn reload_policy(&mut self) -> Result<ReloadPolicyResponse, ClientError> {
        let r = self.req(ReloadPolicyRequest {});
        Ok(self.policies.reload(r).await?.into_inner())
    }

    /// Audit events after `req.after_seq` that pass its filters (auditors).
    pub async fn audit_query(
        &mut self,
        req: proto::QueryRequest,
    ) -> Result<Vec<proto::AuditEvent>, ClientError> {
        let r = self.req(req);
        let mut stream = self.audits.query(r).await?.into_inner();
        let mut out = Vec::new();
        while let Some(e) = stream.message().await? {
            out.push(e);
        }
        Ok(out)
    }

    /// The chunks of an export of the audit trail after `after_seq`
    /// (auditors), as the vault streams them: the first says where the
    /// export starts, the last holds the signed checkpoint. For exports of
    /// any length in bounded memory (`vaultctl audit export`).
    pub async fn audit_export_stream(
        &mut self,
        after_seq: u64,
    ) -> Result<tonic::Streaming<proto::ExportChunk>, ClientError> {
        let r = self.req(proto::ExportRequest { after_seq });
        Ok(self.audits.export(r).await?.into_inner())
    }

    /// An export of the audit trail after `after_seq` (auditors), from the
    /// pruning anchor at the earliest, held in memory whole.
    pub async fn audit_export(&mut self, after_seq: u64) -> Result<AuditExport, ClientError> {
        let mut stream = self.audit_export_stream(after_seq).await?;
        let mut out = AuditExport::default();
        let mut first = true;
        while let Some(chunk) = stream.message().await? {
            if first {
                out.after_seq = chunk.after_seq;
                out.start_prev_hash = chunk.start_prev_hash;
                first = false;
            }
            out.events.extend(chunk.events);
            if chunk.checkpoint.is_some() {
                out.checkpoint = chunk.checkpoint;
            }
        }
        Ok(out)
    }

    /// The Ed25519 public key that verifies audit checkpoints.
    pub async fn audit_public_key(&mut self) -> Result<Vec<u8>, ClientError> {
        let r = self.req(proto::PublicKeyRequest {});
        Ok(self.audits.public_key(r).await?.into_inner().ed25519)
    }

    /// Checks the whole audit chain (auditors).
    pub async fn audit_verify(&mut self) -> Result<proto::VerifyResponse, ClientError> {
        let r = self.req(proto::VerifyRequest {});
        Ok(self.audits.verify(r).await?.into_inner())
    }

    /// Explains a decision of the running policy (operators, auditors).
    pub async fn explain(&mut self, req: ExplainRequest) -> Result<ExplainResponse, ClientError> {
        let r = self.req(req);
        Ok(self.policies.explain(r).await?.into_inner())
    }

    /// `grpc.health.v1` Check of `service` ("" for the whole server).
    pub async fn health(&mut self, service: &str) -> Result<ServingStatus, ClientError> {
        let r = self
            .health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?
            .into_inner();
        Ok(ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown))
    }
}
