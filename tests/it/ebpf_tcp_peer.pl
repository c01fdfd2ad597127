# A TCP peer for the ebpf_tcp test (perl-base is part of every Debian system).
#   perl ebpf_tcp_peer.pl server HOST SEND EXPECT [PORT]
#                                                      listens (on PORT, or one the kernel picks),
#                                                      prints its port, accepts one connection,
#                                                      reads EXPECT bytes, writes SEND bytes,
#                                                      reads to EOF or reset, closes
#   perl ebpf_tcp_peer.pl client HOST PORT SEND EXPECT normal|reset|slow
#                                                      connects, writes SEND bytes, reads EXPECT
#                                                      bytes, then closes normally (shutdown,
#                                                      read to EOF) or by reset (SO_LINGER 0);
#                                                      slow: writes SEND in 40 parts 0.1 s apart
#                                                      (4 s), then closes normally
use strict;
use warnings;
use IO::Socket::IP;
use Socket qw(SOL_SOCKET SO_LINGER);

$| = 1;
my $role = shift @ARGV;

sub write_all {
    my ($s, $n) = @_;
    my $chunk = "x" x 65536;
    while ($n > 0) {
        my $len = $n < 65536 ? $n : 65536;
        my $w = syswrite($s, $chunk, $len);
        die "write: $!" unless defined $w;
        $n -= $w;
    }
}

sub read_n {
    my ($s, $n) = @_;
    my ($got, $buf) = (0, "");
    while ($got < $n) {
        my $r = sysread($s, $buf, 65536);
        die "read: $!" unless defined $r;
        last if $r == 0;
        $got += $r;
    }
    return $got;
}

if ($role eq "server") {
    my ($host, $send, $expect, $port) = @ARGV;
    my $l = IO::Socket::IP->new(LocalHost => $host, LocalPort => $port // 0, Listen => 1, ReuseAddr => 1)
      or die "listen: $@";
    print $l->sockport, "\n";
    my $c = $l->accept or die "accept: $!";
    my $got = read_n($c, $expect);
    write_all($c, $send);
    my $buf;
    while (1) {
        my $r = sysread($c, $buf, 65536);
        last if !defined $r || $r == 0;
    }
    close $c;
    print "received $got\n";
} else {
    my ($host, $port, $send, $expect, $mode) = @ARGV;
    my $c = IO::Socket::IP->new(PeerHost => $host, PeerPort => $port) or die "connect: $@";
    if ($mode eq "slow") {
        my $part = int($send / 40);
        for my $i (1 .. 40) {
            write_all($c, $i == 40 ? $send - 39 * $part : $part);
            select(undef, undef, undef, 0.1);
        }
    } else {
        write_all($c, $send);
    }
    my $got = read_n($c, $expect);
    if ($mode eq "reset") {
        setsockopt($c, SOL_SOCKET, SO_LINGER, pack("ii", 1, 0)) or die "linger: $!";
        close $c;
    } else {
        shutdown($c, 1);
        my $buf;
        while (sysread($c, $buf, 65536)) { }
        close $c;
    }
    print "received $got\n";
}
