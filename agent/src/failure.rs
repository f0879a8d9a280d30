//! How the agent fails: a code from the fixed set for the caller, the details (which may hold
//! text a tenant wrote) for the operator's log, joined by a correlation id.

use std::fmt;

use matrixhost_agent_api::{correlation_id, AgentError, ErrorCode};

#[derive(Debug)]
pub struct Failure {
    pub code: ErrorCode,
    pub detail: anyhow::Error,
}

pub type Outcome<T> = Result<T, Failure>;

impl Failure {
    pub fn new(code: ErrorCode, detail: impl Into<anyhow::Error>) -> Self {
        Failure { code, detail: detail.into() }
    }

    /// Logs the details under a fresh correlation id and returns what may cross the socket.
    pub fn report(self, op: &str, homeserver: Option<&dyn fmt::Display>) -> AgentError {
        let id = correlation_id();
        let homeserver = homeserver.map(|h| h.to_string()).unwrap_or_default();
        tracing::warn!(
            correlation_id = %id,
            op,
            homeserver = %homeserver,
            code = self.code.as_str(),
            detail = %log_safe(&format!("{:#}", self.detail), 4096),
            "request failed"
        );
        AgentError::new(self.code, id)
    }
}

/// `result.code(ErrorCode::X)`: tags an error with the code the caller will see.
pub trait Code<T> {
    fn code(self, code: ErrorCode) -> Outcome<T>;
}

impl<T, E: Into<anyhow::Error>> Code<T> for Result<T, E> {
    fn code(self, code: ErrorCode) -> Outcome<T> {
        self.map_err(|e| Failure::new(code, e))
    }
}

/// Text that is safe in a log line even if a tenant wrote it: control characters (newlines,
/// escape sequences) are escaped, so it cannot forge lines or colours, and it is cut at `max`
/// bytes.
pub fn log_safe(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 16);
    for c in text.chars() {
        if out.len() >= max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_text_cannot_forge_log_lines() {
        let s = log_safe("ok\n2026-01-01 INFO forged\u{1b}[31m", 100);
        assert!(!s.contains('\n') && !s.contains('\u{1b}'), "{s}");
        assert!(s.contains("\\n2026"));
        assert_eq!(log_safe(&"x".repeat(50), 10).chars().count(), 11);
    }

    #[test]
    fn only_the_code_and_reference_leave() {
        let e = Failure::new(ErrorCode::BackupFailed, anyhow::anyhow!("tenant says: SECRET")).report("take_backup", None);
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("SECRET") && json.contains("backup_failed"), "{json}");
    }
}
