package auth

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// A client sends the same token with every upload until it expires, so the
// signature of one token is checked once and its claims remembered: an
// ES256 verification costs about 70 µs, a lookup well under one. Only
// tokens that passed the full check enter the cache, keyed by their exact
// bytes, so a forged or altered token never matches an entry; a hit is
// still refused once the token's validity window (with skew) has passed.

// verifiedCacheShards spreads the cache's locks; a power of two.
const verifiedCacheShards = 32

type verifiedToken struct {
	claims    *Claims
	notBefore time.Time // nbf − skew
	notAfter  time.Time // exp + skew
}

type verifiedCache struct {
	seed   maphash.Seed
	max    int // entries per shard
	shards [verifiedCacheShards]struct {
		sync.Mutex
		m map[string]verifiedToken
	}
	hits, misses atomic.Uint64
}

func newVerifiedCache(size int) *verifiedCache {
	c := &verifiedCache{seed: maphash.MakeSeed(), max: max(1, size/verifiedCacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]verifiedToken)
	}
	return c
}

// get returns the claims of a token verified before and valid at now.
func (c *verifiedCache) get(token string, now time.Time) (*Claims, bool) {
	s := &c.shards[maphash.String(c.seed, token)%verifiedCacheShards]
	s.Lock()
	e, ok := s.m[token]
	if ok && (now.Before(e.notBefore) || !now.Before(e.notAfter)) {
		delete(s.m, token) // out of its window: the full check gives the reason
		ok = false
	}
	s.Unlock()
	if ok {
		c.hits.Add(1)
		return e.claims, true
	}
	c.misses.Add(1)
	return nil, false
}

// put remembers a verified token. A full shard first drops what has
// expired, then, if that freed nothing, an arbitrary eighth of itself: the
// cache is bounded whatever the number of clusters, and an evicted token
// only costs one more signature check.
func (c *verifiedCache) put(token string, e verifiedToken, now time.Time) {
	s := &c.shards[maphash.String(c.seed, token)%verifiedCacheShards]
	s.Lock()
	defer s.Unlock()
	if len(s.m) >= c.max {
		for k, v := range s.m {
			if !now.Before(v.notAfter) {
				delete(s.m, k)
			}
		}
		for k := range s.m {
			if len(s.m) < c.max-c.max/8 {
				break
			}
			delete(s.m, k)
		}
	}
	s.m[token] = e
}

func (c *verifiedCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.Lock()
		n += len(s.m)
		s.Unlock()
	}
	return n
}
