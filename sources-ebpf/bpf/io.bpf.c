// SPDX-License-Identifier: GPL-2.0
// ebpf_io: block I/O per process, cgroup, disk and operation, counted in the kernel and read
// by user space every interval.
//
// Three BTF-typed tracepoints on each block request (`struct request *`):
// - block:block_io_start, where the request is made, in the context of the process that
//   submitted the I/O (even when a kworker later dispatches it): its pid, cgroup and command
//   are noted in `inflight`, keyed by the request's address;
// - block:block_rq_issue, when the driver gets it: the latency clock starts. A request with no
//   block_io_start (flushes, and every request on kernels before 6.5) is attributed to the
//   process running at issue;
// - block:block_rq_complete, for each part completed: its bytes are added to the owner's key
//   in `stats`, and at the last part the request is counted (operation, error, latency in a
//   log2 histogram of microseconds) and forgotten.
//
// With `stacks` (`with_stacks`), block_io_start (or issue, when that did not fire) also takes
// the kernel and user stacks of the submitting thread, and each completion is counted by
// (process, thread, stacks) in `stack_counts`, which user space drains every interval like
// ebpf_profile's counts. Processes are announced through `procs` the first time one submits,
// so user space reads their mappings while they live.
//
// `stats` is cumulative: user space reads it without clearing and deletes only the keys of
// processes that have exited, after reporting them one last time.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "io.h"
#include "announce.h"

char LICENSE[] SEC("license") = "GPL";

// Set by the loader: 1 to count completions by issuing stack.
const volatile __u32 with_stacks = 0;

// REQ_OP_MASK of include/linux/blk_types.h: the operation is the low 8 bits of cmd_flags.
#define REQ_OP_BITS_MASK 0xff
// MINORBITS of include/linux/kdev_t.h (the kernel's dev_t, not user space's).
#define KERNEL_MINOR_BITS 20
// Errnos of include/uapi/asm-generic/errno-base.h (vmlinux.h has no macros).
#define ERRNO_ENOMEM 12
#define ERRNO_EEXIST 17

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); // set by the loader
	__type(key, __u64);         // the request's address
	__type(value, struct inflight);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); // set by the loader (`max_series`)
	__type(key, struct weir_io_key);
	__type(value, struct weir_io_value);
} stats SEC(".maps");

// IO_DROP_* counters.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IO_DROP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

// Stacks of requests, by id (max_entries set by the loader: `max_stacks`, or 1 without
// stacks). User space deletes an id once it has read the counts under it and no request in
// flight holds it.
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, PROFILE_MAX_DEPTH * sizeof(__u64));
} io_stacks SEC(".maps");

// Completions by issuing stack, drained by user space (max_entries set by the loader).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct weir_profile_key);
	__type(value, struct weir_profile_value);
} stack_counts SEC(".maps");

static __always_inline void drop(__u32 slot)
{
	__u64 *d = bpf_map_lookup_elem(&dropped, &slot);
	if (d)
		*d += 1;
}

// A stack id that failed for want of room or by collision (not for a thread without a user
// stack, -EFAULT).
static __always_inline bool stack_lost(__s32 id)
{
	return id == -ERRNO_ENOMEM || id == -ERRNO_EEXIST;
}

// Notes the current process as the owner of `rq` (and, with stacks, the current thread's
// stacks).
static __always_inline struct inflight *own(void *ctx, __u64 rq, __u64 now)
{
	struct inflight f = {};
	f.start_ns = now;
	__u64 id = bpf_get_current_pid_tgid();
	f.pid = id >> 32;
	f.cgroup_id = bpf_get_current_cgroup_id();
	// The process's command (its main thread's), not the thread's: the key is the process.
	struct task_struct *leader = bpf_get_current_task_btf()->group_leader;
	bpf_probe_read_kernel_str(f.comm, sizeof(f.comm), leader->comm);
	if (with_stacks) {
		f.tid = (__u32)id;
		bpf_get_current_comm(f.thread_comm, sizeof(f.thread_comm));
		f.kernel_stack = bpf_get_stackid(ctx, &io_stacks, 0);
		f.user_stack = bpf_get_stackid(ctx, &io_stacks, BPF_F_USER_STACK);
		if (stack_lost(f.kernel_stack) || stack_lost(f.user_stack))
			drop(IO_DROP_STACK_LOST);
		announce(f.pid);
	}
	// A request address is reused once the request is freed: replace what is there.
	if (bpf_map_update_elem(&inflight, &rq, &f, BPF_ANY) != 0) {
		drop(IO_DROP_INFLIGHT_FULL);
		return 0;
	}
	return bpf_map_lookup_elem(&inflight, &rq);
}

SEC("tp_btf/block_io_start")
int BPF_PROG(io_start, struct request *rq)
{
	own(ctx, (__u64)rq, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(io_issue, struct request *rq)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 key = (__u64)rq;
	struct inflight *f = bpf_map_lookup_elem(&inflight, &key);
	if (!f)
		f = own(ctx, key, now);
	if (f)
		f->issue_ns = now; // again when a requeued request is issued again
	return 0;
}

static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r, shift;
	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 latency_slot(__u64 ns)
{
	__u64 us = ns / 1000;
	if (us == 0)
		return 0;
	__u32 hi = us >> 32;
	__u32 slot = (hi ? log2_u32(hi) + 32 : log2_u32((__u32)us)) + 1;
	return slot < IO_SLOTS ? slot : IO_SLOTS - 1;
}

static __always_inline __u32 fold_op(__u32 cmd_flags)
{
	switch (cmd_flags & REQ_OP_BITS_MASK) {
	case REQ_OP_READ:
		return IO_OP_READ;
	case REQ_OP_WRITE:
		return IO_OP_WRITE;
	case REQ_OP_FLUSH:
		return IO_OP_FLUSH;
	case REQ_OP_DISCARD:
		return IO_OP_DISCARD;
	default:
		return IO_OP_OTHER;
	}
}

// The counts of `key`, created (with the owner's command) when missing.
static __always_inline struct weir_io_value *counts(struct weir_io_key *key, struct inflight *f)
{
	struct weir_io_value *v = bpf_map_lookup_elem(&stats, key);
	if (v)
		return v;
	struct weir_io_value zero = {};
	__builtin_memcpy(zero.comm, f->comm, sizeof(zero.comm));
	// Another CPU may create it meanwhile: then NOEXIST fails and the lookup finds theirs.
	bpf_map_update_elem(&stats, key, &zero, BPF_NOEXIST);
	v = bpf_map_lookup_elem(&stats, key);
	if (!v)
		drop(IO_DROP_STATS_FULL);
	return v;
}

// With stacks: adds `nr_bytes` (and, at the last part, the request) to the owner's stack.
static __always_inline void count_stack(struct inflight *f, __u64 nr_bytes, bool last)
{
	struct weir_profile_key key = {};
	key.pid = f->pid;
	key.tid = f->tid;
	key.user_stack = f->user_stack;
	key.kernel_stack = f->kernel_stack;
	__builtin_memcpy(key.comm, f->thread_comm, sizeof(key.comm));
	struct weir_profile_value *v = bpf_map_lookup_elem(&stack_counts, &key);
	if (!v) {
		struct weir_profile_value zero = {};
		// Another CPU may create it meanwhile: then NOEXIST fails and the lookup finds it.
		bpf_map_update_elem(&stack_counts, &key, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&stack_counts, &key);
		if (!v) {
			if (last)
				drop(IO_DROP_STACK_COUNTS_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&v->total_ns, nr_bytes);
	if (last)
		__sync_fetch_and_add(&v->count, 1);
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(io_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	__u64 rq_key = (__u64)rq;
	struct inflight *f = bpf_map_lookup_elem(&inflight, &rq_key);
	if (!f)
		return 0; // started before the source was attached
	if (error)
		f->error = 1;
	// __data_len is what remains before this part: the last part completes all of it.
	bool last = nr_bytes >= rq->__data_len;
	struct gendisk *disk = rq->q->disk;
	struct weir_io_key key = {};
	key.cgroup_id = f->cgroup_id;
	key.pid = f->pid;
	if (disk)
		key.dev = ((__u32)disk->major << KERNEL_MINOR_BITS) | (__u32)disk->first_minor;
	key.op = fold_op(rq->cmd_flags);
	struct weir_io_value *v = counts(&key, f);
	if (v)
		__sync_fetch_and_add(&v->bytes, nr_bytes);
	if (with_stacks)
		count_stack(f, nr_bytes, last);
	if (!last)
		return 0;
	if (v) {
		__u64 since = f->issue_ns ? f->issue_ns : f->start_ns;
		__u64 now = bpf_ktime_get_ns();
		__u64 ns = now > since ? now - since : 0;
		__u32 slot = latency_slot(ns);
		if (f->error)
			__sync_fetch_and_add(&v->errors, 1);
		__sync_fetch_and_add(&v->latency_ns, ns);
		if (slot < IO_SLOTS)
			__sync_fetch_and_add(&v->slots[slot], 1);
		__sync_fetch_and_add(&v->ops, 1);
	}
	bpf_map_delete_elem(&inflight, &rq_key);
	return 0;
}
