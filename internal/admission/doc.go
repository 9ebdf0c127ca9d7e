// Package admission owns the server's defences against abuse through volume
// and time: the in-flight body bytes budget, shedding under memory pressure,
// the minimum transfer rate of request bodies, the cap on open connections,
// and the detection of two writers pushing for one cluster.
//
// Each part answers a cheap yes or no before work is done. Refusals are
// protocol conditions from package upload (ErrUnavailable with Retry-After,
// ErrInvalid for a body that arrives too slowly), so the one place that maps
// errors to HTTP status also maps these. Budget.Acquire's refusals,
// Pressure.Check and Writers.Observe of a known writer do not allocate: a
// flood costs the server no garbage.
//
// Fairness of the bytes budget across clusters comes from two rules working
// together. The per-cluster rate limiter (package limit) lets a cluster have
// at most one upload in flight on a node, so one cluster never holds more
// than one body's worth of the budget there; and the budget refuses a single
// acquisition larger than a quarter of its total unless it is idle, so one
// huge request cannot take it all while others wait.
//
// The package must never read or decode payloads, know about clusters'
// data, the store or the ring, or block a request: every refusal is
// immediate.
package admission
