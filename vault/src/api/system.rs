//! `vault.v1.SystemService`: status, the retention report and sweeper;
//! unseal, seal and key rotation later.

use super::{Shared, base_event, principal};
use crate::error::Error;
use crate::policy::Action;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::system_service_server::SystemService;
use vault_proto::v1::{
    BackupChunk, BackupRequest, KeyCompromisedRequest, KeyCompromisedResponse,
    LifecycleReportRequest, LifecycleReportResponse, RetireKeyRequest, RetireKeyResponse,
    RotateKeysRequest, RotateKeysResponse, SealRequest, SealResponse, StatusRequest,
    StatusResponse, SweepRequest, SweepResponse, UnsealRequest, UnsealResponse,
};

/// The system service.
#[derive(Debug, Clone)]
pub struct SystemApi {
    shared: Arc<Shared>,
}

impl SystemApi {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// A backup on its way to the caller.
type BackupStream = tokio_stream::wrappers::ReceiverStream<Result<BackupChunk, Status>>;

/// Bytes per backup chunk.
const BACKUP_CHUNK: usize = 256 << 10;

/// Sends what is written to it as [`BackupChunk`]s (blocking).
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<BackupChunk, Status>>,
    buf: Vec<u8>,
    size_estimate: u64,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = BackupChunk {
            data: std::mem::take(&mut self.buf),
            size_estimate: std::mem::take(&mut self.size_estimate),
        };
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the caller went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BACKUP_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl SystemService for SystemApi {
    type BackupStream = BackupStream;

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.action = "backup".into();
        let journal_only = request.get_ref().journal_only;
        ev.detail = if journal_only {
            "erasure and revocation journals only"
        } else {
            "whole store"
        }
        .into();
        let r: Result<_, Error> = self.shared.require(&who, Action::Backup);
        // The backup is an event, durable before any byte leaves.
        self.shared.conclude(ev, r, true).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let shared = self.shared.clone();
        let size_estimate = shared.engine.store().size_on_disk().unwrap_or(0);
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(BACKUP_CHUNK),
                size_estimate,
            };
            let started = std::time::Instant::now();
            let result = crate::backup::write(
                shared.engine.store().as_ref(),
                shared.engine.keyring().backup(),
                &mut out,
                journal_only,
            );
            let (outcome, detail) = match &result {
                Ok(s) => (
                    "ok",
                    format!(
                        "records={} entries={} erasures={} revocations={} ms={}",
                        s.records,
                        s.entries,
                        s.erasures,
                        s.revocations,
                        started.elapsed().as_millis()
                    ),
                ),
                Err(e) => {
                    let _ =
                        tx.blocking_send(Err(Status::unavailable(format!("backup failed: {e}"))));
                    ("error", e.to_string())
                }
            };
            tracing::info!(outcome, %detail, "backup streamed");
            let ev = crate::audit::system_event("backup_done", outcome, detail);
            if let Err(e) = shared.audit.append(vec![ev]) {
                tracing::error!(error = %e, "could not write the audit event of a backup");
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.event_type = "request".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::Status)?;
            let e = &self.shared.engine;
            let rewrap = e.rewrap_state();
            let cluster = e.store().cluster().unwrap_or(crate::store::Cluster {
                reachable: true,
                ..Default::default()
            });
            Ok(Response::new(StatusResponse {
                kek_versions: e.keyring().kek_versions(),
                rewrap_pending: e.rewrap_pending()?,
                rewrap_running: rewrap.running,
                rewrap_total: rewrap.total,
                rewrap_done: rewrap.done,
                active_kek_expires_unix: e.kek_expires_at(),
                kek_warning: e.kek_warning().unwrap_or_default(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                sealed: false,
                uptime_seconds: self.shared.started.elapsed().as_secs(),
                active_kek_version: e.keyring().active_kek_version(),
                schema_fields: u32::try_from(e.schema().len()).unwrap_or(u32::MAX),
                root_key_source: if self.shared.sealable {
                    "shamir"
                } else if e.keyring().root_in_hsm() {
                    "hsm"
                } else {
                    "dev-key-file"
                }
                .to_owned(),
                unseal_progress: 0,
                unseal_threshold: 0,
                storage: e.store().backend().to_owned(),
                node_id: cluster.node,
                peers: cluster.peers,
                database_reachable: cluster.reachable,
                database_round_trips: e.store().round_trips(),
            }))
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }

    async fn lifecycle_report(
        &self,
        request: Request<LifecycleReportRequest>,
    ) -> Result<Response<LifecycleReportResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.action = "lifecycle_report".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::Lifecycle)?;
            let days = match request.get_ref().due_within_days {
                0 => 30,
                d => d.min(36_500),
            };
            let engine = self.shared.engine.clone();
            let now = engine.clock().now_micros();
            let classes =
                tokio::task::spawn_blocking(move || engine.lifecycle_report(days, now / 1_000_000))
                    .await
                    .map_err(|e| Error::task("report", e))??;
            Ok(Response::new(LifecycleReportResponse {
                classes,
                as_of_unix_micros: now,
            }))
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }

    async fn sweep(
        &self,
        request: Request<SweepRequest>,
    ) -> Result<Response<SweepResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.action = "sweep".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::Lifecycle)?;
            let s = crate::api::run_sweep(&self.shared).await?;
            Ok(Response::new(SweepResponse {
                subjects: s.subjects,
                fields: s.fields,
                held: s.held,
            }))
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }

    async fn rotate_keys(
        &self,
        request: Request<RotateKeysRequest>,
    ) -> Result<Response<RotateKeysResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.action = "rotate_keys".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::RotateKeys)?;
            let previous = self.shared.engine.keyring().active_kek_version();
            let active = self.shared.engine.rotate_kek().await?;
            ev.detail = format!("kek v{previous} -> v{active}");
            tracing::info!(by = %who.name, previous, active, "key-encrypting key rotated");
            Ok(RotateKeysResponse {
                active_kek_version: active,
                previous_kek_version: previous,
            })
        }
        .await;
        let r = self.shared.conclude(ev, r, true).await?;
        // Every data key under an older KEK is rewrapped in the background.
        super::spawn_rewrap(self.shared.clone());
        Ok(Response::new(r))
    }

    async fn retire_key(
        &self,
        request: Request<RetireKeyRequest>,
    ) -> Result<Response<RetireKeyResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.action = "retire_key".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::RotateKeys)?;
            let version = request.get_ref().kek_version;
            ev.detail = format!("kek v{version}");
            self.shared.engine.retire_kek(version).await?;
            tracing::warn!(by = %who.name, version, "key-encrypting key retired and destroyed");
            Ok(RetireKeyResponse {})
        }
        .await;
        Ok(Response::new(self.shared.conclude(ev, r, true).await?))
    }

    async fn key_compromised(
        &self,
        request: Request<KeyCompromisedRequest>,
    ) -> Result<Response<KeyCompromisedResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.action = "key_compromised".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::RotateKeys)?;
            let version = request.get_ref().kek_version;
            ev.detail = format!("kek v{version}");
            let s = self.shared.engine.kek_compromised(version).await?;
            let active = self.shared.engine.keyring().active_kek_version();
            ev.detail = format!(
                "kek v{version}: subjects={} fields={} active=v{active}",
                s.subjects, s.fields
            );
            tracing::warn!(by = %who.name, version, subjects = s.subjects, fields = s.fields, "compromised key-encrypting key replaced");
            Ok(KeyCompromisedResponse {
                subjects: s.subjects,
                fields: s.fields,
                active_kek_version: active,
            })
        }
        .await;
        let r = self.shared.conclude(ev, r, true).await?;
        // A rotation it made leaves other subjects to rewrap.
        super::spawn_rewrap(self.shared.clone());
        Ok(Response::new(r))
    }

    async fn unseal(
        &self,
        _request: Request<UnsealRequest>,
    ) -> Result<Response<UnsealResponse>, Status> {
        // Unsealed already: nothing to do, and nothing learnt from the share.
        Ok(Response::new(UnsealResponse {
            sealed: false,
            progress: 0,
            threshold: 0,
        }))
    }

    async fn seal(&self, request: Request<SealRequest>) -> Result<Response<SealResponse>, Status> {
        let who = principal(&request)?;
        let mut ev = base_event(&request, Some(&who));
        ev.action = "seal".into();
        let r: Result<_, Error> = async {
            self.shared.require(&who, Action::Seal)?;
            if !self.shared.sealable {
                return Err(Error::FailedPrecondition(
                    "this vault's root key is a development key file, not shares: it cannot be sealed",
                ));
            }
            Ok(SealResponse {})
        }
        .await;
        let r = self.shared.conclude(ev, r, true).await?;
        tracing::warn!(by = %who.name, "sealing the vault");
        self.shared.seal.notify_one();
        Ok(Response::new(r))
    }
}
