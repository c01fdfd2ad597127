// SPDX-License-Identifier: GPL-2.0
// The record ebpf_process sends to user space; mirrored by `RawProcEvent` in src/process.rs.
#ifndef WEIR_PROCESS_H
#define WEIR_PROCESS_H

#define PROC_EXEC 1
#define PROC_FORK 2
#define PROC_EXIT 3

#define PROC_ARGV_MAX 1024
#define PROC_FILENAME_MAX 256

struct weir_proc_event {
	__u32 kind;
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__s32 exit_code;
	__u32 argv_len;
	__u64 ts_ns;
	__u64 start_ns;
	__u64 cgroup_id;
	__u64 cpu_user_ns;
	__u64 cpu_system_ns;
	__u64 cpu_ns;
	__u8 argv_truncated;
	char comm[16];
	char filename[PROC_FILENAME_MAX];
	char argv[PROC_ARGV_MAX];
	__u8 _pad[7];
};

_Static_assert(sizeof(struct weir_proc_event) == 1384, "layout shared with src/process.rs");

#endif
