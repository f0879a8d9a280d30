//! R2: one encrypted volume per homeserver.
//!
//! The kernel this runs on has no device-mapper (so no dm-crypt/LUKS). The closest mechanism
//! it offers is ext4's native encryption (fscrypt, v2 policies): each homeserver gets a sparse
//! image file, attached to a loop device and formatted ext4 with the `encrypt` feature. The
//! homeserver's data lives in `<mount>/data`, a directory with a v2 policy under a 64-byte
//! master key that only the agent holds (sealed under its master key, see `keys.rs`). Contents
//! and names of everything under `data` are encrypted; without the key in the filesystem's
//! keyring they cannot be read. See `docs/volumes.md`.
//!
//! Layout under the manager's root:
//! - `ROOT/images/<id>.img` — the image (mode 0600, root);
//! - `ROOT/mnt/<id>` — the mount point (root of the filesystem: 0700, root-owned);
//! - `ROOT/mnt/<id>/data` — the encrypted data directory (0700, owned by the tenant user),
//!   which the tenant reaches only as `/data` inside its sandbox;
//! - `ROOT/mnt/<id>/reserve` — space held back from the tenant (R12, [`reserve_bytes`]).
//!
//! All methods are synchronous and shell out to util-linux/e2fsprogs; call them from
//! `spawn_blocking`. Calls for the same id are serialised by a per-id lock.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use matrixhost_agent_api::{HomeserverId, VolumeUsage};

use crate::tools;

/// One GiB, the unit of volume sizes.
pub const GIB: u64 = 1 << 30;
/// The largest volume we agree to create (ext4 with 4 KiB blocks and `64bit` goes further; this
/// is a sanity bound on input).
pub const MAX_SIZE_GB: u32 = 16 * 1024;

/// Length of an fscrypt v2 master key identifier.
pub const KEY_IDENTIFIER_LEN: usize = 16;

// ---------------------------------------------------------------------------------------------
// The key
// ---------------------------------------------------------------------------------------------

/// The raw fscrypt master key of one volume (64 bytes). Never printed; zeroed on drop.
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct VolumeKey([u8; 64]);

impl VolumeKey {
    pub const LEN: usize = 64;

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 64];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        VolumeKey(bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != Self::LEN {
            bail!("a volume key is {} bytes, not {}", Self::LEN, bytes.len());
        }
        let mut key = [0u8; 64];
        key.copy_from_slice(bytes);
        Ok(VolumeKey(key))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKey(***)")
    }
}

// ---------------------------------------------------------------------------------------------
// fscrypt UAPI (linux/fscrypt.h)
// ---------------------------------------------------------------------------------------------

pub(crate) mod fscrypt {
    use std::io;
    use std::os::fd::RawFd;

    const IOC_WRITE: u32 = 1;
    const IOC_READ: u32 = 2;

    /// The kernel's `_IOC(dir, type, nr, size)`.
    pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
        (dir << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
    }
    pub const fn ior(ty: u8, nr: u8, size: usize) -> u32 {
        ioc(IOC_READ, ty, nr, size)
    }
    pub const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
        ioc(IOC_READ | IOC_WRITE, ty, nr, size)
    }

    pub const POLICY_V2: u8 = 2;
    pub const MODE_AES_256_XTS: u8 = 1;
    pub const MODE_AES_256_CTS: u8 = 4;
    pub const POLICY_FLAGS_PAD_32: u8 = 0x3;
    pub const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
    #[allow(dead_code)]
    pub const KEY_STATUS_ABSENT: u32 = 1;
    pub const KEY_STATUS_PRESENT: u32 = 2;
    #[allow(dead_code)]
    pub const KEY_STATUS_INCOMPLETELY_REMOVED: u32 = 3;
    pub const KEY_REMOVAL_STATUS_FLAG_FILES_BUSY: u32 = 0x1;

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct KeySpecifier {
        pub type_: u32,
        pub reserved: u32,
        /// Union of `__reserved[32]`, `descriptor[8]` and `identifier[16]`.
        pub u: [u8; 32],
    }

    impl KeySpecifier {
        pub fn identifier(id: &[u8; 16]) -> Self {
            let mut u = [0u8; 32];
            u[..16].copy_from_slice(id);
            KeySpecifier { type_: KEY_SPEC_TYPE_IDENTIFIER, reserved: 0, u }
        }
    }

    /// `struct fscrypt_add_key_arg`, followed in memory by `raw[raw_size]`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct AddKeyArg {
        pub key_spec: KeySpecifier,
        pub raw_size: u32,
        pub key_id: u32,
        pub reserved: [u32; 8],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RemoveKeyArg {
        pub key_spec: KeySpecifier,
        pub removal_status_flags: u32,
        pub reserved: [u32; 5],
    }

    /// Only its size matters: `FS_IOC_SET_ENCRYPTION_POLICY` is numbered after it.
    #[repr(C)]
    pub struct PolicyV1 {
        pub version: u8,
        pub contents_encryption_mode: u8,
        pub filenames_encryption_mode: u8,
        pub flags: u8,
        pub master_key_descriptor: [u8; 8],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PolicyV2 {
        pub version: u8,
        pub contents_encryption_mode: u8,
        pub filenames_encryption_mode: u8,
        pub flags: u8,
        pub reserved: [u8; 4],
        pub master_key_identifier: [u8; 16],
    }

    /// `struct fscrypt_get_policy_ex_arg`: the size in, then a union of v1/v2 policies.
    #[repr(C)]
    pub struct GetPolicyExArg {
        pub policy_size: u64,
        pub policy: [u8; 24],
    }

    #[repr(C)]
    pub struct GetKeyStatusArg {
        pub key_spec: KeySpecifier,
        pub reserved: [u32; 6],
        pub status: u32,
        pub status_flags: u32,
        pub user_count: u32,
        pub out_reserved: [u32; 13],
    }

    pub const FS_IOC_SET_ENCRYPTION_POLICY: u32 = ior(b'f', 19, std::mem::size_of::<PolicyV1>());
    pub const FS_IOC_GET_ENCRYPTION_POLICY_EX: u32 = iowr(b'f', 22, 9);
    pub const FS_IOC_ADD_ENCRYPTION_KEY: u32 = iowr(b'f', 23, std::mem::size_of::<AddKeyArg>());
    /// We use the `_ALL_USERS` variant (root only), which also drops claims other users may hold.
    #[allow(dead_code)]
    pub const FS_IOC_REMOVE_ENCRYPTION_KEY: u32 = iowr(b'f', 24, std::mem::size_of::<RemoveKeyArg>());
    pub const FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS: u32 = iowr(b'f', 25, std::mem::size_of::<RemoveKeyArg>());
    pub const FS_IOC_GET_ENCRYPTION_KEY_STATUS: u32 = iowr(b'f', 26, std::mem::size_of::<GetKeyStatusArg>());

    fn ioctl(fd: RawFd, request: u32, arg: *mut libc::c_void) -> io::Result<()> {
        // SAFETY: callers pass a pointer to a live buffer of the size encoded in `request`
        // (or larger, for the add-key tail).
        let rc = unsafe { libc::ioctl(fd, request as _, arg) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Adds a raw v2 master key to the filesystem of `fd`; returns its identifier.
    pub fn add_key(fd: RawFd, raw: &[u8]) -> io::Result<[u8; 16]> {
        const HDR: usize = std::mem::size_of::<AddKeyArg>();
        // u64 words keep the buffer suitably aligned for the header.
        let words = (HDR + raw.len()).div_ceil(8);
        let mut buf = vec![0u64; words];
        let header = AddKeyArg {
            key_spec: KeySpecifier { type_: KEY_SPEC_TYPE_IDENTIFIER, reserved: 0, u: [0; 32] },
            raw_size: raw.len() as u32,
            key_id: 0,
            reserved: [0; 8],
        };
        let base = buf.as_mut_ptr() as *mut u8;
        // SAFETY: the buffer holds HDR + raw.len() bytes and is 8-aligned.
        unsafe {
            std::ptr::write(base as *mut AddKeyArg, header);
            std::ptr::copy_nonoverlapping(raw.as_ptr(), base.add(HDR), raw.len());
        }
        let result = ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, base as *mut libc::c_void);
        // SAFETY: the header was written above and the kernel filled in the identifier.
        let out = unsafe { std::ptr::read(base as *const AddKeyArg) };
        // The raw key must not linger on the heap.
        // SAFETY: the whole allocation is viewed as bytes.
        zeroize::Zeroize::zeroize(unsafe { std::slice::from_raw_parts_mut(base, words * 8) });
        result?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&out.key_spec.u[..16]);
        Ok(id)
    }

    /// Removes a key (every user's claim on it). Returns the removal status flags.
    /// `Ok(None)` when the key was not there.
    pub fn remove_key(fd: RawFd, identifier: &[u8; 16]) -> io::Result<Option<u32>> {
        let mut arg = RemoveKeyArg { key_spec: KeySpecifier::identifier(identifier), removal_status_flags: 0, reserved: [0; 5] };
        match ioctl(fd, FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS, &mut arg as *mut _ as *mut libc::c_void) {
            Ok(()) => Ok(Some(arg.removal_status_flags)),
            Err(e) if e.raw_os_error() == Some(libc::ENOKEY) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn key_status(fd: RawFd, identifier: &[u8; 16]) -> io::Result<u32> {
        let mut arg = GetKeyStatusArg {
            key_spec: KeySpecifier::identifier(identifier),
            reserved: [0; 6],
            status: 0,
            status_flags: 0,
            user_count: 0,
            out_reserved: [0; 13],
        };
        ioctl(fd, FS_IOC_GET_ENCRYPTION_KEY_STATUS, &mut arg as *mut _ as *mut libc::c_void)?;
        Ok(arg.status)
    }

    /// The v2 policy we use, under the key `identifier`.
    pub fn policy_v2(identifier: &[u8; 16]) -> PolicyV2 {
        PolicyV2 {
            version: POLICY_V2,
            contents_encryption_mode: MODE_AES_256_XTS,
            filenames_encryption_mode: MODE_AES_256_CTS,
            flags: POLICY_FLAGS_PAD_32,
            reserved: [0; 4],
            master_key_identifier: *identifier,
        }
    }

    /// Sets a v2 policy on an empty directory.
    pub fn set_policy(fd: RawFd, policy: &PolicyV2) -> io::Result<()> {
        let mut p = *policy;
        ioctl(fd, FS_IOC_SET_ENCRYPTION_POLICY, &mut p as *mut _ as *mut libc::c_void)
    }

    /// The directory's policy if it is a v2 one; `Ok(None)` when it is not encrypted.
    pub fn get_policy(fd: RawFd) -> io::Result<Option<PolicyV2>> {
        let mut arg = GetPolicyExArg { policy_size: 24, policy: [0; 24] };
        match ioctl(fd, FS_IOC_GET_ENCRYPTION_POLICY_EX, &mut arg as *mut _ as *mut libc::c_void) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
        if arg.policy[0] != POLICY_V2 || arg.policy_size != 24 {
            return Err(io::Error::other(format!("unexpected fscrypt policy version {}", arg.policy[0])));
        }
        let p = &arg.policy;
        let mut master_key_identifier = [0u8; 16];
        master_key_identifier.copy_from_slice(&p[8..24]);
        Ok(Some(PolicyV2 {
            version: p[0],
            contents_encryption_mode: p[1],
            filenames_encryption_mode: p[2],
            flags: p[3],
            reserved: [p[4], p[5], p[6], p[7]],
            master_key_identifier,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs a tool; on failure the error names the command and carries its stderr.
fn run(name: &str, args: &[&str]) -> Result<String> {
    run_accepting(name, args, &[0])
}

fn run_accepting(name: &str, args: &[&str], ok_codes: &[i32]) -> Result<String> {
    Ok(tools::run(name, args, ok_codes)?.stdout)
}

/// R12: the space each volume holds back from its tenant: 1% of it, at most 64 MiB, in a
/// root-only file at the filesystem's root, outside `data` (the only part the sandbox sees).
/// A homeserver with less than this left counts as full and is blocked until it has room.
pub fn reserve_bytes(size_bytes: u64) -> u64 {
    (size_bytes / 100).min(64 << 20)
}

const RESERVE_FILE: &str = "reserve";

/// A filesystem's raw numbers, in bytes.
#[derive(Debug, Clone, Copy)]
struct FsNumbers {
    size: u64,
    used: u64,
    available: u64,
}

/// The tenant's view of a filesystem that holds `held` bytes of reserve: the reserve counts as
/// neither used nor available, whether it is held or was freed for a full homeserver.
fn tenant_usage(fs: FsNumbers, held: u64) -> VolumeUsage {
    let reserve = reserve_bytes(fs.size);
    let available = (fs.available + held).saturating_sub(reserve);
    VolumeUsage { size_bytes: fs.size, used_bytes: fs.used.saturating_sub(held), available_bytes: available, full: available < reserve }
}

/// Bytes the reserve file occupies on disk (0 without one).
fn reserve_held(root: &File) -> Result<u64> {
    match rustix::fs::statat(root, RESERVE_FILE, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile => Ok(st.st_blocks as u64 * 512),
        Ok(_) => bail!("the volume's reserve is not a regular file"),
        Err(rustix::io::Errno::NOENT) => Ok(0),
        Err(e) => Err(anyhow!("cannot look at the volume's reserve: {e}")),
    }
}

/// Allocates (not sparse) `bytes` of reserve; on failure nothing half-made stays.
fn take_reserve(root: &File, bytes: u64) -> Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(root, RESERVE_FILE, OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))?;
    if let Err(e) = rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        let _ = rustix::fs::unlinkat(root, RESERVE_FILE, rustix::fs::AtFlags::empty());
        return Err(e.into());
    }
    Ok(())
}

fn open_dir(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("cannot chmod {}", path.display()))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_context(|| format!("cannot chown {} to {uid}:{gid}", path.display()))
}

/// A mount as /proc/self/mountinfo shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    mount_point: PathBuf,
    source: String,
}

/// The topmost mount at `path`, if any.
fn mount_at(path: &Path) -> Option<MountEntry> {
    let canonical = fs::canonicalize(path).ok()?;
    let mounts = procfs::process::Process::myself().ok()?.mountinfo().ok()?;
    mounts.into_iter().rfind(|m| m.mount_point == canonical).map(|m| MountEntry { mount_point: m.mount_point, source: m.mount_source.unwrap_or_default() })
}

/// Loop devices backed by `image` (`losetup -j`).
fn loop_devices_for(image: &Path) -> Result<Vec<String>> {
    let out = run("losetup", &["-j", &image.to_string_lossy()])?;
    Ok(out.lines().filter_map(|l| l.split_once(':').map(|(dev, _)| dev.trim().to_string())).filter(|d| d.starts_with("/dev/")).collect())
}

/// Whether a mounted ext4 filesystem can be grown: the kernel's online resize
/// (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE, which some containers drop even for root.
/// Without it, grow a volume while it is closed.
pub fn can_grow_online() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let Ok(status) = fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// Unmounts `mnt`. Another thread's freshly forked child holds copies of our open files
/// until it execs, and that pins the mount for an instant: retry briefly before concluding
/// that something (the homeserver?) really still uses it.
fn unmount(mnt: &Path) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match run("umount", &[&mnt.to_string_lossy()]) {
            Ok(_) => return Ok(()),
            Err(_) if mount_at(mnt).is_none() => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline && format!("{e:#}").contains("busy") => {
                #[cfg(test)]
                eprintln!("umount retry: {e:#}");
                tracing::debug!(error = %format!("{e:#}"), "umount busy, retrying");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Detaches a loop device and waits until it is really gone: while something still has it
/// open, the kernel only marks it for removal on last close. With `image`, the device is left
/// alone unless that image (still) backs it.
fn detach_device(dev: &str, image: Option<&Path>) -> Result<()> {
    let backing = Path::new("/sys/block").join(dev.trim_start_matches("/dev/")).join("loop/backing_file");
    let Ok(current) = fs::read_to_string(&backing) else { return Ok(()) };
    if let Some(image) = image {
        let current = current.trim_end_matches('\n');
        let current = current.strip_suffix(" (deleted)").unwrap_or(current);
        let expected = fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
        if Path::new(current) != expected {
            return Ok(());
        }
    }
    run("losetup", &["-d", dev])?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while backing.exists() {
        if std::time::Instant::now() > deadline {
            bail!("{dev} is still in use; it will be detached when released");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// Detaches every loop device backed by `image`.
fn detach(image: &Path) -> Result<()> {
    for dev in loop_devices_for(image)? {
        detach_device(&dev, Some(image))?;
    }
    Ok(())
}

fn errno_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) => " (the kernel or filesystem does not support fscrypt)",
        Some(libc::EPERM) | Some(libc::EACCES) => " (root privileges are needed)",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// The manager
// ---------------------------------------------------------------------------------------------

/// Creates, opens, closes, grows and destroys the encrypted volumes under one root directory.
#[derive(Debug)]
pub struct VolumeManager {
    root: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// What `create`/`open` did so far, to undo on failure.
#[derive(Default)]
struct Undo {
    image: Option<PathBuf>,
    mount_dir: Option<PathBuf>,
    loop_dev: Option<String>,
    mounted: Option<PathBuf>,
    key: Option<(PathBuf, [u8; 16])>,
}

impl Undo {
    fn run(self) {
        if let Some((mnt, identifier)) = &self.key {
            if let Ok(dir) = open_dir(mnt) {
                if let Err(e) = fscrypt::remove_key(dir.as_raw_fd(), identifier) {
                    tracing::warn!(error = %e, "undo: cannot remove the volume key");
                }
            }
        }
        if let Some(mnt) = &self.mounted {
            if let Err(e) = unmount(mnt) {
                tracing::warn!(error = %format!("{e:#}"), "undo: cannot unmount");
            }
        }
        if let Some(dev) = &self.loop_dev {
            if let Err(e) = detach_device(dev, None) {
                tracing::warn!(error = %format!("{e:#}"), "undo: cannot detach the loop device");
            }
        }
        if let Some(dir) = &self.mount_dir {
            let _ = fs::remove_dir(dir);
        }
        if let Some(image) = &self.image {
            if let Err(e) = fs::remove_file(image) {
                tracing::warn!(error = %e, image = %image.display(), "undo: cannot remove the image");
            }
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests make `create` fail after the named step, to check that it undoes what it did.
    static FAIL_AFTER: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

fn checkpoint(_step: &'static str) -> Result<()> {
    #[cfg(test)]
    if FAIL_AFTER.with(|f| f.get()) == Some(_step) {
        bail!("injected failure after {_step}");
    }
    Ok(())
}

impl VolumeManager {
    pub fn new(root: PathBuf) -> Self {
        let root = std::path::absolute(&root).unwrap_or(root);
        VolumeManager { root, locks: Mutex::new(HashMap::new()) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn image_path(&self, id: &HomeserverId) -> PathBuf {
        self.image_path_of(id.as_str())
    }

    pub fn mount_point(&self, id: &HomeserverId) -> PathBuf {
        self.mount_point_of(id.as_str())
    }

    pub fn data_dir(&self, id: &HomeserverId) -> PathBuf {
        self.mount_point(id).join("data")
    }

    fn image_path_of(&self, id: &str) -> PathBuf {
        self.root.join("images").join(format!("{id}.img"))
    }

    fn mount_point_of(&self, id: &str) -> PathBuf {
        self.root.join("mnt").join(id)
    }

    fn data_dir_of(&self, id: &str) -> PathBuf {
        self.mount_point_of(id).join("data")
    }

    fn id_lock(&self, id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Explains what is missing when encrypted volumes cannot be made on this host. There is
    /// no plaintext fallback: `create` refuses to run without fscrypt.
    pub fn check_support(&self) -> Result<()> {
        let euid = rustix::process::geteuid().as_raw();
        if euid != 0 {
            bail!("encrypted volumes need root privileges (loop devices, mount, fscrypt keys); matrixhost-agent runs as uid {euid}");
        }
        if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/loop-control") {
            bail!("encrypted volumes need loop devices, but /dev/loop-control cannot be opened: {e} (load the `loop` module or give the container access to loop devices)");
        }
        for t in ["losetup", "mount", "umount", "mkfs.ext4", "resize2fs", "e2fsck"] {
            if tools::find(t).is_none() {
                bail!("encrypted volumes need `{t}` (util-linux / e2fsprogs), which is not installed");
            }
        }
        let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !filesystems.lines().any(|l| l.split_whitespace().last() == Some("ext4")) {
            // ext4 may be a module that loads on first mount; say so only if the feature directory is missing too.
            if !Path::new("/sys/fs/ext4").exists() {
                bail!("encrypted volumes need the kernel's ext4 filesystem, which is not available");
            }
        }
        let features = Path::new("/sys/fs/ext4/features");
        if features.exists() && !features.join("encryption").exists() {
            bail!("the kernel's ext4 lacks encryption support (kernel fscrypt, CONFIG_FS_ENCRYPTION); dm-crypt is not used, so encrypted volumes cannot be created");
        }
        // mkfs.ext4 must know the `encrypt` feature: try it on a small scratch image.
        fs::create_dir_all(&self.root).with_context(|| format!("cannot create {}", self.root.display()))?;
        let probe = self.root.join(format!(".probe-{}-{:016x}.img", std::process::id(), rand::random::<u64>()));
        let result = (|| -> Result<()> {
            let f = File::create(&probe).with_context(|| format!("cannot create {}", probe.display()))?;
            f.set_len(16 << 20)?;
            drop(f);
            run("mkfs.ext4", &["-q", "-F", "-O", "encrypt", &probe.to_string_lossy()])
                .context("mkfs.ext4 cannot make a filesystem with the `encrypt` feature (e2fsprogs too old?)")?;
            Ok(())
        })();
        let _ = fs::remove_file(&probe);
        result
    }

    /// Makes the encrypted volume `id` of `size_gb` GiB and returns its data directory,
    /// owned by `uid:gid` with mode 0700. On any failure the steps already done are undone.
    pub fn create(&self, id: &HomeserverId, size_gb: u32, key: &VolumeKey, uid: u32, gid: u32) -> Result<PathBuf> {
        let id = id.as_str();
        if size_gb == 0 || size_gb > MAX_SIZE_GB {
            bail!("volume size must be between 1 and {MAX_SIZE_GB} GB, not {size_gb}");
        }
        let lock = self.id_lock(id);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut undo = Undo::default();
        match self.create_steps(id, size_gb, key, uid, gid, &mut undo) {
            Ok(data) => {
                tracing::info!(volume = id, size_gb, "created encrypted volume");
                Ok(data)
            }
            Err(e) => {
                undo.run();
                Err(e.context(format!("cannot create encrypted volume {id}")))
            }
        }
    }

    fn create_steps(&self, id: &str, size_gb: u32, key: &VolumeKey, uid: u32, gid: u32, undo: &mut Undo) -> Result<PathBuf> {
        self.ensure_layout()?;
        let image = self.image_path_of(id);
        let mnt = self.mount_point_of(id);

        // 1. A sparse image; refusing to touch an existing one.
        let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&image).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow!("volume {id} already exists ({})", image.display())
            } else {
                anyhow!("cannot create {}: {e}", image.display())
            }
        })?;
        undo.image = Some(image.clone());
        f.set_len(u64::from(size_gb) * GIB).with_context(|| format!("cannot size {}", image.display()))?;
        drop(f);
        checkpoint("image")?;

        // 2. A loop device.
        let dev = run("losetup", &["--find", "--show", &image.to_string_lossy()])?.trim().to_string();
        if !dev.starts_with("/dev/") {
            bail!("losetup returned an unexpected device {dev:?}");
        }
        undo.loop_dev = Some(dev.clone());
        checkpoint("loop")?;

        // 3. ext4 with the encrypt feature.
        let label = &id[id.len().saturating_sub(16)..];
        run("mkfs.ext4", &["-q", "-F", "-O", "encrypt", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-m", "0", "-L", label, &dev])?;
        checkpoint("mkfs")?;

        // 4. Mount it.
        match fs::DirBuilder::new().mode(0o700).create(&mnt) {
            Ok(()) => undo.mount_dir = Some(mnt.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if mount_at(&mnt).is_some() {
                    bail!("{} is already a mount point", mnt.display());
                }
            }
            Err(e) => bail!("cannot create {}: {e}", mnt.display()),
        }
        run("mount", &["-t", "ext4", "-o", "nodev,nosuid,noexec", &dev, &mnt.to_string_lossy()])?;
        undo.mounted = Some(mnt.clone());
        chown(&mnt, 0, 0)?;
        // Only root reaches the mount; the tenant sees its data directory through the sandbox.
        set_mode(&mnt, 0o700)?;
        checkpoint("mount")?;

        // 5. The key.
        let root_dir = open_dir(&mnt)?;
        let identifier = fscrypt::add_key(root_dir.as_raw_fd(), key.as_bytes())
            .map_err(|e| anyhow!("cannot add the volume key to {}: {e}{}", mnt.display(), errno_hint(&e)))?;
        undo.key = Some((mnt.clone(), identifier));
        checkpoint("key")?;

        // 6. The encrypted data directory.
        let data = self.data_dir_of(id);
        fs::DirBuilder::new().mode(0o700).create(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let data_fd = open_dir(&data)?;
        let policy = fscrypt::policy_v2(&identifier);
        fscrypt::set_policy(data_fd.as_raw_fd(), &policy)
            .map_err(|e| anyhow!("cannot set the encryption policy on {}: {e}{}", data.display(), errno_hint(&e)))?;
        let got = fscrypt::get_policy(data_fd.as_raw_fd()).map_err(|e| anyhow!("cannot read back the encryption policy: {e}"))?;
        if got != Some(policy) {
            bail!("the encryption policy of {} did not take ({got:?})", data.display());
        }
        // Writing a file proves the ciphers are there (a policy can be set even when the kernel lacks them).
        let probe = data.join(".probe");
        (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&probe)?;
            f.write_all(b"probe")?;
            f.sync_all()?;
            drop(f);
            fs::remove_file(&probe)
        })()
        .map_err(|e| anyhow!("cannot write into the encrypted directory {}: {e}", data.display()))?;
        checkpoint("policy")?;

        chown(&data, uid, gid)?;
        set_mode(&data, 0o700)?;
        checkpoint("chown")?;
        Ok(data)
    }

    /// ROOT is root's alone: tenants reach their data only through their sandbox's bind mount.
    fn ensure_layout(&self) -> Result<()> {
        for (dir, mode) in [(&self.root, 0o700), (&self.root.join("images"), 0o700), (&self.root.join("mnt"), 0o700)] {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            set_mode(dir, mode)?;
        }
        Ok(())
    }

    /// Brings an existing volume back after a restart or reboot: attaches the image (reusing a
    /// loop device already backing it), mounts it if needed, adds the key (idempotent) and
    /// checks that the data directory is encrypted under this key.
    pub fn open(&self, id: &HomeserverId, key: &VolumeKey) -> Result<PathBuf> {
        let id = id.as_str();
        let lock = self.id_lock(id);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut undo = Undo::default();
        match self.open_steps(id, key, &mut undo) {
            Ok(data) => Ok(data),
            Err(e) => {
                undo.run();
                Err(e.context(format!("cannot open encrypted volume {id}")))
            }
        }
    }

    fn open_steps(&self, id: &str, key: &VolumeKey, undo: &mut Undo) -> Result<PathBuf> {
        let image = self.image_path_of(id);
        if !image.is_file() {
            bail!("volume {id} does not exist (no image at {})", image.display());
        }
        let mnt = self.mount_point_of(id);
        if mount_at(&mnt).is_none() {
            let dev = match loop_devices_for(&image)?.into_iter().next() {
                Some(dev) => dev,
                None => {
                    let dev = run("losetup", &["--find", "--show", &image.to_string_lossy()])?.trim().to_string();
                    undo.loop_dev = Some(dev.clone());
                    dev
                }
            };
            fs::create_dir_all(self.root.join("mnt")).ok();
            match fs::DirBuilder::new().mode(0o700).create(&mnt) {
                Ok(()) => undo.mount_dir = Some(mnt.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => bail!("cannot create {}: {e}", mnt.display()),
            }
            run("mount", &["-t", "ext4", "-o", "nodev,nosuid,noexec", &dev, &mnt.to_string_lossy()])?;
            undo.mounted = Some(mnt.clone());
        }
        let root_dir = open_dir(&mnt)?;
        let data = self.data_dir_of(id);
        let data_fd = open_dir(&data)?;
        let policy = fscrypt::get_policy(data_fd.as_raw_fd())
            .map_err(|e| anyhow!("cannot read the encryption policy of {}: {e}", data.display()))?
            .ok_or_else(|| anyhow!("{} is not encrypted; refusing to use it", data.display()))?;
        // Adding a key that is already there just succeeds again.
        let identifier = fscrypt::add_key(root_dir.as_raw_fd(), key.as_bytes())
            .map_err(|e| anyhow!("cannot add the volume key to {}: {e}{}", mnt.display(), errno_hint(&e)))?;
        if identifier != policy.master_key_identifier {
            // Take the wrong key back out (it protects nothing on this filesystem).
            if let Err(e) = fscrypt::remove_key(root_dir.as_raw_fd(), &identifier) {
                tracing::warn!(error = %e, "cannot remove a wrong key");
            }
            bail!("wrong key: the data directory is encrypted under key {}, not {}", hex::encode(policy.master_key_identifier), hex::encode(identifier));
        }
        // Everything is in place: nothing to undo.
        *undo = Undo::default();
        Ok(data)
    }

    /// Locks the volume: removes its key from the filesystem (contents and names become
    /// unreadable), unmounts it and detaches its loop device. Idempotent.
    pub fn close(&self, id: &HomeserverId) -> Result<()> {
        let id = id.as_str();
        let lock = self.id_lock(id);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        self.close_locked(id).with_context(|| format!("cannot close encrypted volume {id}"))
    }

    fn close_locked(&self, id: &str) -> Result<()> {
        let mnt = self.mount_point_of(id);
        if mount_at(&mnt).is_some() {
            let root_dir = open_dir(&mnt)?;
            let data = self.data_dir_of(id);
            if let Ok(data_fd) = open_dir(&data) {
                if let Ok(Some(policy)) = fscrypt::get_policy(data_fd.as_raw_fd()) {
                    drop(data_fd);
                    match fscrypt::remove_key(root_dir.as_raw_fd(), &policy.master_key_identifier) {
                        Ok(Some(flags)) if flags & fscrypt::KEY_REMOVAL_STATUS_FLAG_FILES_BUSY != 0 => {
                            tracing::warn!(volume = id, "volume key removed but files are still open")
                        }
                        Ok(_) => {}
                        Err(e) => bail!("cannot remove the volume key: {e}{}", errno_hint(&e)),
                    }
                }
            }
            drop(root_dir);
            unmount(&mnt).context("cannot unmount (is the homeserver still running?)")?;
        }
        let image = self.image_path_of(id);
        if image.exists() {
            detach(&image)?;
        }
        Ok(())
    }

    /// Closes the volume and deletes its image and mount point. Idempotent.
    pub fn destroy(&self, id: &HomeserverId) -> Result<()> {
        let id = id.as_str();
        let lock = self.id_lock(id);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        (|| -> Result<()> {
            self.close_locked(id)?;
            let image = self.image_path_of(id);
            match fs::remove_file(&image) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("cannot remove {}: {e}", image.display()),
            }
            let mnt = self.mount_point_of(id);
            match fs::remove_dir(&mnt) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("cannot remove {}: {e}", mnt.display()),
            }
            Ok(())
        })()
        .with_context(|| format!("cannot destroy encrypted volume {id}"))?;
        // The id's lock stays in the map: another caller may be waiting on it.
        tracing::info!(volume = id, "destroyed encrypted volume");
        Ok(())
    }

    /// Grows the image and its filesystem to `new_size_gb` GiB: online when mounted (this needs
    /// CAP_SYS_RESOURCE, see [`can_grow_online`]), offline (e2fsck + resize2fs) when closed.
    /// Growing to the current size is a no-op; shrinking is an error.
    pub fn grow(&self, id: &HomeserverId, new_size_gb: u32) -> Result<()> {
        let id = id.as_str();
        if new_size_gb > MAX_SIZE_GB {
            bail!("volume size must be at most {MAX_SIZE_GB} GB");
        }
        let lock = self.id_lock(id);
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        (|| -> Result<()> {
            let image = self.image_path_of(id);
            let current = fs::metadata(&image).with_context(|| format!("volume {id} does not exist"))?.len();
            let new = u64::from(new_size_gb) * GIB;
            if new < current {
                bail!("volumes cannot shrink ({} GB to {new_size_gb} GB)", current / GIB);
            }
            if new == current {
                return Ok(());
            }
            let mounted = mount_at(&self.mount_point_of(id));
            if mounted.is_some() && !can_grow_online() {
                bail!(
                    "online growth needs CAP_SYS_RESOURCE, which matrixhost-agent does not have here; \
                     close the volume (stop the homeserver), grow it, then open it again"
                );
            }
            OpenOptions::new().write(true).open(&image)?.set_len(new).with_context(|| format!("cannot grow {}", image.display()))?;
            if let Some(m) = mounted {
                run("losetup", &["-c", &m.source])?;
                run("resize2fs", &[&m.source])?;
            } else {
                let target = match loop_devices_for(&image)?.into_iter().next() {
                    Some(dev) => {
                        run("losetup", &["-c", &dev])?;
                        dev
                    }
                    None => image.to_string_lossy().into_owned(),
                };
                run_accepting("e2fsck", &["-f", "-p", &target], &[0, 1])?;
                run("resize2fs", &[&target])?;
            }
            tracing::info!(volume = id, new_size_gb, "grew encrypted volume");
            Ok(())
        })()
        .with_context(|| format!("cannot grow encrypted volume {id}"))
    }

    /// Size and fill of the volume as its tenant has it (it must be mounted).
    pub fn usage(&self, id: &HomeserverId) -> Result<VolumeUsage> {
        let (root, fs) = self.filesystem(id)?;
        Ok(tenant_usage(fs, reserve_held(&root)?))
    }

    /// R12: holds the volume's reserve while the homeserver has room, and frees it once the
    /// homeserver is full (so its Synapse can still start, blocked, and say why). Returns the
    /// usage after that.
    pub fn balance_reserve(&self, id: &HomeserverId) -> Result<VolumeUsage> {
        let (root, fs) = self.filesystem(id)?;
        let held = reserve_held(&root)?;
        let usage = tenant_usage(fs, held);
        let wanted = reserve_bytes(fs.size);
        if usage.full && held > 0 {
            rustix::fs::unlinkat(&root, RESERVE_FILE, rustix::fs::AtFlags::empty()).context("cannot free the volume's reserve")?;
            tracing::warn!(homeserver = %id, used_bytes = usage.used_bytes, size_bytes = usage.size_bytes, "volume full: freed its reserve so the homeserver can start blocked");
        } else if !usage.full && held < wanted {
            take_reserve(&root, wanted).context("cannot take the volume's reserve")?;
        } else {
            return Ok(usage);
        }
        let (root, fs) = self.filesystem(id)?;
        Ok(tenant_usage(fs, reserve_held(&root)?))
    }

    /// The root of the mounted filesystem and its raw numbers.
    fn filesystem(&self, id: &HomeserverId) -> Result<(File, FsNumbers)> {
        let mnt = self.mount_point(id);
        if mount_at(&mnt).is_none() {
            bail!("volume {id} is not mounted");
        }
        let root = open_dir(&mnt)?;
        let st = rustix::fs::fstatvfs(&root).with_context(|| format!("statvfs {}", mnt.display()))?;
        let block = st.f_frsize;
        let fs = FsNumbers { size: st.f_blocks * block, used: st.f_blocks.saturating_sub(st.f_bfree) * block, available: st.f_bavail * block };
        Ok((root, fs))
    }

    pub fn is_mounted(&self, id: &HomeserverId) -> bool {
        mount_at(&self.mount_point(id)).is_some()
    }

    /// Whether the volume is mounted and its key is in the filesystem (data readable).
    pub fn is_unlocked(&self, id: &HomeserverId) -> bool {
        if !self.is_mounted(id) {
            return false;
        }
        let (Ok(root), Ok(data)) = (open_dir(&self.mount_point(id)), open_dir(&self.data_dir(id))) else { return false };
        match fscrypt::get_policy(data.as_raw_fd()) {
            Ok(Some(p)) => fscrypt::key_status(root.as_raw_fd(), &p.master_key_identifier).ok() == Some(fscrypt::KEY_STATUS_PRESENT),
            _ => false,
        }
    }

    /// Ids of the volumes whose images exist (to find orphans after a crash).
    pub fn list(&self) -> Result<Vec<HomeserverId>> {
        let dir = self.root.join("images");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(anyhow!("cannot list {}: {e}", dir.display())),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            if let Some(Ok(id)) = name.to_str().and_then(|n| n.strip_suffix(".img")).map(HomeserverId::parse) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<fscrypt::KeySpecifier>(), 40);
        assert_eq!(std::mem::size_of::<fscrypt::AddKeyArg>(), 80);
        assert_eq!(std::mem::size_of::<fscrypt::RemoveKeyArg>(), 64);
        assert_eq!(std::mem::size_of::<fscrypt::PolicyV1>(), 12);
        assert_eq!(std::mem::size_of::<fscrypt::PolicyV2>(), 24);
        assert_eq!(std::mem::size_of::<fscrypt::GetPolicyExArg>(), 32);
        assert_eq!(std::mem::size_of::<fscrypt::GetKeyStatusArg>(), 128);
        assert_eq!(fscrypt::FS_IOC_SET_ENCRYPTION_POLICY, 0x800c_6613);
        assert_eq!(fscrypt::FS_IOC_GET_ENCRYPTION_POLICY_EX, 0xc009_6616);
        assert_eq!(fscrypt::FS_IOC_ADD_ENCRYPTION_KEY, 0xc050_6617);
        assert_eq!(fscrypt::FS_IOC_REMOVE_ENCRYPTION_KEY, 0xc040_6618);
        assert_eq!(fscrypt::FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS, 0xc040_6619);
        assert_eq!(fscrypt::FS_IOC_GET_ENCRYPTION_KEY_STATUS, 0xc080_661a);
    }

    #[test]
    fn keys_are_64_bytes_and_never_printed() {
        let k = VolumeKey::generate();
        assert_eq!(k.as_bytes().len(), 64);
        assert_ne!(k.as_bytes(), VolumeKey::generate().as_bytes());
        assert_eq!(format!("{k:?}"), "VolumeKey(***)");
        assert!(VolumeKey::from_bytes(&[1u8; 32]).is_err());
        assert_eq!(VolumeKey::from_bytes(&[7u8; 64]).unwrap().as_bytes(), &[7u8; 64]);
    }

    #[test]
    fn r12_the_reserve_is_neither_used_nor_available_and_full_means_less_than_it_is_left() {
        let size = GIB;
        let reserve = reserve_bytes(size);
        assert_eq!(reserve, GIB / 100);
        assert_eq!(reserve_bytes(1000 * GIB), 64 << 20, "capped for large volumes");
        let fs = |used: u64| FsNumbers { size, used, available: size - used };
        // Held: the tenant sees what is left beside it.
        let held = tenant_usage(fs(reserve + (100 << 20)), reserve);
        assert_eq!((held.used_bytes, held.available_bytes, held.full), (100 << 20, size - reserve - (100 << 20), false));
        // Freed for a full homeserver: the same view, still full until there is room again.
        let tenant_used = size - reserve - (reserve / 2);
        let with = tenant_usage(fs(tenant_used + reserve), reserve);
        let without = tenant_usage(fs(tenant_used), 0);
        assert_eq!(with, without);
        assert!(with.full);
        // Filled to the last byte after the reserve was freed.
        let filled = tenant_usage(FsNumbers { size, used: size, available: 0 }, 0);
        assert_eq!((filled.available_bytes, filled.full), (0, true));
    }

    // --- Tests on real loop devices (root only) ------------------------------------------------

    /// Returns false (and prints why) when this host cannot run them; panics instead when
    /// MATRIXHOST_REQUIRE_VOLUMES=1.
    fn supported(m: &VolumeManager) -> bool {
        match m.check_support() {
            Ok(()) => true,
            Err(e) => {
                if std::env::var("MATRIXHOST_REQUIRE_VOLUMES").as_deref() == Ok("1") {
                    panic!("encrypted volumes are required (MATRIXHOST_REQUIRE_VOLUMES=1) but unsupported: {e:#}");
                }
                println!("skipped: {e:#}");
                false
            }
        }
    }

    fn random_id() -> HomeserverId {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        use rand::Rng;
        let mut rng = rand::thread_rng();
        HomeserverId::parse(&format!("hs_t{}", (0..19).map(|_| ALPHABET[rng.gen_range(0..32)] as char).collect::<String>())).unwrap()
    }

    fn random_hex(n: usize) -> String {
        let mut b = vec![0u8; n / 2];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
        hex::encode(b)
    }

    /// Owns a temporary root, volumes and users; tears everything down even on panic.
    struct Fixture {
        _tmp: tempfile::TempDir,
        mgr: VolumeManager,
        volumes: Vec<HomeserverId>,
        users: Vec<HomeserverId>,
    }

    impl Fixture {
        fn new() -> Option<Fixture> {
            let tmp = tempfile::tempdir().unwrap();
            let mgr = VolumeManager::new(tmp.path().join("volumes"));
            if !supported(&mgr) {
                return None;
            }
            Some(Fixture { _tmp: tmp, mgr, volumes: Vec::new(), users: Vec::new() })
        }

        fn id(&mut self) -> HomeserverId {
            let id = random_id();
            self.volumes.push(id.clone());
            id
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            for id in &self.volumes {
                if let Err(e) = self.mgr.destroy(id) {
                    eprintln!("cleanup: {e:#}");
                }
            }
            for hs in &self.users {
                if let Err(e) = crate::tenant::remove(hs) {
                    eprintln!("cleanup: {e:#}");
                }
            }
        }
    }

    /// Whether `needle` occurs in the file, reading only its allocated extents (the image is
    /// sparse) in 1 MiB chunks with an overlap so that matches across chunks are found.
    fn file_contains(path: &Path, needle: &[u8]) -> bool {
        use std::os::unix::fs::FileExt;
        assert!(!needle.is_empty());
        let f = File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as i64;
        let fd = f.as_raw_fd();
        const CHUNK: usize = 1 << 20;
        let keep = needle.len() - 1;
        let mut buf = vec![0u8; keep + CHUNK];
        let mut pos: i64 = 0;
        while pos < len {
            // SAFETY: plain lseek on an open fd.
            let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
            if data < 0 {
                let e = std::io::Error::last_os_error();
                assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "SEEK_DATA: {e}");
                break;
            }
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            assert!(hole > data);
            let mut off = data;
            let mut carried = 0usize;
            while off < hole {
                let n = CHUNK.min((hole - off) as usize);
                f.read_exact_at(&mut buf[carried..carried + n], off as u64).unwrap();
                let window = &buf[..carried + n];
                if contains(window, needle) {
                    return true;
                }
                let tail = keep.min(window.len());
                let start = window.len() - tail;
                buf.copy_within(start..start + tail, 0);
                carried = tail;
                off += n as i64;
            }
            pos = hole;
        }
        false
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        let first = needle[0];
        let mut i = 0;
        while i + needle.len() <= haystack.len() {
            match haystack[i..haystack.len() - needle.len() + 1].iter().position(|&b| b == first) {
                None => return false,
                Some(p) => {
                    i += p;
                    if &haystack[i..i + needle.len()] == needle {
                        return true;
                    }
                    i += 1;
                }
            }
        }
        false
    }

    #[test]
    fn the_search_finds_needles_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        // Straddles the first 1 MiB boundary of the data extent at 4 MiB.
        f.write_all_at(b"needle-across", (5 << 20) - 6).unwrap();
        f.sync_all().unwrap();
        assert!(file_contains(&p, b"needle-across"));
        assert!(!file_contains(&p, b"needle-absent"));
        assert!(contains(b"abcabd", b"abd"));
        assert!(!contains(b"ab", b"abc"));
    }

    fn sync_file(path: &Path) {
        File::open(path).unwrap().sync_all().unwrap();
        run("sync", &["-f", &path.to_string_lossy()]).unwrap();
    }

    fn ms(since: std::time::Instant) -> u128 {
        since.elapsed().as_millis()
    }

    #[test]
    fn contents_and_names_are_encrypted_at_rest_and_locked_on_close() {
        let Some(mut fx) = Fixture::new() else { return };
        let id = fx.id();
        let key = VolumeKey::generate();

        let t = std::time::Instant::now();
        let data = fx.mgr.create(&id, 1, &key, 0, 0).unwrap();
        println!("timing: create 1 GB volume: {} ms", ms(t));
        assert_eq!(data, fx.mgr.data_dir(&id));
        assert!(fx.mgr.is_mounted(&id));
        assert!(fx.mgr.is_unlocked(&id));
        assert_eq!(fx.mgr.list().unwrap(), vec![id.clone()]);
        let meta = fs::metadata(fx.mgr.image_path(&id)).unwrap();
        assert_eq!(meta.len(), GIB);
        use std::os::unix::fs::MetadataExt;
        println!("image: {} bytes apparent, {} bytes allocated after create", meta.len(), meta.blocks() * 512);

        // A secret in the encrypted directory, a control in the plaintext filesystem root.
        let marker = random_hex(64);
        let name = format!("secret-name-{}", random_hex(24));
        let secret = data.join(&name);
        fs::write(&secret, format!("start {marker} end\n")).unwrap();
        sync_file(&secret);
        let control_marker = random_hex(64);
        let control_name = format!("control-name-{}", random_hex(24));
        let control = fx.mgr.mount_point(&id).join(&control_name);
        fs::write(&control, &control_marker).unwrap();
        sync_file(&control);

        assert!(fs::read_to_string(&secret).unwrap().contains(&marker), "readable through the mount");
        let image = fx.mgr.image_path(&id);
        let t = std::time::Instant::now();
        assert!(file_contains(&image, control_marker.as_bytes()), "the scan must find plaintext (control)");
        assert!(file_contains(&image, control_name.as_bytes()), "the scan must find plaintext names (control)");
        assert!(!file_contains(&image, marker.as_bytes()), "file contents must not be in the image in plaintext");
        assert!(!file_contains(&image, name.as_bytes()), "file names must not be in the image in plaintext");
        println!("timing: 4 scans of the raw image: {} ms", ms(t));
        assert!(fx.mgr.usage(&id).unwrap().used_bytes > 0);

        // Close: key gone, unmounted, detached.
        let t = std::time::Instant::now();
        fx.mgr.close(&id).unwrap();
        println!("timing: close: {} ms", ms(t));
        assert!(!fx.mgr.is_mounted(&id));
        assert!(!fx.mgr.is_unlocked(&id));
        assert!(loop_devices_for(&image).unwrap().is_empty());
        fx.mgr.close(&id).unwrap(); // idempotent
        assert!(!file_contains(&image, marker.as_bytes()));
        assert!(!file_contains(&image, name.as_bytes()));

        // Mounted without the key, the names are ciphertext and contents unreadable.
        let peek = fx._tmp.path().join("peek");
        fs::create_dir(&peek).unwrap();
        run("mount", &["-t", "ext4", "-o", "ro,loop,nodev,nosuid,noexec", &image.to_string_lossy(), &peek.to_string_lossy()]).unwrap();
        let result = std::panic::catch_unwind(|| {
            let names: Vec<String> = fs::read_dir(peek.join("data")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            assert_eq!(names.len(), 1);
            assert_ne!(names[0], name, "the name must be encrypted without the key");
            let err = fs::read(peek.join("data").join(&names[0])).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOKEY), "reading without the key: {err}");
            assert!(fs::metadata(peek.join("data").join(&name)).is_err());
            // The unencrypted root is readable: the control proves the mount works.
            assert_eq!(fs::read_to_string(peek.join(&control_name)).unwrap(), control_marker);
        });
        run("umount", &[&peek.to_string_lossy()]).unwrap();
        result.unwrap();
        // mount -o loop detaches its device on umount (autoclear), but maybe not instantly.
        for _ in 0..50 {
            if loop_devices_for(&image).unwrap().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(loop_devices_for(&image).unwrap().is_empty());

        // Open with the same key: readable again.
        let t = std::time::Instant::now();
        let data2 = fx.mgr.open(&id, &key).unwrap();
        println!("timing: open: {} ms", ms(t));
        assert_eq!(data2, data);
        assert!(fs::read_to_string(&secret).unwrap().contains(&marker));
        // Opening again is idempotent.
        fx.mgr.open(&id, &key).unwrap();
        assert_eq!(loop_devices_for(&image).unwrap().len(), 1);

        // A wrong key is refused, both on an open volume and a closed one, and leaves the
        // right key usable.
        let wrong = VolumeKey::generate();
        let err = fx.mgr.open(&id, &wrong).unwrap_err();
        assert!(format!("{err:#}").contains("wrong key"), "{err:#}");
        assert!(fx.mgr.is_unlocked(&id), "a wrong key must not lock an open volume");
        assert!(fs::read_to_string(&secret).unwrap().contains(&marker));
        fx.mgr.close(&id).unwrap();
        let err = fx.mgr.open(&id, &wrong).unwrap_err();
        assert!(format!("{err:#}").contains("wrong key"), "{err:#}");
        assert!(!fx.mgr.is_mounted(&id), "a failed open undoes its mount");
        assert!(loop_devices_for(&image).unwrap().is_empty(), "a failed open undoes its loop device");
        fx.mgr.open(&id, &key).unwrap();
        assert!(fs::read_to_string(&secret).unwrap().contains(&marker));

        // Destroy leaves nothing behind, and is idempotent.
        let t = std::time::Instant::now();
        fx.mgr.destroy(&id).unwrap();
        println!("timing: destroy: {} ms", ms(t));
        assert!(!image.exists());
        assert!(!fx.mgr.mount_point(&id).exists());
        assert!(!fx.mgr.is_mounted(&id));
        fx.mgr.destroy(&id).unwrap();
        assert!(fx.mgr.list().unwrap().is_empty());
        assert!(fx.mgr.open(&id, &key).is_err());
    }

    #[test]
    fn tenants_cannot_read_each_other() {
        let Some(mut fx) = Fixture::new() else { return };
        let (a, b) = (fx.id(), fx.id());
        fx.users.extend([a.clone(), b.clone()]);
        let ua = crate::tenant::ensure(&a).unwrap();
        let ub = crate::tenant::ensure(&b).unwrap();
        assert_ne!(ua.uid, ub.uid);
        let da = fx.mgr.create(&a, 1, &VolumeKey::generate(), ua.uid, ua.gid).unwrap();
        let db = fx.mgr.create(&b, 1, &VolumeKey::generate(), ub.uid, ub.gid).unwrap();
        for (user, dir) in [(&ua, &da), (&ub, &db)] {
            let f = fs::File::create(dir.join("homeserver.db")).unwrap();
            std::os::unix::fs::fchown(&f, Some(user.uid), Some(user.gid)).unwrap();
            fs::write(dir.join("homeserver.db"), format!("hello-{}", user.name)).unwrap();
        }
        let meta = fs::metadata(&da).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (ua.uid, ua.gid, 0o700));
        // R3: outside its sandbox a tenant reaches no volume at all, not even its own.
        let root_meta = fs::metadata(fx.mgr.mount_point(&a)).unwrap();
        assert_eq!((root_meta.uid(), root_meta.mode() & 0o777), (0, 0o700));
        let cat = |user: &str, path: &Path| Command::new("runuser").args(["-u", user, "--", "cat"]).arg(path).output().unwrap();
        for path in [db.join("homeserver.db"), da.join("homeserver.db")] {
            let out = cat(&ua.name, &path);
            assert!(!out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let listing = Command::new("runuser").args(["-u", &ua.name, "--", "ls"]).arg(&db).output().unwrap();
        assert!(!listing.status.success(), "A must not list B's directory");
        let images = Command::new("runuser").args(["-u", &ua.name, "--", "cat"]).arg(fx.mgr.image_path(&b)).output().unwrap();
        assert!(!images.status.success(), "A must not read B's raw image");
    }

    #[test]
    fn volumes_grow_online_and_never_shrink() {
        let Some(mut fx) = Fixture::new() else { return };
        let id = fx.id();
        let key = VolumeKey::generate();
        let data = fx.mgr.create(&id, 1, &key, 0, 0).unwrap();
        fs::write(data.join("kept"), "still here").unwrap();
        let before = fx.mgr.usage(&id).unwrap().size_bytes;
        let t = std::time::Instant::now();
        if can_grow_online() {
            fx.mgr.grow(&id, 2).unwrap();
            println!("timing: grow 1 -> 2 GB online: {} ms", ms(t));
        } else {
            // Refused up front, leaving the image as it was.
            let err = fx.mgr.grow(&id, 2).unwrap_err();
            assert!(format!("{err:#}").contains("CAP_SYS_RESOURCE"), "{err:#}");
            assert_eq!(fs::metadata(fx.mgr.image_path(&id)).unwrap().len(), GIB);
            println!("no CAP_SYS_RESOURCE: growing offline");
            let t = std::time::Instant::now();
            fx.mgr.close(&id).unwrap();
            fx.mgr.grow(&id, 2).unwrap();
            fx.mgr.open(&id, &key).unwrap();
            println!("timing: close + grow 1 -> 2 GB offline + open: {} ms", ms(t));
        }
        let after = fx.mgr.usage(&id).unwrap().size_bytes;
        println!("filesystem size {before} -> {after} bytes");
        assert!(after > before + GIB * 9 / 10, "{before} -> {after}");
        assert_eq!(fs::metadata(fx.mgr.image_path(&id)).unwrap().len(), 2 * GIB);
        assert_eq!(fs::read_to_string(data.join("kept")).unwrap(), "still here");
        fx.mgr.grow(&id, 2).unwrap(); // same size: no-op
        let err = fx.mgr.grow(&id, 1).unwrap_err();
        assert!(format!("{err:#}").contains("cannot shrink"), "{err:#}");

        // Offline growth works too.
        fx.mgr.close(&id).unwrap();
        fx.mgr.grow(&id, 3).unwrap();
        fx.mgr.open(&id, &key).unwrap();
        assert!(fx.mgr.usage(&id).unwrap().size_bytes > after + GIB * 9 / 10);
        assert_eq!(fs::read_to_string(data.join("kept")).unwrap(), "still here");
    }

    /// R12: a tenant that fills its volume to the last byte leaves the reserve, which the agent
    /// frees so the homeserver can start blocked; room again takes it back.
    #[test]
    fn r12_a_filled_volume_gets_its_reserve_back_for_a_blocked_start() {
        let Some(mut fx) = Fixture::new() else { return };
        let id = fx.id();
        let data = fx.mgr.create(&id, 1, &VolumeKey::generate(), 0, 0).unwrap();
        let usage = fx.mgr.balance_reserve(&id).unwrap();
        assert!(!usage.full, "{usage:?}");
        let reserve = fx.mgr.mount_point(&id).join(RESERVE_FILE);
        let meta = fs::symlink_metadata(&reserve).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
        assert!(meta.blocks() * 512 >= reserve_bytes(usage.size_bytes), "the reserve is allocated, not sparse");
        // Fill the tenant's part until the disk says no (root's writes obey the same limit on a
        // filesystem without root-reserved blocks).
        let status = Command::new("dd").args(["if=/dev/zero", "bs=1M", "status=none"]).arg(format!("of={}", data.join("filler").display())).status().unwrap();
        assert!(!status.success(), "dd filled a 1 GB volume without running out of space");
        let full = fx.mgr.usage(&id).unwrap();
        assert!(full.full && full.available_bytes < 4096, "{full:?}");
        let freed = fx.mgr.balance_reserve(&id).unwrap();
        assert!(freed.full, "still full: the reserve is for the blocked start only");
        assert!(!reserve.exists(), "the reserve was freed");
        let raw = rustix::fs::statvfs(fx.mgr.mount_point(&id)).unwrap();
        assert!(raw.f_bavail * raw.f_frsize >= reserve_bytes(freed.size_bytes) * 9 / 10, "Synapse has room to start");
        // Balancing again changes nothing while it is full.
        assert_eq!(fx.mgr.balance_reserve(&id).unwrap(), freed);
        assert!(!reserve.exists());
        // Room again (the operator deleted the filler): the reserve is taken back.
        fs::remove_file(data.join("filler")).unwrap();
        let back = fx.mgr.balance_reserve(&id).unwrap();
        assert!(!back.full && reserve.exists(), "{back:?}");
    }

    #[test]
    fn a_failed_create_leaves_nothing_behind() {
        let Some(mut fx) = Fixture::new() else { return };
        for step in ["image", "loop", "mkfs", "mount", "key", "policy", "chown"] {
            let id = fx.id();
            FAIL_AFTER.with(|f| f.set(Some(step)));
            let err = fx.mgr.create(&id, 1, &VolumeKey::generate(), 0, 0).unwrap_err();
            FAIL_AFTER.with(|f| f.set(None));
            assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
            let image = fx.mgr.image_path(&id);
            assert!(!image.exists(), "{step}: image left behind");
            assert!(!fx.mgr.is_mounted(&id), "{step}: still mounted");
            assert!(!fx.mgr.mount_point(&id).exists(), "{step}: mount point left behind");
            let attached = run("losetup", &["-a"]).unwrap();
            assert!(!attached.contains(&format!("{id}.img")), "{step}: loop device left behind: {attached}");
        }
        // An existing volume is never overwritten.
        let id = fx.id();
        let key = VolumeKey::generate();
        let data = fx.mgr.create(&id, 1, &key, 0, 0).unwrap();
        fs::write(data.join("f"), "x").unwrap();
        let err = fx.mgr.create(&id, 1, &VolumeKey::generate(), 0, 0).unwrap_err();
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        assert_eq!(fs::read_to_string(data.join("f")).unwrap(), "x");
        let zero = fx.id();
        assert!(fx.mgr.create(&zero, 0, &key, 0, 0).is_err());
    }

    #[test]
    fn destroy_removes_image_mount_loop_device_and_users() {
        let Some(mut fx) = Fixture::new() else { return };
        let id = fx.id();
        fx.users.push(id.clone());
        let user = crate::tenant::ensure(&id).unwrap();
        let data = fx.mgr.create(&id, 1, &VolumeKey::generate(), user.uid, user.gid).unwrap();
        fs::write(data.join("x"), "y").unwrap();
        let image = fx.mgr.image_path(&id);
        assert_eq!(loop_devices_for(&image).unwrap().len(), 1);
        // A process of the tenant, left running, is killed by remove().
        let mut sleeper = Command::new("runuser").args(["-u", &user.name, "--", "sleep", "300"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));

        fx.mgr.destroy(&id).unwrap();
        assert!(!image.exists());
        assert!(!fx.mgr.mount_point(&id).exists());
        assert!(!fx.mgr.is_mounted(&id));
        assert!(loop_devices_for(&image).unwrap().is_empty());
        assert!(!run("losetup", &["-a"]).unwrap().contains(id.as_str()));
        assert!(fx.mgr.list().unwrap().is_empty());

        crate::tenant::remove(&id).unwrap();
        let _ = sleeper.wait();
        assert!(crate::tenant::lookup(&id).unwrap().is_none());
        crate::tenant::remove(&id).unwrap(); // idempotent
        fx.mgr.destroy(&id).unwrap(); // idempotent
    }
}
