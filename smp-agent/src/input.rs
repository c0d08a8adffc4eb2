//! Limits on the files we read from others (results handed to `compare` in CI, test and lab
//! configurations): a capped file read, and the one YAML reader every YAML input goes through.
//!
//! YAML's parser takes time quadratic in the depth of unclosed flow collections (`[[[[…`), so
//! the text is checked for size and nesting before it is parsed. JSON is parsed by serde_json,
//! which is linear and stops at 128 levels itself; it is size-capped by [`read_text`]. The
//! limits are documented in docs/smp.md.

use std::{
    fs,
    io::{self, Read as _},
    path::Path,
};

use serde::de::{self, DeserializeOwned};

/// Largest input file we read, in bytes (16 MiB: our own result sets are a few hundred KiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Deepest nesting of YAML collections we parse (our documents nest 6 levels at most).
pub const MAX_NESTING: usize = 64;

/// Reads a whole UTF-8 file of at most [`MAX_FILE_BYTES`]. A larger file is an error of kind
/// [`io::ErrorKind::FileTooLarge`], found before its contents are read; the error never holds
/// any of the file's text.
pub fn read_text(path: &Path) -> io::Result<String> {
    read_text_capped(path, MAX_FILE_BYTES)
}

/// [`read_text`] with another limit.
pub fn read_text_capped(path: &Path, limit: u64) -> io::Result<String> {
    let file = fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let too_large = |size: u64| {
        io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("{size} bytes, over the limit of {limit} bytes for input files"),
        )
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    // The size may change while we read: never take more than the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Why YAML text was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The text is longer than [`MAX_FILE_BYTES`].
    #[error("{size} bytes of YAML, over the limit of {limit} bytes")]
    TooLarge {
        /// Its length.
        size: usize,
        /// The limit.
        limit: u64,
    },
    /// Collections nest deeper than [`MAX_NESTING`].
    #[error("YAML nested deeper than {limit} levels (line {line}, column {column})")]
    TooDeep {
        /// 1-based line where the limit was crossed.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The limit.
        limit: usize,
    },
}

/// Checks YAML `text` against [`MAX_FILE_BYTES`] and [`MAX_NESTING`] without parsing it.
///
/// Nesting is counted over flow collections (`[`, `{` outside quotes and comments) plus the
/// block sequence and mapping entries that open on one line (`- - - x`, `? ? x`), which is
/// where the parser's cost lies; indentation-nested blocks are bounded by the parser's own
/// recursion limit and cost linear time.
pub fn check_yaml(text: &str) -> Result<(), LimitError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(LimitError::TooLarge {
            size: text.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    #[derive(PartialEq)]
    enum State {
        Plain,
        Single,
        Double,
    }
    let mut state = State::Plain;
    let (mut flow, mut line, mut column) = (0usize, 1usize, 0usize);
    // Block indicators opened on the current line (reset at each line).
    let mut block = 0usize;
    // The previous character that is not a space or tab, on this line ('\n' at its start).
    let mut prev = '\n';
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
            block = 0;
            if state == State::Plain {
                prev = '\n';
            }
            continue;
        }
        match state {
            State::Single => {
                if c == '\'' {
                    state = State::Plain;
                    prev = c;
                }
                continue;
            }
            State::Double => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    state = State::Plain;
                    prev = c;
                }
                continue;
            }
            State::Plain => {}
        }
        let starts_node = matches!(prev, '\n' | ':' | '-' | '?' | '[' | '{' | ',');
        match c {
            ' ' | '\t' | '\r' => continue,
            '#' => {
                // A comment: to the end of the line.
                while chars.peek().is_some_and(|&n| n != '\n') {
                    chars.next();
                }
                continue;
            }
            '\'' if starts_node => state = State::Single,
            '"' if starts_node => state = State::Double,
            '[' | '{' => flow += 1,
            ']' | '}' => flow = flow.saturating_sub(1),
            '-' | '?' if matches!(prev, '\n' | '-' | '?') && chars.peek() == Some(&' ') => {
                block += 1
            }
            _ => {}
        }
        if flow + block > MAX_NESTING {
            return Err(LimitError::TooDeep {
                line,
                column,
                limit: MAX_NESTING,
            });
        }
        prev = c;
    }
    Ok(())
}

/// The YAML error type of the reader (a maintained serde_yaml fork, same API).
pub type YamlError = serde_yaml_ng::Error;

/// Parses YAML text into `T` after [`check_yaml`]; a limit crossed is a custom error whose
/// message says which.
pub fn yaml_from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    check_yaml(text).map_err(<YamlError as de::Error>::custom)?;
    serde_yaml_ng::from_str(text)
}

/// [`yaml_from_str`] that records the path of the field that failed (for messages naming it).
pub fn yaml_from_str_tracked<T: DeserializeOwned>(
    text: &str,
) -> Result<T, serde_path_to_error::Error<YamlError>> {
    match check_yaml(text) {
        Ok(()) => serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)),
        // At the root: the document as a whole is refused.
        Err(e) => serde_path_to_error::deserialize(Refuse(<YamlError as de::Error>::custom(e))),
    }
}

/// A deserializer that fails at once with its error.
struct Refuse(YamlError);

impl<'de> de::Deserializer<'de> for Refuse {
    type Error = YamlError;

    fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, YamlError> {
        Err(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// A parser message without the input's text: serde quotes a rejected value
/// (`invalid type: string "…", expected …`), which may be anything from the file; it becomes
/// `a string of N characters`. Names in backquotes (`unknown field `x``) stay, cut to 64
/// characters.
pub fn redact_values(message: &str) -> String {
    const NAME_MAX: usize = 64;
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let s = rest.find("string \"");
        let b = rest.find('`');
        match (s, b) {
            (Some(i), _) if b.is_none_or(|b| i < b) => {
                out.push_str(&rest[..i]);
                let body = &rest[i + "string \"".len()..];
                // The value is Debug-escaped: `\"` inside, `"` at the end.
                let (mut end, mut escaped, mut n) = (body.len(), false, 0usize);
                for (j, c) in body.char_indices() {
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => {
                            end = j;
                            break;
                        }
                        _ => {}
                    }
                    if !escaped {
                        n += 1;
                    }
                }
                out.push_str(&format!("a string of {n} characters"));
                rest = body.get(end + 1..).unwrap_or("");
            }
            (_, Some(i)) => {
                let body = &rest[i + 1..];
                let end = body.find('`').unwrap_or(body.len());
                out.push_str(&rest[..=i]);
                let name = &body[..end];
                if name.chars().count() > NAME_MAX {
                    out.extend(name.chars().take(NAME_MAX));
                    out.push('…');
                } else {
                    out.push_str(name);
                }
                if end < body.len() {
                    out.push('`');
                }
                rest = body.get(end + 1..).unwrap_or("");
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// YAML text of `value`.
pub fn yaml_to_string<T: serde::Serialize>(value: &T) -> Result<String, YamlError> {
    serde_yaml_ng::to_string(value)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn deep_flow_nesting_is_refused_quickly() {
        // 100 000 unclosed `[` took over 10 s in the parser; refused before it, at once.
        for text in ["[".repeat(100_000), "{a: ".repeat(50_000)] {
            let t0 = Instant::now();
            let e = yaml_from_str::<serde_json::Value>(&text).unwrap_err();
            assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
            let m = e.to_string();
            assert!(m.contains("nested deeper than 64 levels"), "{m}");
            assert!(m.contains("line 1, column"), "{m}");
        }
        // One line of block sequence indicators nests too.
        let e = yaml_from_str::<serde_json::Value>(&"- ".repeat(100_000)).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[test]
    fn ordinary_yaml_and_brackets_in_strings_pass() {
        let depth = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(check_yaml(&depth(MAX_NESTING)).is_ok());
        assert!(check_yaml(&depth(MAX_NESTING + 1)).is_err());
        // Brackets in quotes, comments and block scalars' plain text do not nest.
        let brackets = "[".repeat(200);
        for text in [
            format!("a: '{brackets}'\n"),
            format!("a: \"{brackets}\\\"\"\n"),
            format!("a: 1 # {brackets}\n"),
            format!("a: x{}\n", "[]".repeat(200)),
        ] {
            assert!(check_yaml(&text).is_ok(), "{text}");
        }
        let v: serde_json::Value = yaml_from_str("a: [1, {b: 2}]\nc:\n  - - x\n").unwrap();
        assert_eq!(v["a"][1]["b"], 2);
        // An apostrophe inside a plain scalar does not hide brackets that follow.
        let text = format!("a: don't\nb: {}", "[".repeat(100));
        assert!(check_yaml(&text).is_err());
    }

    #[test]
    fn too_large_files_are_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("smp-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("big.yaml");
        std::fs::write(&p, "secret: 123456789\n").unwrap();
        let e = read_text_capped(&p, 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert!(!e.to_string().contains("secret"), "{e}");
        assert_eq!(read_text_capped(&p, 18).unwrap(), "secret: 123456789\n");
        std::fs::write(&p, b"ok \xff secret").unwrap();
        let e = read_text(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = read_text(&dir).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn messages_do_not_quote_values() {
        let e = yaml_from_str::<u32>("root$6$secret\"x,19000,0,99999,7").unwrap_err();
        let m = redact_values(&e.to_string());
        assert!(!m.contains("secret") && !m.contains("19000"), "{m}");
        assert!(m.contains("a string of "), "{m}");
        assert_eq!(
            redact_values(r#"invalid value: string "a\"b", expected x"#),
            "invalid value: a string of 3 characters, expected x"
        );
        let long = "k".repeat(100);
        let m = redact_values(&format!("unknown field `{long}`, expected `a`"));
        assert_eq!(
            m,
            format!("unknown field `{}…`, expected `a`", "k".repeat(64))
        );
    }

    #[test]
    fn tracked_reader_reports_the_limit_at_the_root() {
        let e = yaml_from_str_tracked::<serde_json::Value>(&"[".repeat(100)).unwrap_err();
        assert_eq!(e.path().to_string(), ".");
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }
}
