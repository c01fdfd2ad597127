// SPDX-License-Identifier: GPL-2.0
// The maps ebpf_memory shares with user space; mirrored in src/memory/.
// Page faults are counted with ebpf_profile's key and value (profile.h).
#ifndef WEIR_MEMORY_H
#define WEIR_MEMORY_H

#include "profile.h"

// An outstanding allocation: the process and the address malloc returned (`AllocKey` in
// src/memory/allocations.rs).
struct weir_alloc_key {
	__u32 pid; // thread group id
	__u32 _pad;
	__u64 addr;
};

// Its size and the user stack that made it (`AllocInfo`).
struct weir_alloc_info {
	__u64 size;
	// The allocator's return address (in its caller). At the entry of a function that does
	// not start by pushing a frame pointer (the C library's allocator, typically), the
	// frame-pointer walk goes from the allocator straight to its caller's caller.
	__u64 caller;
	__s32 user_stack; // stack id in `alloc_stacks`, or a negative errno
	__u32 _pad;
};

_Static_assert(sizeof(struct weir_alloc_key) == 16, "layout shared with src/memory/");
_Static_assert(sizeof(struct weir_alloc_info) == 24, "layout shared with src/memory/");

// Slots of `dropped`, what the kernel side could not record (`Drop` in src/memory/mod.rs).
#define MEM_DROP_ALLOCS_FULL 0  // an allocation not tracked: `allocs` full
#define MEM_DROP_PENDING_FULL 1 // an allocation not tracked: `pending` full
#define MEM_DROP_FAULTS_FULL 2  // a page fault not counted: `counts` full
#define MEM_DROP_SLOTS 3

#endif
