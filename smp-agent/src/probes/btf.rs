//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct member offsets.
//!
//! Aya's Rust eBPF carries no CO-RE relocations, so the agent looks up every kernel struct
//! offset it needs here, at load time, and hands them to the programs. Only what that needs is
//! parsed: type records are walked to find their boundaries; struct/union members are decoded.
//! Format: <https://docs.kernel.org/bpf/btf.html>.

use std::path::{Path, PathBuf};

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors reading BTF or finding a member.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("failed to read BTF from {path} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid BTF: {0}")]
    Invalid(&'static str),
    #[error("BTF has no struct {0:?}")]
    NoStruct(String),
    #[error("BTF struct {strukt:?} has no member {member:?}")]
    NoMember { strukt: String, member: String },
    #[error("BTF member {strukt}.{member} is a bitfield; a byte offset is needed")]
    Bitfield { strukt: String, member: String },
}

/// One decoded type record.
#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    members: Vec<Member>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

/// Parsed BTF: the types (index = type id; id 0 is void) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads BTF from a file.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses raw (little-endian) BTF bytes.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let u16_at = |o: usize| -> Result<u16, BtfError> {
            data.get(o..o + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or(BtfError::Invalid("truncated"))
        };
        let u32_at = |o: usize| -> Result<u32, BtfError> {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(BtfError::Invalid("truncated"))
        };
        if u16_at(0)? != MAGIC {
            return Err(BtfError::Invalid("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(BtfError::Invalid("header too short"));
        }
        let type_off = hdr_len + u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = hdr_len + u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .ok_or(BtfError::Invalid("string section out of bounds"))?
            .to_vec();
        let end = type_off + type_len;
        if end > data.len() {
            return Err(BtfError::Invalid("type section out of bounds"));
        }
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            size_or_type: 0,
            members: Vec::new(),
        }];
        let mut o = type_off;
        while o < end {
            let name_off = u32_at(o)?;
            let info = u32_at(o + 4)?;
            let size_or_type = u32_at(o + 8)?;
            o += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => o += 4,
                KIND_ARRAY => o += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = o + i * 12;
                        members.push(Member {
                            name_off: u32_at(m)?,
                            type_id: u32_at(m + 4)?,
                            bit_offset: u32_at(m + 8)?,
                        });
                    }
                    o += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => o += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => o += vlen * 12,
                0 | 2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => {}
                _ => return Err(BtfError::Invalid("unknown type kind")),
            }
            types.push(Type {
                name_off,
                kind,
                kind_flag,
                size_or_type,
                members,
            });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &str {
        let start = off as usize;
        let Some(tail) = self.strings.get(start..) else {
            return "";
        };
        let len = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..len]).unwrap_or("")
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Names of the typedefs that start with `prefix`, without it (`btf_trace_` gives the
    /// kernel's tracepoints: every one has a `btf_trace_<name>` typedef).
    pub fn typedefs_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> {
        self.types
            .iter()
            .filter(|t| t.kind == KIND_TYPEDEF)
            .filter_map(move |t| self.name(t.name_off).strip_prefix(prefix))
    }

    /// Byte offset of `member` in `struct strukt`, searching anonymous struct/union members too.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = self
            .types
            .iter()
            .position(|t| {
                t.kind == KIND_STRUCT && !t.members.is_empty() && self.name(t.name_off) == strukt
            })
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let bits = self
            .find_member(id as u32, member, 0)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_string(),
                member: member.to_string(),
            })?;
        if bits % 8 != 0 {
            return Err(BtfError::Bitfield {
                strukt: strukt.to_string(),
                member: member.to_string(),
            });
        }
        Ok(bits / 8)
    }

    /// Offset in bits of `member` inside type `id`, recursing into anonymous members.
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        let t = self.types.get(id as usize)?;
        let bit_of = |m: &Member| {
            if t.kind_flag {
                m.bit_offset & 0x00ff_ffff
            } else {
                m.bit_offset
            }
        };
        if let Some(m) = t.members.iter().find(|m| self.name(m.name_off) == member) {
            return Some(bit_of(m));
        }
        t.members.iter().filter(|m| m.name_off == 0).find_map(|m| {
            let inner = self.resolve(m.type_id);
            let kind = self.types.get(inner as usize)?.kind;
            if kind != KIND_STRUCT && kind != KIND_UNION {
                return None;
            }
            self.find_member(inner, member, depth + 1)
                .map(|o| o + bit_of(m))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF bytes from (name, info, size_or_type, trailing u32 words).
    fn build(strings: &[&str], types: &[(u32, u32, u32, Vec<u32>)]) -> (Vec<u8>, Vec<u32>) {
        let mut strs = vec![0u8];
        let mut offs = Vec::new();
        for s in strings {
            offs.push(strs.len() as u32);
            strs.extend_from_slice(s.as_bytes());
            strs.push(0);
        }
        let mut tys = Vec::new();
        for (name, info, st, extra) in types {
            for w in [*name, *info, *st].iter().chain(extra.iter()) {
                tys.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            tys.len() as u32,
            tys.len() as u32,
            strs.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&tys);
        out.extend_from_slice(&strs);
        (out, offs)
    }

    fn info(kind: u32, vlen: u32, kind_flag: bool) -> u32 {
        (kind << 24) | vlen | if kind_flag { 1 << 31 } else { 0 }
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        // strings: 0 int, 1 task, 2 pid, 3 tgid, 4 files, 5 inner, 6 flags
        let names = ["int", "task", "pid", "tgid", "files", "inner", "flags"];
        let n = |i: usize| 1 + names[..i].iter().map(|s| s.len() as u32 + 1).sum::<u32>();
        let types = vec![
            // 1: int (4 bytes)
            (n(0), info(KIND_INT, 0, false), 4, vec![32]),
            // 2: anonymous union { int files; int inner; }
            (
                0,
                info(KIND_UNION, 2, false),
                4,
                vec![n(4), 1, 0, n(5), 1, 0],
            ),
            // 3: const -> 2
            (0, info(KIND_CONST, 0, false), 2, vec![]),
            // 4: struct task { int pid @0; int tgid @32 bits; anon(const union) @64; int flags:3 @97 }
            (
                n(1),
                info(KIND_STRUCT, 4, true),
                16,
                vec![n(2), 1, 0, n(3), 1, 32, 0, 3, 64, n(6), 1, (3 << 24) | 97],
            ),
        ];
        let (bytes, _) = build(&names, &types);
        let btf = Btf::parse(&bytes).unwrap();
        assert_eq!(btf.member_offset("task", "pid").unwrap(), 0);
        assert_eq!(btf.member_offset("task", "tgid").unwrap(), 4);
        assert_eq!(btf.member_offset("task", "files").unwrap(), 8);
        assert_eq!(btf.member_offset("task", "inner").unwrap(), 8);
        assert!(matches!(
            btf.member_offset("task", "flags"),
            Err(BtfError::Bitfield { .. })
        ));
        assert!(matches!(
            btf.member_offset("task", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("inode", "i_mode"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Btf::parse(b"not btf at all, clearly"),
            Err(BtfError::Invalid(_))
        ));
        assert!(matches!(
            Btf::parse(&[0x9f, 0xeb]),
            Err(BtfError::Invalid(_))
        ));
    }

    #[test]
    fn reads_the_running_kernel_when_present() {
        // Real data, when this kernel has BTF (it is world-readable): known-stable facts.
        let Ok(btf) = Btf::from_sys_fs() else {
            return;
        };
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        assert_eq!(tgid, pid + 4, "tgid follows pid in task_struct");
        assert!(btf.member_offset("inode", "i_mode").unwrap() < 16);
        assert!(btf.member_offset("sock_common", "skc_daddr").is_ok());
    }
}
