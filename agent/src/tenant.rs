//! R3: one unprivileged system user (and group) per homeserver.
//!
//! Each homeserver's processes run as `mh-<last 12 characters of its id>`, a system account
//! with no home directory and no login shell. Its data directory (on its encrypted volume) is
//! owned by that user with mode 0700, so no other tenant can read it. The account's GECOS
//! field records the full homeserver id, so that a (very unlikely) collision of the short
//! names is detected instead of two homeservers sharing an account.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use matrixhost_agent_api::HomeserverId;
use nix::unistd::{Group, User};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// useradd/userdel take a lock on /etc/passwd and fail when it is busy: serialise ours.
static ACCOUNTS: Mutex<()> = Mutex::new(());

const GECOS_PREFIX: &str = "matrixhost ";

/// `mh-` and the last 12 characters of the id (the random part), e.g. `mh-ghij234567ab`.
pub fn user_name(homeserver: &HomeserverId) -> String {
    let id = homeserver.as_str();
    let tail = &id[id.len().saturating_sub(12)..];
    format!("mh-{tail}")
}

fn getpwnam(name: &str) -> Result<Option<User>> {
    User::from_name(name).with_context(|| format!("cannot look up the system user {name}"))
}

fn group_exists(name: &str) -> Result<bool> {
    Ok(Group::from_name(name).with_context(|| format!("cannot look up the group {name}"))?.is_some())
}

/// Runs an account tool; returns its exit code, or an error with its stderr for codes not in `ok`.
fn run(program: &str, args: &[&str], ok: &[i32]) -> Result<i32> {
    Ok(crate::tools::run(program, args, ok)?.code)
}

/// Retries a command that fails while /etc/passwd is locked by someone else.
fn run_retrying(program: &str, args: &[&str], ok: &[i32], busy: &[i32]) -> Result<i32> {
    let mut all_ok: Vec<i32> = ok.to_vec();
    all_ok.extend_from_slice(busy);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = run(program, args, &all_ok)?;
        if !busy.contains(&code) {
            return Ok(code);
        }
        if Instant::now() > deadline {
            return run(program, args, ok);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn from_passwd(homeserver: &HomeserverId, name: String, pw: User) -> Result<TenantUser> {
    let expected = format!("{GECOS_PREFIX}{homeserver}");
    let gecos = pw.gecos.to_string_lossy();
    if gecos != expected {
        bail!("the system user {name} exists but is not the one of homeserver {homeserver} (its comment is {gecos:?}); refusing to share it");
    }
    let (uid, gid) = (pw.uid.as_raw(), pw.gid.as_raw());
    if uid == 0 || gid == 0 {
        bail!("the system user {name} is privileged (uid {uid}, gid {gid}); refusing to use it");
    }
    Ok(TenantUser { name, uid, gid })
}

/// The homeserver's user, if it exists.
pub fn lookup(homeserver: &HomeserverId) -> Result<Option<TenantUser>> {
    let name = user_name(homeserver);
    match getpwnam(&name)? {
        None => Ok(None),
        Some(pw) => from_passwd(homeserver, name, pw).map(Some),
    }
}

/// Creates the homeserver's user and group unless they exist; returns them.
pub fn ensure(homeserver: &HomeserverId) -> Result<TenantUser> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(user) = lookup(homeserver)? {
        return Ok(user);
    }
    let name = user_name(homeserver);
    let comment = format!("{GECOS_PREFIX}{homeserver}");
    let mut args = vec!["--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", &comment];
    // A group left over from an interrupted removal is reused rather than failing.
    if group_exists(&name)? {
        args.extend(["--gid", &name]);
    } else {
        args.push("--user-group");
    }
    args.push(&name);
    // 9: the name is taken (by a concurrent agent?); the lookup below decides. 10: busy.
    run_retrying("useradd", &args, &[0, 9], &[1, 10]).with_context(|| format!("cannot create the system user {name}"))?;
    let user = lookup(homeserver)?.ok_or_else(|| anyhow!("useradd succeeded but the system user {name} is not there"))?;
    tracing::info!(user = %user.name, uid = user.uid, %homeserver, "created tenant user");
    Ok(user)
}

/// Kills what is left of the user's processes, then deletes the user and its group. Idempotent.
pub fn remove(homeserver: &HomeserverId) -> Result<()> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let name = user_name(homeserver);
    if let Some(pw) = getpwnam(&name)? {
        // Never remove an account that belongs to something else.
        let user = from_passwd(homeserver, name.clone(), pw)?;
        let uid = user.uid.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // By effective and by real uid; 1 means nothing matched.
            run("pkill", &["-KILL", "-u", &uid], &[0, 1])?;
            run("pkill", &["-KILL", "-U", &uid], &[0, 1])?;
            if run("pgrep", &["-u", &uid], &[0, 1])? == 1 && run("pgrep", &["-U", &uid], &[0, 1])? == 1 {
                break;
            }
            if Instant::now() > deadline {
                bail!("processes of {name} survive SIGKILL (zombies not reaped by their parent?)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // 6: already gone; 8: still logged in (retry); 10: cannot update the group file (retry).
        run_retrying("userdel", &[&name], &[0, 6], &[1, 8, 10]).with_context(|| format!("cannot delete the system user {name}"))?;
        tracing::info!(user = %name, %homeserver, "removed tenant user");
    }
    if group_exists(&name)? {
        // 6: already gone.
        run_retrying("groupdel", &[&name], &[0, 6], &[10]).with_context(|| format!("cannot delete the group {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn hs(id: &str) -> HomeserverId {
        HomeserverId::parse(id).unwrap()
    }

    #[test]
    fn names_use_the_random_tail_of_the_id() {
        assert_eq!(user_name(&hs("hs_abcdefghij234567abcd")), "mh-ij234567abcd");
        assert_eq!(user_name(&hs("hs_x")), "mh-hs_x");
        assert!(user_name(&hs("hs_abcdefghij234567abcd")).len() <= 32);
    }

    fn can_manage_users() -> bool {
        // SAFETY: no preconditions.
        let root = rustix::process::geteuid().is_root();
        let tools = ["useradd", "userdel", "groupdel", "pkill", "pgrep"].iter().all(|t| crate::tools::find(t).is_some());
        if root && tools {
            return true;
        }
        if std::env::var("MATRIXHOST_REQUIRE_VOLUMES").as_deref() == Ok("1") {
            panic!("tenant users are required (MATRIXHOST_REQUIRE_VOLUMES=1) but this host cannot create them (root: {root}, tools: {tools})");
        }
        println!("skipped: creating system users needs root and the shadow tools");
        false
    }

    fn random_id() -> HomeserverId {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut rng = rand::thread_rng();
        hs(&format!("hs_u{}", (0..19).map(|_| ALPHABET[rng.gen_range(0..32)] as char).collect::<String>()))
    }

    struct Cleanup(Vec<HomeserverId>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for id in &self.0 {
                if let Err(e) = remove(id) {
                    eprintln!("cleanup: {e:#}");
                }
            }
        }
    }

    #[test]
    fn users_are_created_once_isolated_and_removed() {
        if !can_manage_users() {
            return;
        }
        let (a, b) = (random_id(), random_id());
        let _cleanup = Cleanup(vec![a.clone(), b.clone()]);
        assert_eq!(lookup(&a).unwrap(), None);
        let ua = ensure(&a).unwrap();
        assert_eq!(ensure(&a).unwrap(), ua, "ensure is idempotent");
        assert_eq!(lookup(&a).unwrap(), Some(ua.clone()));
        let ub = ensure(&b).unwrap();
        assert_ne!(ua.uid, ub.uid);
        assert_ne!(ua.gid, ub.gid);
        assert!(ua.uid != 0 && ua.gid != 0);
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let line = passwd.lines().find(|l| l.starts_with(&format!("{}:", ua.name))).unwrap();
        assert!(line.ends_with(":/nonexistent:/usr/sbin/nologin"), "{line}");
        assert!(line.contains(&format!("matrixhost {a}")), "{line}");
        assert!(!std::path::Path::new("/nonexistent").exists());

        // The user cannot log in and has no privileges.
        let out = Command::new("runuser").args(["-u", &ua.name, "--", "id", "-u"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ua.uid.to_string());

        // A leftover process is killed by remove().
        let mut child = Command::new("runuser").args(["-u", &ua.name, "--", "sleep", "300"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        remove(&a).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert_eq!(lookup(&a).unwrap(), None);
        assert!(!group_exists(&ua.name).unwrap());
        remove(&a).unwrap(); // idempotent
        assert_eq!(lookup(&b).unwrap(), Some(ub));
    }

    #[test]
    fn a_colliding_name_is_refused() {
        if !can_manage_users() {
            return;
        }
        // Two ids sharing their last 12 characters map to the same name.
        let a = random_id();
        let b = hs(&format!("hs_v{}", &a.as_str()[4..]));
        assert_eq!(user_name(&a), user_name(&b));
        let _cleanup = Cleanup(vec![a.clone()]);
        ensure(&a).unwrap();
        let err = ensure(&b).unwrap_err();
        assert!(format!("{err:#}").contains("refusing to share"), "{err:#}");
        assert!(remove(&b).is_err(), "must not remove another homeserver's user");
        assert!(lookup(&a).unwrap().is_some());
    }
}
