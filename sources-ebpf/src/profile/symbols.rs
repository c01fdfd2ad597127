//! Symbolisation of `ebpf_profile`'s stacks, cached across drains.
//!
//! - **Binaries by build id.** Each executable file a process maps is opened once (through
//!   `/proc/<pid>/map_files`, so files of other mount namespaces and deleted files work too)
//!   and kept open; it is keyed by its GNU build id (by device and inode when it has none),
//!   so the same library mapped by many processes, or from different paths in different
//!   containers, is parsed and symbolised once. Resolved symbols are memoised per binary by
//!   file offset.
//! - **Process mappings, kept after exit.** A process's executable mappings are read from
//!   `/proc/<pid>/maps` when the kernel first sees it (the `procs` ring buffer) and at a drain
//!   when an address falls outside them. They are kept until the drain after the process is
//!   found gone, so the samples it left in the kernel before exiting are still symbolised.
//! - Addresses outside file mappings (JIT code with a `/tmp/perf-<pid>.map`, the vDSO) go to
//!   blazesym's process source while the process lives; kernel addresses to `/proc/kallsyms`,
//!   memoised by address.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Kernel, Process, Source as SymSource};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::Pid;
use weir_pipeline::event::{ObjectMap, Value};

/// Cached entries (symbols, binaries) past which the caches start over, bounding memory.
const MAX_SYMBOLS: usize = 1 << 20;
const MAX_BINARIES: usize = 4096;

/// A resolved symbol: name and offset into it.
#[derive(Clone)]
struct Sym {
    name: Value,
    offset: Value,
}

/// What identifies an executable file's contents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum BinaryKey {
    BuildId(Vec<u8>),
    /// No build id: the file's device and inode.
    File(u64, u64),
}

/// An executable file, held open.
struct Binary {
    _file: File,
    /// `/proc/self/fd/<fd>` of `_file`: readable while we hold it, whatever happens to the
    /// path or the process that mapped it.
    fd_path: PathBuf,
    /// The path the first process to map it saw (the frames' `module`).
    module: Value,
    /// By file offset.
    syms: HashMap<u64, Option<Sym>>,
}

/// One executable mapping of a process.
struct Range {
    start: u64,
    end: u64,
    file_offset: u64,
    binary: BinaryKey,
}

/// A process's executable file mappings, as last read.
struct ProcMaps {
    ranges: Vec<Range>,
    /// The drain at which the process was first found gone.
    gone_since: Option<u64>,
    /// The drain at which the mappings were last read.
    read_at: u64,
}

/// The symbolisation state of one `ebpf_profile` source (lives on its worker thread).
pub struct Symbols {
    symbolizer: Symbolizer,
    kernel: HashMap<u64, Option<Sym>>,
    binaries: HashMap<BinaryKey, Binary>,
    /// Which binary a mapped file (device, inode) is, so a file is opened once.
    files: HashMap<(u64, u64), BinaryKey>,
    procs: HashMap<u32, ProcMaps>,
    drain: u64,
    cached_syms: usize,
}

impl Default for Symbols {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbols {
    pub fn new() -> Self {
        Self {
            symbolizer: Symbolizer::new(),
            kernel: HashMap::new(),
            binaries: HashMap::new(),
            files: HashMap::new(),
            procs: HashMap::new(),
            drain: 0,
            cached_syms: 0,
        }
    }

    /// Reads (again) the mappings of process `pid`; false when it is gone.
    pub fn snapshot(&mut self, pid: u32) -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return false;
        };
        if self.binaries.len() > MAX_BINARIES {
            // Start over: everything is read again on demand from live processes.
            *self = Self {
                drain: self.drain,
                ..Self::new()
            };
        }
        let mut ranges = Vec::new();
        for line in text.lines() {
            let Some(m) = parse_maps_line(line) else {
                continue;
            };
            let Some(binary) = self.binary(pid, &m) else {
                continue;
            };
            ranges.push(Range {
                start: m.start,
                end: m.end,
                file_offset: m.offset,
                binary,
            });
        }
        self.procs.insert(
            pid,
            ProcMaps {
                ranges,
                gone_since: None,
                read_at: self.drain,
            },
        );
        true
    }

    /// The binary of a file mapping, opened and identified the first time its file is seen.
    fn binary(&mut self, pid: u32, m: &MapsLine<'_>) -> Option<BinaryKey> {
        if let Some(k) = self.files.get(&(m.dev, m.inode)) {
            return Some(k.clone());
        }
        let file = File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
            .or_else(|_| File::open(format!("/proc/{pid}/root{}", m.path)))
            .ok()?;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let key = match blazesym::helper::read_elf_build_id(&fd_path) {
            Ok(Some(id)) if !id.is_empty() => BinaryKey::BuildId(id.into_owned()),
            Ok(_) => BinaryKey::File(m.dev, m.inode),
            // Not an ELF file (or unreadable): nothing to symbolise with.
            Err(_) => return None,
        };
        self.files.insert((m.dev, m.inode), key.clone());
        self.binaries.entry(key.clone()).or_insert_with(|| Binary {
            _file: file,
            fd_path,
            module: Value::from(m.path.to_string()),
            syms: HashMap::new(),
        });
        Some(key)
    }

    /// Appends the frames of a user stack of process `pid` (leaf first).
    pub fn user_frames(&mut self, pid: u32, addrs: &[u64], out: &mut Vec<Value>) {
        if !self.procs.contains_key(&pid) {
            self.snapshot(pid);
        }
        let mut syms: Vec<(Option<Sym>, Value)> = Vec::with_capacity(addrs.len());
        let mut unmapped = Vec::new();
        for (i, &addr) in addrs.iter().enumerate() {
            let mut found = self.lookup_mapped(pid, addr);
            if found.is_none() && self.may_reread(pid) && self.snapshot(pid) {
                // A library loaded since the mappings were read.
                found = self.lookup_mapped(pid, addr);
            }
            match found {
                Some(f) => syms.push(f),
                None => {
                    unmapped.push(i);
                    syms.push((None, Value::Null));
                }
            }
        }
        if !unmapped.is_empty() && Path::new(&format!("/proc/{pid}")).exists() {
            let a: Vec<u64> = unmapped.iter().map(|&i| addrs[i]).collect();
            let mut p = Process::new(Pid::from(pid));
            p.debug_syms = false;
            p.perf_map = true;
            let src = SymSource::Process(p);
            if let Ok(res) = self.symbolizer.symbolize(&src, Input::AbsAddr(&a)) {
                for (&i, r) in unmapped.iter().zip(res.iter()) {
                    if let Symbolized::Sym(s) = r {
                        let module = s.module.as_ref().map_or(Value::Null, |m| {
                            Value::from(m.to_string_lossy().into_owned())
                        });
                        syms[i] = (
                            Some(Sym {
                                name: Value::from(s.name.to_string()),
                                offset: Value::Integer(s.offset as i64),
                            }),
                            module,
                        );
                    }
                }
            }
        }
        for (addr, (sym, module)) in addrs.iter().zip(syms) {
            out.push(frame(*addr, sym, module, false));
        }
    }

    /// Whether the mappings of `pid` may be read again in this drain (once per drain, and
    /// only while it lives).
    fn may_reread(&self, pid: u32) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|p| p.gone_since.is_none() && p.read_at < self.drain)
    }

    /// The symbol and module of `addr` through the process's file mappings; None when no
    /// mapping covers it.
    fn lookup_mapped(&mut self, pid: u32, addr: u64) -> Option<(Option<Sym>, Value)> {
        let p = self.procs.get(&pid)?;
        let r = p.ranges.iter().find(|r| r.start <= addr && addr < r.end)?;
        let file_offset = addr - r.start + r.file_offset;
        let bin = self.binaries.get_mut(&r.binary)?;
        let module = bin.module.clone();
        if let Some(s) = bin.syms.get(&file_offset) {
            return Some((s.clone(), module));
        }
        let mut elf = Elf::new(bin.fd_path.clone());
        elf.debug_syms = false;
        let sym = match self
            .symbolizer
            .symbolize_single(&SymSource::Elf(elf), Input::FileOffset(file_offset))
        {
            Ok(Symbolized::Sym(s)) => Some(Sym {
                name: Value::from(s.name.to_string()),
                offset: Value::Integer(s.offset as i64),
            }),
            _ => None,
        };
        bin.syms.insert(file_offset, sym.clone());
        self.cached_syms += 1;
        Some((sym, module))
    }

    /// Loads the kernel's symbols (`/proc/kallsyms`, read once for the symbolizer's life).
    pub fn load_kernel(&mut self) {
        let src = SymSource::Kernel(Kernel::default());
        // Any address makes blazesym load and index kallsyms; the answer is not kept.
        let _ = self.symbolizer.symbolize_single(&src, Input::AbsAddr(0));
    }

    /// Appends the frames of a kernel stack (leaf first).
    pub fn kernel_frames(&mut self, addrs: &[u64], out: &mut Vec<Value>) {
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.kernel.contains_key(a))
            .collect();
        if !missing.is_empty() {
            let src = SymSource::Kernel(Kernel::default());
            let res = self
                .symbolizer
                .symbolize(&src, Input::AbsAddr(&missing))
                .unwrap_or_default();
            for (i, a) in missing.iter().enumerate() {
                let sym = match res.get(i) {
                    Some(Symbolized::Sym(s)) => Some(Sym {
                        name: Value::from(s.name.to_string()),
                        offset: Value::Integer(s.offset as i64),
                    }),
                    _ => None,
                };
                self.kernel.insert(*a, sym);
                self.cached_syms += 1;
            }
        }
        let module = Value::from("[kernel.kallsyms]");
        for a in addrs {
            let sym = self.kernel.get(a).cloned().flatten();
            out.push(frame(*a, sym, module.clone(), true));
        }
    }

    /// Ends a drain: forgets processes found gone at an earlier drain (their last samples
    /// have been symbolised by now), notes the newly gone, bounds the caches.
    pub fn end_drain(&mut self) {
        let drain = self.drain;
        self.procs.retain(|pid, p| {
            if p.gone_since.is_some_and(|d| d < drain) {
                return false;
            }
            if p.gone_since.is_none() && !Path::new(&format!("/proc/{pid}")).exists() {
                p.gone_since = Some(drain);
            }
            true
        });
        if self.cached_syms > MAX_SYMBOLS {
            self.kernel.clear();
            for b in self.binaries.values_mut() {
                b.syms.clear();
            }
            self.cached_syms = 0;
        }
        self.drain += 1;
    }

    /// How many processes' mappings are held (live and recently exited).
    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    /// How many distinct binaries are held open.
    pub fn binaries(&self) -> usize {
        self.binaries.len()
    }
}

/// One frame in the `perf` source's schema.
fn frame(addr: u64, sym: Option<Sym>, module: Value, kernel: bool) -> Value {
    let mut f = ObjectMap::new();
    f.insert("addr".into(), Value::from(format!("{addr:x}")));
    let (symbol, offset) = match sym {
        Some(s) => (s.name, s.offset),
        None => (Value::Null, Value::Null),
    };
    f.insert("symbol".into(), symbol);
    f.insert("offset".into(), offset);
    f.insert("module".into(), module);
    f.insert(
        "kind".into(),
        Value::from(if kernel { "kernel" } else { "user" }),
    );
    f.insert("inlined".into(), Value::Boolean(false));
    Value::Object(f)
}

/// One line of /proc/<pid>/maps that maps a file executable.
#[derive(Debug, PartialEq)]
struct MapsLine<'a> {
    start: u64,
    end: u64,
    offset: u64,
    dev: u64,
    inode: u64,
    path: &'a str,
}

/// `start-end perms offset major:minor inode path`; None unless executable and file-backed.
fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    let mut f = line.splitn(6, ' ');
    let (range, perms, offset, dev, inode) =
        (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let path = f.next()?.trim_start();
    if !perms.contains('x') || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let major = u64::from_str_radix(major, 16).ok()?;
    let minor = u64::from_str_radix(minor, 16).ok()?;
    Some(MapsLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: (major << 32) | minor,
        inode: inode.parse().ok()?,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let l = "7f1c2a400000-7f1c2a595000 r-xp 00028000 fd:01 1837 /usr/lib/x86_64-linux-gnu/libc.so.6";
        assert_eq!(
            parse_maps_line(l),
            Some(MapsLine {
                start: 0x7f1c2a400000,
                end: 0x7f1c2a595000,
                offset: 0x28000,
                dev: (0xfd << 32) | 1,
                inode: 1837,
                path: "/usr/lib/x86_64-linux-gnu/libc.so.6",
            })
        );
        let deleted = "5581b0a00000-5581b0a01000 r-xp 00001000 08:02 99 /tmp/x/my prog (deleted)";
        assert_eq!(
            parse_maps_line(deleted).map(|m| m.path),
            Some("/tmp/x/my prog (deleted)")
        );
        for not in [
            "7f1c2a3d8000-7f1c2a400000 r--p 00000000 fd:01 1837 /usr/lib/x86_64-linux-gnu/libc.so.6",
            "7ffd1b5f0000-7ffd1b5f2000 r-xp 00000000 00:00 0                          [vdso]",
            "7f1c2a000000-7f1c2a100000 rwxp 00000000 00:00 0 ",
            "garbage",
        ] {
            assert_eq!(parse_maps_line(not), None, "{not}");
        }
    }

    #[test]
    fn this_process_symbolises_through_its_snapshot() {
        let mut s = Symbols::new();
        let me = std::process::id();
        assert!(s.snapshot(me));
        assert!(s.binaries() >= 1);
        let addr = this_process_symbolises_through_its_snapshot as *const () as u64;
        let mut frames = Vec::new();
        s.user_frames(me, &[addr], &mut frames);
        let name = frames[0].as_object().unwrap()["symbol"].clone();
        let name = name.to_string_lossy();
        assert!(
            name.contains("this_process_symbolises_through_its_snapshot"),
            "{frames:?}"
        );
        // Memoised: the same answer from the cache.
        let mut again = Vec::new();
        s.user_frames(me, &[addr], &mut again);
        assert_eq!(frames, again);
        assert!(!s.snapshot(u32::MAX));
    }
}
