//! tracefs: where it is mounted, and making sure it is before programs are attached
//! ([`ensure_mounted`]).
//!
//! Attaching a classic tracepoint reads its id from `/sys/kernel/tracing/events/<cat>/<name>`,
//! so without tracefs those hooks fail ("tracefs not found"). That happens under `ip netns exec`, which remounts `/sys` in a mount
//! namespace of its own without tracefs; [`ensure_mounted`] mounts it there.

use std::path::{Path, PathBuf};

/// Where tracefs is usually mounted, newest first.
pub const TRACEFS_ROOTS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// tracefs is not mounted where the agent (and aya) look for it.
#[derive(Debug, thiserror::Error)]
#[error("tracefs is not mounted (looked in {roots:?}); mount it: {MOUNT_COMMAND}")]
pub struct NotMounted {
    pub roots: Vec<PathBuf>,
}

/// The mounted tracefs root.
pub fn root() -> Result<PathBuf, NotMounted> {
    TRACEFS_ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
        .ok_or_else(|| NotMounted {
            roots: TRACEFS_ROOTS.iter().map(PathBuf::from).collect(),
        })
}

/// Where [`ensure_mounted`] mounts tracefs.
pub const MOUNT_POINT: &str = "/sys/kernel/tracing";

/// The mount command that [`ensure_mounted`] runs, for people to run themselves.
pub const MOUNT_COMMAND: &str = "mount -t tracefs nodev /sys/kernel/tracing";

/// What [`ensure_mounted`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mounted {
    /// tracefs was already mounted here.
    Already(PathBuf),
    /// tracefs was not mounted in this mount namespace; it now is, at [`MOUNT_POINT`].
    Now(PathBuf),
}

/// tracefs is not mounted and mounting it failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "tracefs is not mounted (looked in {roots:?}) and mounting it at {MOUNT_POINT} failed: \
     {source}; {advice}"
)]
pub struct MountError {
    /// Where we looked.
    pub roots: Vec<PathBuf>,
    /// Why `mount(2)` failed.
    #[source]
    pub source: std::io::Error,
    /// What to do about it.
    pub advice: String,
}

/// Makes sure tracefs is mounted: if it is not (under `ip netns exec`, in a container without
/// it), mounts it at [`MOUNT_POINT`] as `mount -t tracefs nodev /sys/kernel/tracing` does. The
/// mount is made in the caller's mount namespace: under `ip netns exec` it goes away with the
/// command, on a host it stays. Call it before the first program is attached (aya looks for
/// tracefs once per process).
pub fn ensure_mounted() -> Result<Mounted, MountError> {
    if let Ok(root) = root() {
        return Ok(Mounted::Already(root));
    }
    mount_tracefs(Path::new(MOUNT_POINT)).map_err(|source| {
        let advice = match source.raw_os_error() {
            Some(libc::EPERM) => format!(
                "mounting needs root (CAP_SYS_ADMIN); as root run `{MOUNT_COMMAND}` first, in \
                 the same `ip netns exec` command when running inside one: `ip netns exec <ns> \
                 sh -c '{MOUNT_COMMAND} && smp-agent …'`"
            ),
            Some(libc::ENODEV) => "this kernel has no tracefs (built without CONFIG_TRACING); \
                                   tracepoints cannot be attached"
                .to_string(),
            _ => format!(
                "mount it yourself (`{MOUNT_COMMAND}`) and run again, inside the same `ip netns \
                 exec` command when running inside one"
            ),
        };
        MountError {
            roots: TRACEFS_ROOTS.iter().map(PathBuf::from).collect(),
            source,
            advice,
        }
    })?;
    // Mounted, but is it what aya and we look for?
    root().map(Mounted::Now).map_err(|e| MountError {
        roots: TRACEFS_ROOTS.iter().map(PathBuf::from).collect(),
        source: std::io::Error::other(e.to_string()),
        advice: format!("check what is mounted at {MOUNT_POINT}"),
    })
}

/// `mount("nodev", at, "tracefs", 0, NULL)`.
fn mount_tracefs(at: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let target = std::ffi::CString::new(at.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; `data`
    // may be NULL.
    let r = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
