// Package validate decides what of a decoded upload the server may store:
// the cluster's identity labels present and equal (another cluster's `_id` is
// refused, never stored), timestamps inside the accepted window, the
// allowlist, elided and server-set labels, uniqueness of series, and the
// per-cluster series budget.
//
// It works on families that upload.Decode already checked for structure and
// limits. It must never do I/O or keep state between uploads beyond metrics.
package validate
