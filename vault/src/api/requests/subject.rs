//! SubjectService requests: SetConsent, Erase, Restrict, SetLegalHold,
//! Export, LinkCompanion.

use super::{Violations, declared_purpose, note};
use crate::error::Error;
use crate::model::{PolicyVersion, Purpose, SubjectId};
use crate::schema::Schema;
use vault_proto::v1::{LinkCompanionRequest, SetConsentRequest, SetLegalHoldRequest};

/// Most purposes one SetConsent grants, and as many it withdraws.
pub const MAX_CONSENT_PURPOSES: usize = 128;

/// A request that names a subject and says why (Erase, Restrict, Export).
#[derive(Debug)]
pub(crate) struct SubjectReason {
    pub subject: SubjectId,
    pub reason: String,
}

impl SubjectReason {
    pub(crate) fn parse(subject_id: &str, reason: &str) -> Result<Self, Error> {
        let mut v = Violations::default();
        let subject = v.check("subject_id", SubjectId::parse(subject_id));
        let reason = note(&mut v, "reason", reason);
        v.finish(|| {
            Ok(Self {
                subject: subject?,
                reason: reason?,
            })
        })
    }
}

/// The declared purposes of the list `name` (at most
/// [`MAX_CONSENT_PURPOSES`]); each bad one is reported.
fn consent_list(v: &mut Violations, schema: &Schema, name: &str, items: &[String]) -> Vec<Purpose> {
    if items.len() > MAX_CONSENT_PURPOSES {
        v.add(name, "more than 128 purposes");
        return Vec::new();
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, p)| declared_purpose(v, &format!("{name}[{i}]"), schema, p).ok())
        .collect()
}

/// A SetConsent: purposes granted and withdrawn (at least one, none both).
#[derive(Debug)]
pub(crate) struct ValidSetConsent {
    pub subject: SubjectId,
    pub grant: Vec<Purpose>,
    pub withdraw: Vec<Purpose>,
    pub policy_version: PolicyVersion,
}

impl ValidSetConsent {
    pub(crate) fn parse(req: &SetConsentRequest, schema: &Schema) -> Result<Self, Error> {
        let mut v = Violations::default();
        let subject = v.check("subject_id", SubjectId::parse(&req.subject_id));
        if req.grant.is_empty() && req.withdraw.is_empty() {
            v.add("grant", "grant or withdraw at least one purpose");
        }
        let grant = consent_list(&mut v, schema, "grant", &req.grant);
        let withdraw = consent_list(&mut v, schema, "withdraw", &req.withdraw);
        if let Some(p) = grant.iter().find(|p| withdraw.contains(p)) {
            v.add(
                "withdraw",
                format!("purpose {} is both granted and withdrawn", p.as_str()),
            );
        }
        let policy_version = v.check("policy_version", PolicyVersion::parse(&req.policy_version));
        v.finish(|| {
            Ok(Self {
                subject: subject?,
                grant,
                withdraw,
                policy_version: policy_version?,
            })
        })
    }
}

/// A SetLegalHold: a hold names its case; a release may (it is recorded)
/// or not (then the case id is empty).
#[derive(Debug)]
pub(crate) struct ValidLegalHold {
    pub subject: SubjectId,
    pub hold: bool,
    pub case_id: String,
    pub reason: String,
}

impl ValidLegalHold {
    pub(crate) fn parse(req: &SetLegalHoldRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let subject = v.check("subject_id", SubjectId::parse(&req.subject_id));
        let reason = note(&mut v, "reason", &req.reason);
        let case_id = if req.hold || !req.case_id.is_empty() {
            note(&mut v, "case_id", &req.case_id)
        } else {
            Ok(String::new())
        };
        v.finish(|| {
            Ok(Self {
                subject: subject?,
                hold: req.hold,
                case_id: case_id?,
                reason: reason?,
            })
        })
    }
}

/// A LinkCompanion: with a holder (and its attestation) a link, without
/// one an unlink.
#[derive(Debug)]
pub(crate) struct ValidLink {
    pub companion: SubjectId,
    pub holder: Option<SubjectId>,
    /// Empty for an unlink.
    pub attestation: String,
}

impl ValidLink {
    pub(crate) fn parse(req: &LinkCompanionRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let companion = v.check("companion_id", SubjectId::parse(&req.companion_id));
        let linking = !req.holder_id.is_empty();
        let holder = if linking {
            let h = v.check("holder_id", SubjectId::parse(&req.holder_id));
            if h.is_ok() && req.holder_id == req.companion_id {
                v.add("holder_id", "a subject cannot be its own account holder");
            }
            h.map(Some)
        } else {
            if !req.attestation.is_empty() {
                v.add("attestation", "an attestation needs a holder_id");
            }
            Ok(None)
        };
        let attestation = if linking {
            note(&mut v, "attestation", &req.attestation)
        } else {
            Ok(String::new())
        };
        v.finish(|| {
            Ok(Self {
                companion: companion?,
                holder: holder?,
                attestation: attestation?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::paths;
    use super::*;

    fn link(companion: &str, holder: &str, attestation: &str) -> LinkCompanionRequest {
        LinkCompanionRequest {
            companion_id: companion.into(),
            holder_id: holder.into(),
            attestation: attestation.into(),
        }
    }

    #[test]
    fn a_link_needs_a_holder_other_than_itself_and_an_attestation() {
        assert_eq!(
            paths(ValidLink::parse(&link("a", "a", ""))),
            ["holder_id", "attestation"]
        );
        assert_eq!(
            paths(ValidLink::parse(&link("a", "", "why"))),
            ["attestation"]
        );
        assert_eq!(
            paths(ValidLink::parse(&link("", "b@c", "why"))),
            ["companion_id", "holder_id"]
        );
        let Ok(unlink) = ValidLink::parse(&link("a", "", "")) else {
            panic!("invalid");
        };
        assert!(unlink.holder.is_none() && unlink.attestation.is_empty());
        let Ok(linked) = ValidLink::parse(&link("a", "b", " parent ")) else {
            panic!("invalid");
        };
        assert_eq!(linked.holder.as_ref().map(SubjectId::as_str), Some("b"));
        assert_eq!(linked.attestation, "parent");
    }

    #[test]
    fn consent_and_holds() {
        let schema = Schema::default_schema(4096).unwrap();
        let consent = SetConsentRequest {
            subject_id: "a".into(),
            grant: vec!["booking".into(), "nope".into()],
            withdraw: vec!["booking".into()],
            policy_version: "v 2".into(),
        };
        assert_eq!(
            paths(ValidSetConsent::parse(&consent, &schema)),
            ["grant[1]", "withdraw", "policy_version"]
        );
        let none = SetConsentRequest {
            subject_id: "a".into(),
            ..Default::default()
        };
        assert_eq!(paths(ValidSetConsent::parse(&none, &schema)), ["grant"]);
        let hold = |hold, case_id: &str| SetLegalHoldRequest {
            subject_id: "a".into(),
            hold,
            reason: "litigation".into(),
            case_id: case_id.into(),
        };
        assert_eq!(paths(ValidLegalHold::parse(&hold(true, ""))), ["case_id"]);
        let Ok(release) = ValidLegalHold::parse(&hold(false, "")) else {
            panic!("invalid");
        };
        assert!(!release.hold && release.case_id.is_empty());
        assert_eq!(
            paths(SubjectReason::parse("a b", "")),
            ["subject_id", "reason"]
        );
    }
}
