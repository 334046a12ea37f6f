package streamr

import (
	"strings"
	"testing"
)

func TestParseStreamID(t *testing.T) {
	tests := []struct {
		in      string
		want    StreamID
		wantErr string // substring naming the broken rule
	}{
		{in: "streamr.eth/foo/bar", want: "streamr.eth/foo/bar"},
		{in: "Streamr.ETH/Foo/Bar", want: "streamr.eth/Foo/Bar"},
		{in: "sub.domain.eth/a-b.c/d_e/09", want: "sub.domain.eth/a-b.c/d_e/09"},
		{in: "ünïcödé.eth/x", want: "ünïcödé.eth/x"},
		{in: "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf/Sensors/T", want: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/Sensors/T"},
		{in: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/", want: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/"},
		{in: "streamr.eth//double//slash", want: "streamr.eth//double//slash"},

		{in: "legacyid", wantErr: "no path"},
		{in: "streamr.eth/" + strings.Repeat("a", MaxStreamIDLength-len("streamr.eth/")), want: StreamID("streamr.eth/" + strings.Repeat("a", MaxStreamIDLength-len("streamr.eth/")))},
		{in: "streamr.eth/" + strings.Repeat("a", MaxStreamIDLength), wantErr: "longer than 1024"},
		{in: "", wantErr: "no path"},
		{in: "/foo/bar", wantErr: "no domain"},
		{in: ".eth/foo", wantErr: "empty label"},
		{in: "streamr..eth/foo", wantErr: "empty label"},
		{in: "streamr.eth./foo", wantErr: "empty label"},
		{in: "0x7e5f/foo", wantErr: "neither an ENS name nor 0x followed by 40 hex digits"},
		{in: "0X7e5f4552091a69125d5dfcb7b8c2659029395bdf/foo", wantErr: "neither an ENS name"},
		{in: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdg/foo", wantErr: "neither an ENS name"},
		{in: "owner/foo", wantErr: "neither an ENS name"},
		{in: "streamr.eth/foo bar", wantErr: "character ' ' at byte 4"},
		{in: "streamr.eth/foo#1", wantErr: "character '#'"},
		{in: "streamr.eth/foo?partition=1", wantErr: "character '?'"},
		{in: "streamr.eth/température", wantErr: "allowed are A-Z a-z 0-9 - . / _"},
		{in: "streamr.eth/a+b", wantErr: "character '+'"},
		{in: "streamr.eth/a:b", wantErr: "character ':'"},
		{in: "stream r.eth/foo", wantErr: "space or control character"},
		{in: "stre#amr.eth/foo", wantErr: "forbidden character '#'"},
		{in: "stre?amr.eth/foo", wantErr: "forbidden character '?'"},
		{in: "ÜBER.eth/foo", wantErr: "non-ASCII uppercase"},
		{in: "bad\xffutf8.eth/foo", wantErr: "not valid UTF-8"},
		{in: "tab\t.eth/foo", wantErr: "space or control character"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseStreamID(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseStreamID(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseStreamID(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestStreamIDParts(t *testing.T) {
	addr := mustStreamID(t, "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf/a/B")
	if addr.Domain() != "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf" || addr.Path() != "/a/B" {
		t.Errorf("Domain, Path = %q, %q", addr.Domain(), addr.Path())
	}
	owner, ok := addr.OwnerAddress()
	if !ok || UserID(owner[:]) != addr.Domain() {
		t.Errorf("OwnerAddress = %x, %v", owner, ok)
	}
	ens := mustStreamID(t, "streamr.eth/x")
	if _, ok := ens.OwnerAddress(); ok {
		t.Error("OwnerAddress of an ENS stream reports an address")
	}
	if ens.Domain() != "streamr.eth" || ens.Path() != "/x" {
		t.Errorf("Domain, Path = %q, %q", ens.Domain(), ens.Path())
	}
}

func TestParseStreamPartID(t *testing.T) {
	tests := []struct {
		in        string
		stream    StreamID
		partition int
		wantErr   string
	}{
		{in: "streamr.eth/foo#0", stream: "streamr.eth/foo", partition: 0},
		{in: "Streamr.eth/Foo#99", stream: "streamr.eth/Foo", partition: 99},
		{in: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/x#42", stream: "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf/x", partition: 42},
		{in: "streamr.eth/foo#1#2", wantErr: "character '#'"}, // last '#' splits; the rest is an invalid ID
		{in: "streamr.eth/foo", wantErr: "no '#'"},
		{in: "streamr.eth/foo#", wantErr: "want a decimal number 0 to 99"},
		{in: "streamr.eth/foo#100", wantErr: "want a decimal number 0 to 99"},
		{in: "streamr.eth/foo#-1", wantErr: "without sign"},
		{in: "streamr.eth/foo#+1", wantErr: "without sign"},
		{in: "streamr.eth/foo#07", wantErr: "leading zeros"},
		{in: "streamr.eth/foo#1a", wantErr: "decimal number"},
		{in: "streamr.eth/foo# 1", wantErr: "decimal number"},
		{in: "nopath#1", wantErr: "no path"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseStreamPartID(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseStreamPartID(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got.Stream != tt.stream || got.Partition != tt.partition {
				t.Fatalf("ParseStreamPartID(%q) = %+v, %v", tt.in, got, err)
			}
			if s := got.String(); s != string(tt.stream)+"#"+strings.SplitAfter(tt.in, "#")[1] {
				t.Errorf("String() = %q", s)
			}
		})
	}
}

func TestNewStreamPartID(t *testing.T) {
	id := mustStreamID(t, "streamr.eth/foo")
	for _, tt := range []struct {
		partition int
		ok        bool
	}{{0, true}, {99, true}, {-1, false}, {100, false}} {
		_, err := NewStreamPartID(id, tt.partition)
		if (err == nil) != tt.ok {
			t.Errorf("NewStreamPartID(%d) error = %v, want ok=%v", tt.partition, err, tt.ok)
		}
	}
}

// Vectors from spec §3 (Node's keyToArrayIndex).
func TestPartitionForKey(t *testing.T) {
	tests := []struct {
		key       string
		for100    int
		for7      int
		forSingle int
	}{
		{"foo", 72, 6, 0},
		{"bar", 35, 1, 0},
		{"sensor-1", 95, 3, 0},
		{"äö", 1, 3, 0},
	}
	for _, tt := range tests {
		if got := PartitionForKey(100, tt.key); got != tt.for100 {
			t.Errorf("PartitionForKey(100, %q) = %d, want %d", tt.key, got, tt.for100)
		}
		if got := PartitionForKey(7, tt.key); got != tt.for7 {
			t.Errorf("PartitionForKey(7, %q) = %d, want %d", tt.key, got, tt.for7)
		}
		for _, n := range []int{1, 0, -5} {
			if got := PartitionForKey(n, tt.key); got != 0 {
				t.Errorf("PartitionForKey(%d, %q) = %d, want 0", n, tt.key, got)
			}
		}
	}
}

func TestPartitionForNumber(t *testing.T) {
	tests := []struct {
		count int
		key   int64
		want  int
	}{
		{100, 12345, 45},
		{100, -12345, 45},
		{7, -1, 1},
		{7, -7, 0},
		{7, -8, 1},
		{100, 0, 0},
		{100, -9223372036854775808, 8}, // |MinInt64| = 9223372036854775808
		{100, 9223372036854775807, 7},
		{1, 55, 0},
		{0, 55, 0},
	}
	for _, tt := range tests {
		if got := PartitionForNumber(tt.count, tt.key); got != tt.want {
			t.Errorf("PartitionForNumber(%d, %d) = %d, want %d", tt.count, tt.key, got, tt.want)
		}
	}
}
