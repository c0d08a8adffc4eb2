//! Tracepoint field offsets from tracefs `format` files (pure parsing + a reader).
//!
//! A tracepoint record's layout is described by `/sys/kernel/tracing/events/<cat>/<name>/format`;
//! reading it at load time is what keeps the programs free of hard-coded offsets.

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
    #[error("tracefs is not mounted (looked in {roots:?}); mount it: mount -t tracefs tracefs /sys/kernel/tracing")]
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
