//! The one initramfs every kernel boots: busybox, `/init`, the binaries at their host paths.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::Context as _;

use super::{matrix::Built, out_dir, TEST_TIMEOUT_SECS};

/// Host programs the tests or `/init` call, copied into the guest with their libraries.
pub(super) const HOST_PROGRAMS: &[(&str, &str)] = &[
    (
        "capsh",
        "check_without_cap_bpf_… drops capabilities with capsh",
    ),
    ("bash", "capsh runs /bin/bash"),
];

pub(super) const BUSYBOX: &str = "/bin/busybox";

/// A newc cpio archive written as we go (no cpio tool needed).
pub(super) struct Cpio {
    pub(super) out: std::io::BufWriter<fs::File>,
    pub(super) ino: u32,
    pub(super) written: u64,
    pub(super) dirs: BTreeSet<PathBuf>,
}

impl Cpio {
    fn create(path: &Path) -> anyhow::Result<Cpio> {
        Ok(Cpio {
            out: std::io::BufWriter::new(fs::File::create(path)?),
            ino: 1,
            written: 0,
            dirs: BTreeSet::new(),
        })
    }

    fn header(&mut self, name: &str, mode: u32, size: u32) -> anyhow::Result<()> {
        let name = name.trim_start_matches('/');
        let mut h = String::with_capacity(110 + name.len());
        write!(
            h,
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            size,
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )?;
        self.ino += 1;
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += (110 + name.len() + 1) as u64;
        self.pad()
    }

    fn pad(&mut self) -> anyhow::Result<()> {
        while !self.written.is_multiple_of(4) {
            self.out.write_all(&[0])?;
            self.written += 1;
        }
        Ok(())
    }

    fn parents(&mut self, path: &str) -> anyhow::Result<()> {
        let p = Path::new(path);
        let mut todo = Vec::new();
        let mut cur = p.parent();
        while let Some(d) = cur {
            if d.as_os_str().is_empty() || d == Path::new("/") || self.dirs.contains(d) {
                break;
            }
            todo.push(d.to_path_buf());
            cur = d.parent();
        }
        for d in todo.into_iter().rev() {
            self.header(&d.to_string_lossy(), 0o040755, 0)?;
            self.dirs.insert(d);
        }
        Ok(())
    }

    fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        self.parents(&format!("{}/x", path.trim_end_matches('/')))
    }

    fn bytes(&mut self, path: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.parents(path)?;
        let size = u32::try_from(data.len()).context("file too large for cpio")?;
        self.header(path, 0o100000 | mode, size)?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        self.parents(path)?;
        self.header(path, 0o120777, target.len() as u32)?;
        self.out.write_all(target.as_bytes())?;
        self.written += target.len() as u64;
        self.pad()
    }

    fn finish(mut self) -> anyhow::Result<u64> {
        self.header("TRAILER!!!", 0, 0)?;
        self.out.flush()?;
        Ok(self.written)
    }
}

/// The host's copy of a binary for the guest: without debug info (smaller, faster to boot).
pub(super) fn stripped(src: &Path, stage: &Path, n: usize) -> PathBuf {
    let dst = stage.join(format!("{n}"));
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dst)
        .arg(src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        dst
    } else {
        src.to_path_buf()
    }
}

/// Shared libraries `ldd` names for a binary (none for static ones).
pub(super) fn libs_of(bin: &Path, libs: &mut BTreeSet<PathBuf>) {
    let Ok(out) = Command::new("ldd").arg(bin).stderr(Stdio::null()).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        for tok in line.split_whitespace() {
            if tok.starts_with('/') {
                libs.insert(PathBuf::from(tok));
            }
        }
    }
}

pub(super) fn find_in_path(prog: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// Writes the one initramfs all kernels boot (the break switch is on the kernel command line).
pub(super) fn build_initramfs(b: &Built) -> anyhow::Result<PathBuf> {
    let t0 = Instant::now();
    let dir = out_dir();
    let stage = dir.join("stage");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    let img = dir.join("initramfs.cpio");
    let mut cpio = Cpio::create(&img)?;
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/root",
        "/run",
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/etc",
    ] {
        cpio.dir(d)?;
    }
    cpio.bytes(BUSYBOX, 0o755, &fs::read(BUSYBOX)?)?;
    cpio.symlink("/bin/sh", "busybox")?;
    cpio.bytes("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.bytes("/etc/group", 0o644, b"root:x:0:\n")?;
    cpio.bytes("/init", 0o755, INIT.as_bytes())?;

    let mut bins: Vec<(PathBuf, PathBuf)> = Vec::new(); // (guest path, host source)
    bins.push((b.agent.clone(), b.agent.clone()));
    for (_, exe, _) in &b.tests {
        bins.push((exe.clone(), exe.clone()));
    }
    for w in &b.workloads {
        bins.push((w.clone(), w.clone()));
    }
    for (prog, why) in HOST_PROGRAMS {
        let p = find_in_path(prog)
            .with_context(|| format!("{prog} not found on the host ({why}): cargo xtask setup"))?;
        bins.push((PathBuf::from("/bin").join(prog), p.clone()));
        bins.push((PathBuf::from("/usr/sbin").join(prog), p));
    }
    let mut libs = BTreeSet::new();
    let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (i, (guest, src)) in bins.iter().enumerate() {
        libs_of(src, &mut libs);
        let gs = guest.to_string_lossy().to_string();
        if let Some(first) = seen.get(src) {
            // A second name of the same program: a symlink.
            cpio.symlink(&gs, &first.clone())?;
            continue;
        }
        let s = stripped(src, &stage, i);
        cpio.bytes(&gs, 0o755, &fs::read(&s)?)?;
        seen.insert(src.clone(), gs);
    }
    for lib in &libs {
        let data = fs::read(lib).with_context(|| format!("read {}", lib.display()))?;
        cpio.bytes(&lib.to_string_lossy(), 0o755, &data)?;
    }
    // The test list: "<binary> <test name>" per line.
    let mut list = String::new();
    for (target, exe, names) in &b.tests {
        for n in names {
            writeln!(list, "{} {target} {n}", exe.display())?;
        }
    }
    cpio.bytes("/smpvm/tests", 0o644, list.as_bytes())?;
    cpio.bytes(
        "/smpvm/agent",
        0o644,
        format!("{}\n", b.agent.display()).as_bytes(),
    )?;
    let btfbreak = b
        .workloads
        .iter()
        .find(|w| w.file_name().is_some_and(|n| n == "btfbreak"))
        .context("no btfbreak binary")?;
    cpio.bytes(
        "/smpvm/btfbreak",
        0o644,
        format!("{}\n", btfbreak.display()).as_bytes(),
    )?;
    cpio.bytes(
        "/smpvm/timeout",
        0o644,
        format!("{TEST_TIMEOUT_SECS}\n").as_bytes(),
    )?;
    let size = cpio.finish()?;
    let _ = fs::remove_dir_all(&stage);
    println!(
        "vm-test: initramfs {} ({:.0} MB, {} libraries) in {:.1} s",
        img.display(),
        size as f64 / 1e6,
        libs.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(img)
}

/// The guest's `/init` (busybox sh). Results go to ttyS1, one line each.
pub(super) const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# No tmpfs on /tmp: the binaries sit at their host paths, and a checkout under /tmp would be
# hidden. The initramfs root is itself in memory and writable.
chmod 1777 /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
R=/dev/ttyS1
stty -F $R raw -echo 2>/dev/null
say() { echo "$*" > $R; }
now() { cut -d' ' -f1 /proc/uptime; }
say "SMPVM-BOOT release=$(uname -r) uptime=$(now) btf=$([ -e /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
echo "smpvm: kernel $(uname -r), init at $(now) s"
if grep -q 'smpvm.break=1' /proc/cmdline; then
  # Harness self-test: the BTF the agent reads says pt_regs.di is where si is (and back).
  mkdir -p /tmp/brk
  $(cat /smpvm/btfbreak) /sys/kernel/btf/vmlinux /tmp/brk/vmlinux \
    && mount -o bind /tmp/brk/vmlinux /sys/kernel/btf/vmlinux && n=1 || n=0
  say "SMPVM-BREAK btf=$n"
  echo "smpvm: BREAK: BTF with di/si swapped mounted: $n"
fi
AGENT=$(cat /smpvm/agent)
T=$(cat /smpvm/timeout)
export CI=true SMP_AGENT_BIN=$AGENT RUST_BACKTRACE=0
timeout -s KILL $T $AGENT check --output json > /tmp/check.json 2> /tmp/check.err
rc=$?
say "SMPVM-CHECK rc=$rc"
say "SMPVM-CHECK-BEGIN"
cat /tmp/check.json > $R
say "SMPVM-CHECK-END"
cat /tmp/check.err
while read bin target name; do
  t0=$(now)
  echo "smpvm: test $target::$name"
  timeout -s KILL $T $bin --exact "$name" --test-threads=1 --nocapture > /tmp/out 2>&1
  rc=$?
  t1=$(now)
  cat /tmp/out
  say "SMPVM-TEST name=$target::$name rc=$rc secs=$(awk "BEGIN { print $t1 - $t0 }")"
  if [ $rc -ne 0 ]; then
    say "SMPVM-OUT-BEGIN"
    tail -n 30 /tmp/out > $R
    say "SMPVM-OUT-END"
  fi
done < /smpvm/tests
say "SMPVM-DONE uptime=$(now)"
echo "smpvm: done at $(now) s"
sync
poweroff -f
"#;

#[cfg(test)]
mod tests {
    use super::INIT;

    /// The binaries sit at their host paths: `/init` mounts nothing over a directory a
    /// checkout may live in (a tmpfs on `/tmp` hid a clone under `/tmp`).
    #[test]
    fn init_mounts_nothing_over_a_checkout() {
        let points: Vec<&str> = INIT
            .lines()
            .filter(|l| l.trim_start().starts_with("mount -t "))
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert!(points.contains(&"/proc") && points.contains(&"/sys/fs/bpf"));
        for checkout in ["/tmp/xyz", "/root/src/smp", "/home/u/smp", "/work/main"] {
            for p in &points {
                assert!(
                    !format!("{checkout}/").starts_with(&format!("{p}/")),
                    "/init mounts {p}, hiding a checkout at {checkout}"
                );
            }
        }
    }
}
