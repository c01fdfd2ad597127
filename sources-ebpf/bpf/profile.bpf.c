// SPDX-License-Identifier: GPL-2.0
// ebpf_profile: stack profiles counted in the kernel, drained by user space every interval.
//
// - On-CPU (`profile_cpu`): attached to the software cpu-clock perf event on every CPU; each
//   sample takes the user and kernel stacks of the running thread (frame-pointer unwinding,
//   bpf_get_stackid) and counts it in `counts`, keyed by (process, thread, user stack,
//   kernel stack).
// - Off-CPU (`profile_offcpu`): the sched_switch raw tracepoint. A thread leaving the CPU
//   blocked (not preempted) has its stacks taken (it is still current) and the time noted in
//   `offcpu_start`; when it is switched back in, the time it was away is added to its key in
//   `counts`.
//
// While user space pauses recording (`paused`, triggered profiling), neither records anything new.
//
// Both tell user space through `procs` the first time they see a process (or a new image
// after exec), so its memory mappings can be read while it is alive: its samples are
// symbolised even if it exits before the drain.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "profile.h"
#include "announce.h"

char LICENSE[] SEC("license") = "GPL";

// Only this process (thread group id; 0: all), set by the loader.
const volatile __u32 filter_tgid = 0;

// [0]: non-zero while recording is paused: set by user space while a trigger's condition
// does not hold (triggered profiling); 0, recording, otherwise.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} paused SEC(".maps");

static __always_inline int recording(void)
{
	__u32 zero = 0;
	__u32 *p = bpf_map_lookup_elem(&paused, &zero);
	return !p || !*p;
}

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

// Off-CPU: threads that blocked, by thread id: since when and with which stacks.
struct offcpu_start {
	__u64 ts;
	struct weir_profile_key key;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct offcpu_start);
} offcpu_start SEC(".maps");

// [0]: samples lost because `counts` was full.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

// Before 5.14 the task state field was `state`.
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline long task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return BPF_CORE_READ((struct task_struct___pre514 *)t, state);
}

static __always_inline void add(struct weir_profile_key *key, __u64 ns)
{
	struct weir_profile_value *v = bpf_map_lookup_elem(&counts, key);
	if (v) {
		__sync_fetch_and_add(&v->count, 1);
		__sync_fetch_and_add(&v->total_ns, ns);
		return;
	}
	struct weir_profile_value one = {.count = 1, .total_ns = ns};
	if (bpf_map_update_elem(&counts, key, &one, BPF_NOEXIST) != 0) {
		// Another CPU may have inserted it meanwhile.
		v = bpf_map_lookup_elem(&counts, key);
		if (v) {
			__sync_fetch_and_add(&v->count, 1);
			__sync_fetch_and_add(&v->total_ns, ns);
		} else {
			__u32 zero = 0;
			__u64 *d = bpf_map_lookup_elem(&dropped, &zero);
			if (d)
				*d += 1;
		}
	}
}

SEC("perf_event")
int profile_cpu(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	// The idle task is not a process.
	if (id == 0)
		return 0;
	__u32 tgid = id >> 32;
	if (filter_tgid && tgid != filter_tgid)
		return 0;
	if (!recording())
		return 0;
	struct weir_profile_key key = {};
	key.pid = tgid;
	key.tid = (__u32)id;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	key.kernel_stack = bpf_get_stackid(ctx, &stacks, 0);
	announce(tgid);
	add(&key, 0);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(profile_offcpu, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 prev_tid = BPF_CORE_READ(prev, pid);
	__u32 prev_tgid = BPF_CORE_READ(prev, tgid);
	// A thread that blocks (its state is no longer TASK_RUNNING), not one preempted; while
	// paused, no new block is recorded (those under way are still counted when they end).
	if (prev_tid != 0 && task_state(prev) != 0 && (!filter_tgid || prev_tgid == filter_tgid) &&
	    recording()) {
		struct offcpu_start st = {};
		st.ts = now;
		st.key.pid = prev_tgid;
		st.key.tid = prev_tid;
		// prev is still the current task: its comm and stacks are the current ones.
		bpf_get_current_comm(st.key.comm, sizeof(st.key.comm));
		st.key.user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
		st.key.kernel_stack = bpf_get_stackid(ctx, &stacks, 0);
		bpf_map_update_elem(&offcpu_start, &prev_tid, &st, BPF_ANY);
		announce(prev_tgid);
	}
	__u32 next_tid = BPF_CORE_READ(next, pid);
	struct offcpu_start *st = bpf_map_lookup_elem(&offcpu_start, &next_tid);
	if (!st)
		return 0;
	struct weir_profile_key key = st->key;
	__u64 ns = now - st->ts;
	bpf_map_delete_elem(&offcpu_start, &next_tid);
	add(&key, ns);
	return 0;
}
