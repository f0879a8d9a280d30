//! `matrixhost_backup_policy`: a homeserver's daily encrypted backups and their retention (R4).

use async_trait::async_trait;
use matrixhost_api::{BackupPolicy, BackupPolicySpec, BackupSchedule, RetentionDays, WindowTime};
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::Diagnostics;

use super::managed::{ApiResource, Planned};
use super::{check_int, check_str, differs, known, opt_ts, seg, ts, unknown};
use crate::client::{ApiFailure, Client};
use crate::diag;
use crate::schema_builder::{BlockBuilder, T};
use crate::values::{or_default, s, Num, Value, VB, VN, VS};

pub struct BackupPolicyResource;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupPolicyState {
    pub id: VS,
    pub homeserver_id: VS,
    pub schedule: VS,
    pub window_start: VS,
    pub retention_days: VN,
    pub encrypted: VB,
    pub last_backup_at: VS,
    pub next_backup_at: VS,
}



fn with_defaults(config: &BackupPolicyState) -> BackupPolicyState {
    BackupPolicyState {
        homeserver_id: config.homeserver_id.clone(),
        schedule: or_default(&config.schedule, BackupSchedule::default().as_str().to_owned()),
        window_start: or_default(&config.window_start, WindowTime::default().as_str().to_owned()),
        retention_days: or_default(&config.retention_days, Num::int(i64::from(RetentionDays::default().get()))),
        ..Default::default()
    }
}



fn path(homeserver_id: &str) -> String {
    format!("/v1/homeservers/{}/backup-policy", seg(homeserver_id))
}

#[async_trait]
impl ApiResource for BackupPolicyResource {
    type State = BackupPolicyState;
    type Object = BackupPolicy;
    type CreateBody = BackupPolicySpec;
    type UpdateBody = BackupPolicySpec;

    const TYPE: &'static str = "matrixhost_backup_policy";
    const NOUN: &'static str = "backup policy";
    const FIELDS: &'static [&'static str] = &["homeserver_id", "schedule", "window_start", "retention_days"];
    const IMPORTED: &'static str = "backup policy for homeserver";

    fn schema() -> Schema {
        BlockBuilder::new(
            "The backup policy of a homeserver (one per homeserver). Backups are taken daily, always encrypted, and kept for `retention_days` (R4: 30 by default) before they are deleted.",
        )
        .computed("id", T::String, "The backup policy's id (`bkp_...`).")
        .required("homeserver_id", T::String, "Id of the homeserver. Changing it forces a new backup policy.")
        .optional_computed("schedule", T::String, "How often backups are taken. R4 promises daily backups: `daily` is the only schedule. Defaults to `daily`.")
        .optional_computed("window_start", T::String, "Start of the daily backup window, UTC `HH:MM` (24-hour). Defaults to `03:00`.")
        .optional_computed("retention_days", T::Number, "Days each backup is kept, 7-365. Defaults to `30`, the promised rolling retention (R4).")
        .computed("encrypted", T::Bool, "Always `true`: backups are always encrypted (R4).")
        .computed("last_backup_at", T::String, "When the last completed backup started (RFC 3339), if there is one.")
        .computed("next_backup_at", T::String, "When the next backup is due (RFC 3339).")
        .schema()
    }

    fn check(diags: &mut Diagnostics, c: &BackupPolicyState) {
        if let Value::Value(id) = &c.homeserver_id {
            if id.trim().is_empty() {
                diag::invalid(diags, "homeserver_id", "must be the id of a homeserver (hs_...)");
            }
        }
        check_str(diags, "schedule", &c.schedule, BackupSchedule::parse);
        check_str(diags, "window_start", &c.window_start, WindowTime::parse);
        // R4
        check_int(diags, "retention_days", &c.retention_days, RetentionDays::parse);
    }

    fn plan_new(config: &BackupPolicyState) -> BackupPolicyState {
        let mut planned = with_defaults(config);
        unknown(&mut planned.id);
        // R4: backups are always encrypted.
        planned.encrypted = Value::Value(true);
        unknown(&mut planned.last_backup_at);
        unknown(&mut planned.next_backup_at);
        planned
    }

    fn plan_change(_diags: &mut Diagnostics, prior: &BackupPolicyState, config: &BackupPolicyState) -> Planned<BackupPolicyState> {
        let wanted = with_defaults(config);
        let mut planned = prior.clone();
        planned.homeserver_id = wanted.homeserver_id;
        planned.schedule = wanted.schedule;
        planned.window_start = wanted.window_start;
        planned.retention_days = wanted.retention_days;
        let replace = if differs(&planned.homeserver_id, &prior.homeserver_id) { vec!["homeserver_id"] } else { vec![] };
        if planned != *prior {
            unknown(&mut planned.last_backup_at);
            unknown(&mut planned.next_backup_at);
            if !replace.is_empty() {
                unknown(&mut planned.id);
            }
        }
        Planned { state: planned, replace }
    }

    fn create_path(diags: &mut Diagnostics, planned: &BackupPolicyState) -> Option<String> {
        known(diags, "homeserver_id", &planned.homeserver_id).map(|hs| path(&hs))
    }

    fn item_path(state: &BackupPolicyState) -> Option<String> {
        state.homeserver_id.as_ref_option().map(|hs| path(hs))
    }

    fn version(p: &BackupPolicy) -> i64 {
        p.version
    }

    fn to_state(p: &BackupPolicy, _reference: &BackupPolicyState) -> BackupPolicyState {
        BackupPolicyState {
            id: s(&p.id),
            homeserver_id: s(&p.homeserver_id),
            schedule: s(p.schedule.as_str()),
            window_start: s(p.window_start.as_str()),
            retention_days: Value::Value(Num::int(i64::from(p.retention_days.get()))),
            encrypted: Value::Value(p.encrypted),
            last_backup_at: opt_ts(p.last_backup_at),
            next_backup_at: s(ts(p.next_backup_at)),
        }
    }

    fn create_body(diags: &mut Diagnostics, p: &BackupPolicyState) -> Option<BackupPolicySpec> {
        let before = diags.errors.len();
        let schedule = known(diags, "schedule", &p.schedule).and_then(|v| check_str(diags, "schedule", &s(v), BackupSchedule::parse));
        let window = known(diags, "window_start", &p.window_start).and_then(|v| check_str(diags, "window_start", &s(v), WindowTime::parse));
        let retention = known(diags, "retention_days", &p.retention_days).and_then(|v| check_int(diags, "retention_days", &Value::Value(v), RetentionDays::parse));
        if diags.errors.len() > before {
            return None;
        }
        Some(BackupPolicySpec { schedule: schedule?, window_start: window?, retention_days: retention? })
    }

    fn update_body(diags: &mut Diagnostics, planned: &BackupPolicyState) -> Option<BackupPolicySpec> {
        Self::create_body(diags, planned)
    }

    async fn lookup(client: &Client, id: &str) -> Result<Result<Option<BackupPolicy>, ApiFailure>, String> {
        if id.is_empty() || id.contains('/') {
            return Err(format!("`{id}` is not a homeserver id; import a backup policy by its homeserver's id (hs_...)."));
        }
        Ok(client.get_opt(&path(id)).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r4_bounds_and_window_syntax() {
        let mut d = Diagnostics::default();
        BackupPolicyResource::check(&mut d, &BackupPolicyState { retention_days: Value::Value(Num::int(6)), window_start: s("25:00"), schedule: s("hourly"), ..Default::default() });
        assert_eq!(d.errors.len(), 3);
        assert!(d.errors.iter().any(|e| e.detail.contains("R4")));
        let p = with_defaults(&BackupPolicyState::default());
        assert_eq!(p.retention_days, Value::Value(Num::int(30)));
        assert_eq!(p.window_start, s("03:00"));
        assert_eq!(p.schedule, s("daily"));
    }
}
