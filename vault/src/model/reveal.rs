//! What a caller gets of one field: the policy decides it, the engine acts
//! on it, the API reports it.

/// What a caller gets of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// The value in clear.
    Plain,
    /// The field's partial mask of the value (e.g. BIN and last four).
    Partial,
    /// The field's mask of the value.
    Masked,
    /// Nothing.
    Denied,
}

impl Reveal {
    /// The disclosure a Detokenize answers for this decision.
    pub fn disclosure(self) -> vault_proto::v1::Disclosure {
        match self {
            Reveal::Plain => vault_proto::v1::Disclosure::Plain,
            Reveal::Partial => vault_proto::v1::Disclosure::Partial,
            Reveal::Masked => vault_proto::v1::Disclosure::Masked,
            Reveal::Denied => vault_proto::v1::Disclosure::Denied,
        }
    }
}
