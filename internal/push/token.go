package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/model"

	"github.com/telemeter/telemeter/internal/upload"
)

// maxAuthorizeBody bounds the /authorize answer the client reads.
const maxAuthorizeBody = 64 << 10

// tokenSource exchanges the cluster token for a JWT at /authorize and caches
// it until refreshAt, a fraction of its lifetime, so that a push never
// starts with a token about to expire.
type tokenSource struct {
	url          *url.URL
	id           string
	clusterToken string
	tokenFile    string
	refresh      float64
	client       *http.Client
	timeout      time.Duration
	now          func() time.Time
	logger       *slog.Logger
	metrics      *metrics

	mu        sync.Mutex
	jwt       string
	labels    map[string]string
	refreshAt time.Time // zero: only on a 401
	expiresAt time.Time // zero: unknown
}

// get returns a JWT and the labels /authorize asked for, fetching a new pair
// when there is none or the cached one is due for refresh. If a refresh
// fails while the cached token has not expired yet, the cached one is used.
func (t *tokenSource) get(ctx context.Context) (string, map[string]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if t.jwt != "" && (t.refreshAt.IsZero() || now.Before(t.refreshAt)) {
		return t.jwt, t.labels, nil
	}
	err := t.fetch(ctx, now)
	if err == nil {
		return t.jwt, t.labels, nil
	}
	if t.jwt != "" && now.Before(t.expiresAt) && ctx.Err() == nil {
		t.logger.Warn("token refresh failed, using the current token until it expires",
			"err", err, "expires_in", t.expiresAt.Sub(now).Round(time.Second).String())
		return t.jwt, t.labels, nil
	}
	return "", nil, err
}

// invalidate drops the cached token if it is still jwt (the one a 401 was
// answered for), so the next get authorizes again. An empty jwt drops any.
func (t *tokenSource) invalidate(jwt string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if jwt == "" || t.jwt == jwt {
		t.jwt, t.labels = "", nil
		t.refreshAt, t.expiresAt = time.Time{}, time.Time{}
	}
}

func (t *tokenSource) fetch(ctx context.Context, now time.Time) error {
	t.metrics.tokenRefreshes.Inc()
	resp, err := t.exchange(ctx)
	if err != nil {
		t.metrics.tokenFailures.Inc()
		return err
	}
	t.jwt, t.labels = resp.Token, resp.Labels
	t.refreshAt, t.expiresAt = time.Time{}, time.Time{}
	if resp.ExpiresInSeconds > 0 {
		life := time.Duration(resp.ExpiresInSeconds) * time.Second
		t.expiresAt = now.Add(life)
		t.refreshAt = now.Add(time.Duration(t.refresh * float64(life)))
	}
	t.logger.Debug("authorized", "expires_in_seconds", resp.ExpiresInSeconds, "labels", len(resp.Labels))
	return nil
}

func (t *tokenSource) exchange(ctx context.Context) (*upload.AuthorizeResponse, error) {
	token := t.clusterToken
	if t.tokenFile != "" {
		var err error
		if token, err = ReadToken(t.tokenFile); err != nil {
			return nil, permanent(fmt.Errorf("authorize: %w", err))
		}
	}
	u := *t.url
	q := u.Query()
	q.Set("id", t.id)
	u.RawQuery = q.Encode()

	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), http.NoBody)
	if err != nil {
		return nil, permanent(fmt.Errorf("authorize: %w", err))
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	defer drain(resp)
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAuthorizeBody+1))
	if err != nil {
		return nil, fmt.Errorf("authorize: read answer: %w", err)
	}
	if err := upload.FromResponse(resp, body); err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	if len(body) > maxAuthorizeBody {
		return nil, fmt.Errorf("authorize: answer larger than %d bytes", maxAuthorizeBody)
	}
	var ar upload.AuthorizeResponse
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&ar); err != nil {
		return nil, fmt.Errorf("authorize: decode answer: %w", err)
	}
	if ar.Token == "" {
		return nil, fmt.Errorf("authorize: answer carries no token")
	}
	for name := range ar.Labels {
		if !model.LegacyValidation.IsValidLabelName(name) || strings.HasPrefix(name, "__") {
			return nil, permanent(fmt.Errorf("authorize: answer asks for invalid label name %q", name))
		}
	}
	ar.Labels = maps.Clone(ar.Labels)
	return &ar, nil
}

// ReadToken returns the trimmed content of a token file. An empty file is
// an error: sending no credentials by accident is worse than failing.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("read token file %s: file is empty", path)
	}
	return tok, nil
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
