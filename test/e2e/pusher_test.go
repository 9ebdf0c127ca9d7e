//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	"github.com/telemeter/telemeter/internal/upload"
)

// pusher plays many clusters against a server: token exchange, then
// uploads of a small gauge family whose value the test chooses.
type pusher struct {
	token  string // cluster token known to the authorizer
	client *http.Client

	mu     sync.Mutex
	tokens map[string]string // cluster ID → JWT
}

func newPusher(token string) *pusher {
	return &pusher{token: token, client: &http.Client{Timeout: 15 * time.Second}, tokens: map[string]string{}}
}

func (p *pusher) authorize(base, id string) (string, error) {
	p.mu.Lock()
	tok, ok := p.tokens[id]
	p.mu.Unlock()
	if ok {
		return tok, nil
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/authorize?id="+url.QueryEscape(id), nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("authorize %s: %d %s", id, resp.StatusCode, b)
	}
	var ar upload.AuthorizeResponse
	if err := json.Unmarshal(b, &ar); err != nil {
		return "", err
	}
	p.mu.Lock()
	p.tokens[id] = ar.Token
	p.mu.Unlock()
	return ar.Token, nil
}

// families builds the payload of one cluster: a gauge carrying seq.
func families(id string, seq float64, series int) []*dto.MetricFamily {
	mf := &dto.MetricFamily{Name: proto.String("e2e_sequence"), Type: dto.MetricType_GAUGE.Enum()}
	for i := 0; i < series; i++ {
		mf.Metric = append(mf.Metric, &dto.Metric{
			Label: []*dto.LabelPair{{Name: proto.String("series"), Value: proto.String(fmt.Sprint(i))}},
			Gauge: &dto.Gauge{Value: proto.Float64(seq)},
		})
	}
	return []*dto.MetricFamily{mf}
}

// push uploads seq for cluster id through the server at base and returns
// the status code.
func (p *pusher) push(ctx context.Context, base, id string, seq float64) (int, error) {
	tok, err := p.authorize(base, id)
	if err != nil {
		return 0, err
	}
	body, err := upload.Body(families(id, seq, 3))
	if err != nil {
		return 0, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/upload", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", upload.MediaTypeProtoDelim)
	req.Header.Set("Content-Encoding", upload.EncodingSnappy)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// federated reads a node's /federate and returns, per cluster ID, the value
// of e2e_sequence (and fails on a parse error: the output must be strict-clean).
func federated(internalURL string) (map[string]float64, error) {
	code, body, err := httpGet(internalURL+"/federate", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("federate: status %d", code)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse federate: %w", err)
	}
	out := map[string]float64{}
	if mf, ok := fams["e2e_sequence"]; ok {
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				if lp.GetName() == "_id" {
					out[lp.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out, nil
}

// metricValue reads one counter or gauge (summed over label sets matching
// all of the given label pairs) from a node's /metrics.
func metricValue(internalURL, name string, match ...string) (float64, error) {
	code, body, err := httpGet(internalURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("metrics: status %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	mf, ok := fams[name]
	if !ok {
		return 0, nil
	}
	sum := 0.0
next:
	for _, m := range mf.Metric {
		for i := 0; i+1 < len(match); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == match[i] && lp.GetValue() == match[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum, nil
}

func clusterIDs(n int, prefix string) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return ids
}
