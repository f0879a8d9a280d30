//! A reserved user's invitation: the person opens the mailed link and chooses the password of
//! their Matrix account, so no password passes through Terraform or its state. No log-in is
//! needed; the link is the proof (one use, 72 hours, stored only as a hash).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup};

use super::pages::{self, csrf_field, form_error, layout, FormErrors, NewPasswordForm, NewPasswordPost};
use super::signup::{TokenPost, TokenQuery};
use super::throttle::MAIL_PER_IP;
use super::{page, Ctx};
use crate::domain::passwords::NewPassword;
use crate::domain::reserved_users::{self, Mailer};
use crate::http::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/console/invite", get(show).post(accept)).route("/console/invite/renew", post(renew))
}

fn form(ctx: &Ctx, token: &str, user_id: &str, errors: &FormErrors) -> Markup {
    layout(
        "Choose your Matrix password",
        &ctx.viewer(),
        html! {
            p { "Your account: " strong { (user_id) } }
            (NewPasswordForm { action: "/console/invite", token, label: "Password", button: "Set my password" }.render(&ctx.csrf, errors))
        },
    )
}

/// An expired or used link: one answer, with a way to get a new link mailed to the address on
/// record.
fn not_usable(ctx: &Ctx, token: &str, not_ready: bool) -> Response {
    let body = if not_ready {
        html! { (pages::notice("Your account is still being set up on the homeserver. Try this link again in a minute.")) }
    } else {
        html! {
            div class="error-summary" role="alert" {
                p { "This invitation link has expired, was already used, or is not one we sent. Nothing was changed." }
            }
            form method="post" action="/console/invite/renew" {
                (csrf_field(&ctx.csrf))
                input type="hidden" name="token" value=(token);
                button type="submit" { "Mail me a new link" }
            }
        }
    };
    page(if not_ready { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST }, layout("Your Matrix invitation", &ctx.viewer(), body))
}

async fn show(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Query(q): Query<TokenQuery>) -> Response {
    let p = &app.platform;
    match reserved_users::usable_invitation(&p.db, &q.token, p.clock.now()).await {
        Ok(Ok(invited)) => page(StatusCode::OK, form(&ctx, &q.token, &invited.user_id, &FormErrors::default())),
        Ok(Err(not_ready)) => not_usable(&ctx, &q.token, not_ready),
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, layout("Your Matrix invitation", &ctx.viewer(), form_error(&FormErrors::from_domain(vec![e])))),
    }
}

async fn accept(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<NewPasswordPost>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let p = &app.platform;
    let now = p.clock.now();
    let invited = match reserved_users::usable_invitation(&p.db, &post.token, now).await {
        Ok(Ok(invited)) => invited,
        Ok(Err(not_ready)) => return not_usable(&ctx, &post.token, not_ready),
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, form(&ctx, &post.token, "", &FormErrors::from_domain(vec![e]))),
    };
    let password = match NewPassword::parse("password", &post.password, &invited.email) {
        Ok(pw) => pw,
        Err(e) => return page(StatusCode::UNPROCESSABLE_ENTITY, form(&ctx, &post.token, &invited.user_id, &FormErrors::from_domain(vec![e]))),
    };
    let Some(runtime) = &app.runtime else {
        return page(StatusCode::CONFLICT, form(&ctx, &post.token, &invited.user_id, &FormErrors::general("This homeserver is not running; try again later.")));
    };
    // The link is claimed first (once), and given back if the homeserver does not take the
    // password. No transaction stays open while a tenant's homeserver answers: a slow or
    // hostile one must not hold the control plane's database.
    let outcome = async {
        let setter = runtime.password_setter(&invited.homeserver_id).await.map_err(crate::domain::DomainError::internal)?;
        let mut tx = p.db.begin().await?;
        let Some(accepted) = reserved_users::accept_invitation(&mut tx, &post.token, now).await? else { return Ok::<_, crate::domain::DomainError>(None) };
        tx.commit().await?;
        if let Err(e) = setter.set(&accepted.user_id, password.expose()).await {
            reserved_users::reopen_invitation(&p.db, &accepted.id, &post.token).await?;
            return Err(crate::domain::DomainError::internal(e));
        }
        Ok(Some(accepted))
    }
    .await;
    match outcome {
        Ok(Some(accepted)) => {
            tracing::info!(reserved_user_id = %accepted.id, "invitation accepted; password set on the homeserver");
            page(
                StatusCode::OK,
                layout(
                    "Your password is set",
                    &ctx.viewer(),
                    html! { (pages::notice("Your password is set. Sign in with any Matrix client.")) p { "Your account: " strong { (accepted.user_id) } } },
                ),
            )
        }
        Ok(None) => not_usable(&ctx, &post.token, false),
        Err(e) => page(StatusCode::BAD_GATEWAY, form(&ctx, &post.token, &invited.user_id, &FormErrors::from_domain(vec![e]))),
    }
}

async fn renew(State(app): State<Arc<App>>, Extension(ctx): Extension<Ctx>, Form(post): Form<TokenPost>) -> Response {
    if let Err(refused) = ctx.check_csrf(&post.csrf) {
        return *refused;
    }
    let p = &app.platform;
    let key = format!("invite:ip:{}", ctx.ip);
    let sent = pages::notice("If that link was ours and not used yet, a new one is on its way to the address it was sent to.");
    if app.throttle.check(&key, MAIL_PER_IP).is_err() {
        return page(StatusCode::TOO_MANY_REQUESTS, layout("Your Matrix invitation", &ctx.viewer(), sent));
    }
    app.throttle.record(&key);
    let renewed = async {
        let mut tx = p.db.begin().await?;
        let mailer = Mailer { sealer: &p.sealer, console_url: p.console_url() };
        let renewed = reserved_users::renew_invitation(&mut tx, &mailer, &post.token, p.clock.now()).await?;
        tx.commit().await?;
        Ok::<_, crate::domain::DomainError>(renewed)
    }
    .await;
    if let Err(e) = renewed {
        tracing::error!(error = %e, "could not renew an invitation");
    }
    p.mail_queued();
    page(StatusCode::OK, layout("Your Matrix invitation", &ctx.viewer(), sent))
}
