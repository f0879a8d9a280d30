//! One module per resource, each with its routes, its table and its rules.

pub mod backup_policies;
pub mod backups;
pub mod billing_plans;
pub mod homeservers;
pub mod platform;
pub mod reserved_users;

use std::sync::Arc;

use axum::Router;

use crate::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .merge(platform::routes())
        .merge(billing_plans::routes())
        .merge(homeservers::routes())
        .merge(reserved_users::routes())
        .merge(backup_policies::routes())
        .merge(backups::routes())
}
