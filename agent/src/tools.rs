//! The host's tools the agent runs (util-linux, e2fsprogs, shadow, procps, bubblewrap). The
//! agent runs as root, so a tool is taken only from the system's own directories, never from
//! `PATH`, and runs in the C locale with no input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

const SYSTEM_DIRS: [&str; 5] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"];

/// The executable `name` in a system directory.
pub fn find(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    SYSTEM_DIRS.iter().map(|d| Path::new(d).join(name)).find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// What a tool printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
}

/// Runs `name` with `args`. An exit code outside `ok` is an error naming the command, with its
/// stderr (the tools' own words, for the operator's log).
pub fn run(name: &str, args: &[&str], ok: &[i32]) -> Result<Ran> {
    let program = find(name).ok_or_else(|| anyhow!("`{name}` is not installed"))?;
    let output = Command::new(&program)
        .args(args)
        .env("LC_ALL", "C")
        .env("PATH", SYSTEM_DIRS.join(":"))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {name}"))?;
    let code = output.status.code().unwrap_or(-1);
    if !ok.contains(&code) {
        bail!("`{name} {}` failed ({}): {}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(Ran { code, stdout: String::from_utf8_lossy(&output.stdout).into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_come_from_system_directories_and_failures_name_the_command() {
        assert!(find("sh").is_some_and(|p| p.starts_with("/usr") || p.starts_with("/bin")));
        assert!(find("no-such-tool-here").is_none());
        assert_eq!(run("true", &[], &[0]).unwrap().code, 0);
        assert_eq!(run("false", &[], &[0, 1]).unwrap().code, 1);
        let err = run("false", &["x"], &[0]).unwrap_err().to_string();
        assert!(err.starts_with("`false x` failed"), "{err}");
        assert!(run("no-such-tool-here", &[], &[0]).unwrap_err().to_string().contains("not installed"));
    }
}
