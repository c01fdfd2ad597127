#!/usr/bin/env bash
# Compiles the kernel programs (*.bpf.c) into the committed objects (*.bpf.o) that
# weir-sources-ebpf embeds with include_bytes!.
#
#   sources-ebpf/bpf/build.sh                 compile every *.bpf.c next to this script
#   sources-ebpf/bpf/build.sh --vmlinux       first regenerate vmlinux.h from the running
#                                             kernel's BTF (/sys/kernel/btf/vmlinux)
#   OUT_DIR=/tmp/x sources-ebpf/bpf/build.sh  write the objects elsewhere (the up-to-date check)
#
# Needs clang (BPF target), llvm-strip and, for --vmlinux, bpftool. The objects are CO-RE:
# field offsets are relocated against the target kernel's BTF at load time, so the vmlinux.h
# they are compiled against (committed) does not have to match the kernel they run on.
# DWARF is stripped (it holds absolute paths); BTF and BTF.ext stay. With the same clang
# version the output is byte-for-byte reproducible.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT_DIR:-$here}"
CLANG="${CLANG:-clang}"
STRIP="${LLVM_STRIP:-llvm-strip}"

if [ "${1:-}" = "--vmlinux" ]; then
  bpftool btf dump file "${VMLINUX_BTF:-/sys/kernel/btf/vmlinux}" format c > "$here/vmlinux.h"
fi

case "$(uname -m)" in
  x86_64) arch=x86 ;;
  aarch64) arch=arm64 ;;
  *) arch="$(uname -m)" ;;
esac

mkdir -p "$out"
cd "$here"
for src in *.bpf.c; do
  obj="$out/${src%.c}.o"
  "$CLANG" -target bpf -mcpu=v3 -O2 -g -D__TARGET_ARCH_"$arch" \
    -I. -I/usr/include/"$(uname -m)"-linux-gnu \
    -fdebug-prefix-map="$here"=. -Wall -Werror -c "$src" -o "$obj"
  "$STRIP" --strip-debug "$obj"
done
"$CLANG" --version | head -n1 > "$out/CLANG_VERSION"
