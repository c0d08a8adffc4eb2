//! tracefs: tracepoint field offsets from its `format` files (pure parsing + a reader), and
//! making sure it is mounted before programs are attached ([`ensure_mounted`]).
//!
//! A tracepoint record's layout is described by `/sys/kernel/tracing/events/<cat>/<name>/format`;
//! reading it at load time is what keeps the programs free of hard-coded offsets. Attaching a
//! classic tracepoint reads its id from the same tree, so without tracefs those hooks fail
//! ("tracefs not found"). That happens under `ip netns exec`, which remounts `/sys` in a mount
//! namespace of its own without tracefs; [`ensure_mounted`] mounts it there.

use std::path::{Path, PathBuf};

/// Where tracefs is usually mounted, newest first.
pub const TRACEFS_ROOTS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// Errors reading or parsing a format file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("tracefs is not mounted (looked in {roots:?}); mount it: mount -t tracefs nodev /sys/kernel/tracing")]
    NotMounted { roots: Vec<PathBuf> },
    #[error("tracepoint {category}/{name} does not exist on this kernel ({path} missing)")]
    NoSuchTracepoint {
        category: String,
        name: String,
        path: PathBuf,
    },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: malformed field line {text:?}")]
    Malformed {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}: no field {field:?} (fields: {known})")]
    NoSuchField {
        path: PathBuf,
        field: String,
        known: String,
    },
}

/// Parses the `field:` lines of a format file. `path` is only used in error messages.
pub fn parse_format(text: &str, path: &Path) -> Result<Vec<Field>, FormatError> {
    let mut fields = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let malformed = || FormatError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            text: raw.to_string(),
        };
        let mut decl = None;
        let (mut offset, mut size, mut signed) = (None, None, None);
        for (n, part) in rest.split(';').enumerate() {
            let part = part.trim();
            if n == 0 {
                decl = Some(part);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse::<u32>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse::<u32>().ok();
            } else if let Some(v) = part.strip_prefix("signed:") {
                signed = Some(v.trim() == "1");
            }
        }
        let decl = decl.ok_or_else(malformed)?;
        // The name is the declaration's last identifier: "const char * buf" -> buf,
        // "char comm[16]" -> comm.
        let last = decl.rsplit([' ', '*']).next().unwrap_or("");
        let name = last.split('[').next().unwrap_or("").trim();
        if name.is_empty() {
            return Err(malformed());
        }
        fields.push(Field {
            name: name.to_string(),
            offset: offset.ok_or_else(malformed)?,
            size: size.ok_or_else(malformed)?,
            signed: signed.unwrap_or(false),
        });
    }
    Ok(fields)
}

/// Finds a field by name in parsed fields.
pub fn field<'a>(fields: &'a [Field], name: &str, path: &Path) -> Result<&'a Field, FormatError> {
    fields
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| FormatError::NoSuchField {
            path: path.to_path_buf(),
            field: name.to_string(),
            known: fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The mounted tracefs root.
pub fn root() -> Result<PathBuf, FormatError> {
    TRACEFS_ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
        .ok_or_else(|| FormatError::NotMounted {
            roots: TRACEFS_ROOTS.iter().map(PathBuf::from).collect(),
        })
}

/// Reads and parses the format of `category/name` from the live tracefs.
pub fn read_format(category: &str, name: &str) -> Result<(PathBuf, Vec<Field>), FormatError> {
    let path = root()?
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            FormatError::NoSuchTracepoint {
                category: category.to_string(),
                name: name.to_string(),
                path: path.clone(),
            }
        } else {
            FormatError::Read {
                path: path.clone(),
                source,
            }
        }
    })?;
    let fields = parse_format(&text, &path)?;
    Ok((path, fields))
}

/// Offset of `field` in tracepoint `category/name` on the running kernel.
pub fn field_offset(category: &str, name: &str, field_name: &str) -> Result<u32, FormatError> {
    let (path, fields) = read_format(category, name)?;
    Ok(field(&fields, field_name, &path)?.offset)
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

#[cfg(test)]
mod tests {
    use super::*;

    const RECVFROM: &str =
        include_str!("../../../tests/fixtures/tracefs/sys_enter_recvfrom.format");
    const EXIT_READ: &str = include_str!("../../../tests/fixtures/tracefs/sys_exit_read.format");
    const SCHED_SWITCH: &str = include_str!("../../../tests/fixtures/tracefs/sched_switch.format");

    #[test]
    fn parses_syscall_enter_fields() {
        let p = Path::new("sys_enter_recvfrom/format");
        let fields = parse_format(RECVFROM, p).unwrap();
        let fd = field(&fields, "fd", p).unwrap();
        assert_eq!((fd.offset, fd.size), (16, 8));
        assert_eq!(field(&fields, "ubuf", p).unwrap().offset, 24);
        assert_eq!(field(&fields, "addr_len", p).unwrap().offset, 56);
        let common = field(&fields, "common_pid", p).unwrap();
        assert_eq!((common.offset, common.size, common.signed), (4, 4, true));
    }

    #[test]
    fn parses_exit_and_array_fields() {
        let p = Path::new("x");
        let ret = parse_format(EXIT_READ, p).unwrap();
        assert_eq!(field(&ret, "ret", p).unwrap().offset, 16);
        let sw = parse_format(SCHED_SWITCH, p).unwrap();
        let comm = field(&sw, "prev_comm", p).unwrap();
        assert_eq!((comm.offset, comm.size), (8, 16));
        assert!(field(&sw, "next_pid", p).is_ok());
    }

    #[test]
    fn missing_field_names_the_file_and_the_known_fields() {
        let p = Path::new("events/syscalls/sys_exit_read/format");
        let fields = parse_format(EXIT_READ, p).unwrap();
        let e = field(&fields, "fd", p).unwrap_err().to_string();
        assert!(
            e.contains("sys_exit_read/format") && e.contains("\"fd\"") && e.contains("ret"),
            "{e}"
        );
    }

    #[test]
    fn malformed_line_is_located() {
        let text = "name: x\nformat:\n\tfield:int fd;\toffset:abc;\tsize:8;\tsigned:0;\n";
        let e = parse_format(text, Path::new("f")).unwrap_err().to_string();
        assert!(e.starts_with("f:3: malformed"), "{e}");
    }
}
