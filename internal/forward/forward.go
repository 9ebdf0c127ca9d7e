package forward

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/upload"
)

// Headers of node-to-node requests.
const (
	// HeaderPeerToken carries the sending node's peer token.
	HeaderPeerToken = "X-Telemeter-Peer-Token"
	// HeaderForwardedBy names the node that forwarded an upload. An upload
	// carrying it (with a valid peer token) is never forwarded again.
	HeaderForwardedBy = "X-Telemeter-Forwarded-By"
)

// Paths of the peer API, on each node's external listener.
const (
	PathSnapshot = "/peer/snapshot"
)

// Options configure a Client.
type Options struct {
	Node        string                 // this node's name
	PeerToken   func() (string, error) // mints a peer token
	MaxInflight int                    // concurrent forwards, default 64
	Timeout     time.Duration          // per request, default 10s
	HTTPClient  *http.Client           // default: a client with Timeout
	RetryAfter  time.Duration          // asked of clients when a peer is down, default 5s
}

// Client sends requests to peers.
type Client struct {
	o       Options
	slots   chan struct{}
	logger  *slog.Logger
	metrics struct {
		forwards  *prometheus.CounterVec
		duration  prometheus.Histogram
		transfers *prometheus.CounterVec
	}
}

// New returns a Client.
func New(o Options, logger *slog.Logger, reg prometheus.Registerer) *Client {
	if o.MaxInflight <= 0 {
		o.MaxInflight = 64
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = 5 * time.Second
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: o.Timeout}
	}
	c := &Client{o: o, slots: make(chan struct{}, o.MaxInflight), logger: logger}
	f := promauto.With(reg)
	c.metrics.forwards = f.NewCounterVec(prometheus.CounterOpts{
		Name: "telemeter_server_forwards_total",
		Help: "Uploads forwarded to the owning node, by result (the owner's status code, or error).",
	}, []string{"result"})
	c.metrics.duration = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "telemeter_server_forward_duration_seconds",
		Help:    "Time to forward an upload to its owner and get the answer.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
	})
	c.metrics.transfers = f.NewCounterVec(prometheus.CounterOpts{
		Name: "telemeter_server_snapshot_transfers_total",
		Help: "Snapshots sent to peers for hand-off or replication, by kind and result.",
	}, []string{"kind", "result"})
	for _, r := range []string{"200", "error", "busy"} {
		c.metrics.forwards.WithLabelValues(r)
	}
	return c
}

// Answer is a peer's answer to a forwarded upload, to relay to the client.
type Answer struct {
	Status     int
	RetryAfter string
	Body       []byte
}

// Upload proxies the client's upload r (to /upload or the remote-write
// receiver: r's path is kept), whose body has not been read, to
// the owner at ownerURL (the owner's API base URL). The owner verifies the
// client's token and the payload like any upload. body is r's body, already
// capped by the caller.
func (c *Client) Upload(ctx context.Context, ownerURL string, r *http.Request, body io.Reader) (*Answer, error) {
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	default:
		c.metrics.forwards.WithLabelValues("busy").Inc()
		return nil, upload.WithRetryAfter(upload.ErrUnavailable, c.o.RetryAfter, "too many uploads being forwarded")
	}
	start := time.Now()
	defer func() { c.metrics.duration.Observe(time.Since(start).Seconds()) }()

	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ownerURL+r.URL.Path, body)
	if err != nil {
		return nil, fmt.Errorf("forward upload: %w", err)
	}
	req.ContentLength = r.ContentLength
	for _, h := range []string{"Authorization", "Content-Type", "Content-Encoding", "User-Agent"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	if err := c.sign(req); err != nil {
		return nil, err
	}
	req.Header.Set(HeaderForwardedBy, c.o.Node)
	resp, err := c.o.HTTPClient.Do(req)
	if err != nil {
		c.metrics.forwards.WithLabelValues("error").Inc()
		return nil, upload.WithRetryAfter(upload.ErrUnavailable, c.o.RetryAfter, "owner unreachable")
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		c.metrics.forwards.WithLabelValues("error").Inc()
		return nil, upload.WithRetryAfter(upload.ErrUnavailable, c.o.RetryAfter, "owner answer cut off")
	}
	c.metrics.forwards.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
	return &Answer{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Body: b}, nil
}

// Kinds of snapshot transfer, for metrics and logs.
const (
	KindReplica = "replica"
	KindHandoff = "handoff"
)

// PushSnapshot sends a raw snapshot (the store's file bytes) to the peer at
// peerURL, which verifies and stores it durably before answering 2xx.
func (c *Client) PushSnapshot(ctx context.Context, peerURL, kind string, raw []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, peerURL+PathSnapshot, bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("push snapshot: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if err := c.sign(req); err != nil {
		return err
	}
	resp, err := c.o.HTTPClient.Do(req)
	if err != nil {
		c.metrics.transfers.WithLabelValues(kind, "error").Inc()
		return fmt.Errorf("push snapshot to %s: %w", peerURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	c.metrics.transfers.WithLabelValues(kind, strconv.Itoa(resp.StatusCode)).Inc()
	// 409: the peer holds newer data already, which is as good as stored.
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusConflict {
		return nil
	}
	return fmt.Errorf("push snapshot to %s: %w", peerURL, upload.FromResponse(resp, b))
}

func (c *Client) sign(req *http.Request) error {
	tok, err := c.o.PeerToken()
	if err != nil {
		return fmt.Errorf("mint peer token: %w", err)
	}
	req.Header.Set(HeaderPeerToken, tok)
	return nil
}
