// Package scrape reads the metrics a telemeter client forwards: one GET of a
// Prometheus server's /federate endpoint with a match[] parameter per rule,
// decoded under limits into metric families.
//
// It owns the HTTP client used towards Prometheus (bearer token, CA bundle,
// content negotiation). It must never transform, filter or keep the data it
// reads, and must never send anything to the telemeter server.
package scrape
