// SPDX-License-Identifier: GPL-2.0
// ebpf_profile: on-CPU sampling. Attached to the software cpu-clock perf event on every CPU;
// each sample takes the user and kernel stacks (frame-pointer unwinding, bpf_get_stackid) and
// counts it in `counts`, keyed by (process, thread, user stack, kernel stack). User space
// drains the counts every interval.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "profile.h"

char LICENSE[] SEC("license") = "GPL";

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
	__type(value, __u64);
} counts SEC(".maps");

// [0]: samples lost because `counts` was full.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

SEC("perf_event")
int profile_cpu(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	// The idle task is not a process.
	if (id == 0)
		return 0;
	struct weir_profile_key key = {};
	key.pid = id >> 32;
	key.tid = (__u32)id;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	key.kernel_stack = bpf_get_stackid(ctx, &stacks, 0);
	__u64 *n = bpf_map_lookup_elem(&counts, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST) != 0) {
		// Another CPU may have inserted it meanwhile.
		n = bpf_map_lookup_elem(&counts, &key);
		if (n) {
			__sync_fetch_and_add(n, 1);
		} else {
			__u32 zero = 0;
			__u64 *d = bpf_map_lookup_elem(&dropped, &zero);
			if (d)
				*d += 1;
		}
	}
	return 0;
}
