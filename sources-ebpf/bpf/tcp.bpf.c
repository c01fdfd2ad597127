// SPDX-License-Identifier: GPL-2.0
// ebpf_tcp: one record per TCP connection when it closes, with the owning process, the
// 4-tuple, direction and the tcp_sock counters (CO-RE reads).
//
// The socket tracepoints are attached as BTF-typed raw tracepoints (`tp_btf`: the same raw
// tracepoint attachment as `raw_tp`, no trampoline, but the arguments are typed): the socket's
// fields are then read with plain loads (CO-RE relocated) instead of a probe-read helper call
// each, which is most of what these programs cost per state change.
//
// - sock:inet_sock_set_state follows the lifecycle. An outbound connection
//   enters SYN_SENT inside connect(), in the process's context: that gives its pid. An
//   inbound one is created in softirq context (no process), so
// - syscalls:sys_exit_accept/accept4 look the returned fd up in the caller's file table and
//   attribute the connection to the accepting process.
// - tcp:tcp_send_reset / tcp:tcp_receive_reset mark resets for the close reason.
// - tcp:tcp_probe (attached only when periodic stats are asked for) runs for every
//   segment an established connection receives (data, or the ACKs of what it sends): at the
//   first one after `stats_interval_ns` since the last report it sends a stats record.
//
// Filters (ports, owning process, cgroup) are checked here, so a filtered connection costs a
// map lookup or two and never reaches the ring buffer: an outbound connection is checked in
// connect() and an inbound one at accept(); one whose owner is not wanted is forgotten.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "tcp.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10

// TCP_FILTER_* bits: which of `ports`, `pids` and `cgroups` apply, set by the loader.
const volatile __u32 filters = 0;
// How many slots of `cgroups` are filled, set by the loader.
const volatile __u32 cgroup_count = 0;
// Nanoseconds between two stats records of a connection (0: none), set by the loader.
const volatile __u64 stats_interval_ns = 0;
// Wake user space only once this many bytes wait in `events` (it also reads on a short
// timer): one wakeup per batch of records, not per connection. Set by the loader.
const volatile __u64 wakeup_bytes = 0;

#define OWNER_FILTERS (TCP_FILTER_PIDS | TCP_FILTER_CGROUPS)

struct tuple {
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct conn {
	struct tuple t; // last seen with a local port (it is gone by CLOSE)
	__u64 start_ns;
	__u64 last_report_ns;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 states;
	__u8 direction;
	__u8 resets;
	__u8 _pad[2];
	char comm[16];
};

// The connections being followed, in a set-associative table of two arrays rather than a
// hash map. A socket may sit in either of two sets chosen by hashing its address: the first
// unless it is full, so a set that fills up overflows into others instead of turning
// connections away; a slot is claimed with a compare-and-exchange of its tag. Array lookups
// are inlined by the verifier, and claiming and releasing a slot take no lock, no allocation
// and no free list: measured on a loopback connection storm, the hash map's update and delete
// were half of these programs' time. A connection finding both its sets full is not followed, and counted.
#define CONN_WAYS 8
// log2 of the number of sets (at most 18), set by the loader from `max_connections`; the
// loader sizes `conn_tags` and `conns` to match.
const volatile __u32 conn_set_bits = 14;

struct conn_set {
	__u64 sk[CONN_WAYS]; // the socket's address, 0 when the slot is free
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 14);
	__type(key, __u32);
	__type(value, struct conn_set);
} conn_tags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, (1 << 14) * CONN_WAYS);
	__type(key, __u32);
	__type(value, struct conn);
} conns SEC(".maps");

// One slot per program (SCRATCH_*): see sock_key.
#define SCRATCH_STATE 0
#define SCRATCH_STATS 1
#define SCRATCH_RESET 2
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} key_scratch SEC(".maps");

// Local or remote ports to report (TCP_FILTER_PORTS); sized by the loader.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

// Processes (thread group ids) to report (TCP_FILTER_PIDS); sized by the loader.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8);
} pids SEC(".maps");

// cgroup v2 directories whose processes (and their descendants') to report
// (TCP_FILTER_CGROUPS), checked with bpf_current_task_under_cgroup.
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, TCP_MAX_CGROUPS);
	__type(key, __u32);
	__type(value, __u32);
} cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

// [0]: records lost to a full ring buffer; [1]: connections not tracked (their set was full).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline void count_drop(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&dropped, &slot);
	if (n)
		*n += 1;
}

// The socket's address as a number, the table's key. The verifier does not let a BTF-typed
// pointer be shifted or multiplied, but what is read back from a map value is a plain number.
// Each program has its own per-CPU slot: a program does not run nested in itself on one CPU,
// but another one may interrupt it between the store and the load.
static __always_inline __u64 sock_key(const struct sock *sk, __u32 scratch)
{
	__u64 *slot = bpf_map_lookup_elem(&key_scratch, &scratch);
	if (!slot)
		return 0;
	*slot = (__u64)sk;
	return *(volatile __u64 *)slot;
}

// The two sets a socket may sit in: the top two `conn_set_bits`-bit pieces of its address's
// Fibonacci hash (sockets are slab objects aligned to at least 64 bytes: the low bits go).
static __always_inline __u64 conn_hash(__u64 key)
{
	return (key >> 6) * 0x9E3779B97F4A7C15ull;
}

static __always_inline __u32 conn_set_a(__u64 hash)
{
	return (__u32)(hash >> (64 - conn_set_bits));
}

static __always_inline __u32 conn_set_b(__u64 hash)
{
	return (__u32)(hash >> (64 - 2 * conn_set_bits)) & ((1u << conn_set_bits) - 1);
}

static __always_inline struct conn *conn_slot(__u32 set, __u32 way)
{
	__u32 slot = set * CONN_WAYS + way;
	return bpf_map_lookup_elem(&conns, &slot);
}

// The slot of `key` in one set, or NULL.
static __always_inline struct conn *find_in(__u32 set, __u64 key)
{
	struct conn_set *tags = bpf_map_lookup_elem(&conn_tags, &set);
	if (!tags)
		return 0;
#pragma unroll
	for (__u32 way = 0; way < CONN_WAYS; way++)
		if (tags->sk[way] == key)
			return conn_slot(set, way);
	return 0;
}

// The connection followed for this socket, or NULL.
static __always_inline struct conn *conn_find(__u64 key)
{
	if (key == 0)
		return 0;
	__u64 hash = conn_hash(key);
	struct conn *c = find_in(conn_set_a(hash), key);
	return c ? c : find_in(conn_set_b(hash), key);
}

// Takes a free slot of one set for `key`; NULL if there is none (any more).
static __always_inline struct conn *claim_in(__u32 set, __u64 key)
{
	struct conn_set *tags = bpf_map_lookup_elem(&conn_tags, &set);
	if (!tags)
		return 0;
#pragma unroll
	for (__u32 way = 0; way < CONN_WAYS; way++)
		if (tags->sk[way] == 0 && __sync_val_compare_and_swap(&tags->sk[way], 0, key) == 0)
			return conn_slot(set, way);
	return 0;
}

// A slot for a new connection (its previous contents are the caller's to overwrite), or NULL
// when both sets are full. A slot still tagged with this address belongs to an earlier socket
// at the same address whose CLOSE was not seen: it is taken over.
static __always_inline struct conn *conn_claim(__u64 key)
{
	struct conn *c = conn_find(key);
	if (c || key == 0)
		return c;
	__u64 hash = conn_hash(key);
	c = claim_in(conn_set_a(hash), key);
	return c ? c : claim_in(conn_set_b(hash), key);
}

// Frees the socket's slot in one set, if it has one there. Compare-and-exchange, so that a
// slot freed by the other path (CLOSE, or accept() forgetting an unwanted connection) and
// claimed meanwhile by another socket stays that socket's.
static __always_inline void release_in(__u32 set, __u64 key)
{
	struct conn_set *tags = bpf_map_lookup_elem(&conn_tags, &set);
	if (!tags)
		return;
#pragma unroll
	for (__u32 way = 0; way < CONN_WAYS; way++)
		if (tags->sk[way] == key) {
			__sync_val_compare_and_swap(&tags->sk[way], key, 0);
			return;
		}
}

static __always_inline void conn_release(__u64 key)
{
	__u64 hash = conn_hash(key);
	__u32 set_a = conn_set_a(hash), set_b = conn_set_b(hash);
	release_in(set_a, key);
	if (set_b != set_a)
		release_in(set_b, key);
}

static __always_inline void set_owner(struct conn *c)
{
	__u64 id = bpf_get_current_pid_tgid();
	c->pid = id >> 32;
	c->tid = (__u32)id;
	c->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(c->comm, sizeof(c->comm));
}

static __always_inline int port_listed(__u16 port)
{
	return bpf_map_lookup_elem(&ports, &port) != 0;
}

static __always_inline int ports_listed(__u16 sport, __u16 dport)
{
	return port_listed(sport) || port_listed(dport);
}

// Whether the socket's ports pass the filter; `unknown_ok`: an unassigned local port (0, inside
// connect() before the port is picked) passes, to be checked again later.
static __always_inline int ports_wanted(struct sock *sk, int unknown_ok)
{
	if (!(filters & TCP_FILTER_PORTS))
		return 1;
	__u16 sport = sk->__sk_common.skc_num;
	__u16 dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (sport == 0 && unknown_ok)
		return 1;
	return ports_listed(sport, dport);
}

// Whether the current task passes the pid and cgroup filters.
static __always_inline int current_wanted(void)
{
	if (filters & TCP_FILTER_PIDS) {
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		if (!bpf_map_lookup_elem(&pids, &tgid))
			return 0;
	}
	if (filters & TCP_FILTER_CGROUPS) {
		for (__u32 i = 0; i < TCP_MAX_CGROUPS; i++) {
			if (i >= cgroup_count)
				return 0;
			if (bpf_current_task_under_cgroup(&cgroups, i) == 1)
				return 1;
		}
		return 0;
	}
	return 1;
}

// Whether a tracked connection is to be reported: with owner filters, only once its owner is
// known (and was wanted, or it would have been forgotten).
static __always_inline int conn_wanted(struct sock *sk, struct conn *c)
{
	if ((filters & OWNER_FILTERS) && c->pid == 0)
		return 0;
	if (!(filters & TCP_FILTER_PORTS))
		return 1;
	// By CLOSE the socket has let go of its local port: use the tuple last seen.
	__u16 sport = sk->__sk_common.skc_num;
	if (sport == 0)
		return ports_listed(c->t.sport, c->t.dport);
	return ports_listed(sport, bpf_ntohs(sk->__sk_common.skc_dport));
}

static __always_inline void read_tuple(struct sock *sk, struct tuple *t)
{
	t->family = sk->__sk_common.skc_family;
	t->sport = sk->__sk_common.skc_num;
	t->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	__u32 *sa = (__u32 *)t->saddr;
	__u32 *da = (__u32 *)t->daddr;
	if (t->family == AF_INET) {
		sa[0] = sk->__sk_common.skc_rcv_saddr;
		da[0] = sk->__sk_common.skc_daddr;
	} else {
		sa[0] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[0];
		sa[1] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[1];
		sa[2] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[2];
		sa[3] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[3];
		da[0] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[0];
		da[1] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[1];
		da[2] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2];
		da[3] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[3];
	}
}

static __always_inline void emit(struct sock *sk, struct conn *c, int state, __u8 kind)
{
	struct weir_tcp_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(0);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->end_ns = bpf_ktime_get_ns();
	e->start_ns = c->start_ns;
	e->cgroup_id = c->cgroup_id;
	e->pid = c->pid;
	e->tid = c->tid;
	e->states = c->states;
	e->direction = c->direction;
	e->resets = c->resets;
	__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
	// The socket as a tcp_sock (NULL if it is not one, which tcp_state ruled out).
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (tp) {
		e->bytes_acked = tp->bytes_acked;
		e->bytes_received = tp->bytes_received;
		e->total_retrans = tp->total_retrans;
		e->srtt_us = tp->srtt_us >> 3;
		e->snd_cwnd = tp->snd_cwnd;
		e->snd_ssthresh = tp->snd_ssthresh;
		e->snd_wnd = tp->snd_wnd;
		e->rcv_wnd = tp->rcv_wnd;
	}
	e->sndbuf = sk->sk_sndbuf;
	e->sk_err = sk->sk_err;
	e->last_state = state;
	e->kind = kind;
	// The tuple was read once the local port was known; a connection that never got that
	// far (refused in SYN_SENT) has it read now.
	if (c->t.sport == 0)
		read_tuple(sk, &c->t);
	e->family = c->t.family;
	e->sport = c->t.sport;
	e->dport = c->t.dport;
	__builtin_memcpy(e->saddr, c->t.saddr, sizeof(e->saddr));
	__builtin_memcpy(e->daddr, c->t.daddr, sizeof(e->daddr));
	__u64 waiting = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, waiting >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state, struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u64 key = sock_key(sk, SCRATCH_STATE);
	struct conn *c = conn_find(key);

	// An untracked socket reaching ESTABLISHED from SYN_SENT or SYN_RECV was filtered out, or
	// found no slot (counted then), when it entered that state: it stays untracked.
	if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV ||
	    (newstate == TCP_ESTABLISHED && !c && oldstate != TCP_SYN_SENT &&
	     oldstate != TCP_SYN_RECV)) {
		if (c) {
			c->states |= 1u << newstate;
			return 0;
		}
		if (newstate == TCP_SYN_SENT ? !current_wanted() || !ports_wanted(sk, 1)
					     : !ports_wanted(sk, 0))
			return 0;
		struct conn *fresh = conn_claim(key);
		if (!fresh) {
			count_drop(1);
			return 0;
		}
		__builtin_memset(fresh, 0, sizeof(*fresh));
		fresh->start_ns = bpf_ktime_get_ns();
		fresh->last_report_ns = fresh->start_ns;
		fresh->states = (1u << oldstate) | (1u << newstate);
		if (sk->__sk_common.skc_num != 0)
			read_tuple(sk, &fresh->t);
		if (newstate == TCP_SYN_SENT) {
			// Inside connect(): the current task owns the socket.
			fresh->direction = TCP_DIR_OUTBOUND;
			set_owner(fresh);
		} else {
			// Softirq: the owner is learnt at accept().
			fresh->direction = TCP_DIR_INBOUND;
		}
		return 0;
	}
	if (!c)
		return 0;
	c->states |= 1u << newstate;
	if (newstate != TCP_CLOSE) {
		// The tuple is complete once the local port is known (an outbound connection gets
		// it after SYN_SENT): read it once.
		if (c->t.sport == 0 && sk->__sk_common.skc_num != 0)
			read_tuple(sk, &c->t);
		return 0;
	}
	if (conn_wanted(sk, c))
		emit(sk, c, oldstate, TCP_KIND_CLOSE);
	conn_release(key);
	return 0;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcp_stats, struct sock *sk, struct sk_buff *skb)
{
	struct conn *c = conn_find(sock_key(sk, SCRATCH_STATS));
	if (!c)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (now - c->last_report_ns < stats_interval_ns)
		return 0;
	if (!conn_wanted(sk, c))
		return 0;
	// Runs under the socket lock: one report per interval.
	c->last_report_ns = now;
	emit(sk, c, sk->__sk_common.skc_state, TCP_KIND_STATS);
	return 0;
}

static __always_inline void mark_reset(struct sock *sk, __u8 flag)
{
	struct conn *c = conn_find(sock_key(sk, SCRATCH_RESET));
	if (c)
		c->resets |= flag;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset, struct sock *sk)
{
	mark_reset(sk, TCP_RESET_SENT);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset, struct sock *sk)
{
	mark_reset(sk, TCP_RESET_RECEIVED);
	return 0;
}

// The syscalls:sys_exit_accept* record: common fields, syscall number, return value.
struct sys_exit_args {
	__u64 common;
	__s64 nr;
	__s64 ret;
};

static __always_inline int on_accept(struct sys_exit_args *ctx)
{
	__s64 fd = ctx->ret;
	if (fd < 0 || fd > 1 << 20)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) != 0 || !f)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return 0;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	// A plain number here (read with probe reads), so it is the key as it is.
	__u64 key = (__u64)sk;
	struct conn *c = conn_find(key);
	if (!c || c->pid != 0)
		return 0;
	if (current_wanted())
		set_owner(c);
	else
		conn_release(key);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tcp_accept4(struct sys_exit_args *ctx)
{
	return on_accept(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tcp_accept(struct sys_exit_args *ctx)
{
	return on_accept(ctx);
}
