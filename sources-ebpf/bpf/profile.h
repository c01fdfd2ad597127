// SPDX-License-Identifier: GPL-2.0
// The maps ebpf_profile shares with user space; mirrored in src/profile/.
#ifndef WEIR_PROFILE_H
#define WEIR_PROFILE_H

#define PROFILE_MAX_DEPTH 127

// The key of the in-kernel counts (`RawKey` in src/profile/mod.rs).
struct weir_profile_key {
	__u32 pid; // thread group id (the process)
	__u32 tid; // thread id
	__s32 user_stack;   // stack id, or a negative errno when it could not be taken
	__s32 kernel_stack; // idem
	char comm[16];
};

_Static_assert(sizeof(struct weir_profile_key) == 32, "layout shared with src/profile/mod.rs");

// What is counted per key (`RawValue`): on-CPU, the samples; off-CPU, the times the thread
// blocked with that stack and the nanoseconds it stayed off the CPU in total.
struct weir_profile_value {
	__u64 count;
	__u64 total_ns;
};

// Sent through `procs` when a process (or a new program image after exec) is sampled for the
// first time, so user space can read its mappings while it is alive (`RawProc`).
struct weir_profile_proc {
	__u32 pid;
	__u32 _pad;
};

#endif
