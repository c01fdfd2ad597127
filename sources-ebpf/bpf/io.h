// SPDX-License-Identifier: GPL-2.0
// The maps ebpf_io shares with user space; mirrored in src/io/stats.rs.
#ifndef WEIR_IO_H
#define WEIR_IO_H

// Latency slots: 0 holds < 1 us, slot k (1..IO_SLOTS-2) holds [2^(k-1), 2^k) us, the last one
// everything from 2^(IO_SLOTS-2) us (about 67 s) up.
#define IO_SLOTS 28

// What a request did (`op` of the key): the kernel's REQ_OP_* folded into these.
#define IO_OP_READ 0
#define IO_OP_WRITE 1
#define IO_OP_FLUSH 2
#define IO_OP_DISCARD 3
#define IO_OP_OTHER 4

// Slots of `dropped`.
#define IO_DROP_STATS_FULL 0    // completions not counted: `stats` was full
#define IO_DROP_INFLIGHT_FULL 1 // requests not followed: `inflight` was full
#define IO_DROP_STACK_COUNTS_FULL 2 // completions not counted by stack: `stack_counts` full
#define IO_DROP_STACK_LOST 3 // requests whose stack could not be taken (`io_stacks` full or a
			     // different stack in its slot): counted by stack without frames
#define IO_DROP_SLOTS 4

// With `stacks`, completions are also counted by issuing stack in `stack_counts`, keyed and
// valued like ebpf_profile's counts (profile.h): `count` the requests completed, `total_ns`
// the bytes completed (not nanoseconds).
#include "profile.h"

// The key of `stats` (`RawKey` in src/io/stats.rs): one process, in one cgroup, on one disk,
// doing one kind of operation.
struct weir_io_key {
	__u64 cgroup_id; // cgroup v2 id of the process that started the request
	__u32 pid;       // its thread group id (0: unknown, the request started before the source)
	__u32 dev;       // the disk, as the kernel's dev_t (major << 20 | minor)
	__u32 op;        // IO_OP_*
	__u32 _pad;
};

_Static_assert(sizeof(struct weir_io_key) == 24, "layout shared with src/io/stats.rs");

// What is counted per key since it was created (`RawValue`). Updated with atomic adds.
struct weir_io_value {
	__u64 ops;        // requests completed
	__u64 bytes;      // bytes completed
	__u64 errors;     // requests completed with an error
	__u64 latency_ns; // sum of their latencies (issue to completion)
	__u64 slots[IO_SLOTS];
	char comm[16]; // the process's command when the key was created
};

_Static_assert(sizeof(struct weir_io_value) == 32 + 8 * IO_SLOTS + 16,
	       "layout shared with src/io/stats.rs");

// A request between block_io_start (or issue) and its last completion, in `inflight` by the
// request's address. User space reads it (`RawInflight` in src/io/stacks.rs) for the stack
// ids requests in flight hold.
struct inflight {
	__u64 start_ns; // block_io_start (or issue, when that did not fire)
	__u64 issue_ns; // block_rq_issue (0 until then)
	__u64 cgroup_id;
	__u32 pid;
	__u32 error; // a part completed with an error
	char comm[16];
	// With stacks only: the submitting thread, its name and its stacks (ids in `io_stacks`,
	// or negative errnos).
	__u32 tid;
	__s32 user_stack;
	__s32 kernel_stack;
	__u32 _pad;
	char thread_comm[16];
};

_Static_assert(sizeof(struct inflight) == 80, "layout shared with src/io/stacks.rs");

#endif
