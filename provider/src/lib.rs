//! `terraform-provider-matrixhost`: the Terraform provider of matrixhost, on `tf-provider`
//! (plugin protocol 6), talking to `matrixhostd` with the shared `matrixhost_api` types.
//!
//! * [`provider`]: configuration (`endpoint`, `token`) and the shared client.
//! * [`resources`]: `matrixhost_billing_plan`, `matrixhost_homeserver`,
//!   `matrixhost_reserved_user`, `matrixhost_backup_policy`.
//! * [`data_sources`]: `matrixhost_regions`, `matrixhost_plans`, `matrixhost_homeserver`,
//!   `matrixhost_backups`.
//! * [`docs`]: renders `docs/**` from the schemas (a test fails when they drift).
//!
//! `tf-provider` has no defaults, validators or plan modifiers, so each resource does them in
//! `validate` (rules on known values, with attribute paths; unknown values are skipped),
//! `plan_create` / `plan_update` (defaults, normalisation, RequiresReplace, computed values
//! kept or marked unknown) and `read` (refresh, keeping the configured spelling of values that
//! the server normalises).

pub mod client;
pub mod data_sources;
pub mod diag;
pub mod docs;
pub mod duration;
pub mod plugin_socket;
pub mod provider;
pub mod resources;
pub mod schema_builder;
pub mod values;

pub use provider::MatrixhostProvider;

/// Runs a provider operation, turning a panic into an error diagnostic (without a backtrace)
/// instead of a dropped gRPC connection.
#[macro_export]
macro_rules! guarded {
    ($diags:expr, $fut:expr) => {{
        use ::futures::FutureExt as _;
        let outcome = ::std::panic::AssertUnwindSafe($fut).catch_unwind().await;
        match outcome {
            Ok(v) => v,
            Err(payload) => {
                $crate::diag::root_error(
                    $diags,
                    "Internal error in the matrixhost provider",
                    format!("{} (this is a bug in the provider; please report it)", $crate::panic_message(&payload)),
                );
                None
            }
        }
    }};
}

/// The text of a panic payload.
pub fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

/// Keeps Rust backtraces out of everything the provider says: `tf-provider` attaches a
/// backtrace to diagnostics when `RUST_BACKTRACE`/`RUST_LIB_BACKTRACE` ask for one, and the
/// default panic hook prints one. Call first thing in `main`, before any thread starts.
pub fn quiet_backtraces() {
    std::env::set_var("RUST_BACKTRACE", "0");
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_owned()
        };
        eprintln!("terraform-provider-matrixhost: internal error{location}: {}", diag::scrub(message));
    }));
}
