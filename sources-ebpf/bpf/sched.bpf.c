// SPDX-License-Identifier: GPL-2.0
// ebpf_sched: the scheduling portrait of every process, counted in the kernel per process and
// cgroup and read by user space every interval.
//
// - sched_switch (BTF-typed raw tracepoint, for its `preempt` and `prev_state` arguments): the
//   thread leaving the CPU is charged the on-CPU interval that ends (as the scheduler
//   accounts it: the growth of its se.sum_exec_runtime since it entered) and one context switch,
//   voluntary when it blocks (not preempted, state not TASK_RUNNING: what the kernel counts in
//   nvcsw) and involuntary otherwise (nivcsw). A thread that blocks notes when and why (a
//   kernel lock, a futex wait, D state, sleep); one still runnable notes when it started
//   waiting for a CPU. The thread entering the CPU is charged the time it was blocked (until
//   its wakeup) and its run-queue latency (from its wakeup, or its preemption, until now).
// - sched_wakeup / sched_wakeup_new: when a blocked (or new) thread becomes runnable.
// - syscalls:sys_enter|exit_futex (wait operations), futex_waitv, futex_wait: futex wait time,
//   and whether a thread blocks inside one.
// - lock:contention_begin|end: whether a thread waits for a kernel lock.
//
// Per-thread state lives in task storage (freed with the task); the totals in `stats`, a hash
// map bounded by the loader. A process that does not fit, or a thread whose state cannot be
// allocated, is counted in `dropped`.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "sched.h"

char LICENSE[] SEC("license") = "GPL";

#define TASK_RUNNING 0x0
#define TASK_INTERRUPTIBLE 0x1
#define TASK_UNINTERRUPTIBLE 0x2
#define TASK_DEAD 0x80
#define TASK_NOLOAD 0x400
#define PF_EXITING 0x4
#define PF_KTHREAD 0x00200000

// Only this process (thread group id; 0: all), set by the loader.
const volatile __u32 filter_tgid = 0;

struct thread_state {
	__u64 oncpu_ts;      // when it entered the CPU (0: not seen yet)
	__u64 oncpu_runtime; // its se.sum_exec_runtime then
	__u64 runnable_ts; // when it became runnable (woken, or preempted); 0: not waiting
	__u64 blocked_ts;  // when it blocked; 0: not blocked
	__u64 futex_ts;    // when its futex wait call started; 0: not in one
	__u32 reason;      // why it blocked (SCHED_*)
	__u32 lock_depth;  // kernel lock contentions it is inside
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct weir_sched_key);
	__type(value, struct weir_sched_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCHED_DROPS);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline void count_drop(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&dropped, &slot);
	if (n)
		*n += 1;
}

static __always_inline int wanted(struct task_struct *t)
{
	return !filter_tgid || t->tgid == filter_tgid;
}

static __always_inline struct thread_state *thread(struct task_struct *t, int create)
{
	struct thread_state *ts =
		bpf_task_storage_get(&threads, t, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (!ts && create)
		count_drop(SCHED_DROP_THREADS);
	return ts;
}

// The stats of task `t`'s process in cgroup `cgroup_id`, created unless the task is exiting
// (the final switch of a dead thread must not bring back an entry user space deleted).
static __always_inline struct weir_sched_stats *process(struct task_struct *t, __u64 cgroup_id)
{
	struct weir_sched_key key = {.pid = t->tgid, .cgroup_id = cgroup_id};
	struct weir_sched_stats *s = bpf_map_lookup_elem(&stats, &key);
	if (s)
		return s;
	if (t->flags & PF_EXITING)
		return 0;
	struct weir_sched_stats zero = {};
	BPF_CORE_READ_STR_INTO(&zero.comm, t, group_leader, comm);
	if (bpf_map_update_elem(&stats, &key, &zero, BPF_NOEXIST) != 0) {
		s = bpf_map_lookup_elem(&stats, &key);
		if (!s)
			count_drop(SCHED_DROP_PROCESSES);
		return s;
	}
	return bpf_map_lookup_elem(&stats, &key);
}

// The cgroup v2 id of a task other than the current one (what bpf_get_current_cgroup_id
// gives for the current one).
static __always_inline __u64 task_cgroup_id(struct task_struct *t)
{
	// Plain loads (t comes from a BTF-typed tracepoint, under RCU): cheaper than probe reads.
	return t->cgroups->dfl_cgrp->kn->id;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;
	if (v >> 32) {
		v >>= 32;
		r += 32;
	}
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1)
		r += 1;
	return r;
}

static __always_inline __u32 bucket(__u64 ns)
{
	__u64 us = ns / 1000;
	__u32 b = us == 0 ? 0 : log2_u64(us) + 1;
	return b < SCHED_HIST_BUCKETS ? b : SCHED_HIST_BUCKETS - 1;
}

static __always_inline __u32 block_reason(struct thread_state *ts, unsigned int state)
{
	if (ts->lock_depth > 0)
		return SCHED_LOCK;
	if (ts->futex_ts)
		return SCHED_FUTEX;
	if ((state & TASK_UNINTERRUPTIBLE) && !(state & TASK_NOLOAD))
		return SCHED_DISK;
	if (state & (TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE))
		return SCHED_SLEEP;
	return SCHED_OTHER;
}

static __always_inline void switch_out(struct task_struct *prev, unsigned int state, bool preempt,
				       __u64 now)
{
	struct thread_state *ts = thread(prev, 1);
	// prev is still the current task: its cgroup is the current one.
	struct weir_sched_stats *s = process(prev, bpf_get_current_cgroup_id());
	// What the kernel counts (kernel/sched/core.c, __schedule): nvcsw when not preempted and
	// the state is not TASK_RUNNING, nivcsw otherwise.
	int voluntary = !preempt && state != TASK_RUNNING;
	if (s) {
		if (voluntary)
			__sync_fetch_and_add(&s->voluntary, 1);
		else
			__sync_fetch_and_add(&s->involuntary, 1);
		// The kernel's own account of the run that ends (se.sum_exec_runtime is brought up
		// to date before the tracepoint), so the total is what /proc/<pid>/schedstat shows.
		__u64 runtime = prev->se.sum_exec_runtime;
		if (ts && ts->oncpu_ts && runtime > ts->oncpu_runtime)
			__sync_fetch_and_add(&s->cpu_ns, runtime - ts->oncpu_runtime);
		if (state & TASK_DEAD) {
			// The last thread of the process is gone: nothing more will be counted.
			if (BPF_CORE_READ(prev, signal, live.counter) == 0)
				s->exited = 1;
		} else if (prev->pid == prev->tgid) {
			// The name after an exec.
			bpf_get_current_comm(s->comm, sizeof(s->comm));
		}
	}
	if (!ts)
		return;
	ts->oncpu_ts = 0;
	if (voluntary) {
		ts->runnable_ts = 0;
		ts->blocked_ts = now;
		ts->reason = block_reason(ts, state);
	} else {
		// Still runnable: waiting for a CPU from now.
		ts->runnable_ts = now;
		ts->blocked_ts = 0;
	}
}

static __always_inline void switch_in(struct task_struct *next, __u64 now)
{
	struct thread_state *ts = thread(next, 1);
	if (!ts)
		return;
	__u64 runnable = ts->runnable_ts;
	__u64 blocked = ts->blocked_ts;
	__u32 reason = ts->reason;
	ts->oncpu_ts = now;
	ts->oncpu_runtime = next->se.sum_exec_runtime;
	ts->runnable_ts = 0;
	ts->blocked_ts = 0;
	if (!runnable || now < runnable)
		return;
	struct weir_sched_stats *s = process(next, task_cgroup_id(next));
	if (!s)
		return;
	__u64 wait = now - runnable;
	__sync_fetch_and_add(&s->runq_ns, wait);
	__sync_fetch_and_add(&s->runq_count, 1);
	__u32 b = bucket(wait);
	if (b < SCHED_HIST_BUCKETS)
		__sync_fetch_and_add(&s->runq_hist[b], 1);
	if (blocked && runnable >= blocked && reason < SCHED_REASONS) {
		__sync_fetch_and_add(&s->blocked_ns[reason], runnable - blocked);
		__sync_fetch_and_add(&s->blocked_count[reason], 1);
	}
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns();
	// pid 0 is a CPU's idle task, not a process.
	if (prev->pid != 0 && wanted(prev))
		switch_out(prev, prev_state, preempt, now);
	if (next->pid != 0 && wanted(next))
		switch_in(next, now);
	return 0;
}

static __always_inline void woken(struct task_struct *p, int new_task)
{
	if (p->pid == 0 || !wanted(p))
		return;
	struct thread_state *ts = thread(p, new_task);
	if (!ts)
		return;
	// Only a thread we saw block (or a new one): a wakeup that finds its thread still on the
	// CPU (it had not gone to sleep yet) starts no wait for a CPU.
	if ((ts->blocked_ts || new_task) && !ts->runnable_ts)
		ts->runnable_ts = bpf_ktime_get_ns();
	return;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	woken(p, 0);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new, struct task_struct *p)
{
	woken(p, 1);
	return 0;
}

// Kernel lock contention of the current thread (nested: a mutex's slow path takes a spinlock).
SEC("tp_btf/contention_begin")
int BPF_PROG(lock_begin, void *lock, unsigned int flags)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (t->pid == 0 || !wanted(t))
		return 0;
	struct thread_state *ts = thread(t, 0);
	if (ts)
		ts->lock_depth += 1;
	return 0;
}

SEC("tp_btf/contention_end")
int BPF_PROG(lock_end, void *lock, int ret)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (t->pid == 0 || !wanted(t))
		return 0;
	struct thread_state *ts = thread(t, 0);
	if (ts && ts->lock_depth > 0)
		ts->lock_depth -= 1;
	return 0;
}

// The syscalls:sys_enter_futex record (see its format file): common fields, syscall number,
// then the arguments.
struct futex_enter_args {
	__u64 common;
	__s64 nr;
	__u64 uaddr;
	__s64 op;
};

struct sys_exit_args {
	__u64 common;
	__s64 nr;
	__s64 ret;
};

#define FUTEX_WAIT 0
#define FUTEX_LOCK_PI 6
#define FUTEX_WAIT_BITSET 9
#define FUTEX_WAIT_REQUEUE_PI 11
#define FUTEX_LOCK_PI2 13
#define FUTEX_CMD_MASK 0x7f

static __always_inline void futex_enter(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (!wanted(t))
		return;
	struct thread_state *ts = thread(t, 1);
	if (ts)
		ts->futex_ts = bpf_ktime_get_ns();
}

SEC("tracepoint/syscalls/sys_enter_futex")
int futex_enter_op(struct futex_enter_args *ctx)
{
	__u32 cmd = ctx->op & FUTEX_CMD_MASK;
	if (cmd == FUTEX_WAIT || cmd == FUTEX_WAIT_BITSET || cmd == FUTEX_LOCK_PI ||
	    cmd == FUTEX_LOCK_PI2 || cmd == FUTEX_WAIT_REQUEUE_PI)
		futex_enter();
	return 0;
}

// futex_waitv (5.16) and futex_wait (6.7) only wait.
SEC("tracepoint/syscalls/sys_enter_futex_waitv")
int futex_enter_waitv(void *ctx)
{
	futex_enter();
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_futex_wait")
int futex_enter_wait(void *ctx)
{
	futex_enter();
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_futex")
int futex_exit(struct sys_exit_args *ctx)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (!wanted(t))
		return 0;
	struct thread_state *ts = thread(t, 0);
	if (!ts || !ts->futex_ts)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 start = ts->futex_ts;
	ts->futex_ts = 0;
	if (now < start)
		return 0;
	struct weir_sched_stats *s = process(t, bpf_get_current_cgroup_id());
	if (!s)
		return 0;
	__sync_fetch_and_add(&s->futex_wait_ns, now - start);
	__sync_fetch_and_add(&s->futex_waits, 1);
	return 0;
}
