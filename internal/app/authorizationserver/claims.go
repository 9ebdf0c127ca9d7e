package authorizationserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemeter/telemeter/internal/auth"
	"github.com/telemeter/telemeter/internal/upload"
)

// claimsFileVersion is the version field of the claims file.
const claimsFileVersion = 1

// maxClaimsFileBytes bounds the claims file read at start: about two
// million claims.
const maxClaimsFileBytes = 512 << 20

// maxClaimBatch bounds the claims committed by one file write.
const maxClaimBatch = 1024

// claimsFile is the on-disk form of the claims, one claim a line, sorted by
// cluster ID so that the file diffs well:
//
//	{"version":1,"claims":[
//	{"cluster_id":"c1","account_id":"acme","claimed_at":"2026-03-01T12:00:00Z"},
//	{"cluster_id":"c2","account_id":"acme","claimed_at":"2026-03-01T12:00:05Z"}
//	]}
type claimsFile struct {
	Version int         `json:"version"`
	Claims  []claimLine `json:"claims"`
}

type claimLine struct {
	ClusterID string    `json:"cluster_id"`
	AccountID string    `json:"account_id"`
	ClaimedAt time.Time `json:"claimed_at"`
}

type claim struct {
	account string
	at      time.Time
}

// claimStore records which account claimed each cluster ID first. Reads of
// committed claims take a read lock; new claims go to one committer
// goroutine, which writes every claim queued at that moment with one file
// replacement (group commit) and answers them only after the rename is
// durable.
type claimStore struct {
	path   string
	now    func() time.Time
	logger *slog.Logger
	write  func(path string, data []byte) error // writeFileAtomic; tests inject failures
	m      *claimMetrics

	mu     sync.RWMutex
	owners map[string]claim // committed: on disk; written by the committer only

	requests chan *claimRequest
	stopped  chan struct{}
}

type claimRequest struct {
	cluster, account string
	reply            chan claimResult // buffered: the committer never blocks
}

type claimResult struct {
	created bool
	err     error
}

type claimMetrics struct {
	claims prometheus.Gauge
	writes *prometheus.CounterVec
}

// openClaims loads the claims file at path; a missing file is created
// empty. A damaged file is an error: starting empty would hand every cluster
// ID to whoever asks first.
func openClaims(path string, now func() time.Time, logger *slog.Logger, m *claimMetrics) (*claimStore, error) {
	s := &claimStore{
		path:     path,
		now:      now,
		logger:   logger,
		write:    writeFileAtomic,
		m:        m,
		owners:   make(map[string]claim),
		requests: make(chan *claimRequest),
		stopped:  make(chan struct{}),
	}
	removeStaleTemps(path, logger)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		// Write the empty file now: a claims file that cannot be written
		// should stop the start, not fail every claim later.
		if err := s.persist(nil); err != nil {
			return nil, fmt.Errorf("create claims file: %w", err)
		}
		s.m.claims.Set(0)
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open claims file: %w", err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, maxClaimsFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read claims file: %w", err)
	}
	if len(data) > maxClaimsFileBytes {
		return nil, fmt.Errorf("read claims file: larger than %d bytes", maxClaimsFileBytes)
	}
	var file claimsFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("parse claims file %s: %w", path, err)
	}
	if file.Version != claimsFileVersion {
		return nil, fmt.Errorf("parse claims file %s: version %d, want %d", path, file.Version, claimsFileVersion)
	}
	for i, c := range file.Claims {
		if err := auth.ValidateClusterID(c.ClusterID); err != nil {
			return nil, fmt.Errorf("parse claims file %s: claim %d: %w", path, i, err)
		}
		if c.AccountID == "" {
			return nil, fmt.Errorf("parse claims file %s: claim %d: empty account id", path, i)
		}
		if _, dup := s.owners[c.ClusterID]; dup {
			return nil, fmt.Errorf("parse claims file %s: claim %d: cluster id claimed twice", path, i)
		}
		s.owners[c.ClusterID] = claim{account: c.AccountID, at: c.ClaimedAt}
	}
	s.m.claims.Set(float64(len(s.owners)))
	return s, nil
}

// removeStaleTemps deletes temporary files a crash left beside path.
func removeStaleTemps(path string, logger *slog.Logger) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*"))
	for _, m := range matches {
		if err := os.Remove(m); err == nil {
			logger.Info("removed stale temporary claims file", "file", m)
		}
	}
}

// Len is the number of committed claims.
func (s *claimStore) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.owners)
}

// Claim records that account claims cluster. It reports created when this
// call made the claim; an ID already held by the same account is no error;
// an ID held by another account is upload.ErrConflict. The claim is on disk
// when Claim returns nil.
func (s *claimStore) Claim(ctx context.Context, cluster, account string) (bool, error) {
	s.mu.RLock()
	c, ok := s.owners[cluster]
	s.mu.RUnlock()
	if ok {
		return false, ownerCheck(c.account, account)
	}

	req := &claimRequest{cluster: cluster, account: account, reply: make(chan claimResult, 1)}
	select {
	case s.requests <- req:
	case <-s.stopped:
		return false, upload.Errorf(upload.ErrUnavailable, "shutting down")
	case <-ctx.Done():
		return false, fmt.Errorf("claim cluster id: %w: %w", upload.ErrUnavailable, ctx.Err())
	}
	// Once taken, a request is always answered, whether or not ctx ends.
	r := <-req.reply
	return r.created, r.err
}

func ownerCheck(owner, account string) error {
	if owner != account {
		return upload.Errorf(upload.ErrConflict, "cluster id is claimed by another account")
	}
	return nil
}

// run is the committer. It returns when ctx ends, after answering the batch
// in hand.
func (s *claimStore) run(ctx context.Context) error {
	defer close(s.stopped)
	for {
		select {
		case <-ctx.Done():
			return nil
		case req := <-s.requests:
			batch := []*claimRequest{req}
		more:
			for len(batch) < maxClaimBatch {
				select {
				case req := <-s.requests:
					batch = append(batch, req)
				default:
					break more
				}
			}
			s.commit(batch)
		}
	}
}

// commit decides every request of the batch against the committed claims
// and the earlier requests of the batch, writes the new claims in one file
// replacement, and answers.
func (s *claimStore) commit(batch []*claimRequest) {
	results := make([]claimResult, len(batch))
	added := make(map[string]claim)
	now := s.now().UTC().Truncate(time.Second)
	for i, req := range batch {
		if c, ok := s.owners[req.cluster]; ok { // only this goroutine writes owners
			results[i].err = ownerCheck(c.account, req.account)
			continue
		}
		if c, ok := added[req.cluster]; ok {
			results[i].err = ownerCheck(c.account, req.account)
			continue
		}
		added[req.cluster] = claim{account: req.account, at: now}
		results[i].created = true
	}

	if len(added) > 0 {
		err := s.persist(added)
		if err != nil {
			s.m.writes.WithLabelValues("error").Inc()
			s.logger.Error("persist claims", "err", err, "claims", len(added))
			for i := range results {
				if results[i].created {
					results[i] = claimResult{err: upload.WithRetryAfter(upload.ErrUnavailable, 10*time.Second, "cannot persist the claim")}
				}
			}
		} else {
			s.m.writes.WithLabelValues("success").Inc()
			s.mu.Lock()
			for id, c := range added {
				s.owners[id] = c
			}
			n := len(s.owners)
			s.mu.Unlock()
			s.m.claims.Set(float64(n))
		}
	}
	for i, req := range batch {
		req.reply <- results[i]
	}
}

// persist writes the committed claims plus added to the claims file.
func (s *claimStore) persist(added map[string]claim) error {
	lines := make([]claimLine, 0, len(s.owners)+len(added))
	for id, c := range s.owners {
		lines = append(lines, claimLine{ClusterID: id, AccountID: c.account, ClaimedAt: c.at})
	}
	for id, c := range added {
		lines = append(lines, claimLine{ClusterID: id, AccountID: c.account, ClaimedAt: c.at})
	}
	slices.SortFunc(lines, func(a, b claimLine) int { return strings.Compare(a.ClusterID, b.ClusterID) })

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "{\"version\":%d,\"claims\":[\n", claimsFileVersion)
	for i, l := range lines {
		b, err := json.Marshal(l)
		if err != nil {
			return fmt.Errorf("encode claim: %w", err)
		}
		buf.Write(b)
		if i < len(lines)-1 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
	}
	buf.WriteString("]}\n")
	return s.write(s.path, buf.Bytes())
}

// writeFileAtomic replaces path with data so that a crash at any instant
// leaves the old or the new file, never a torn one: temporary file in the
// same directory, write, fsync, rename, fsync of the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	name := tmp.Name()
	defer func() { _ = os.Remove(name) }() // after a successful rename there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write temporary file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("sync temporary file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close temporary file: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("rename temporary file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer func() { _ = d.Close() }()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
