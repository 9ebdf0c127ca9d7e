package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/telemeter/telemeter/internal/upload"
)

// ErrStale is returned by Put and PutRaw when the new snapshot's data time is
// older than the stored one's. It wraps upload.ErrConflict.
var ErrStale = fmt.Errorf("snapshot older than the stored one: %w", upload.ErrConflict)

// ErrNotFound is returned for a cluster that has no snapshot.
var ErrNotFound = errors.New("snapshot not found")

// ErrChanged is returned by ReadFamilyBlock when the cluster's snapshot was
// replaced and the family now has another type.
var ErrChanged = errors.New("family changed type")

const (
	quarantineDir = "quarantine"
	snapSuffix    = ".snap"
	tempSuffix    = ".tmp"
	lockStripes   = 256
	// maxFileSize is far above any real snapshot; a bigger file is
	// quarantined without being read.
	maxFileSize = 1 << 30
)

// Options configure a Store.
type Options struct {
	// TTL hides snapshots received longer ago than this from List, and GC
	// removes them. Zero keeps snapshots forever.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// NoSync skips fsync. Only for tests and benchmarks: a crash can then
	// lose acknowledged writes.
	NoSync bool
	// IdentityLabel, when set, is the label every series of a snapshot
	// received from a peer (PutRaw) must carry with the snapshot's cluster
	// ID as its value (the server's --partition-label).
	IdentityLabel string
	// MaxOpenFiles is how many snapshot files stay open so that reads cost
	// one pread instead of open, pread and close. Zero means half the
	// process's file descriptor limit; a negative value keeps none open.
	MaxOpenFiles int
}

// Meta describes one stored snapshot. A Meta returned by the store shares its
// Families slice with the index: treat it as read-only.
type Meta struct {
	ClusterID string
	Received  time.Time
	DataTime  time.Time // newest sample timestamp, or Received if no sample has one
	Series    int
	Bytes     int64 // file size
	Families  []FamilyMeta
}

// FamilyMeta describes one metric family of a snapshot and where its
// compressed block sits in the file.
type FamilyMeta struct {
	Name, Help string
	Type       dto.MetricType
	crc        uint32 // CRC32C of the compressed block
	Offset     int64  // of the compressed block in the file
	Length     int64  // of the compressed block
	Series     int
	decoded    uint32 // length of the block once decompressed
	hasHelp    bool   // the family had a HELP text, possibly empty
}

// sameSnapshot reports whether a and b describe the same write. Every write
// builds a new Families slice, so its identity is the snapshot's identity.
func sameSnapshot(a, b Meta) bool {
	if len(a.Families) != len(b.Families) || !a.Received.Equal(b.Received) || a.Bytes != b.Bytes {
		return false
	}
	return len(a.Families) == 0 || &a.Families[0] == &b.Families[0]
}

// entry is the index's record of one cluster: its Meta and, within the open
// files budget, the open snapshot file the Meta describes.
type entry struct {
	meta Meta
	file *os.File
}

// hooks are the file operations tests replace to simulate failing disks.
type hooks struct {
	syncFile func(*os.File) error
	syncDir  func(dir string) error
}

// Store holds the latest snapshot of every cluster. It is safe for
// concurrent use: reads run in parallel, writes to one cluster are
// serialized, and the index has one owner, its mutex.
type Store struct {
	dir           string
	ttl           time.Duration
	now           func() time.Time
	noSync        bool
	identityLabel string
	logger        *slog.Logger
	metrics       *metrics
	hooks         hooks

	// putLocks serialize writers of a cluster for a whole write; fileLocks
	// keep a cluster's file from being replaced while a reader uses offsets
	// from the index. Both are striped by the first byte of the path hash.
	putLocks  [lockStripes]sync.Mutex
	fileLocks [lockStripes]sync.RWMutex

	mu      sync.RWMutex
	index   map[string]entry
	open    int // entries with an open file
	maxOpen int

	bufs sync.Pool // *[]byte scratch for encoding and reading
}

// Open opens the store in dir, creating dir when missing, and rebuilds the
// index from the files found. Leftover temp files of interrupted writes are
// removed; files that fail their checks are moved to dir/quarantine, counted
// and logged. Open fails only when dir itself cannot be created or read.
func Open(dir string, o Options, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{
		dir:           dir,
		ttl:           o.TTL,
		now:           o.Now,
		noSync:        o.NoSync,
		identityLabel: o.IdentityLabel,
		logger:        logger.With("component", "store"),
		metrics:       newMetrics(reg),
		hooks:         hooks{syncFile: (*os.File).Sync, syncDir: syncDir},
		index:         make(map[string]entry),
		maxOpen:       o.MaxOpenFiles,
	}
	if s.maxOpen == 0 {
		s.maxOpen = fileLimit() / 2
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create storage directory: %w", err)
	}
	start := time.Now()
	if err := s.recover(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	var series, size int64
	for _, e := range s.index {
		series += int64(e.meta.Series)
		size += e.meta.Bytes
	}
	s.metrics.snapshots.Set(float64(len(s.index)))
	s.metrics.series.Set(float64(series))
	s.metrics.bytes.Set(float64(size))
	s.logger.Info("store recovered", "snapshots", len(s.index), "series", series, "bytes", size, "open_files", s.open, "duration", time.Since(start))
	s.mu.RUnlock()
	return s, nil
}

// paths of one cluster's files.
type paths struct {
	dir    string // fan-out directory
	file   string
	temp   string
	stripe int
}

// stripeOf is the lock stripe of a cluster, the first byte of its path hash.
func stripeOf(clusterID string) int {
	sum := sha256.Sum256([]byte(clusterID))
	return int(sum[0])
}

func (s *Store) pathsOf(clusterID string) paths {
	sum := sha256.Sum256([]byte(clusterID))
	h := hex.EncodeToString(sum[:])
	d := filepath.Join(s.dir, h[:2])
	return paths{
		dir:    d,
		file:   filepath.Join(d, h+snapSuffix),
		temp:   filepath.Join(d, h+tempSuffix),
		stripe: int(sum[0]),
	}
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (s *Store) recover() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read storage directory: %w", err)
	}
	var buf []byte
	for _, de := range entries {
		name := de.Name()
		if name == quarantineDir {
			continue
		}
		if !de.IsDir() || len(name) != 2 || !isHex(name) {
			s.logger.Warn("ignoring unexpected entry in storage directory", "file", name)
			continue
		}
		sub := filepath.Join(s.dir, name)
		files, err := os.ReadDir(sub)
		if err != nil {
			s.logger.Error("cannot read storage subdirectory, its snapshots are not served", "dir", sub, "err", err)
			continue
		}
		for _, fe := range files {
			fn := fe.Name()
			path := filepath.Join(sub, fn)
			switch {
			case strings.HasSuffix(fn, tempSuffix):
				if err := os.RemoveAll(path); err != nil {
					s.logger.Warn("cannot remove temp file of an interrupted write", "file", path, "err", err)
				} else {
					s.logger.Info("removed temp file of an interrupted write", "file", path)
				}
			case strings.HasSuffix(fn, snapSuffix) && len(fn) == 64+len(snapSuffix) && isHex(fn[:64]) && fn[:2] == name:
				buf = s.load(path, fn[:64], buf)
			default:
				s.logger.Warn("ignoring unexpected file in storage directory", "file", path)
			}
		}
	}
	return nil
}

// load reads and checks one snapshot file and adds it to the index, or
// quarantines it. buf is reused between files.
func (s *Store) load(path, hash string, buf []byte) []byte {
	f, err := os.Open(path)
	if err != nil {
		s.quarantine(path, "open", err)
		return buf
	}
	keep := false
	defer func() {
		if !keep {
			_ = f.Close() // opened read-only: closing cannot lose data
		}
	}()
	info, err := f.Stat()
	if err != nil {
		s.quarantine(path, "stat", err)
		return buf
	}
	if !info.Mode().IsRegular() || info.Size() > maxFileSize {
		s.quarantine(path, "not a regular file of sane size", nil)
		return buf
	}
	size := int(info.Size())
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(f, buf); err != nil {
		s.quarantine(path, "read", err)
		return buf
	}
	m, err := parseSnapshot(buf)
	if err != nil {
		s.quarantine(path, "check", err)
		return buf
	}
	if sum := sha256.Sum256([]byte(m.ClusterID)); hex.EncodeToString(sum[:]) != hash {
		s.quarantine(path, "cluster id does not match the file name", nil)
		return buf
	}
	e := entry{meta: m}
	if s.open < s.maxOpen {
		e.file, keep = f, true
		s.open++
	}
	s.index[m.ClusterID] = e
	return buf
}

func (s *Store) quarantine(path, reason string, cause error) {
	s.metrics.quarantined.Inc()
	qdir := filepath.Join(s.dir, quarantineDir)
	dest := filepath.Join(qdir, filepath.Base(path)+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	err := os.MkdirAll(qdir, 0o750)
	if err == nil {
		err = os.Rename(path, dest)
	}
	if err != nil {
		s.logger.Error("corrupt snapshot not served, and it could not be moved to quarantine", "file", path, "reason", reason, "cause", cause, "err", err)
		return
	}
	s.logger.Warn("corrupt snapshot quarantined", "file", path, "quarantine", dest, "reason", reason, "err", cause)
}

func (s *Store) getBuf() *[]byte {
	if b, ok := s.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 64<<10)
	return &b
}

func (s *Store) putBuf(b *[]byte) {
	if cap(*b) > 16<<20 {
		return // do not pin the scratch of one huge snapshot
	}
	s.bufs.Put(b)
}

// Put stores families as the snapshot of clusterID, replacing the previous
// one. It returns once the snapshot is durable. A snapshot whose data time is
// older than the stored one's is refused with ErrStale. An I/O failure gives
// an error wrapping upload.ErrUnavailable and leaves the previous snapshot in
// place and readable. Put does not modify families.
func (s *Store) Put(clusterID string, received time.Time, families []*dto.MetricFamily) (Meta, error) {
	return s.PutEncoded(clusterID, received, nil, families)
}

// PutEncoded is Put for a snapshot some of whose families are already
// encoded (see upload.EncodedFamily): sorted by name, and none sharing a name
// with families. Neither is modified or retained.
func (s *Store) PutEncoded(clusterID string, received time.Time, encoded []upload.EncodedFamily, families []*dto.MetricFamily) (Meta, error) {
	start := time.Now()
	fb, rb := s.getBuf(), s.getBuf()
	defer s.putBuf(fb)
	defer s.putBuf(rb)
	data, raw, m, err := encodeSnapshot((*fb)[:0], (*rb)[:0], clusterID, received, families, encoded)
	*fb, *rb = data[:0], raw[:0]
	if err != nil {
		s.metrics.writes.WithLabelValues(resultInvalid).Inc()
		return Meta{}, fmt.Errorf("encode snapshot: %w", err)
	}
	return s.write(data, m, start)
}

// PutRaw stores a snapshot file received from a peer (see ReadRaw). The bytes
// are untrusted: the checksum, the structure and every block are verified
// before anything is written. The staleness rule and durability are those of
// Put. raw is not retained.
func (s *Store) PutRaw(raw []byte) (Meta, error) {
	start := time.Now()
	sb := s.getBuf()
	defer s.putBuf(sb)
	// With an identity label, a peer's snapshot of cluster A holds A's
	// series only: never another cluster's, which this node would then
	// export as well.
	m, scratch, err := verifySnapshot(raw, (*sb)[:0], s.identityLabel)
	*sb = scratch[:0]
	if err != nil {
		s.metrics.writes.WithLabelValues(resultInvalid).Inc()
		return Meta{}, fmt.Errorf("verify snapshot: %w", err)
	}
	return s.write(raw, m, start)
}

func (s *Store) write(data []byte, m Meta, start time.Time) (Meta, error) {
	p := s.pathsOf(m.ClusterID)
	s.putLocks[p.stripe].Lock()
	defer s.putLocks[p.stripe].Unlock()

	if cur, ok := s.Get(m.ClusterID); ok && m.DataTime.Before(cur.DataTime) {
		s.metrics.writes.WithLabelValues(resultStale).Inc()
		return Meta{}, fmt.Errorf("store snapshot: data time %s is before the stored %s: %w",
			m.DataTime.UTC().Format(time.RFC3339Nano), cur.DataTime.UTC().Format(time.RFC3339Nano), ErrStale)
	}
	f, err := s.writeTemp(p, data)
	if err != nil {
		s.metrics.writes.WithLabelValues(resultError).Inc()
		return Meta{}, fmt.Errorf("store snapshot: %w: %w", err, upload.ErrUnavailable)
	}

	fl := &s.fileLocks[p.stripe]
	fl.Lock()
	exchanged, err := replaceFile(p.temp, p.file)
	if err != nil {
		fl.Unlock()
		_ = f.Close()
		_ = os.Remove(p.temp)
		s.metrics.writes.WithLabelValues(resultError).Inc()
		return Meta{}, fmt.Errorf("store snapshot: %w: %w", err, upload.ErrUnavailable)
	}
	// The temp file's descriptor now reads the snapshot at its final path.
	s.mu.Lock()
	old, had := s.index[m.ClusterID]
	e := entry{meta: m}
	switch {
	case old.file != nil:
		_ = old.file.Close() // read side of a replaced file
		e.file = f
	case s.open < s.maxOpen:
		e.file = f
		s.open++
	default:
		_ = f.Close() // written and synced above
	}
	s.index[m.ClusterID] = e
	s.mu.Unlock()
	fl.Unlock()
	if exchanged {
		// The previous snapshot is at the temp path now, and nothing reads
		// it: the index and every descriptor moved on under the file lock.
		// Emptied, it takes no disk; recovery removes it like any temp file.
		if err := os.Truncate(p.temp, 0); err != nil {
			s.logger.Debug("cannot empty the previous snapshot", "file", p.temp, "err", err)
		}
	}
	prev := old.meta
	if had {
		s.metrics.series.Add(float64(m.Series - prev.Series))
		s.metrics.bytes.Add(float64(m.Bytes - prev.Bytes))
	} else {
		s.metrics.snapshots.Inc()
		s.metrics.series.Add(float64(m.Series))
		s.metrics.bytes.Add(float64(m.Bytes))
	}

	// The new file is in place and served; it is durable once the directory
	// entry is. If that fails the client must not get a success.
	if err := s.sync(p.dir); err != nil {
		s.metrics.writes.WithLabelValues(resultError).Inc()
		return Meta{}, fmt.Errorf("store snapshot: sync directory: %w: %w", err, upload.ErrUnavailable)
	}
	s.metrics.writes.WithLabelValues(resultOK).Inc()
	s.metrics.writeDuration.Observe(time.Since(start).Seconds())
	return m, nil
}

// writeTemp writes data to the cluster's temp file and syncs it, and returns
// the file still open. On failure the temp file is closed and removed.
func (s *Store) writeTemp(p paths, data []byte) (*os.File, error) {
	if _, err := os.Lstat(p.dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(p.dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if err := s.sync(s.dir); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(p.temp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(data)
	if err == nil && !s.noSync {
		err = s.hooks.syncFile(f)
	}
	if err != nil {
		_ = f.Close()
		_ = os.Remove(p.temp)
		return nil, err
	}
	return f, nil
}

func (s *Store) sync(dir string) error {
	if s.noSync {
		return nil
	}
	return s.hooks.syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get returns the metadata of a cluster's snapshot.
func (s *Store) Get(clusterID string) (Meta, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.index[clusterID]
	return e.meta, ok
}

// lookup returns a cluster's index entry.
func (s *Store) lookup(clusterID string) (entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.index[clusterID]
	return e, ok
}

// List returns the snapshots that have not outlived the TTL, sorted by
// cluster ID.
func (s *Store) List() []Meta {
	var cutoff time.Time
	if s.ttl > 0 {
		cutoff = s.now().Add(-s.ttl)
	}
	s.mu.RLock()
	out := make([]Meta, 0, len(s.index))
	for _, e := range s.index {
		if s.ttl > 0 && e.meta.Received.Before(cutoff) {
			continue
		}
		out = append(out, e.meta)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Meta) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out
}

// Len returns the number of stored snapshots, expired ones included until GC
// removes them.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.index)
}

// Delete removes a cluster's snapshot. Deleting a missing snapshot is not an
// error. The removal is not synced: after a crash the snapshot may come back
// until GC removes it again.
func (s *Store) Delete(clusterID string) error {
	p := s.pathsOf(clusterID)
	s.putLocks[p.stripe].Lock()
	defer s.putLocks[p.stripe].Unlock()
	return s.remove(clusterID, p)
}

// remove deletes a snapshot; the caller holds the cluster's put lock.
func (s *Store) remove(clusterID string, p paths) error {
	fl := &s.fileLocks[p.stripe]
	fl.Lock()
	defer fl.Unlock()
	if err := os.Remove(p.file); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete snapshot: %w: %w", err, upload.ErrUnavailable)
	}
	_ = os.Remove(p.temp) // the emptied inode a write keeps for the next one
	s.mu.Lock()
	e, ok := s.index[clusterID]
	delete(s.index, clusterID)
	if e.file != nil {
		_ = e.file.Close() // read-only use; the file is gone anyway
		s.open--
	}
	s.mu.Unlock()
	m := e.meta
	if ok {
		s.metrics.snapshots.Dec()
		s.metrics.series.Sub(float64(m.Series))
		s.metrics.bytes.Sub(float64(m.Bytes))
	}
	return nil
}

// GC removes the snapshots received longer than the TTL ago and returns how
// many it removed. With no TTL it does nothing.
func (s *Store) GC() int {
	if s.ttl <= 0 {
		return 0
	}
	cutoff := s.now().Add(-s.ttl)
	var expired []string
	s.mu.RLock()
	for id, e := range s.index {
		if e.meta.Received.Before(cutoff) {
			expired = append(expired, id)
		}
	}
	s.mu.RUnlock()
	removed := 0
	for _, id := range expired {
		p := s.pathsOf(id)
		s.putLocks[p.stripe].Lock()
		// A write may have refreshed the snapshot since the scan.
		if m, ok := s.Get(id); ok && m.Received.Before(cutoff) {
			if err := s.remove(id, p); err != nil {
				s.logger.Error("cannot remove expired snapshot", "cluster", id, "err", err)
			} else {
				removed++
			}
		}
		s.putLocks[p.stripe].Unlock()
	}
	s.metrics.gcRemoved.Add(float64(removed))
	return removed
}

// readFile reads a cluster's whole file while no writer can replace it.
func (s *Store) readFile(clusterID string) ([]byte, error) {
	p := s.pathsOf(clusterID)
	fl := &s.fileLocks[p.stripe]
	fl.RLock()
	defer fl.RUnlock()
	e, ok := s.lookup(clusterID)
	if !ok {
		return nil, ErrNotFound
	}
	if e.file != nil {
		data := make([]byte, e.meta.Bytes)
		if _, err := e.file.ReadAt(data, 0); err != nil {
			return nil, fmt.Errorf("read snapshot: %w: %w", err, upload.ErrUnavailable)
		}
		return data, nil
	}
	data, err := os.ReadFile(p.file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w: %w", err, upload.ErrUnavailable)
	}
	return data, nil
}

// ReadRaw returns the bytes of a cluster's snapshot file, checksum verified,
// and the Meta parsed from those bytes, for hand-off and replication.
func (s *Store) ReadRaw(clusterID string) ([]byte, Meta, error) {
	data, err := s.readFile(clusterID)
	if err != nil {
		return nil, Meta{}, err
	}
	m, err := parseSnapshot(data)
	if err != nil {
		s.logger.Error("stored snapshot failed its checks", "cluster", clusterID, "err", err)
		return nil, Meta{}, fmt.Errorf("read snapshot: %w", err)
	}
	return data, m, nil
}

// Families decodes a cluster's whole snapshot.
func (s *Store) Families(clusterID string) ([]*dto.MetricFamily, Meta, error) {
	data, m, err := s.ReadRaw(clusterID)
	if err != nil {
		return nil, Meta{}, err
	}
	fams, err := decodeFamilies(data, m)
	if err != nil {
		return nil, Meta{}, fmt.Errorf("decode snapshot: %w", err)
	}
	return fams, m, nil
}

// ReadFamilyBlock returns the decompressed block of family i of the snapshot
// m describes: the protobuf encoding of that family's series, as field 4
// (metric) entries of an io.prometheus.client.MetricFamily. dst's capacity is
// reused.
//
// If the cluster's snapshot was replaced since m was read, the block of the
// family with the same name in the current snapshot is returned instead, so a
// reader always gets the newest data; an empty block if the current snapshot
// has no such family, and ErrChanged if it has it with another type. A
// deleted cluster gives ErrNotFound. The block's checksum is verified.
func (s *Store) ReadFamilyBlock(m Meta, i int, dst []byte) ([]byte, error) {
	if i < 0 || i >= len(m.Families) {
		return nil, fmt.Errorf("read family block: index %d out of %d families", i, len(m.Families))
	}
	f := m.Families[i]
	fl := &s.fileLocks[stripeOf(m.ClusterID)]
	fl.RLock()
	defer fl.RUnlock()
	e, ok := s.lookup(m.ClusterID)
	if !ok {
		return nil, ErrNotFound
	}
	if cur := e.meta; !sameSnapshot(cur, m) {
		j, found := slices.BinarySearchFunc(cur.Families, f.Name, func(c FamilyMeta, name string) int {
			return strings.Compare(c.Name, name)
		})
		if !found {
			return dst[:0], nil
		}
		if cur.Families[j].Type != f.Type {
			return nil, fmt.Errorf("read family block %s: %w", f.Name, ErrChanged)
		}
		f = cur.Families[j]
	}
	file := e.file
	if file == nil {
		var err error
		if file, err = os.Open(s.pathsOf(m.ClusterID).file); err != nil {
			return nil, fmt.Errorf("read family block: %w: %w", err, upload.ErrUnavailable)
		}
		defer func() { _ = file.Close() }() // opened read-only
	}
	cb := s.getBuf()
	defer s.putBuf(cb)
	if int64(cap(*cb)) < f.Length {
		*cb = make([]byte, f.Length)
	}
	block := (*cb)[:f.Length]
	if _, err := file.ReadAt(block, f.Offset); err != nil {
		return nil, fmt.Errorf("read family block: %w: %w", err, upload.ErrUnavailable)
	}
	out, err := decodeBlock(dst, block, f)
	if err != nil {
		s.logger.Error("stored snapshot failed its checks", "cluster", m.ClusterID, "err", err)
		return nil, fmt.Errorf("read family block: %w", err)
	}
	return out, nil
}

// Close releases the open snapshot files. The store stays usable; reads then
// open files as they need them.
func (s *Store) Close() error {
	for i := range s.fileLocks {
		s.fileLocks[i].Lock()
	}
	defer func() {
		for i := range s.fileLocks {
			s.fileLocks[i].Unlock()
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for id, e := range s.index {
		if e.file != nil {
			errs = append(errs, e.file.Close())
			e.file = nil
			s.index[id] = e
		}
	}
	s.open = 0
	s.maxOpen = -1
	return errors.Join(errs...)
}
