//! The gRPC services: decode → validate → (authenticate, decide: later) →
//! engine → encode. Also `grpc.health.v1` and gRPC reflection (`v1` and
//! `v1alpha`).

mod system;
mod token;

pub use system::SystemApi;
pub use token::TokenApi;

use crate::engine::Engine;
use crate::error::{Error, Violation};
use std::sync::Arc;
use std::time::Instant;

/// State shared by the services.
#[derive(Debug)]
pub struct Shared {
    /// The core.
    pub engine: Arc<Engine>,
    /// Request limits.
    pub limits: crate::config::Limits,
    /// When serving started.
    pub started: Instant,
}

/// Collects the violations of one request, then fails with all of them.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<Violation>);

impl Violations {
    pub(crate) fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation::new(field, description));
    }

    /// Records the error of `r` at `field`, returning its value if any.
    pub(crate) fn check<T>(
        &mut self,
        field: impl Into<String>,
        r: Result<T, &'static str>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e);
                None
            }
        }
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}
