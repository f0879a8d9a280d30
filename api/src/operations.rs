//! Every operation of the API, written once: its method, path and operation id. The server
//! builds its router from this table (one handler per operation, matched exhaustively) and
//! `openapi::document` describes the same table, so neither can have a route the other lacks.

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    /// As OpenAPI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }
}

macro_rules! operations {
    ($($op:ident = $method:ident $path:literal $id:literal;)*) => {
        /// One operation of the API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $($op,)*
        }

        impl Op {
            pub const ALL: &'static [Op] = &[$(Op::$op,)*];

            pub fn method(self) -> Method {
                match self {
                    $(Op::$op => Method::$method,)*
                }
            }

            /// The path template, with `{param}` segments.
            pub fn path(self) -> &'static str {
                match self {
                    $(Op::$op => $path,)*
                }
            }

            /// The OpenAPI `operationId`.
            pub fn id(self) -> &'static str {
                match self {
                    $(Op::$op => $id,)*
                }
            }
        }
    };
}

operations! {
    Health = Get "/healthz" "health";
    OpenApi = Get "/openapi.json" "openapi";
    GetOrganization = Get "/v1/organization" "get_organization";
    ListRegions = Get "/v1/regions" "list_regions";
    GetRegion = Get "/v1/regions/{code}" "get_region";
    ListPlans = Get "/v1/plans" "list_plans";
    GetPlan = Get "/v1/plans/{tier}" "get_plan";

    ListBillingPlans = Get "/v1/billing-plans" "list_billing_plans";
    CreateBillingPlan = Post "/v1/billing-plans" "create_billing_plan";
    GetBillingPlan = Get "/v1/billing-plans/{billing_plan_id}" "get_billing_plan";
    UpdateBillingPlan = Put "/v1/billing-plans/{billing_plan_id}" "update_billing_plan";
    DeleteBillingPlan = Delete "/v1/billing-plans/{billing_plan_id}" "delete_billing_plan";

    ListHomeservers = Get "/v1/homeservers" "list_homeservers";
    CreateHomeserver = Post "/v1/homeservers" "create_homeserver";
    GetHomeserver = Get "/v1/homeservers/{homeserver_id}" "get_homeserver";
    UpdateHomeserver = Put "/v1/homeservers/{homeserver_id}" "update_homeserver";
    DeleteHomeserver = Delete "/v1/homeservers/{homeserver_id}" "delete_homeserver";
    GetHomeserverUsage = Get "/v1/homeservers/{homeserver_id}/usage" "get_homeserver_usage";
    ListHomeserverEvents = Get "/v1/homeservers/{homeserver_id}/events" "list_homeserver_events";

    ListReservedUsers = Get "/v1/homeservers/{homeserver_id}/reserved-users" "list_reserved_users";
    CreateReservedUser = Post "/v1/homeservers/{homeserver_id}/reserved-users" "create_reserved_user";
    GetReservedUser = Get "/v1/homeservers/{homeserver_id}/reserved-users/{reserved_user_id}" "get_reserved_user";
    UpdateReservedUser = Put "/v1/homeservers/{homeserver_id}/reserved-users/{reserved_user_id}" "update_reserved_user";
    DeleteReservedUser = Delete "/v1/homeservers/{homeserver_id}/reserved-users/{reserved_user_id}" "delete_reserved_user";

    CreateBackupPolicy = Post "/v1/homeservers/{homeserver_id}/backup-policy" "create_backup_policy";
    GetBackupPolicy = Get "/v1/homeservers/{homeserver_id}/backup-policy" "get_backup_policy";
    UpdateBackupPolicy = Put "/v1/homeservers/{homeserver_id}/backup-policy" "update_backup_policy";
    DeleteBackupPolicy = Delete "/v1/homeservers/{homeserver_id}/backup-policy" "delete_backup_policy";

    ListBackups = Get "/v1/homeservers/{homeserver_id}/backups" "list_backups";
    CreateBackup = Post "/v1/homeservers/{homeserver_id}/backups" "create_backup";
    EraseBackups = Delete "/v1/homeservers/{homeserver_id}/backups" "erase_backups";
    GetBackup = Get "/v1/homeservers/{homeserver_id}/backups/{backup_id}" "get_backup";
    DeleteBackup = Delete "/v1/homeservers/{homeserver_id}/backups/{backup_id}" "delete_backup";
    ListRestores = Get "/v1/homeservers/{homeserver_id}/restores" "list_restores";
    CreateRestore = Post "/v1/homeservers/{homeserver_id}/restores" "create_restore";
    GetRestore = Get "/v1/homeservers/{homeserver_id}/restores/{restore_id}" "get_restore";

    ReceiveStripeEvent = Post "/v1/stripe/webhook" "receive_stripe_event";
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn operations_are_unique() {
        let ids: HashSet<_> = Op::ALL.iter().map(|op| op.id()).collect();
        let routes: HashSet<_> = Op::ALL.iter().map(|op| (op.method(), op.path())).collect();
        assert_eq!(ids.len(), Op::ALL.len());
        assert_eq!(routes.len(), Op::ALL.len());
    }
}
