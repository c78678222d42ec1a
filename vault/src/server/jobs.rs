//! The background jobs of a serving vault: zeroing expired CVVs, the
//! retention sweeper, resuming an interrupted rewrap, the summaries of
//! failed authentications and reloading the policy on SIGHUP. Each runs
//! until the stop signal; [`Jobs::stop`] waits for them before the last
//! audit events and the flush. (A rewrap an operator starts runs outside
//! the set: it ends with its pass, and sealing waits for the keys.)

use crate::api::{self, Shared};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// The running background jobs.
#[derive(Debug)]
pub(super) struct Jobs {
    set: JoinSet<()>,
}

/// Runs `work` every `every` (the first run one interval from now) until
/// `stop` turns true.
async fn every<F: Future<Output = ()> + Send>(
    every: Duration,
    mut stop: watch::Receiver<bool>,
    mut work: impl FnMut() -> F + Send,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        work().await;
    }
}

impl Jobs {
    /// Starts the jobs of `shared` under `config`, each ending when `stop`
    /// turns true.
    pub(super) fn start(
        shared: &Arc<Shared>,
        retention_sweep_secs: u64,
        stop: &watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let mut set = JoinSet::new();
        // CVVs past their time to live are zeroed within ten seconds even if
        // nobody asks for them (a reveal checks the time itself).
        let engine = shared.engine.clone();
        set.spawn(every(Duration::from_secs(10), stop.clone(), move || {
            let dropped = engine.cvvs().sweep(engine.clock().now());
            if dropped > 0 {
                tracing::debug!(dropped, "expired CVVs zeroed");
            }
            std::future::ready(())
        }));
        // A rotation whose rewrap did not finish before the last stop
        // resumes now; on a shared store, on the node that holds the
        // rewrap's lease ([`api::spawn_rewrap`]), checked again every few
        // seconds (the holder keeps its lease so; a node that died during a
        // rewrap leaves it to another once its lease runs out).
        let resume = {
            let shared = shared.clone();
            move || {
                let shared = shared.clone();
                async move {
                    match shared.engine.rewrap_pending() {
                        Ok(true) => {
                            tracing::info!("resuming the rewrap of data keys under the active KEK");
                            api::spawn_rewrap(shared.clone());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "could not read whether a rewrap is pending")
                        }
                    }
                }
            }
        };
        set.spawn(resume());
        if shared.engine.store().shared() {
            set.spawn(every(api::REWRAP_CHECK, stop.clone(), resume));
        }
        // The retention sweeper, at its interval (the first run one interval
        // after the start, so that a restart does not sweep at once).
        if retention_sweep_secs > 0 {
            let shared = shared.clone();
            set.spawn(every(
                Duration::from_secs(retention_sweep_secs),
                stop.clone(),
                move || {
                    let shared = shared.clone();
                    async move {
                        // Once across the nodes of a shared store: on the
                        // holder of the sweep's lease (an interval and 30 s
                        // long, so that the holder keeps it from tick to
                        // tick and another node takes over when it dies).
                        let hold = Duration::from_secs(retention_sweep_secs)
                            .saturating_add(Duration::from_secs(30));
                        if !holds(&shared, "retention-sweep", hold).await {
                            return;
                        }
                        match api::run_sweep(&shared).await {
                            Ok(s) => tracing::info!(
                                subjects = s.subjects,
                                fields = s.fields,
                                held = s.held,
                                "retention sweep"
                            ),
                            Err(e) => tracing::error!(error = %e, "retention sweep failed"),
                        }
                    }
                },
            ));
        }
        // Summaries of failed authentications, as their windows end.
        let for_summaries = shared.clone();
        set.spawn(every(Duration::from_secs(1), stop.clone(), move || {
            api::write_throttle_summaries(&for_summaries, false);
            std::future::ready(())
        }));
        // Without a handler, a SIGHUP would end the process unflushed: a
        // vault that cannot take the signal does not start.
        reload_on_sighup(&mut set, shared, stop.clone())?;
        Ok(Self { set })
    }

    /// Waits (at most `limit`) for every job to end after the stop signal;
    /// false if one was still running.
    pub(super) async fn stop(mut self, limit: Duration) -> bool {
        let all = async { while self.set.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, all).await.is_err() {
            self.set.abort_all();
            return false;
        }
        true
    }
}

/// Whether this node holds (took or kept) the lease of cluster-wide job
/// `job` for `hold` (always, where one process owns the store).
async fn holds(shared: &Shared, job: &str, hold: Duration) -> bool {
    match shared.engine.store().lease(job, hold).await {
        Ok(held) => held,
        Err(e) => {
            tracing::error!(job, error = %e, "could not take or keep a job's lease: the job waits");
            false
        }
    }
}

/// Reloads the access policy on every SIGHUP until `stop` (a bad policy is
/// logged and the running one stays).
fn reload_on_sighup(
    set: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let (policy, audit) = (shared.policy.clone(), shared.audit.clone());
        let for_reload = shared.clone();
        set.spawn(async move {
            loop {
                tokio::select! {
                    got = hup.recv() => if got.is_none() { break },
                    _ = stop.wait_for(|s| *s) => break,
                }
                let policy = policy.clone();
                let outcome =
                    tokio::task::spawn_blocking(move || api::reload_policy(&policy, "SIGHUP"))
                        .await;
                if matches!(outcome, Ok(Ok(_))) {
                    api::announce_policy_reload(&for_reload).await;
                }
                let (ok, detail) = match outcome {
                    Ok(Ok(s)) => (true, format!("{} policies", s.policies)),
                    Ok(Err(e)) => (
                        false,
                        format!("{} problem(s); the running policy stays", e.problems.len()),
                    ),
                    Err(_) => (false, "reload task failed".to_owned()),
                };
                let ev = crate::audit::AuditEvent {
                    event_type: "policy_reload".into(),
                    principal: "SIGHUP".into(),
                    outcome: if ok { "ok" } else { "invalid" }.into(),
                    detail,
                    ..Default::default()
                };
                if let Err(e) = audit.append(vec![ev]) {
                    tracing::error!(error = %e, "could not write the policy_reload audit event");
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (set, shared, stop);
    }
    Ok(())
}
