// SPDX-License-Identifier: GPL-2.0
// The maps ebpf_sched shares with user space; mirrored in src/sched/record.rs.
#ifndef WEIR_SCHED_H
#define WEIR_SCHED_H

// Why a thread was off the CPU (index of `blocked_ns`).
#define SCHED_SLEEP 0 // interruptible sleep (poll, nanosleep, reading a pipe or socket ...)
#define SCHED_DISK 1  // uninterruptible sleep (D state) outside kernel locks: mostly I/O
#define SCHED_LOCK 2  // waiting for a kernel lock (mutex, rwsem ...: lock:contention_begin)
#define SCHED_FUTEX 3 // inside a futex wait (user-space locks, condition variables, joins)
#define SCHED_OTHER 4 // stopped, traced, parked ...
#define SCHED_REASONS 5

// Run-queue latency buckets: [0] under 1 us, [i] from 2^(i-1) to 2^i us, the last one
// everything above.
#define SCHED_HIST_BUCKETS 32

// Slots of the `dropped` per-CPU array.
#define SCHED_DROP_PROCESSES 0 // a process not followed: `stats` was full
#define SCHED_DROP_THREADS 1   // a thread not followed: no task storage could be allocated
#define SCHED_DROPS 2

// The key of `stats` (`RawKey`): one entry per process and cgroup.
struct weir_sched_key {
	__u32 pid; // thread group id
	__u32 _pad;
	__u64 cgroup_id; // cgroup v2 id (the cgroup directory's inode number)
};

_Static_assert(sizeof(struct weir_sched_key) == 16, "layout shared with src/sched/record.rs");

// Counted per key since the source started (`RawStats`).
struct weir_sched_stats {
	__u64 voluntary;   // switches out blocked (the thread gave up the CPU)
	__u64 involuntary; // switches out while runnable (preempted, or yielded)
	__u64 cpu_ns;      // on-CPU time (se.sum_exec_runtime growth), added when a thread leaves the CPU
	__u64 runq_ns;     // total run-queue latency (runnable to running)
	__u64 runq_count;  // run-queue latency observations
	__u64 blocked_ns[SCHED_REASONS];
	__u64 blocked_count[SCHED_REASONS];
	__u64 futex_wait_ns; // time in futex wait calls (enter to exit)
	__u64 futex_waits;
	__u32 exited; // the last thread exited: user space reports it once more and deletes it
	__u32 _pad;
	char comm[16]; // the process's (group leader's) name
	__u64 runq_hist[SCHED_HIST_BUCKETS];
};

_Static_assert(sizeof(struct weir_sched_stats) == 416, "layout shared with src/sched/record.rs");

#endif
