// Package client is the composition root of telemeter-client: it turns
// Options into a scraper, a transform chain and a pusher, runs the
// scrape → transform → push loop and the HTTP endpoints as oklog/run actors,
// and reloads the file-backed configuration on SIGHUP or POST /-/reload.
//
// It owns the client's configuration, schedule and last pushed batch. It must
// never handle signals itself (main turns them into a context and a reload
// channel), speak the wire protocol (internal/push does), or transform series
// other than by composing internal/transform.
package client
