//! How far the running homeserver has got with an object's latest version: the one rule behind
//! every `apply_status` in the API. The runtime records `applied_version` once a change is in
//! force (`runtime::mark_applied`); writes without a runtime record it themselves.

use matrixhost_api::{ApplyStatus, HomeserverStatus};

/// The homeserver an object belongs to, as far as applying changes goes.
pub struct HostOf<'a> {
    pub status: HomeserverStatus,
    pub status_reason: Option<&'a str>,
}

/// `own_error` is the platform's words for why this object's version could not be applied
/// (never the homeserver's). No homeserver means nothing has to apply it.
pub fn apply_status(version: i64, applied_version: Option<i64>, own_error: Option<&str>, host: Option<HostOf<'_>>) -> (ApplyStatus, Option<String>) {
    let Some(host) = host else { return (ApplyStatus::Applied, None) };
    if applied_version == Some(version) {
        return (ApplyStatus::Applied, None);
    }
    if let Some(error) = own_error {
        return (ApplyStatus::Failed, Some(error.to_owned()));
    }
    if host.status == HomeserverStatus::Failed {
        let why = host.status_reason.unwrap_or("no reason recorded");
        return (ApplyStatus::Failed, Some(format!("the homeserver is failed ({why}); the change applies once it runs again")));
    }
    (ApplyStatus::Pending, None)
}

/// What a write records as applied: when no running homeserver has to apply it (no runtime,
/// or nothing hosted that it concerns), it is in effect as written.
pub fn applied_at_write(a_homeserver_applies_it: bool, version: i64) -> Option<i64> {
    (!a_homeserver_applies_it).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(status: HomeserverStatus) -> Option<HostOf<'static>> {
        Some(HostOf { status, status_reason: Some("the node agent failed (ref abc)") })
    }

    #[test]
    fn a_version_is_pending_until_the_homeserver_records_it() {
        assert_eq!(apply_status(2, Some(1), None, host(HomeserverStatus::Updating)).0, ApplyStatus::Pending);
        assert_eq!(apply_status(2, Some(2), None, host(HomeserverStatus::Running)).0, ApplyStatus::Applied);
        assert_eq!(apply_status(1, None, None, host(HomeserverStatus::Provisioning)).0, ApplyStatus::Pending);
    }

    #[test]
    fn failures_say_why_and_nothing_to_apply_is_applied() {
        let (status, error) = apply_status(3, Some(2), Some("the homeserver refused the account (M_UNKNOWN)"), host(HomeserverStatus::Running));
        assert_eq!((status, error.as_deref()), (ApplyStatus::Failed, Some("the homeserver refused the account (M_UNKNOWN)")));
        let (status, error) = apply_status(3, Some(2), None, host(HomeserverStatus::Failed));
        assert_eq!(status, ApplyStatus::Failed);
        assert!(error.unwrap().contains("the node agent failed (ref abc)"));
        assert_eq!(apply_status(3, None, None, None).0, ApplyStatus::Applied);
        assert_eq!(applied_at_write(false, 4), Some(4));
        assert_eq!(applied_at_write(true, 4), None);
    }
}
