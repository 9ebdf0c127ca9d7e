// Package push is the client side of the v1 upload protocol: it exchanges
// the cluster token for a short-lived JWT at /authorize, keeps that JWT fresh,
// and POSTs snappy-compressed delimited protobuf to /upload, retrying what the
// status code says may be retried (DESIGN §3) with capped exponential backoff
// and full jitter, and honouring Retry-After.
//
// It owns the HTTP client towards the telemeter server and the cached JWT.
// It must never scrape, transform or inspect the series it sends (the caller
// builds the body), never send a body larger than its byte limit, and never
// retry a 400, 403 or 413.
package push
