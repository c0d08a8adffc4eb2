//! Reading and writing SMP documents: YAML (or JSON by extension), strict or lenient, with
//! errors that name the file, the line and the field; atomic, durable writes that never
//! follow a symlink ([`StagedFile`]).
//!
//! Strict reading first deserializes into the `deny_unknown_fields` shadow types
//! ([`super::smp::strict`]), so an unknown key is reported where it is, then into the public
//! types. Lenient reading ignores unknown keys (for files written by other tools).

use std::{
    fmt, fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};

use super::smp::{
    self, EnvironmentConfig, PerformanceTestConfig, PerformanceTestResult, ServiceMesh,
    ServiceMeshConfig, TestConfigFile,
};

/// Whether unknown fields are an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// Unknown fields are an error (our own files, test configs).
    #[default]
    Strict,
    /// Unknown fields are ignored (files from other tools).
    Lenient,
}

/// Where in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The parser that failed, kept as the error source.
#[derive(Debug, thiserror::Error)]
pub enum SyntaxError {
    /// From the YAML parser.
    #[error(transparent)]
    Yaml(#[from] serde_yaml_ng::Error),
    /// From the JSON parser.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// An error reading or writing an SMP document.
#[derive(Debug, thiserror::Error)]
pub enum SmpFileError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid document of the expected kind.
    #[error("{}{}: {}: {message}", path.display(), location.map(|l| format!(":{l}")).unwrap_or_default(), field_text(field))]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where, when the parser knows.
        location: Option<Location>,
        /// Dotted path of the offending field (`test.clients[0].connections`); empty for
        /// the whole document.
        field: String,
        /// What is wrong, without the location.
        message: String,
        /// The parser's own error.
        #[source]
        source: SyntaxError,
    },
    /// The document could not be serialized.
    #[error("{}: cannot serialize the {kind}: {source}", path.display())]
    Serialize {
        /// The file it was meant for.
        path: PathBuf,
        /// Which document.
        kind: &'static str,
        /// Why.
        #[source]
        source: SyntaxError,
    },
    /// We refused to write a document that our own strict reader would reject.
    #[error("{}: refusing to write the {kind}: it would not re-read: {source}", path.display())]
    WouldNotReread {
        /// The file it was meant for.
        path: PathBuf,
        /// Which document.
        kind: &'static str,
        /// What the reader said.
        #[source]
        source: Box<SmpFileError>,
    },
    /// The HTML report could not be rendered.
    #[error("{}: cannot render the report: {source}", path.display())]
    Report {
        /// The file it was meant for.
        path: PathBuf,
        /// Why.
        #[source]
        source: super::html::HtmlError,
    },
    /// The file could not be written (nothing was left behind).
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn field_text(field: &str) -> String {
    if field.is_empty() {
        "document".to_string()
    } else {
        format!("field `{field}`")
    }
}

impl SmpFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SmpFileError::Read { path, .. }
            | SmpFileError::Parse { path, .. }
            | SmpFileError::Serialize { path, .. }
            | SmpFileError::WouldNotReread { path, .. }
            | SmpFileError::Report { path, .. }
            | SmpFileError::Write { path, .. } => path,
        }
    }

    /// The 1-based line, for parse errors that have one.
    pub fn line(&self) -> Option<usize> {
        match self {
            SmpFileError::Parse { location, .. } => location.map(|l| l.line),
            _ => None,
        }
    }

    /// The field path, for parse errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            SmpFileError::Parse { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A document type we read and write.
pub trait SmpDocument: Serialize + DeserializeOwned {
    /// The shadow type that rejects unknown fields.
    #[doc(hidden)]
    type Strict: DeserializeOwned;
    /// What it is, for messages (`PerformanceTestResult`).
    const KIND: &'static str;
}

macro_rules! document {
    ($t:ident) => {
        impl SmpDocument for $t {
            type Strict = smp::strict::$t;
            const KIND: &'static str = stringify!($t);
        }
    };
}
document!(TestConfigFile);
document!(PerformanceTestConfig);
document!(PerformanceTestResult);
document!(ServiceMeshConfig);
document!(ServiceMesh);
document!(EnvironmentConfig);

/// Input format, chosen by file extension: `.json` is JSON, anything else YAML.
fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Reads a whole file.
pub fn read_text(path: &Path) -> Result<String, SmpFileError> {
    crate::input::read_text(path).map_err(|source| SmpFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses one document from `text`; `path` is used for the format (by extension) and in
/// errors.
pub fn parse_document<T: SmpDocument>(
    text: &str,
    path: &Path,
    strictness: Strictness,
) -> Result<T, SmpFileError> {
    if strictness == Strictness::Strict {
        deserialize::<T::Strict>(text, path)?;
    }
    deserialize::<T>(text, path)
}

/// Reads one document from a file.
pub fn read_document<T: SmpDocument>(
    path: &Path,
    strictness: Strictness,
) -> Result<T, SmpFileError> {
    let text = read_text(path)?;
    parse_document(&text, path, strictness)
}

/// Reads a mesheryctl-style test configuration `{test, mesh}`, strictly. A bare
/// `PerformanceTestConfig` (no `test:` wrapper, as some Meshery docs show) is accepted too,
/// with mesh type 0.
pub fn read_test_config(path: &Path) -> Result<TestConfigFile, SmpFileError> {
    let text = read_text(path)?;
    parse_test_config(&text, path)
}

/// [`read_test_config`] on text already read.
pub fn parse_test_config(text: &str, path: &Path) -> Result<TestConfigFile, SmpFileError> {
    if looks_like_bare_test_config(text, path) {
        let test = parse_document::<PerformanceTestConfig>(text, path, Strictness::Strict)?;
        return Ok(TestConfigFile {
            test,
            mesh: ServiceMesh::default(),
        });
    }
    parse_document(text, path, Strictness::Strict)
}

/// True when the top level is a mapping with `clients` and without `test`.
fn looks_like_bare_test_config(text: &str, path: &Path) -> bool {
    let top: Option<serde_json::Map<String, serde_json::Value>> = if is_json(path) {
        serde_json::from_str(text).ok()
    } else {
        crate::input::yaml_from_str::<serde_yaml_ng::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
            .and_then(|v| match v {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            })
    };
    top.is_some_and(|m| m.contains_key("clients") && !m.contains_key("test"))
}

/// Parses any serde type (YAML, or JSON by extension) with the same error reporting; its own
/// serde attributes decide strictness (the details document denies unknown fields).
pub fn parse_plain<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, SmpFileError> {
    deserialize(text, path)
}

fn deserialize<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, SmpFileError> {
    if is_json(path) {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(path, e))?;
        de.end().map_err(|e| json_error_plain(path, e))?;
        Ok(value)
    } else {
        crate::input::yaml_from_str_tracked(text).map_err(|e| yaml_error(path, e, text))
    }
}

/// Field path in our dotted form (`a.b[0].c`), empty for the root.
fn field_path(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s == "." {
        String::new()
    } else {
        s
    }
}

/// For "missing field `x`" the path points at the enclosing mapping: append the key.
fn with_missing_field(field: String, message: &str) -> String {
    let name = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match name {
        Some(name) if field.is_empty() => name.to_string(),
        Some(name) => format!("{field}.{name}"),
        None => field,
    }
}

fn yaml_error(
    path: &Path,
    e: serde_path_to_error::Error<serde_yaml_ng::Error>,
    text: &str,
) -> SmpFileError {
    let field = field_path(e.path());
    let source = e.into_inner();
    let mut location = source.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    // A value rejected by our own parsers (`interval: 10ms`) comes back located at the start
    // of the enclosing mapping; for a top-level key, point at its line instead.
    if let Some(key) = top_level_key_location(text, &field) {
        if location.is_none_or(|l| l.line < key.line) {
            location = Some(key);
        }
    }
    let message = clean_message(&source.to_string());
    SmpFileError::Parse {
        path: path.to_path_buf(),
        location,
        field: with_missing_field(field, &message),
        message,
        source: SyntaxError::Yaml(source),
    }
}

/// Where a top-level (unindented) key `field` is written in YAML `text`: the line, and the
/// column of its value.
fn top_level_key_location(text: &str, field: &str) -> Option<Location> {
    if field.is_empty() || field.contains(['.', '[']) {
        return None;
    }
    text.lines().enumerate().find_map(|(i, line)| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let value_at = line.len() - rest.trim_start().len();
        Some(Location {
            line: i + 1,
            column: value_at + 1,
        })
    })
}

fn json_error(path: &Path, e: serde_path_to_error::Error<serde_json::Error>) -> SmpFileError {
    let field = field_path(e.path());
    let mut err = json_error_plain(path, e.into_inner());
    if let SmpFileError::Parse {
        field: f, message, ..
    } = &mut err
    {
        *f = with_missing_field(field, message);
    }
    err
}

fn json_error_plain(path: &Path, source: serde_json::Error) -> SmpFileError {
    let location = (source.line() > 0).then(|| Location {
        line: source.line(),
        column: source.column(),
    });
    let message = clean_message(&source.to_string());
    SmpFileError::Parse {
        path: path.to_path_buf(),
        location,
        field: String::new(),
        message,
        source: SyntaxError::Json(source),
    }
}

/// Strips what we print separately from a parser message: serde_yaml's `path: ` prefix and
/// both parsers' ` at line N column M` suffix.
fn clean_message(msg: &str) -> String {
    let mut m = msg;
    if let Some(i) = m.rfind(" at line ") {
        if m[i + " at line ".len()..]
            .split(" column ")
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        {
            m = &m[..i];
        }
    }
    // serde_yaml prefixes "<path>: " when the error is not at the root; paths have no spaces.
    if let Some((prefix, rest)) = m.split_once(": ") {
        if !prefix.contains(' ') && (prefix.contains('.') || prefix.contains('[')) {
            m = rest;
        }
    }
    crate::input::redact_values(&shorten_expected_fields(m))
}

/// serde lists every accepted key after "expected one of", aliases included; keep the
/// snake_case proto names only.
fn shorten_expected_fields(m: &str) -> String {
    let Some((head, list)) = m.split_once(", expected one of ") else {
        return m.to_string();
    };
    let names: Vec<&str> = list
        .split(", ")
        .filter(|n| !n.chars().any(|c| c.is_ascii_uppercase()))
        .collect();
    format!("{head}, expected one of {}", names.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// YAML text of a document (snake_case names, integer enums, zero values omitted).
pub fn to_yaml<T: Serialize>(doc: &T) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(doc)
}

/// Serializes `doc` as YAML (or JSON for `.json`) and writes it atomically to `path`.
pub fn write_document<T: SmpDocument>(path: &Path, doc: &T) -> Result<(), SmpFileError> {
    let bytes = serialize(path, T::KIND, doc)?;
    write_atomic(path, &bytes)
}

/// Bytes of `doc` in the format `path`'s extension asks for.
pub fn serialize<T: Serialize>(
    path: &Path,
    kind: &'static str,
    doc: &T,
) -> Result<Vec<u8>, SmpFileError> {
    let err = |source| SmpFileError::Serialize {
        path: path.to_path_buf(),
        kind,
        source,
    };
    if is_json(path) {
        let mut v = serde_json::to_vec_pretty(doc).map_err(|e| err(SyntaxError::Json(e)))?;
        v.push(b'\n');
        Ok(v)
    } else {
        to_yaml(doc)
            .map(String::into_bytes)
            .map_err(|e| err(SyntaxError::Yaml(e)))
    }
}

/// How many temporary names [`StagedFile::stage`] tries before it gives up: each is taken only
/// if nothing (not even a symlink) is there yet, so another file at one name moves on to the
/// next.
const TEMP_ATTEMPTS: u32 = 16;

/// The `attempt`-th temporary name for `dest`: `.<name>.tmp-<pid>-<attempt>` in its directory.
fn temp_path(dir: &Path, name: &std::ffi::OsStr, attempt: u32) -> PathBuf {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{attempt}", std::process::id()));
    dir.join(tmp_name)
}

/// The directory a file goes into (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `dir` (and its missing parents) so that it survives a crash: each directory
/// created is flushed into its parent's entries.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        sync_dir(&parent_dir(d))?;
    }
    Ok(())
}

/// Flushes a directory's entries (a rename into it) to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?
        .sync_all()
}

/// A file written to a temporary name beside its destination, not yet renamed. Every result
/// file goes through it (the SMP documents, `details.json`, `report.html`).
///
/// The temporary file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`: a file or symlink already
/// at that name is never opened or followed (the next name is tried). Its bytes are synced
/// before [`Self::commit`] renames it, and the directory is synced after the rename, so a
/// crash or power loss leaves either the old file or the whole new one. The rename replaces
/// whatever entry is at the destination (a symlink there is replaced, not followed).
#[derive(Debug)]
pub struct StagedFile {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl StagedFile {
    /// Writes `bytes` to a new temporary file in `dest`'s directory (flushed and synced).
    pub fn stage(dest: &Path, bytes: &[u8]) -> Result<Self, SmpFileError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let err = |source| SmpFileError::Write {
            path: dest.to_path_buf(),
            source,
        };
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .ok_or_else(|| err(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
        let mut taken = 0;
        let (tmp, mut file) = loop {
            let tmp = temp_path(&dir, name, taken);
            let opened = fs::OpenOptions::new()
                .write(true)
                .create_new(true) // O_CREAT|O_EXCL
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp);
            match opened {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    taken += 1;
                    if taken == TEMP_ATTEMPTS {
                        return Err(err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!(
                                "the temporary names .{}.tmp-{}-0 … -{} are all taken in {}",
                                name.to_string_lossy(),
                                std::process::id(),
                                TEMP_ATTEMPTS - 1,
                                dir.display()
                            ),
                        )));
                    }
                }
                Err(e) => return Err(err(e)),
            }
        };
        let staged = StagedFile {
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        };
        // On failure `staged` is dropped here, which removes the partial temp file.
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(err)?;
        Ok(staged)
    }

    /// Renames the temporary file onto the destination (atomic on one filesystem), then syncs
    /// the directory so that the rename itself is on disk.
    pub fn commit(mut self) -> Result<PathBuf, SmpFileError> {
        let err = |source| SmpFileError::Write {
            path: self.dest.clone(),
            source,
        };
        fs::rename(&self.tmp, &self.dest).map_err(err)?;
        self.committed = true;
        sync_dir(&parent_dir(&self.dest)).map_err(err)?;
        Ok(self.dest.clone())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            // Removes the directory entry we created (never follows it).
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically and durably ([`StagedFile`]): a temporary file in the
/// same directory, synced, renamed, the directory synced. On error nothing is left behind and
/// an existing `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SmpFileError> {
    StagedFile::stage(path, bytes)?.commit().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict<T: SmpDocument>(text: &str) -> Result<T, SmpFileError> {
        parse_document(text, Path::new("t.yaml"), Strictness::Strict)
    }

    #[test]
    fn durable_dirs_create_every_missing_level_and_accept_existing_ones() {
        let base = std::env::temp_dir().join(format!("smp-durable-{}", std::process::id()));
        let deep = base.join("a/b/c");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durable(&deep).unwrap();
        let file = base.join("f");
        fs::write(&file, "x").unwrap();
        assert!(
            create_dir_durable(&file.join("d")).is_err(),
            "a file in the way is an error"
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn cleans_parser_messages() {
        assert_eq!(
            clean_message("test.clients[0].connections: invalid type: string \"x\", expected i32 at line 5 column 20"),
            "invalid type: a string of 1 characters, expected i32"
        );
        assert_eq!(
            clean_message("missing field `test` at line 1 column 1"),
            "missing field `test`"
        );
        assert_eq!(
            clean_message("expected i32: at line"),
            "expected i32: at line"
        );
    }

    #[test]
    fn unknown_field_is_named_with_line_in_strict_mode_only() {
        let text = "smp_version: v0.0.1\nid: r1\nfoo: 1\n";
        let e = strict::<PerformanceTestResult>(text).unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        assert_eq!(e.field(), Some("foo"), "{e}");
        assert!(e.to_string().starts_with("t.yaml:3:"), "{e}");
        let r: PerformanceTestResult =
            parse_document(text, Path::new("t.yaml"), Strictness::Lenient).unwrap();
        assert_eq!(r.id, "r1");
    }

    #[test]
    fn nested_unknown_field_and_json() {
        let text = "{\n  \"id\": \"x\",\n  \"latenciesMs\": {\"p50\": 1.0, \"p42\": 2}\n}\n";
        let e =
            parse_document::<PerformanceTestResult>(text, Path::new("r.json"), Strictness::Strict)
                .unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        assert_eq!(e.field(), Some("latenciesMs.p42"), "{e}");
        let r: PerformanceTestResult =
            parse_document(text, Path::new("r.json"), Strictness::Lenient).unwrap();
        assert_eq!(r.latencies_ms.unwrap().p50, 1.0);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_nothing_on_error() {
        let dir = std::env::temp_dir().join(format!("smp-file-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.yaml");
        write_atomic(&p, b"one\n").unwrap();
        write_atomic(&p, b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two\n");
        // Staged but not committed: removed on drop, destination untouched.
        drop(StagedFile::stage(&p, b"three\n").unwrap());
        assert_eq!(fs::read_to_string(&p).unwrap(), "two\n");
        // Writing into a missing directory fails and creates nothing.
        let bad = dir.join("missing").join("b.yaml");
        assert!(matches!(
            write_atomic(&bad, b"x"),
            Err(SmpFileError::Write { .. })
        ));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.yaml")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A symlink planted at the destination or at the temporary names is never followed: the
    /// file it points to keeps its bytes, the planted temp links stay as they were, and the
    /// destination becomes a regular file with the new bytes.
    #[test]
    fn planted_symlinks_are_not_followed() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("smp-file-symlink-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, b"victim\n").unwrap();
        let dest = dir.join("result.yaml");
        // The destination and the first two temporary names point at the victim.
        symlink(&victim, &dest).unwrap();
        let name = dest.file_name().unwrap();
        let planted = [temp_path(&dir, name, 0), temp_path(&dir, name, 1)];
        for p in &planted {
            symlink(&victim, p).unwrap();
        }
        write_atomic(&dest, b"measured\n").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"victim\n");
        let meta = fs::symlink_metadata(&dest).unwrap();
        assert!(meta.file_type().is_file(), "{meta:?}");
        assert_eq!(fs::read(&dest).unwrap(), b"measured\n");
        for p in &planted {
            assert!(fs::symlink_metadata(p).unwrap().file_type().is_symlink());
            assert_eq!(fs::read_link(p).unwrap(), victim);
        }
        // A dangling symlink (to a file that does not exist yet) is not followed either.
        let absent = dir.join("absent");
        for p in &planted {
            fs::remove_file(p).unwrap();
            symlink(&absent, p).unwrap();
        }
        write_atomic(&dest, b"again\n").unwrap();
        assert!(!absent.exists(), "created through a dangling symlink");
        assert_eq!(fs::read(&dest).unwrap(), b"again\n");
        // Every temporary name taken: a clear error, nothing written anywhere.
        for attempt in 0..TEMP_ATTEMPTS {
            let p = temp_path(&dir, name, attempt);
            let _ = fs::remove_file(&p);
            symlink(&victim, &p).unwrap();
        }
        let e = write_atomic(&dest, b"never\n").unwrap_err();
        assert!(matches!(e, SmpFileError::Write { .. }), "{e}");
        assert!(e.to_string().contains("are all taken"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"victim\n");
        assert_eq!(fs::read(&dest).unwrap(), b"again\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
