//! Harness self-test helper for `cargo xtask vm-test --break`: `btfbreak IN OUT` copies the
//! kernel's BTF blob IN to OUT with the names `di` and `si` swapped. Those are the `pt_regs`
//! members holding a syscall's first two arguments on x86_64, whose offsets the agent reads
//! from BTF at load time: an agent reading the swapped blob takes the buffer pointer for the
//! fd, finds no socket, and the exact socket accounting test must fail.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = &args[..] else {
        eprintln!("usage: btfbreak IN OUT");
        std::process::exit(2);
    };
    let mut data = std::fs::read(input).expect("read BTF");
    let u32_at = |d: &[u8], o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap()) as usize;
    // struct btf_header { u16 magic; u8 version, flags; u32 hdr_len, type_off, type_len,
    // str_off, str_len; } (little endian on x86_64)
    assert_eq!(&data[..2], &[0x9f, 0xeb], "{input}: not BTF");
    let start = u32_at(&data, 4) + u32_at(&data, 16);
    let end = start + u32_at(&data, 20);
    // Offsets (from the string section's start) of the exact NUL-terminated strings.
    let find = |d: &[u8], name: &[u8]| {
        let mut off = 0;
        for s in d[start..end].split(|&b| b == 0) {
            if s == name {
                return off;
            }
            off += s.len() + 1;
        }
        panic!("{input}: no string {:?}", String::from_utf8_lossy(name));
    };
    let (di, si) = (find(&data, b"di"), find(&data, b"si"));
    data[start + di] = b's';
    data[start + si] = b'd';
    std::fs::write(output, &data).expect("write BTF copy");
    println!("btfbreak: swapped the names di and si in {output}");
}
