//! The sealed phase: a vault initialised with shares serves only
//! `SystemService.Status` and `Unseal` (health NOT_SERVING, every other RPC
//! `FAILED_PRECONDITION` "sealed") until the threshold of shares is given.

use super::*;

/// Accepted connections of a listener shared by the sealed and the
/// unsealed phases.
pub(in crate::server) fn incoming(
    listener: Arc<TcpListener>,
) -> impl futures::Stream<Item = std::io::Result<TcpStream>> {
    futures::stream::poll_fn(move |cx| {
        listener.poll_accept(cx).map(|r| {
            Some(r.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s
            }))
        })
    })
}

/// Largest Unseal request a sealed vault decodes, in bytes.
const MAX_SEALED_REQUEST_BYTES: usize = 64 * 1024;

const SEALED: &str = "the vault is sealed: unseal it with vaultctl unseal";

/// The system service of a sealed vault.
struct SealedApi {
    state: Arc<Mutex<Unsealer>>,
    unsealed: Arc<tokio::sync::Notify>,
}

fn sealed<T>() -> Result<Response<T>, Status> {
    Err(Status::failed_precondition(SEALED))
}

impl SealedApi {
    fn attempt(
        &self,
        addr: Option<std::net::SocketAddr>,
        share: &str,
    ) -> Result<UnsealResponse, Status> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| Status::internal("unseal state"))?;
        let key = PeerKey::of(addr);
        if st.throttle.refuse(key) {
            // Counted in the summary; the share is not looked at.
            return Err(Status::resource_exhausted(
                "too many failed unseal attempts from this address or in all: try again later",
            ));
        }
        let peer = addr.map(|a| a.to_string()).unwrap_or_default();
        let threshold = u32::from(st.config.threshold);
        let outcome = st.check(share);
        if outcome.is_err() {
            st.throttle.failed(key);
        }
        let progress = u32::try_from(st.shares.len()).unwrap_or(u32::MAX);
        let (name, detail) = match &outcome {
            Ok(index) => (
                "ok",
                format!("share {index} accepted ({progress} of {threshold})"),
            ),
            Err(s) => (
                if s.code() == tonic::Code::PermissionDenied {
                    "denied"
                } else {
                    "invalid"
                },
                s.message().to_owned(),
            ),
        };
        let mut ev = crate::audit::system_event("unseal", name, detail);
        ev.peer = peer;
        ev.rpc = "/vault.v1.SystemService/Unseal".into();
        ev.action = "unseal".into();
        if let Err(s) = &outcome {
            ev.status_code = s.code() as i32;
        }
        let kept = st.events.len();
        if st.throttle.may_record(kept) {
            st.events.push(ev);
        }
        outcome?;
        if st.shares.len() >= usize::from(st.config.threshold) {
            let root = shamir::combine(&st.shares).ok_or_else(|| Status::internal("combine"))?;
            st.root = Some(root);
            st.shares.clear();
            drop(st);
            self.unsealed.notify_one();
            tracing::warn!("threshold of shares reached: unsealing");
            return Ok(UnsealResponse {
                sealed: false,
                progress: threshold,
                threshold,
            });
        }
        tracing::info!(progress, threshold, "unseal share accepted");
        Ok(UnsealResponse {
            sealed: true,
            progress,
            threshold,
        })
    }
}

#[tonic::async_trait]
impl SystemService for SealedApi {
    type BackupStream =
        tokio_stream::wrappers::ReceiverStream<Result<vault_proto::v1::BackupChunk, Status>>;

    async fn backup(
        &self,
        _: Request<vault_proto::v1::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        sealed()
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let st = self
            .state
            .lock()
            .map_err(|_| Status::internal("unseal state"))?;
        Ok(Response::new(StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            sealed: true,
            root_key_source: "shamir".to_owned(),
            storage: "sled".to_owned(),
            unseal_progress: u32::try_from(st.shares.len()).unwrap_or(u32::MAX),
            unseal_threshold: u32::from(st.config.threshold),
            ..Default::default()
        }))
    }

    async fn unseal(
        &self,
        request: Request<UnsealRequest>,
    ) -> Result<Response<UnsealResponse>, Status> {
        let addr = request.remote_addr();
        let share = Zeroizing::new(request.into_inner().share);
        self.attempt(addr, &share).map(Response::new)
    }

    async fn seal(&self, _: Request<SealRequest>) -> Result<Response<SealResponse>, Status> {
        Ok(Response::new(SealResponse {}))
    }

    async fn lifecycle_report(
        &self,
        _: Request<LifecycleReportRequest>,
    ) -> Result<Response<LifecycleReportResponse>, Status> {
        sealed()
    }

    async fn sweep(&self, _: Request<SweepRequest>) -> Result<Response<SweepResponse>, Status> {
        sealed()
    }

    async fn rotate_keys(
        &self,
        _: Request<RotateKeysRequest>,
    ) -> Result<Response<RotateKeysResponse>, Status> {
        sealed()
    }

    async fn retire_key(
        &self,
        _: Request<RetireKeyRequest>,
    ) -> Result<Response<RetireKeyResponse>, Status> {
        sealed()
    }

    async fn key_compromised(
        &self,
        _: Request<KeyCompromisedRequest>,
    ) -> Result<Response<KeyCompromisedResponse>, Status> {
        sealed()
    }
}

/// A tower layer that answers `FAILED_PRECONDITION` "sealed" to every call
/// but the system service's and health checks.
#[derive(Debug, Clone, Copy, Default)]
struct SealedGate;

impl<S> tower::Layer<S> for SealedGate {
    type Service = SealedGateService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SealedGateService(inner)
    }
}

#[derive(Debug, Clone)]
struct SealedGateService<S>(S);

impl<S, B> tower::Service<http::Request<B>> for SealedGateService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if path.starts_with("/vault.v1.SystemService/") || path.starts_with("/grpc.health.") {
            let f = self.0.call(req);
            Box::pin(f)
        } else {
            let response = Status::failed_precondition(SEALED).into_http();
            Box::pin(async move { Ok(response) })
        }
    }
}

/// Serves a sealed vault on `listener` until the threshold of shares is
/// given (`Some`) or `stop` turns true (`None`).
pub async fn serve_sealed(
    config: &Config,
    shamir_config: ShamirConfig,
    listener: Arc<TcpListener>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Unsealed>, StartError> {
    let threshold = shamir_config.threshold;
    let state = Arc::new(Mutex::new(Unsealer::new(
        shamir_config,
        config.unseal_throttle,
    )));
    let unsealed = Arc::new(tokio::sync::Notify::new());
    let api = SealedApi {
        state: state.clone(),
        unsealed: unsealed.clone(),
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(SealedGate);
    if let Some(tls) = crate::server::open::tls_config(config)? {
        builder = builder.tls_config(tls).map_err(StartError::Tls)?;
    }
    tracing::warn!(
        threshold,
        "vault sealed: waiting for unseal shares (vaultctl unseal)"
    );
    // Done when unsealed or stopped; connections still open two seconds
    // later are closed.
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            () = unsealed.notified() => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        let _ = done_tx.send(true);
    });
    let mut shutdown = done_rx.clone();
    let server = builder
        .add_service(health)
        .add_service(
            SystemServiceServer::new(api).max_decoding_message_size(MAX_SEALED_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming(listener), async move {
            let _ = shutdown.wait_for(|d| *d).await;
        });
    tokio::pin!(server);
    let mut grace = done_rx;
    tokio::select! {
        r = &mut server => r.map_err(StartError::Serve)?,
        () = async {
            let _ = grace.wait_for(|d| *d).await;
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        } => {}
    }
    let mut st = state
        .lock()
        .map_err(|_| StartError::Shares("the unseal state lock is poisoned".into()))?;
    let events = st.take_events();
    Ok(st.root.take().map(|root| Unsealed {
        root: RootKey::from_bytes(&root),
        events,
    }))
}
