package validate

import (
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/telemeter/telemeter/internal/upload"
)

// Options are the server's validation flags.
type Options struct {
	// PartitionLabel carries the cluster ID on every series (--partition-label, default _id).
	PartitionLabel string
	// Labels are set on every series, overwriting what the client sent (--label).
	Labels map[string]string
	// RequiredLabels must be present with a non-empty value on every series (--required-label).
	RequiredLabels []string
	// Elide removes these labels (--elide-label). Identity labels are never elided.
	Elide []string
	// Allow keeps only series matched by one of these selectors (--whitelist,
	// parsed with transform.ParseSelectors); nil keeps all.
	Allow [][]*labels.Matcher
	// MaxSeries is the per-cluster series budget; over it the upload is refused (413).
	MaxSeries int
	// MaxAge and MaxFuture bound sample timestamps relative to the receive time.
	// Samples outside the window are dropped and counted, never stored as given.
	MaxAge, MaxFuture time.Duration
	Now               func() time.Time
}

// Validator applies Options to uploads. It is safe for concurrent use.
type Validator struct {
	o       Options
	dropped *prometheus.CounterVec
}

// New returns a Validator; reg may be nil.
func New(o Options, reg prometheus.Registerer) *Validator {
	if o.PartitionLabel == "" {
		o.PartitionLabel = upload.IDLabel
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxAge <= 0 {
		o.MaxAge = time.Hour
	}
	if o.MaxFuture <= 0 {
		o.MaxFuture = 10 * time.Minute
	}
	v := &Validator{o: o}
	v.dropped = promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "telemeter_server_samples_dropped_total",
		Help: "Samples dropped from accepted uploads, by reason.",
	}, []string{"reason"})
	for _, r := range []string{reasonTooOld, reasonTooNew, reasonNotAllowed, reasonDuplicate} {
		v.dropped.WithLabelValues(r)
	}
	return v
}

const (
	reasonTooOld     = "too_old"
	reasonTooNew     = "too_new"
	reasonNotAllowed = "not_allowed"
	reasonDuplicate  = "duplicate"
)

// Result is what may be stored.
type Result struct {
	Families []*dto.MetricFamily // sorted by name, series sorted by labels
	Series   int
}

// Validate checks and rewrites families of cluster clusterID, whose token
// carries identity (the labels /authorize returned). It modifies families in
// place. An error wraps upload.ErrForbidden (foreign identity),
// upload.ErrInvalid or upload.ErrTooLarge (budget); nothing of a refused
// upload may be stored.
func (v *Validator) Validate(clusterID string, identity map[string]string, families []*dto.MetricFamily) (Result, error) {
	now := v.o.Now()
	minTS := now.Add(-v.o.MaxAge).UnixMilli()
	maxTS := now.Add(v.o.MaxFuture).UnixMilli()

	ident := make([]*dto.LabelPair, 0, len(identity)+1)
	ident = append(ident, pair(v.o.PartitionLabel, clusterID))
	for k, val := range identity {
		if k != v.o.PartitionLabel {
			ident = append(ident, pair(k, val))
		} else if val != clusterID {
			return Result{}, upload.Errorf(upload.ErrForbidden, "token label %s=%q does not match cluster %q", k, val, clusterID)
		}
	}
	protected := func(name string) bool {
		for _, lp := range ident {
			if lp.GetName() == name {
				return true
			}
		}
		_, ok := v.o.Labels[name]
		return ok
	}

	families = mergeByName(families)
	// A name shared by families of different types (which the store
	// refuses) needs duplicates found across families, with a map of keys;
	// otherwise sorting each family finds them next to each other.
	var seen map[string]struct{}
	for i := 1; i < len(families); i++ {
		if families[i].GetName() == families[i-1].GetName() {
			seen = make(map[string]struct{})
			break
		}
	}
	var (
		res      Result
		drops    = map[string]int{}
		keyBuf   []byte
		matchBuf = map[string]string{}
	)
	for _, mf := range families {
		kept := mf.Metric[:0]
		for _, m := range mf.Metric {
			// 1. Identity: present and equal, or stamped.
			for _, want := range ident {
				lp := find(m, want.GetName())
				switch {
				case lp == nil:
					m.Label = append(m.Label, pair(want.GetName(), want.GetValue()))
				case lp.GetValue() != want.GetValue():
					return Result{}, upload.Errorf(upload.ErrForbidden,
						"series of %s carries %s=%q, not this cluster's %q", mf.GetName(), want.GetName(), truncate(lp.GetValue()), want.GetValue())
				}
			}
			// 2. Timestamps.
			if ts := m.GetTimestampMs(); m.TimestampMs != nil {
				if ts < minTS {
					drops[reasonTooOld]++
					continue
				}
				if ts > maxTS {
					drops[reasonTooNew]++
					continue
				}
			}
			// 3. Allowlist.
			if v.o.Allow != nil && !allowed(v.o.Allow, mf.GetName(), m, matchBuf) {
				drops[reasonNotAllowed]++
				continue
			}
			// 4. Elide, then the server's labels win over the client's.
			if len(v.o.Elide) > 0 {
				m.Label = slices.DeleteFunc(m.Label, func(lp *dto.LabelPair) bool {
					return slices.Contains(v.o.Elide, lp.GetName()) && !protected(lp.GetName())
				})
			}
			for k, val := range v.o.Labels {
				if lp := find(m, k); lp != nil {
					lp.Value = &val
				} else {
					m.Label = append(m.Label, pair(k, val))
				}
			}
			for _, name := range v.o.RequiredLabels {
				if lp := find(m, name); lp == nil || lp.GetValue() == "" {
					return Result{}, upload.Errorf(upload.ErrInvalid, "series of %s lacks required label %s", mf.GetName(), name)
				}
			}
			// 5. Unique series (below, or here across families).
			sortLabels(m)
			if seen != nil {
				keyBuf = seriesKey(keyBuf[:0], mf.GetName(), m)
				if _, dup := seen[string(keyBuf)]; dup {
					drops[reasonDuplicate]++
					continue
				}
				seen[string(keyBuf)] = struct{}{}
			}
			kept = append(kept, m)
		}
		clear(mf.Metric[len(kept):])
		// Sorted by labels, stably: of equal series the first sent stays.
		slices.SortStableFunc(kept, compareMetrics)
		if seen == nil {
			unique := kept[:0]
			for i, m := range kept {
				if i > 0 && compareMetrics(kept[i-1], m) == 0 {
					drops[reasonDuplicate]++
					continue
				}
				unique = append(unique, m)
			}
			clear(kept[len(unique):])
			kept = unique
		}
		mf.Metric = kept
		res.Series += len(kept)
		if v.o.MaxSeries > 0 && res.Series > v.o.MaxSeries {
			return Result{}, upload.Errorf(upload.ErrTooLarge, "more than %d series, the per-cluster budget", v.o.MaxSeries)
		}
	}
	for reason, n := range drops {
		v.dropped.WithLabelValues(reason).Add(float64(n))
	}
	res.Families = slices.DeleteFunc(families, func(mf *dto.MetricFamily) bool { return len(mf.Metric) == 0 })
	return res, nil
}

// mergeByName joins families that share a name (a protobuf body may repeat
// one) and sorts them by name. Types must agree.
func mergeByName(families []*dto.MetricFamily) []*dto.MetricFamily {
	upload.SortFamilies(families)
	out := families[:0]
	for _, mf := range families {
		if n := len(out); n > 0 && out[n-1].GetName() == mf.GetName() && out[n-1].GetType() == mf.GetType() {
			out[n-1].Metric = append(out[n-1].Metric, mf.Metric...)
			continue
		}
		out = append(out, mf)
	}
	return out
}

func allowed(sel [][]*labels.Matcher, name string, m *dto.Metric, buf map[string]string) bool {
	clear(buf)
	buf[model.MetricNameLabel] = name
	for _, lp := range m.Label {
		buf[lp.GetName()] = lp.GetValue()
	}
next:
	for _, ms := range sel {
		for _, matcher := range ms {
			if !matcher.Matches(buf[matcher.Name]) {
				continue next
			}
		}
		return true
	}
	return false
}

func find(m *dto.Metric, name string) *dto.LabelPair {
	for _, lp := range m.Label {
		if lp.GetName() == name {
			return lp
		}
	}
	return nil
}

func pair(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: &name, Value: &value}
}

func sortLabels(m *dto.Metric) {
	slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
}

// seriesKey appends a key unique to the series' name and sorted labels.
func seriesKey(b []byte, name string, m *dto.Metric) []byte {
	b = append(b, name...)
	for _, lp := range m.Label {
		b = append(b, 0xff)
		b = append(b, lp.GetName()...)
		b = append(b, 0xfe)
		b = append(b, lp.GetValue()...)
	}
	return b
}

func compareMetrics(a, b *dto.Metric) int {
	for i := 0; i < len(a.Label) && i < len(b.Label); i++ {
		if c := strings.Compare(a.Label[i].GetName(), b.Label[i].GetName()); c != 0 {
			return c
		}
		if c := strings.Compare(a.Label[i].GetValue(), b.Label[i].GetValue()); c != 0 {
			return c
		}
	}
	return len(a.Label) - len(b.Label)
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
