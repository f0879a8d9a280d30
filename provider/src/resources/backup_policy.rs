//! `matrixhost_backup_policy`: a homeserver's daily encrypted backups and their retention (R4).

use std::sync::Arc;

use async_trait::async_trait;
use matrixhost_api::{BackupPolicy, BackupPolicySpec, BackupSchedule, RetentionDays, WindowTime};
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::value::ValueEmpty;
use tf_provider::{AttributePath, Diagnostics, Resource};

use super::{check_int, check_str, differs, import_not_found, known, opt_ts, private, seg, ts, unknown, version_of, PrivateState};
use crate::client::idempotency_key;
use crate::diag;
use crate::guarded;
use crate::provider::Ctx;
use crate::schema_builder::{BlockBuilder, T};
use crate::values::{or_default, s, Num, Value, VB, VN, VS};

pub const TYPE: &str = "matrixhost_backup_policy";
const FIELDS: &[&str] = &["homeserver_id", "schedule", "window_start", "retention_days"];

pub struct BackupPolicyResource {
    pub ctx: Arc<Ctx>,
}

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

pub fn schema() -> Schema {
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

fn with_defaults(config: &BackupPolicyState) -> BackupPolicyState {
    BackupPolicyState {
        homeserver_id: config.homeserver_id.clone(),
        schedule: or_default(&config.schedule, BackupSchedule::default().as_str().to_owned()),
        window_start: or_default(&config.window_start, WindowTime::default().as_str().to_owned()),
        retention_days: or_default(&config.retention_days, Num::int(i64::from(RetentionDays::default().get()))),
        ..Default::default()
    }
}

fn spec(diags: &mut Diagnostics, p: &BackupPolicyState) -> Option<BackupPolicySpec> {
    let before = diags.errors.len();
    let schedule = known(diags, "schedule", &p.schedule).and_then(|v| check_str(diags, "schedule", &s(v), BackupSchedule::parse));
    let window = known(diags, "window_start", &p.window_start).and_then(|v| check_str(diags, "window_start", &s(v), WindowTime::parse));
    let retention = known(diags, "retention_days", &p.retention_days).and_then(|v| check_int(diags, "retention_days", &Value::Value(v), RetentionDays::parse));
    if diags.errors.len() > before {
        return None;
    }
    Some(BackupPolicySpec { schedule: schedule?, window_start: window?, retention_days: retention? })
}

fn from_api(p: &BackupPolicy) -> BackupPolicyState {
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

fn path(homeserver_id: &str) -> String {
    format!("/v1/homeservers/{}/backup-policy", seg(homeserver_id))
}

impl BackupPolicyResource {
    async fn get(&self, diags: &mut Diagnostics, homeserver_id: &str, what: &str) -> Result<Option<BackupPolicy>, ()> {
        let Some(client) = self.ctx.client(diags) else { return Err(()) };
        match client.get_opt::<BackupPolicy>(&path(homeserver_id)).await {
            Ok(p) => Ok(p),
            Err(e) => {
                diag::api_error(diags, what.to_owned(), &e, FIELDS);
                Err(())
            }
        }
    }
}

#[async_trait]
impl Resource for BackupPolicyResource {
    type State<'a> = BackupPolicyState;
    type PrivateState<'a> = PrivateState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        check(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, async {
            let Value::Value(hs) = &state.homeserver_id else { return None };
            match self.get(diags, hs, "Cannot read backup policy").await {
                Ok(Some(p)) => Some((from_api(&p), private(p.version))),
                // Deleted out of band (or its homeserver is gone): planned again.
                Ok(None) => None,
                Err(()) => Some((state.clone(), Value::Null)),
            }
        })
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        _proposed: Self::State<'a>,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut planned = with_defaults(&config);
        unknown(&mut planned.id);
        // R4: backups are always encrypted.
        planned.encrypted = Value::Value(true);
        unknown(&mut planned.last_backup_at);
        unknown(&mut planned.next_backup_at);
        Some((planned, Value::Null))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _proposed: Self::State<'a>,
        config: Self::State<'a>,
        prior_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let wanted = with_defaults(&config);
        let mut planned = prior.clone();
        planned.homeserver_id = wanted.homeserver_id;
        planned.schedule = wanted.schedule;
        planned.window_start = wanted.window_start;
        planned.retention_days = wanted.retention_days;
        let mut replace = Vec::new();
        if differs(&planned.homeserver_id, &prior.homeserver_id) {
            replace.push(diag::path("homeserver_id"));
        }
        if planned != prior {
            unknown(&mut planned.last_backup_at);
            unknown(&mut planned.next_backup_at);
            if !replace.is_empty() {
                unknown(&mut planned.id);
            }
        }
        Some((planned, prior_private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        prior_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(prior_private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let hs = known(diags, "homeserver_id", &planned.homeserver_id);
            let body = spec(diags, &planned)?;
            let hs = hs?;
            match client.create::<_, BackupPolicy>(&path(&hs), &body, &idempotency_key()).await {
                Ok(p) => Some((from_api(&p), private(p.version))),
                Err(e) => {
                    diag::api_error(diags, "Cannot create backup policy", &e, FIELDS);
                    None
                }
            }
        })
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        planned_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let hs = known(diags, "homeserver_id", &prior.homeserver_id)?;
            let body = spec(diags, &planned)?;
            match client.put::<_, BackupPolicy>(&path(&hs), &body, version_of(&planned_private)).await {
                Ok(p) => Some((from_api(&p), private(p.version))),
                Err(e) => {
                    diag::api_error(diags, "Cannot update backup policy", &e, FIELDS);
                    None
                }
            }
        })
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        guarded!(diags, async {
            let client = self.ctx.client(diags)?;
            let hs = known(diags, "homeserver_id", &prior.homeserver_id)?;
            match client.delete(&path(&hs)).await {
                Ok(_) => Some(()),
                Err(e) if e.is_not_found() => Some(()),
                Err(e) => {
                    diag::api_error(diags, "Cannot delete backup policy", &e, FIELDS);
                    None
                }
            }
        })
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, async {
            let hs = id.trim().to_owned();
            if hs.is_empty() || hs.contains('/') {
                diag::root_error(diags, "Cannot import backup policy", format!("`{id}` is not a homeserver id; import a backup policy by its homeserver's id (hs_...)."));
                return None;
            }
            match self.get(diags, &hs, "Cannot import backup policy").await {
                Ok(Some(p)) => Some((from_api(&p), private(p.version))),
                Ok(None) => {
                    import_not_found(diags, "backup policy for homeserver", &hs);
                    None
                }
                Err(()) => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r4_bounds_and_window_syntax() {
        let mut d = Diagnostics::default();
        check(&mut d, &BackupPolicyState { retention_days: Value::Value(Num::int(6)), window_start: s("25:00"), schedule: s("hourly"), ..Default::default() });
        assert_eq!(d.errors.len(), 3);
        assert!(d.errors.iter().any(|e| e.detail.contains("R4")));
        let p = with_defaults(&BackupPolicyState::default());
        assert_eq!(p.retention_days, Value::Value(Num::int(30)));
        assert_eq!(p.window_start, s("03:00"));
        assert_eq!(p.schedule, s("daily"));
    }
}
