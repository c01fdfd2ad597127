// SPDX-License-Identifier: GPL-2.0
// Shared by the programs whose stacks user space symbolises (profile, memory, io): each
// process is announced through the `procs` ring buffer the first time it is seen with an
// address space, so user space reads its mappings while it lives (a process that exits before
// the next drain still has its frames named). Include after vmlinux.h, the bpf headers and
// profile.h (`struct weir_profile_proc`). The loader may shrink `seen` (to 1 when unused).
#ifndef WEIR_ANNOUNCE_H
#define WEIR_ANNOUNCE_H

// Processes already announced: thread group id -> its mm (a new one after exec).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} procs SEC(".maps");

// Announces the current process to user space the first time it is seen with this mm.
static __always_inline void announce(__u32 tgid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 mm = (__u64)BPF_CORE_READ(task, mm);
	if (!mm)
		return; // a kernel thread: nothing to map
	__u64 *known = bpf_map_lookup_elem(&seen, &tgid);
	if (known && *known == mm)
		return;
	bpf_map_update_elem(&seen, &tgid, &mm, BPF_ANY);
	struct weir_profile_proc p = {.pid = tgid};
	// When it is full, user space reads the mappings at the drain instead.
	bpf_ringbuf_output(&procs, &p, sizeof(p), 0);
}

#endif
