//! `vault.v1.SystemService`: status now; unseal, seal and key rotation later.

use super::{Shared, base_event, principal};
use crate::error::Error;
use crate::policy::Action;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use vault_proto::v1::system_service_server::SystemService;
use vault_proto::v1::{StatusRequest, StatusResponse};

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

#[tonic::async_trait]
impl SystemService for SystemApi {
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
            Ok(Response::new(StatusResponse {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                sealed: false,
                uptime_seconds: self.shared.started.elapsed().as_secs(),
                active_kek_version: e.keyring().active_kek_version(),
                schema_fields: u32::try_from(e.schema().len()).unwrap_or(u32::MAX),
                root_key_source: "dev-key-file".to_owned(),
                storage: e.store().backend().to_owned(),
            }))
        }
        .await;
        Ok(self.shared.conclude(ev, r, true).await?)
    }
}
