// SPDX-License-Identifier: GPL-2.0
// ebpf_process: exec, fork and exit of processes, from the sched raw tracepoints.
// Events go to user space through the `events` ring buffer; events that do not fit are counted
// in `dropped`.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "process.h"

char LICENSE[] SEC("license") = "GPL";

// Which kinds to report (bit 1 << PROC_EXEC ...), set by the loader.
const volatile __u32 kinds_mask = 0xffffffff;
// How many bytes of argv to copy (at most PROC_ARGV_MAX), set by the loader.
const volatile __u32 argv_limit = PROC_ARGV_MAX;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline int wanted(__u32 kind)
{
	return kinds_mask & (1u << kind);
}

static __always_inline struct weir_proc_event *reserve(__u32 kind)
{
	struct weir_proc_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&dropped, &zero);
		if (n)
			*n += 1;
		return 0;
	}
	e->kind = kind;
	e->ts_ns = bpf_ktime_get_ns();
	e->exit_code = 0;
	e->argv_len = 0;
	e->filename[0] = 0;
	e->cpu_user_ns = 0;
	e->cpu_system_ns = 0;
	e->cpu_ns = 0;
	return e;
}

static __always_inline void fill_task(struct weir_proc_event *e, struct task_struct *t)
{
	e->pid = BPF_CORE_READ(t, tgid);
	e->tid = BPF_CORE_READ(t, pid);
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->start_ns = BPF_CORE_READ(t, group_leader, start_time);
	e->uid = BPF_CORE_READ(t, cred, uid.val);
	e->gid = BPF_CORE_READ(t, cred, gid.val);
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), &t->comm);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(proc_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (!wanted(PROC_EXEC))
		return 0;
	struct weir_proc_event *e = reserve(PROC_EXEC);
	if (!e)
		return 0;
	fill_task(e, p);
	e->cgroup_id = bpf_get_current_cgroup_id();
	const char *filename = BPF_CORE_READ(bprm, filename);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename);
	// The new program's argv sits on its stack, between mm->arg_start and mm->arg_end.
	unsigned long start = BPF_CORE_READ(p, mm, arg_start);
	unsigned long end = BPF_CORE_READ(p, mm, arg_end);
	__u64 len = end > start ? end - start : 0;
	e->argv_truncated = 0;
	if (len > argv_limit) {
		len = argv_limit;
		e->argv_truncated = 1;
	}
	if (len > PROC_ARGV_MAX - 1) {
		len = PROC_ARGV_MAX - 1;
		e->argv_truncated = 1;
	}
	// The barrier keeps clang from dropping the mask, which keeps the verifier sure of the
	// bound.
	asm volatile("" : "+r"(len));
	len &= PROC_ARGV_MAX - 1;
	if (len > 0 && bpf_probe_read_user(e->argv, len, (void *)start) == 0)
		e->argv_len = len;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(proc_fork, struct task_struct *parent, struct task_struct *child)
{
	if (!wanted(PROC_FORK))
		return 0;
	// A new thread is not a new process.
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	struct weir_proc_event *e = reserve(PROC_FORK);
	if (!e)
		return 0;
	fill_task(e, child);
	e->ppid = BPF_CORE_READ(parent, tgid);
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(proc_exit, struct task_struct *p)
{
	if (!wanted(PROC_EXIT))
		return 0;
	// Report the process once: when its last thread exits (do_exit has already decremented
	// signal->live by then).
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	struct weir_proc_event *e = reserve(PROC_EXIT);
	if (!e)
		return 0;
	fill_task(e, p);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->exit_code = BPF_CORE_READ(p, exit_code);
	// This thread's times plus those of the threads that exited before it.
	e->cpu_user_ns = BPF_CORE_READ(p, utime) + BPF_CORE_READ(p, signal, utime);
	e->cpu_system_ns = BPF_CORE_READ(p, stime) + BPF_CORE_READ(p, signal, stime);
	e->cpu_ns = BPF_CORE_READ(p, se.sum_exec_runtime) + BPF_CORE_READ(p, signal, sum_sched_runtime);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
