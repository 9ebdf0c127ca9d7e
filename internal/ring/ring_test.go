package ring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The vectors below were computed once by an independent implementation of
// the algorithm in docs/ring.md (Python's hashlib and bisect), so a change in
// this package that moves clusters fails here.

func TestKeyHashVectors(t *testing.T) {
	for _, tc := range []struct {
		name, key string
		want      uint64
	}{
		{name: "empty", key: "", want: 0xe3b0c44298fc1c14},
		{name: "one byte", key: "a", want: 0xca978112ca1bbdca},
		{name: "short id", key: "cluster-1", want: 0x4afb32cc106e2c92},
		{name: "uuid", key: "0a1b2c3d-4e5f-4789-abcd-ef0123456789", want: 0x2e5058affc04212b},
		{name: "token input", key: "node-a#0", want: 0xf0395da18c0b14fa},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, KeyHash(tc.key))
		})
	}
}

func TestTokensVector(t *testing.T) {
	r := New([]string{"node-c", "node-a", "node-b"}, 4)
	want := []struct {
		token  uint64
		member string
	}{
		{0x13d5662bbd36adb2, "node-b"},
		{0x15ca5449410422ef, "node-b"},
		{0x30d071141c7eaca5, "node-a"},
		{0x33023b9d238267b3, "node-c"},
		{0x3603bd52cb97bc58, "node-a"},
		{0x37d485eeef9b0f84, "node-c"},
		{0x597c6cd720586f65, "node-c"},
		{0x6332f9189c484b25, "node-a"},
		{0x756b75b763a7ce09, "node-b"},
		{0x80f8936153497040, "node-b"},
		{0xb5c177fe2f0ad669, "node-c"},
		{0xf0395da18c0b14fa, "node-a"},
	}
	require.Len(t, r.tokens, len(want))
	for i, w := range want {
		require.Equal(t, w.token, r.tokens[i], "token %d", i)
		require.Equal(t, w.member, r.members[r.owner[i]], "member of token %d", i)
	}
}

func TestOwnersVectors(t *testing.T) {
	long := strings.Repeat("x", 300) // longer than the stack buffer
	for _, tc := range []struct {
		name   string
		vnodes int
		key    string
		want   []string
	}{
		{name: "4 vnodes short id", vnodes: 4, key: "cluster-1", want: []string{"node-c", "node-a", "node-b"}},
		{name: "4 vnodes second id", vnodes: 4, key: "cluster-2", want: []string{"node-a", "node-b", "node-c"}},
		{name: "4 vnodes third id", vnodes: 4, key: "cluster-3", want: []string{"node-b", "node-c", "node-a"}},
		{name: "4 vnodes uuid", vnodes: 4, key: "0a1b2c3d-4e5f-4789-abcd-ef0123456789", want: []string{"node-a", "node-c", "node-b"}},
		{name: "4 vnodes empty key", vnodes: 4, key: "", want: []string{"node-a", "node-b", "node-c"}},
		{name: "4 vnodes long key", vnodes: 4, key: long, want: []string{"node-b", "node-a", "node-c"}},
		{name: "default short id", key: "cluster-1", want: []string{"node-b", "node-c", "node-a"}},
		{name: "default second id", key: "cluster-2", want: []string{"node-b", "node-a", "node-c"}},
		{name: "default third id", key: "cluster-3", want: []string{"node-a", "node-b", "node-c"}},
		{name: "default uuid", key: "0a1b2c3d-4e5f-4789-abcd-ef0123456789", want: []string{"node-c", "node-b", "node-a"}},
		{name: "default empty key", key: "", want: []string{"node-c", "node-a", "node-b"}},
		{name: "default long key", key: long, want: []string{"node-c", "node-a", "node-b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New([]string{"node-c", "node-a", "node-b"}, tc.vnodes)
			require.Equal(t, tc.want, r.Owners(tc.key, 3))
			require.Equal(t, tc.want[0], r.Owner(tc.key))
		})
	}
}

// reference is the algorithm written the slow, obvious way: hash every
// virtual node and take the smallest token at or after the key, else the
// smallest token overall, ties to the smaller member name.
func reference(members []string, vnodes int, key string) string {
	kh := KeyHash(key)
	type tok struct {
		t uint64
		m string
	}
	var best, lowest *tok
	less := func(a, b tok) bool { return a.t < b.t || a.t == b.t && a.m < b.m }
	for _, m := range members {
		for i := range vnodes {
			c := tok{t: KeyHash(m + "#" + strconv.Itoa(i)), m: m}
			if lowest == nil || less(c, *lowest) {
				lowest = &c
			}
			if c.t >= kh && (best == nil || less(c, *best)) {
				best = &c
			}
		}
	}
	if best == nil {
		return lowest.m
	}
	return best.m
}

func TestOwnerMatchesReference(t *testing.T) {
	members := []string{"alpha", "bravo", "charlie", "delta"}
	r := New(members, 16)
	for _, key := range randomIDs(500, 7) {
		require.Equal(t, reference(members, 16, key), r.Owner(key), "key %q", key)
	}
}

func TestTiesGoToSmallerName(t *testing.T) {
	// Two members can only share a token by a SHA-256 collision, so build
	// the tie by hand and check that lookup honours the documented order.
	r := &Ring{
		members: []string{"a", "b"},
		vnodes:  1,
		tokens:  []uint64{100, 100},
		owner:   []int32{0, 1},
	}
	require.Equal(t, "a", r.Owner("anything hashing anywhere"))
	require.Equal(t, []string{"a", "b"}, r.Owners("x", 2))
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name        string
		members     []string
		vnodes      int
		wantMembers []string
		wantVnodes  int
	}{
		{name: "empty", members: nil, wantMembers: []string{}, wantVnodes: DefaultVirtualNodes},
		{name: "sorted and deduplicated", members: []string{"b", "a", "b", "", "c", "a"}, vnodes: 3, wantMembers: []string{"a", "b", "c"}, wantVnodes: 3},
		{name: "negative vnodes", members: []string{"a"}, vnodes: -1, wantMembers: []string{"a"}, wantVnodes: DefaultVirtualNodes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(tc.members, tc.vnodes)
			require.Equal(t, tc.wantMembers, r.Members())
			require.Equal(t, tc.wantVnodes, r.VirtualNodes())
			require.Len(t, r.tokens, len(tc.wantMembers)*tc.wantVnodes)
			require.True(t, slices.IsSorted(r.tokens))
		})
	}
}

func TestEmptyRing(t *testing.T) {
	r := New(nil, 0)
	require.Empty(t, r.Owner("x"))
	require.Empty(t, r.Owners("x", 3))
}

func TestMembersIsACopy(t *testing.T) {
	r := New([]string{"a", "b"}, 4)
	m := r.Members()
	m[0] = "z"
	require.Equal(t, []string{"a", "b"}, r.Members())
}

func TestOrderDoesNotMatter(t *testing.T) {
	a := New([]string{"n1", "n2", "n3", "n4"}, 0)
	b := New([]string{"n4", "n2", "n1", "n3", "n2"}, 0)
	require.True(t, a.Equal(b))
	for _, key := range randomIDs(2000, 11) {
		require.Equal(t, a.Owner(key), b.Owner(key))
		require.Equal(t, a.Owners(key, 3), b.Owners(key, 3))
	}
}

func TestEqual(t *testing.T) {
	base := New([]string{"a", "b"}, 8)
	for _, tc := range []struct {
		name  string
		a, b  *Ring
		equal bool
	}{
		{name: "same", a: base, b: New([]string{"b", "a"}, 8), equal: true},
		{name: "other members", a: base, b: New([]string{"a", "c"}, 8)},
		{name: "fewer members", a: base, b: New([]string{"a"}, 8)},
		{name: "other vnodes", a: base, b: New([]string{"a", "b"}, 9)},
		{name: "nil and ring", a: nil, b: base},
		{name: "ring and nil", a: base, b: nil},
		{name: "both nil", a: nil, b: nil, equal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.equal, tc.a.Equal(tc.b))
		})
	}
}

func TestOwnersDistinct(t *testing.T) {
	r := New([]string{"a", "b", "c", "d", "e"}, 0)
	for _, key := range randomIDs(1000, 3) {
		for n := 1; n <= 7; n++ {
			got := r.Owners(key, n)
			require.Len(t, got, min(n, 5))
			require.Equal(t, r.Owner(key), got[0])
			seen := map[string]bool{}
			for _, m := range got {
				require.False(t, seen[m], "duplicate %q in %v", m, got)
				seen[m] = true
			}
		}
	}
	require.Nil(t, r.Owners("k", 0))
}

// TestBalance is QUALITY R12: 10,000 cluster IDs over 3 members, the busiest
// member holds at most 1.25 times the mean. It checks several sets of names,
// not one lucky set.
func TestBalance(t *testing.T) {
	keys := randomIDs(10000, 42)
	for s := range 20 {
		members := []string{
			fmt.Sprintf("telemeter-server-%d-0", s),
			fmt.Sprintf("telemeter-server-%d-1", s),
			fmt.Sprintf("telemeter-server-%d-2", s),
		}
		r := New(members, 0)
		counts := map[string]int{}
		for _, k := range keys {
			counts[r.Owner(k)]++
		}
		require.Len(t, counts, 3)
		most := 0
		for _, c := range counts {
			most = max(most, c)
		}
		ratio := float64(most) / (float64(len(keys)) / 3)
		require.LessOrEqual(t, ratio, 1.25, "members %v counts %v", members, counts)
	}
}

// TestAddMember is QUALITY R16: adding a 4th member moves at most 30 % of
// 10,000 keys, and every key that moves goes to the new member.
func TestAddMember(t *testing.T) {
	keys := randomIDs(10000, 5)
	for s := range 10 {
		three := []string{fmt.Sprintf("n%d-a", s), fmt.Sprintf("n%d-b", s), fmt.Sprintf("n%d-c", s)}
		added := fmt.Sprintf("n%d-d", s)
		before, after := New(three, 0), New(append(slices.Clone(three), added), 0)
		moved := 0
		for _, k := range keys {
			if o := after.Owner(k); o != before.Owner(k) {
				require.Equal(t, added, o)
				moved++
			}
		}
		require.Positive(t, moved)
		require.LessOrEqual(t, float64(moved)/float64(len(keys)), 0.30, "members %v", three)
	}
}

func TestRemoveMember(t *testing.T) {
	keys := randomIDs(10000, 9)
	before := New([]string{"a", "b", "c", "d"}, 0)
	after := New([]string{"a", "b", "d"}, 0)
	moved := 0
	for _, k := range keys {
		was := before.Owner(k)
		if was == "c" {
			require.NotEqual(t, "c", after.Owner(k))
			// The key goes to the next member clockwise: its old successor.
			require.Equal(t, before.Owners(k, 2)[1], after.Owner(k))
			moved++
			continue
		}
		require.Equal(t, was, after.Owner(k), "key %q not owned by the removed member moved", k)
	}
	require.Positive(t, moved)
}

func TestOwnerDoesNotAllocate(t *testing.T) {
	r := New([]string{"a", "b", "c"}, 0)
	key := "0a1b2c3d-4e5f-4789-abcd-ef0123456789-and-some-more-bytes"
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = r.Owner(key) }))
}

func TestConcurrentUse(t *testing.T) {
	r := New([]string{"a", "b", "c"}, 0)
	keys := randomIDs(200, 1)
	want := make([]string, len(keys))
	for i, k := range keys {
		want[i] = r.Owner(k)
	}
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i, k := range keys {
				if r.Owner(k) != want[i] {
					t.Error("owner changed under concurrency")
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// randomIDs returns n distinct UUID-shaped cluster IDs from a fixed seed.
func randomIDs(n int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	seen := make(map[string]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		id := fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x",
			rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xfff, rng.Uint32()&0xffff, rng.Uint64()&0xffffffffffff)
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func BenchmarkOwner(b *testing.B) {
	for _, n := range []int{3, 10} {
		members := make([]string, n)
		for i := range members {
			members[i] = fmt.Sprintf("telemeter-server-%d", i)
		}
		r := New(members, 0)
		keys := randomIDs(1024, 1)
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = r.Owner(keys[i&1023])
				i++
			}
		})
	}
}

func BenchmarkNew(b *testing.B) {
	members := make([]string, 10)
	for i := range members {
		members[i] = fmt.Sprintf("telemeter-server-%d", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = New(members, 0)
	}
}
