//! The platform's mail: what each message says (plain text plus HTML), and how it leaves. It
//! leaves through an SMTP relay (`smtp_url`, STARTTLS whenever the relay offers it), or, for
//! `--dev` without a relay, into a Maildir under the state directory. Messages are queued in the
//! outbox first (`domain/outbox.rs`) and sent from there, so a relay that is down delays mail
//! but loses none. The only secrets a message carries are one-time links.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use maud::{html, Markup, DOCTYPE};
use serde::{Deserialize, Serialize};

/// One message, ready to queue.
#[derive(Clone, Serialize, Deserialize)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Mail {
    // The body may hold a one-time link.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail").field("to", &self.to).field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// How mail leaves the platform.
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Maildir(PathBuf),
    /// No relay configured: mail waits in the outbox until one is.
    Unconfigured,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Smtp(_) => f.write_str("Transport::Smtp"),
            Transport::Maildir(dir) => write!(f, "Transport::Maildir({})", dir.display()),
            Transport::Unconfigured => f.write_str("Transport::Unconfigured"),
        }
    }
}

impl Transport {
    /// `smtp://[user:pass@]host[:port]` (STARTTLS when offered, unless `?tls=` says otherwise)
    /// or `smtps://...` (TLS from the start).
    pub fn smtp(url: &str) -> anyhow::Result<Transport> {
        let url = if url.starts_with("smtp://") && !url.contains("tls=") {
            format!("{url}{}tls=opportunistic", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url).map_err(|e| anyhow::anyhow!("smtp_url: {e}"))?.build();
        Ok(Transport::Smtp(transport))
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Transport::Smtp(_) => "SMTP relay",
            Transport::Maildir(_) => "Maildir in the state directory (--dev)",
            Transport::Unconfigured => "none (mail waits in the outbox)",
        }
    }

    /// Hands one message over. An error leaves it in the outbox for a later attempt.
    pub async fn send(&self, from: &str, mail: &Mail) -> anyhow::Result<()> {
        match self {
            Transport::Smtp(smtp) => {
                smtp.send(build(from, mail)?).await.map_err(|e| anyhow::anyhow!("the relay refused the message: {e}"))?;
                Ok(())
            }
            Transport::Maildir(dir) => write_maildir(dir, &build(from, mail)?.formatted()),
            Transport::Unconfigured => anyhow::bail!("no mail relay is configured (smtp_url)"),
        }
    }
}

fn build(from: &str, mail: &Mail) -> anyhow::Result<lettre::Message> {
    let from: Mailbox = from.parse().with_context(|| format!("mail_from `{from}` is not an address"))?;
    let to: Mailbox = mail.to.parse().context("the recipient is not an address")?;
    lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(&mail.subject)
        .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))
        .context("cannot build the message")
}

/// Maildir delivery: write under `tmp/`, then rename into `new/`, so a reader never sees half
/// a message.
fn write_maildir(dir: &Path, message: &[u8]) -> anyhow::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("cannot create the Maildir {}", dir.display()))?;
    }
    let name = format!("{}.{}.matrixhostd", Utc::now().timestamp_micros(), crate::ids::random_suffix());
    let tmp = dir.join("tmp").join(&name);
    std::fs::write(&tmp, message)?;
    std::fs::rename(&tmp, dir.join("new").join(&name))?;
    Ok(())
}

/// The words of every message the platform sends.
pub mod messages {
    use super::*;

    fn page(title: &str, body: Markup) -> String {
        html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { (title) } }
                body style="font-family: sans-serif; max-width: 36em" { (body) p { "— matrixhost" } }
            }
        }
        .into_string()
    }

    fn mail(to: &str, subject: &str, text: String, body: Markup) -> Mail {
        Mail { to: to.to_owned(), subject: subject.to_owned(), text: format!("{text}\n\n-- matrixhost\n"), html: page(subject, body) }
    }

    /// R15: the link that verifies a new account's address.
    pub fn verify_email(to: &str, link: &str) -> Mail {
        mail(
            to,
            "Verify your email address for matrixhost",
            format!("Welcome to matrixhost.\n\nOpen this link to verify your email address (it works once, for 24 hours):\n\n{link}\n\nIf you did not sign up, ignore this message."),
            html! {
                p { "Welcome to matrixhost." }
                p { "Open this link to verify your email address (it works once, for 24 hours):" }
                p { a href=(link) { "Verify my email address" } }
                p { "If you did not sign up, ignore this message." }
            },
        )
    }

    /// Someone signed up with an address that already has an account. The sign-up page says
    /// the same as for a new address; only the owner of the mailbox learns more.
    pub fn already_registered(to: &str, login: &str, reset: &str) -> Mail {
        mail(
            to,
            "Someone tried to sign up with your address",
            format!("Someone tried to create a matrixhost account with this address, which already has one.\n\nIf it was you, log in: {login}\nForgot your password? Reset it: {reset}\n\nIf it was not you, nothing has changed."),
            html! {
                p { "Someone tried to create a matrixhost account with this address, which already has one." }
                p { "If it was you, " a href=(login) { "log in" } " or " a href=(reset) { "reset your password" } "." }
                p { "If it was not you, nothing has changed." }
            },
        )
    }

    /// R16: a password reset link, valid for an hour.
    pub fn password_reset(to: &str, link: &str) -> Mail {
        mail(
            to,
            "Reset your matrixhost password",
            format!("Open this link to choose a new password (it works once, for 1 hour):\n\n{link}\n\nIf you did not ask for this, ignore this message; your password is unchanged."),
            html! {
                p { "Open this link to choose a new password (it works once, for 1 hour):" }
                p { a href=(link) { "Choose a new password" } }
                p { "If you did not ask for this, ignore this message; your password is unchanged." }
            },
        )
    }

    pub fn password_changed(to: &str, reset: &str) -> Mail {
        mail(
            to,
            "Your matrixhost password was changed",
            format!("The password of your matrixhost account was changed, and every session was logged out.\n\nIf this was not you, reset it now: {reset}"),
            html! {
                p { "The password of your matrixhost account was changed, and every session was logged out." }
                p { "If this was not you, " a href=(reset) { "reset it now" } "." }
            },
        )
    }

    /// R16: sent to the new address; confirming proves the customer reads it.
    pub fn confirm_new_email(to: &str, link: &str) -> Mail {
        mail(
            to,
            "Confirm your new email address for matrixhost",
            format!("Open this link to make this the address of your matrixhost account (it works once, for 1 hour):\n\n{link}"),
            html! {
                p { "Open this link to make this the address of your matrixhost account (it works once, for 1 hour):" }
                p { a href=(link) { "Confirm my new address" } }
            },
        )
    }

    /// R16: the old address hears of a change before it happens, and again once it has.
    pub fn email_change_requested(to: &str, new_email: &str) -> Mail {
        mail(
            to,
            "A change of your matrixhost email address was requested",
            format!("Someone logged in to your matrixhost account asked to change its address to {new_email}. It changes once that address confirms.\n\nIf this was not you, log in and change your password."),
            html! {
                p { "Someone logged in to your matrixhost account asked to change its address to " strong { (new_email) } ". It changes once that address confirms." }
                p { "If this was not you, log in and change your password." }
            },
        )
    }

    pub fn email_changed(to: &str, new_email: &str) -> Mail {
        mail(
            to,
            "Your matrixhost email address was changed",
            format!("The address of your matrixhost account is now {new_email}. Mail about the account goes there from now on."),
            html! { p { "The address of your matrixhost account is now " strong { (new_email) } ". Mail about the account goes there from now on." } },
        )
    }

    /// R18: the erasure is scheduled, and how to stop it.
    pub fn deletion_scheduled(to: &str, due: DateTime<Utc>, console: &str) -> Mail {
        let due = due.format("%Y-%m-%d %H:%M UTC").to_string();
        mail(
            to,
            "Your matrixhost account will be deleted",
            format!("Your matrixhost account is scheduled for deletion on {due}. Its homeservers and backups will be erased then.\n\nTo keep the account, log in before then and cancel the deletion: {console}"),
            html! {
                p { "Your matrixhost account is scheduled for deletion on " strong { (due) } ". Its homeservers and backups will be erased then." }
                p { "To keep the account, " a href=(console) { "log in" } " before then and cancel the deletion." }
            },
        )
    }

    pub fn deletion_cancelled(to: &str) -> Mail {
        mail(
            to,
            "Your matrixhost account will not be deleted",
            "The deletion of your matrixhost account was cancelled. Nothing was erased.".into(),
            html! { p { "The deletion of your matrixhost account was cancelled. Nothing was erased." } },
        )
    }

    /// A reserved user chooses their own password; the link works once, for 72 hours.
    pub fn reserved_user_invitation(to: &str, user_id: &str, server_name: &str, link: &str, expires: DateTime<Utc>) -> Mail {
        let expires = expires.format("%Y-%m-%d %H:%M UTC").to_string();
        mail(
            to,
            &format!("Your Matrix account on {server_name}"),
            format!("An account was reserved for you on the Matrix homeserver {server_name}: {user_id}\n\nChoose your password here (the link works once, until {expires}):\n\n{link}\n\nThen sign in with any Matrix client."),
            html! {
                p { "An account was reserved for you on the Matrix homeserver " strong { (server_name) } ": " code { (user_id) } }
                p { a href=(link) { "Choose your password" } " (the link works once, until " (expires) ")." }
                p { "Then sign in with any Matrix client." }
            },
        )
    }

    pub fn account_deleted(to: &str) -> Mail {
        mail(
            to,
            "Your matrixhost account was deleted",
            "Your matrixhost account, its homeservers, backups and personal data have been erased. This is the last message we send to this address about it.".into(),
            html! { p { "Your matrixhost account, its homeservers, backups and personal data have been erased. This is the last message we send to this address about it." } },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_has_text_and_escaped_html() {
        let m = messages::email_change_requested("a@example.com", "<b>x@example.com");
        assert!(m.text.contains("<b>x@example.com"));
        assert!(m.html.contains("&lt;b&gt;x@example.com") && !m.html.contains("<b>x@"));
        let built = build("matrixhost <noreply@matrixhost.localhost>", &m).unwrap().formatted();
        let text = String::from_utf8_lossy(&built);
        assert!(text.contains("multipart/alternative") && text.contains("text/plain") && text.contains("text/html"));
        assert!(!format!("{m:?}").contains("confirms"), "Debug leaves the body out");
    }

    #[test]
    fn maildir_delivery_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        write_maildir(dir.path(), b"Subject: hi\r\n\r\nbody").unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("new")).unwrap().count(), 1);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_plain_smtp_url_asks_for_starttls_when_offered() {
        assert!(matches!(Transport::smtp("smtp://127.0.0.1:2525").unwrap(), Transport::Smtp(_)));
        assert!(Transport::smtp("gopher://x").is_err());
    }
}
