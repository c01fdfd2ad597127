// SPDX-License-Identifier: GPL-2.0
// The record ebpf_tcp sends to user space at the end of each connection (and, when asked,
// periodically while it is open); mirrored by `RawTcpEvent` in src/tcp.rs.
#ifndef WEIR_TCP_H
#define WEIR_TCP_H

#define TCP_DIR_UNKNOWN 0
#define TCP_DIR_OUTBOUND 1
#define TCP_DIR_INBOUND 2

#define TCP_RESET_SENT 1
#define TCP_RESET_RECEIVED 2

#define TCP_KIND_CLOSE 0 // the connection closed: final counters
#define TCP_KIND_STATS 1 // periodic counters of an open connection

// Which filters the loader configured (`filters` in tcp.bpf.c).
#define TCP_FILTER_PORTS 1
#define TCP_FILTER_PIDS 2
#define TCP_FILTER_CGROUPS 4
// The most cgroups `cgroups` holds (the loop bound of the cgroup check).
#define TCP_MAX_CGROUPS 64

struct weir_tcp_event {
	__u64 start_ns;
	__u64 end_ns;
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 total_retrans;
	__u32 srtt_us;
	__u32 snd_cwnd;
	__u32 snd_ssthresh;
	__u32 snd_wnd;
	__u32 rcv_wnd;
	__u32 sndbuf;
	__u32 states;
	__s32 sk_err;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 direction;
	__u8 resets;
	__u8 last_state; // close: the state left for CLOSE; stats: the current state
	__u8 kind;       // TCP_KIND_*
	__u8 _pad[2];
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[16];
};

_Static_assert(sizeof(struct weir_tcp_event) == 144, "layout shared with src/tcp.rs");

#endif
