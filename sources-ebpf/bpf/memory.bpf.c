// SPDX-License-Identifier: GPL-2.0
// ebpf_memory: outstanding allocations by stack, and page faults by stack.
//
// - Allocations: uprobes on the C library's allocator of chosen processes. At the entry of
//   malloc, calloc, realloc, posix_memalign, aligned_alloc and memalign the size asked for
//   and the caller's user stack are noted per thread (`pending`); at their return the address
//   they gave is entered in `allocs` (process, address) -> (size, stack). free (and a realloc
//   that moved or freed a block) removes its entry. User space sums `allocs` by stack every
//   interval: the outstanding bytes and allocations per stack, like bcc's memleak.
// - Page faults (`page_fault`): the `page_fault_user` tracepoint counts each fault a process
//   takes in user mode by (process, thread, user stack), like ebpf_profile's counts, drained
//   every interval.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "memory.h"
#include "announce.h"

char LICENSE[] SEC("license") = "GPL";

// Page faults of this process only (thread group id; 0: all), set by the loader.
const volatile __u32 fault_tgid = 0;

// ---- shared ----

// Counts of what could not be recorded, by MEM_DROP_* slot.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MEM_DROP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline void drop(__u32 slot)
{
	__u64 *d = bpf_map_lookup_elem(&dropped, &slot);
	if (d)
		*d += 1;
}

// ---- allocations ----

// The processes whose allocations are tracked (thread group ids), filled by user space. The
// uprobes are attached to these processes only; this is a second check.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} traced SEC(".maps");

// Stacks of outstanding allocations: kept as long as one refers to them.
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, PROFILE_MAX_DEPTH * sizeof(__u64));
} alloc_stacks SEC(".maps");

// Outstanding allocations (max_entries set by the loader).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct weir_alloc_key);
	__type(value, struct weir_alloc_info);
} allocs SEC(".maps");

// An allocation under way, by thread id: entered, not yet returned.
struct pending_alloc {
	__u64 size;
	__u64 caller;
	__u64 old;    // realloc: the block it may move or free
	__u64 memptr; // posix_memalign: where it writes the address
	__s32 user_stack;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct pending_alloc);
} pending SEC(".maps");

// The return address at the entry of a function: on the stack (x86), in the link register
// (arm64).
static __always_inline __u64 return_address(struct pt_regs *regs)
{
#if defined(__TARGET_ARCH_x86)
	__u64 ret = 0;
	bpf_probe_read_user(&ret, sizeof(ret), (void *)PT_REGS_SP(regs));
	return ret;
#elif defined(__TARGET_ARCH_arm64)
	return PT_REGS_RET(regs);
#else
	return 0;
#endif
}

static __always_inline int enter(struct pt_regs *ctx, __u64 size, __u64 old, __u64 memptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	struct pending_alloc p = {.size = size, .old = old, .memptr = memptr};
	// At the entry of the allocator, frame pointers lead from the allocator to its caller's
	// caller: the caller is its return address (Linux 6.11+ adds it itself, but only when
	// the function starts by pushing a frame pointer; user space avoids the duplicate).
	p.caller = return_address(ctx);
	p.user_stack = bpf_get_stackid(ctx, &alloc_stacks, BPF_F_USER_STACK);
	if (bpf_map_update_elem(&pending, &tid, &p, BPF_ANY) != 0)
		drop(MEM_DROP_PENDING_FULL);
	return 0;
}

static __always_inline void forget(__u32 tgid, __u64 addr)
{
	struct weir_alloc_key k = {.pid = tgid, .addr = addr};
	bpf_map_delete_elem(&allocs, &k);
}

static __always_inline int leave(__u64 addr, int ok)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct pending_alloc *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	struct pending_alloc a = *p;
	bpf_map_delete_elem(&pending, &tid);
	if (!ok)
		return 0;
	if (a.memptr) {
		// posix_memalign: the address is where memptr points.
		if (bpf_probe_read_user(&addr, sizeof(addr), (void *)a.memptr) != 0)
			return 0;
	}
	// realloc: a new block replaces the old one; realloc(p, 0) freed it (through free).
	if (a.old && (addr || a.size == 0))
		forget(tgid, a.old);
	if (!addr)
		return 0;
	struct weir_alloc_key k = {.pid = tgid, .addr = addr};
	struct weir_alloc_info v = {.size = a.size, .caller = a.caller, .user_stack = a.user_stack};
	if (bpf_map_update_elem(&allocs, &k, &v, BPF_ANY) != 0)
		drop(MEM_DROP_ALLOCS_FULL);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(malloc_enter, __u64 size)
{
	return enter(ctx, size, 0, 0);
}

SEC("uprobe")
int BPF_KPROBE(calloc_enter, __u64 n, __u64 size)
{
	return enter(ctx, n * size, 0, 0);
}

SEC("uprobe")
int BPF_KPROBE(realloc_enter, void *old, __u64 size)
{
	return enter(ctx, size, (__u64)old, 0);
}

// aligned_alloc and memalign (alignment, size).
SEC("uprobe")
int BPF_KPROBE(memalign_enter, __u64 alignment, __u64 size)
{
	return enter(ctx, size, 0, 0);
}

SEC("uprobe")
int BPF_KPROBE(posix_memalign_enter, void **memptr, __u64 alignment, __u64 size)
{
	return enter(ctx, size, 0, (__u64)memptr);
}

// The return of malloc, calloc, realloc, aligned_alloc and memalign: the address.
SEC("uretprobe")
int BPF_KRETPROBE(alloc_exit, void *ret)
{
	return leave((__u64)ret, 1);
}

// posix_memalign returns 0 on success.
SEC("uretprobe")
int BPF_KRETPROBE(posix_memalign_exit, int ret)
{
	return leave(0, ret == 0);
}

SEC("uprobe")
int BPF_KPROBE(free_enter, void *ptr)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!ptr || !bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	forget(tgid, (__u64)ptr);
	return 0;
}

// ---- page faults ----

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, PROFILE_MAX_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct weir_profile_key);
	__type(value, struct weir_profile_value);
} counts SEC(".maps");

SEC("tp_btf/page_fault_user")
int BPF_PROG(page_fault, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (fault_tgid && tgid != fault_tgid)
		return 0;
	struct weir_profile_key key = {};
	key.pid = tgid;
	key.tid = (__u32)id;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	// The kernel side of a user fault is always the fault handler: not taken.
	key.kernel_stack = -1;
	announce(tgid);
	struct weir_profile_value *v = bpf_map_lookup_elem(&counts, &key);
	if (v) {
		__sync_fetch_and_add(&v->count, 1);
		return 0;
	}
	struct weir_profile_value one = {.count = 1};
	if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST) != 0) {
		v = bpf_map_lookup_elem(&counts, &key);
		if (v)
			__sync_fetch_and_add(&v->count, 1);
		else
			drop(MEM_DROP_FAULTS_FULL);
	}
	return 0;
}
