// Package web is the HTTP plumbing shared by every telemeter binary: servers
// with timeouts and graceful shutdown, health and readiness endpoints, request
// instrumentation, the global in-flight gate, and the single place that turns
// protocol errors into HTTP answers.
//
// It knows nothing of uploads, stores or clusters, and must never read a
// request body on behalf of a handler.
package web
