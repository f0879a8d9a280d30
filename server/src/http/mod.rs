//! The HTTP edge: the router, the request context (request id, span, access log), the extractors
//! every handler shares (caller, JSON body, pagination, If-Match, Idempotency-Key), the one
//! error shape, and one handler module per resource. Status codes exist here only.

mod backup_policies;
mod backups;
mod billing_plans;
mod console;
mod error;
mod extract;
mod homeservers;
mod idempotency;
mod platform;
mod ratelimit;
mod reserved_users;
mod stripe_webhook;
#[cfg(feature = "test-hooks")]
mod test_hooks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use matrixhost_api::operations::{Method, Op};
use matrixhost_api::ErrorCode;
use tracing::Instrument;

pub use error::{AppError, AppResult};
pub use extract::{ApiJson, Caller, IdempotencyKey, IfMatch, ListParams, Versioned};
pub use ratelimit::RateLimiter;

use crate::backup::Backups;
use crate::domain::access_log::Entry;
use crate::domain::orgs::LastUsed;
use crate::platform::Platform;
use crate::runtime::Runtime;

/// What a request handler can reach.
#[derive(Debug)]
pub struct App {
    pub platform: Arc<Platform>,
    pub rate_limiter: RateLimiter,
    pub last_used: LastUsed,
    /// The homeserver runtime, unless started with `--no-runtime`.
    pub runtime: Option<Arc<Runtime>>,
    pub backups: Arc<Backups>,
    /// R17: where each request's access-log entry goes (written in batches).
    pub access_log: tokio::sync::mpsc::Sender<Entry>,
    /// Log-in attempts per account and per address, sign-ups and reset mails per address.
    pub throttle: console::Throttle,
    /// Test hook: injected responses (`POST /v1/_test/faults`).
    #[cfg(feature = "test-hooks")]
    pub faults: test_hooks::Faults,
}

impl App {
    pub fn new(platform: Arc<Platform>, runtime: Option<Arc<Runtime>>, backups: Arc<Backups>, access_log: tokio::sync::mpsc::Sender<Entry>) -> App {
        let s = &platform.settings;
        App {
            rate_limiter: RateLimiter::new(s.rate_limit_per_second, s.rate_limit_burst),
            last_used: LastUsed::default(),
            runtime,
            backups,
            access_log,
            throttle: console::Throttle::default(),
            #[cfg(feature = "test-hooks")]
            faults: test_hooks::Faults::default(),
            platform,
        }
    }
}

tokio::task_local! {
    static REQUEST_ID: String;
    /// The organization the request turned out to act for, once authenticated (R17).
    static REQUEST_ORG: Arc<Mutex<Option<String>>>;
}

/// Records which organization the current request acts for, for its access-log entry.
pub fn note_org(org_id: &str) {
    let _ = REQUEST_ORG.try_with(|org| *org.lock().unwrap_or_else(|e| e.into_inner()) = Some(org_id.to_owned()));
}

/// The id of the request being handled, for error bodies. Outside a request: `-`.
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".into())
}

/// A client-chosen request id is kept when it is a plain token; otherwise a new one is made.
fn choose_request_id(req: &Request) -> String {
    req.headers()
        .get(matrixhost_api::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{}", crate::ids::random_suffix()))
}

/// Runs the request inside a span carrying its id, so every log line it causes names it, and
/// queues its access-log entry (R17).
async fn request_context(axum::extract::State(app): axum::extract::State<Arc<App>>, req: Request, next: Next) -> Response {
    let id = choose_request_id(&req);
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into());
    let (method, path) = (req.method().to_string(), req.uri().path().chars().take(512).collect::<String>());
    let org = Arc::new(Mutex::new(None));
    let mut response = REQUEST_ID.scope(id.clone(), REQUEST_ORG.scope(org.clone(), next.run(req).instrument(span.clone()))).await;
    let entry = Entry {
        at: app.platform.clock.now(),
        ip,
        org_id: org.lock().unwrap_or_else(|e| e.into_inner()).take(),
        method,
        path,
        status: response.status().as_u16(),
        request_id: id.clone(),
    };
    if app.access_log.try_send(entry).is_err() {
        span.in_scope(|| tracing::warn!("the access-log queue is full; an entry was dropped"));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(matrixhost_api::REQUEST_ID, value);
    }
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request finished")
    });
    response
}

async fn not_found() -> AppError {
    AppError::not_found("route")
}

async fn method_not_allowed() -> AppError {
    AppError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed, "method not allowed on this path")
}

/// The API: one route per operation of `api::operations::Op`, the table the OpenAPI document
/// describes. The match is exhaustive, so an operation cannot lack its handler, and no API
/// route exists outside the table.
fn api_routes() -> Router<Arc<App>> {
    Op::ALL.iter().fold(Router::new(), |routes, &op| routes.route(op.path(), handler(op)))
}

fn handler(op: Op) -> MethodRouter<Arc<App>> {
    match op {
        Op::Health => on(op, platform::health),
        Op::OpenApi => on(op, platform::openapi),
        Op::GetOrganization => on(op, platform::organization),
        Op::ListRegions => on(op, platform::list_regions),
        Op::GetRegion => on(op, platform::read_region),
        Op::ListPlans => on(op, platform::list_plans),
        Op::GetPlan => on(op, platform::read_plan),
        Op::ListBillingPlans => on(op, billing_plans::list),
        Op::CreateBillingPlan => on(op, billing_plans::create),
        Op::GetBillingPlan => on(op, billing_plans::read),
        Op::UpdateBillingPlan => on(op, billing_plans::update),
        Op::DeleteBillingPlan => on(op, billing_plans::remove),
        Op::ListHomeservers => on(op, homeservers::list),
        Op::CreateHomeserver => on(op, homeservers::create),
        Op::GetHomeserver => on(op, homeservers::read),
        Op::UpdateHomeserver => on(op, homeservers::update),
        Op::DeleteHomeserver => on(op, homeservers::remove),
        Op::GetHomeserverUsage => on(op, homeservers::usage),
        Op::ListHomeserverEvents => on(op, homeservers::list_events),
        Op::ListReservedUsers => on(op, reserved_users::list),
        Op::CreateReservedUser => on(op, reserved_users::create),
        Op::GetReservedUser => on(op, reserved_users::read),
        Op::UpdateReservedUser => on(op, reserved_users::update),
        Op::DeleteReservedUser => on(op, reserved_users::remove),
        Op::CreateBackupPolicy => on(op, backup_policies::create),
        Op::GetBackupPolicy => on(op, backup_policies::read),
        Op::UpdateBackupPolicy => on(op, backup_policies::update),
        Op::DeleteBackupPolicy => on(op, backup_policies::remove),
        Op::ListBackups => on(op, backups::list_backups),
        Op::CreateBackup => on(op, backups::take_backup),
        Op::EraseBackups => on(op, backups::erase_backups),
        Op::GetBackup => on(op, backups::read_backup),
        Op::DeleteBackup => on(op, backups::delete_backup),
        Op::ListRestores => on(op, backups::list_restores),
        Op::CreateRestore => on(op, backups::create_restore),
        Op::GetRestore => on(op, backups::read_restore),
        Op::ReceiveStripeEvent => on(op, stripe_webhook::receive),
    }
}

/// `handler` at the operation's method.
fn on<H: Handler<T, Arc<App>>, T: 'static>(op: Op, handler: H) -> MethodRouter<Arc<App>> {
    let method = match op.method() {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Delete => MethodFilter::DELETE,
    };
    axum::routing::on(method, handler)
}

/// A panic becomes a 500 in the usual shape instead of a dropped connection.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    AppError::internal("handler panicked").into_response()
}

pub fn router(app: Arc<App>) -> Router {
    let routes = api_routes().merge(console::routes(app.clone()));
    #[cfg(feature = "test-hooks")]
    let routes = test_hooks::install(routes, app.clone());
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(axum::middleware::from_fn_with_state(app.clone(), request_context))
        .with_state(app)
}
