//! Serving an opened vault: the gRPC services built once behind one
//! interceptor, health and reflection, the background jobs, and a graceful
//! stop (or seal) that flushes the trail and the store.

use super::jobs::Jobs;
use super::open::Vault;
use super::{MAX_HEADER_LIST_BYTES, Served, StartError, seal};
use crate::api;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use vault_proto::v1::audit_service_server::AuditServiceServer;
use vault_proto::v1::policy_service_server::PolicyServiceServer;
use vault_proto::v1::principal_service_server::PrincipalServiceServer;
use vault_proto::v1::subject_service_server::SubjectServiceServer;
use vault_proto::v1::system_service_server::SystemServiceServer;
use vault_proto::v1::token_service_server::TokenServiceServer;

/// Adds each `Server(Api)` to `router` behind `guard` with the decoding
/// limit `cap`, and reports it serving on `health`.
macro_rules! services {
    ($router:expr, $health:expr, $shared:expr, $guard:expr, $cap:expr;
     $($server:ident($api:ident)),+ $(,)?) => {{
        let router = $router;
        let mut names: Vec<&'static str> = Vec::new();
        $(
            names.push(<$server<api::$api> as NamedService>::NAME);
            $health
                .set_service_status(
                    <$server<api::$api> as NamedService>::NAME,
                    tonic_health::ServingStatus::Serving,
                )
                .await;
            let router = router.add_service(InterceptedService::new(
                $server::new(api::$api::new($shared.clone())).max_decoding_message_size($cap),
                $guard.clone(),
            ));
        )+
        (router, names)
    }};
}

impl Vault {
    /// Serves the vault on `listener` (which a sealed phase may share) until
    /// `stop` turns true ([`Served::Stopped`]) or an operator seals it
    /// ([`Served::Sealed`]); `ready` runs once every service and job is in
    /// place, just before the first request is taken. Then finishes
    /// in-flight requests, flushes the trail and the store, and waits (a
    /// few seconds at most) for background work to let go of the keys.
    pub(super) async fn serve_shared(
        self,
        listener: Arc<TcpListener>,
        mut stop: watch::Receiver<bool>,
        ready: impl FnOnce(),
    ) -> Result<Served, StartError> {
        let Vault {
            config,
            shared,
            tls,
            ..
        } = self;
        let engine = shared.engine.clone();
        // Tonic's hard cap sits well above the vault's limit, so that requests
        // between the two get a clear INVALID_ARGUMENT from the vault itself;
        // beyond the cap, the transport refuses them (RESOURCE_EXHAUSTED or a reset).
        let decode_cap = config.limits.max_request_bytes.saturating_mul(4);
        let reflection = |b: tonic_reflection::server::Builder<'static>| {
            b.register_encoded_file_descriptor_set(vault_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 =
            reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
        let reflection_v1alpha =
            reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::io("the listener's address", e))?;
        let incoming = seal::incoming(listener);
        let policy = shared.policy.summary();
        tracing::info!(
            %addr,
            tls = tls.is_some(),
            mtls = config.tls.client_ca_file.is_some(),
            fields = engine.schema().len(),
            policies = policy.policies,
            storage = engine.store().backend(),
            "vault serving"
        );
        // On the shutdown signal, stop accepting and let in-flight requests
        // finish, but never wait longer than the grace period for clients that
        // do not close their connections.
        let (stop_tx, stop_rx) = watch::channel(false);
        let grace = config.shutdown_grace;
        let sealed = Arc::new(AtomicBool::new(false));
        let seal_signal = shared.seal.clone();
        let sealing = sealed.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                () = seal_signal.notified() => sealing.store(true, Ordering::Release),
            }
            let _ = stop_tx.send(true);
        });
        let jobs = Jobs::start(&shared, config.retention_sweep_secs, &stop_rx)
            .map_err(|e| StartError::io("cannot handle SIGHUP", e))?;
        let mut builder = Server::builder()
            .tcp_nodelay(true)
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .layer(api::frames::SmallFramesLayer)
            .layer(api::RpcPathLayer);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(StartError::Tls)?;
        }
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let router = builder
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        // The vault's own services, each behind the authentication
        // interceptor and the request size limit, each reported serving.
        let guard = api::AuthInterceptor {
            auth: shared.auth.clone(),
            audit: shared.audit.clone(),
        };
        let (router, names) = services!(router, health_reporter, shared, guard, decode_cap;
            TokenServiceServer(TokenApi),
            SystemServiceServer(SystemApi),
            PrincipalServiceServer(PrincipalApi),
            SubjectServiceServer(SubjectApi),
            PolicyServiceServer(PolicyApi),
            AuditServiceServer(AuditApi),
        );
        // The services hold their own copies: this one must not keep the
        // trail's and the credentials' keys alive after a seal.
        drop(guard);
        // On a shared store, health says NOT_SERVING while the database
        // does not answer (requests then fail UNAVAILABLE), SERVING again
        // once it does.
        if shared.engine.store().shared() {
            let (store, reporter, mut until) = (
                shared.engine.store().clone(),
                health_reporter.clone(),
                stop_rx.clone(),
            );
            tokio::spawn(async move {
                let mut serving = true;
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = until.wait_for(|s| *s) => break,
                    }
                    let reachable = store.cluster().is_none_or(|c| c.reachable);
                    if reachable != serving {
                        serving = reachable;
                        let status = if reachable {
                            tonic_health::ServingStatus::Serving
                        } else {
                            tonic_health::ServingStatus::NotServing
                        };
                        reporter.set_service_status("", status).await;
                        for name in &names {
                            reporter.set_service_status(*name, status).await;
                        }
                    }
                }
            });
        }
        ready();
        let mut server_stop = stop_rx.clone();
        let mut grace_stop = stop_rx;
        let server = router.serve_with_incoming_shutdown(incoming, async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        });
        tokio::pin!(server);
        let mut forced = false;
        let served = tokio::select! {
            r = &mut server => r,
            // Resolves once the signal came and the grace period passed.
            () = async {
                let _ = grace_stop.wait_for(|stop| *stop).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "connections still open after the grace period; closing them");
                forced = true;
                Ok(())
            }
        };
        // Every job ends at the stop signal, before the last events and the
        // flush: nothing a job does comes after the trail's `vault_stop`.
        let jobs_done = jobs.stop(Duration::from_secs(10)).await;
        tracing::info!("vault stopping: in-flight requests finished, flushing");
        api::write_throttle_summaries(&shared, true);
        super::open::end_run(&shared, String::new())?;
        served.map_err(StartError::Serve)?;
        let sealed = sealed.load(Ordering::Acquire);
        if forced && !sealed {
            // A connection left open past the grace period still holds the
            // vault: waiting for it would only make the stop longer (vaultd
            // exits now; an embedding program's next run may find the
            // directory busy until that connection ends).
            return Ok(Served::Stopped);
        }
        // Stopped or sealed, nothing of this run may outlive it: the keys
        // are gone when the last holder of each lets go (the engine's
        // keyring, and the trail and the credential store, which hold
        // theirs directly), and the store with the engine, so that a next
        // run, in this process too, can open the data directory again. A
        // request still finishing on a blocking thread (an audit export, a
        // rewrap an operator started) may hold them for a moment.
        let keyring = engine.keyring();
        let keys = (
            Arc::downgrade(keyring.audit()),
            Arc::downgrade(keyring.checkpoint()),
            Arc::downgrade(keyring.credential()),
        );
        let store = Arc::downgrade(engine.store());
        drop(shared);
        drop(engine);
        let gone = || {
            keys.0.strong_count() == 0
                && keys.1.strong_count() == 0
                && keys.2.strong_count() == 0
                && store.strong_count() == 0
        };
        for _ in 0..200 {
            if gone() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !jobs_done || !gone() {
            tracing::warn!(
                jobs_done,
                audit_key = keys.0.strong_count(),
                checkpoint_key = keys.1.strong_count(),
                credential_key = keys.2.strong_count(),
                store = store.strong_count(),
                "background work or a connection still holds the keys after sealing or stopping"
            );
        } else if sealed {
            tracing::warn!("vault sealed: keys dropped from memory");
        }
        if !sealed {
            return Ok(Served::Stopped);
        }
        Ok(Served::Sealed)
    }
}
