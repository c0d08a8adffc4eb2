//! The kernel side: load, configure and attach the eBPF programs, and read their maps.
//!
//! This is the only module that imports aya. What leaves it are the plain types of
//! [`crate::aggregate`] and [`events::ProbeEvent`], so everything downstream is tested
//! without root.

pub mod btf;
pub mod catalog;
pub mod events;
pub mod facts;
mod loader;
pub mod offsets;
mod prog_info;
pub mod tracefs;

pub use crate::host::monotonic_ns;
pub use events::ProbeEvent;
pub use loader::{EventReader, FloorHooks, FloorProbes, HookStatus, ProbeError, Probes};

/// The kernel programs, built by build.rs (empty when built with `AYA_BUILD_SKIP=1`).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/smp"));

#[cfg(test)]
mod tests {
    /// Every map name the loader uses is a symbol of the built object (its string table
    /// holds each as a NUL-terminated name): a map renamed on one side only fails here, not at
    /// load time on a machine with root.
    #[test]
    fn the_object_exports_every_map_name() {
        assert!(
            !super::EBPF_OBJECT.is_empty(),
            "built with AYA_BUILD_SKIP=1: no object to check"
        );
        for name in smp_common::maps::ALL {
            let sym = [name.as_bytes(), b"\0"].concat();
            assert!(
                super::EBPF_OBJECT.windows(sym.len()).any(|w| w == sym),
                "map {name} missing from the eBPF object"
            );
        }
    }

    /// Deepest BPF stack byte a program may use: kernels before 6.8 round a program's frame
    /// up to 32 bytes and count a function it calls (`memset`, `memcpy`) as 32 at least,
    /// against a limit of 512. Deeper, a program that calls one fails to load there (6.1:
    /// "combined stack size of 2 calls is 544. Too large") while newer kernels take it.
    const STACK_WITH_A_CALL: i64 = 512 - 32;

    /// The deepest stack byte (`r10 - n`) the instructions touch: loads and stores through
    /// r10, and pointers made from it (`rX = r10; rX += -n`) for helpers.
    fn stack_depth(code: &[u8]) -> i64 {
        const LDX: u8 = 0x01;
        const ST: u8 = 0x02;
        const STX: u8 = 0x03;
        const MOV64_X: u8 = 0xbf;
        const ADD64_K: u8 = 0x07;
        let mut from_fp = [false; 11];
        let mut depth = 0i64;
        for insn in code.chunks_exact(8) {
            let (op, dst, src) = (insn[0], usize::from(insn[1] & 0xf), insn[1] >> 4);
            let off = i64::from(i16::from_le_bytes([insn[2], insn[3]]));
            let imm = i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]));
            let class = op & 0x07;
            if (class == ST || class == STX) && dst == 10 || class == LDX && src == 10 {
                depth = depth.max(-off);
            }
            if op == ADD64_K && dst < 10 && from_fp[dst] {
                depth = depth.max(-imm);
            }
            if dst < 10 {
                from_fp[dst] = op == MOV64_X && src == 10 || op == ADD64_K && from_fp[dst];
            }
        }
        depth
    }

    #[test]
    fn every_program_leaves_stack_for_a_call_on_older_kernels() {
        use object::{Object, ObjectSection, SectionKind};
        let file = object::File::parse(super::EBPF_OBJECT).expect("the eBPF object is ELF");
        let mut programs = 0;
        for section in file.sections() {
            let name = section.name().unwrap_or_default();
            if section.kind() != SectionKind::Text || name == ".text" {
                continue;
            }
            programs += 1;
            let depth = stack_depth(section.data().expect("section data"));
            assert!(
                depth <= STACK_WITH_A_CALL,
                "{name} uses {depth} bytes of BPF stack: over {STACK_WITH_A_CALL}, it fails to \
                 load on kernels before 6.8 (keep large values in maps, see maps::zeroed)"
            );
        }
        assert!(programs >= 10, "only {programs} program sections found");
    }

    /// A BPF function of its own (`.text`: a closure LLVM did not inline, a program body it
    /// outlined) adds its frame to its caller's: the kernel rounds each frame up to 32 bytes
    /// and refuses a chain deeper than 512 ("combined stack size of 2 calls is 560", when
    /// `smp_sys_enter`'s body was outlined). Held conservatively: the deepest program with
    /// the deepest function.
    #[test]
    fn every_program_with_its_deepest_function_fits_the_stack() {
        use object::{Object, ObjectSection, ObjectSymbol, SectionKind};
        let round = |d: i64| (d + 31) / 32 * 32;
        let file = object::File::parse(super::EBPF_OBJECT).expect("the eBPF object is ELF");
        let text = file.section_by_name(".text");
        let deepest_fn = text.map_or(0, |t| {
            let data = t.data().expect(".text data");
            file.symbols()
                .filter(|s| s.section_index() == Some(t.index()) && s.size() > 0)
                .filter_map(|s| {
                    let from = usize::try_from(s.address() - t.address()).ok()?;
                    let to = from + usize::try_from(s.size()).ok()?;
                    data.get(from..to).map(stack_depth)
                })
                .max()
                .unwrap_or(0)
        });
        for section in file.sections() {
            let name = section.name().unwrap_or_default();
            if section.kind() != SectionKind::Text || name == ".text" {
                continue;
            }
            let depth = stack_depth(section.data().expect("section data"));
            let chain = round(depth) + round(deepest_fn);
            assert!(
                chain <= 512,
                "{name}: its frame ({depth} bytes) and the deepest BPF function's \
                 ({deepest_fn}) come to {chain} bytes, over the kernel's 512"
            );
        }
    }

    #[test]
    fn stack_depth_sees_stores_loads_and_pointers() {
        // *(u64 *)(r10 - 16) = r1
        let store = [0x7b, 0x1a, 0xf0, 0xff, 0, 0, 0, 0];
        // r1 = *(u64 *)(r10 - 40)
        let load = [0x79, 0xa1, 0xd8, 0xff, 0, 0, 0, 0];
        // r2 = r10; r2 += -504
        let ptr = [
            0xbf, 0xa2, 0, 0, 0, 0, 0, 0, 0x07, 0x02, 0, 0, 0x08, 0xfe, 0xff, 0xff,
        ];
        // r3 += -600 on a register not made from r10: not the stack.
        let other = [0x07, 0x03, 0, 0, 0xa8, 0xfd, 0xff, 0xff];
        assert_eq!(stack_depth(&store), 16);
        assert_eq!(stack_depth(&[store, load].concat()), 40);
        assert_eq!(
            stack_depth(&[&store[..], &ptr[..], &other[..]].concat()),
            504
        );
        assert_eq!(stack_depth(&other), 0);
    }
}
