// SPDX-License-Identifier: GPL-2.0
// The key of ebpf_profile's in-kernel sample counts; mirrored by `RawKey` in src/profile.rs.
#ifndef WEIR_PROFILE_H
#define WEIR_PROFILE_H

#define PROFILE_MAX_DEPTH 127

struct weir_profile_key {
	__u32 pid; // thread group id (the process)
	__u32 tid; // thread id
	__s32 user_stack;   // stack id, or a negative errno when it could not be taken
	__s32 kernel_stack; // idem
	char comm[16];
};

_Static_assert(sizeof(struct weir_profile_key) == 32, "layout shared with src/profile.rs");

#endif
