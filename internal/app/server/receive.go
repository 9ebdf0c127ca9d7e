package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/telemeter/telemeter/internal/admission"
	"github.com/telemeter/telemeter/internal/auth"
	"github.com/telemeter/telemeter/internal/forward"
	"github.com/telemeter/telemeter/internal/remotewrite"
	"github.com/telemeter/telemeter/internal/store"
	"github.com/telemeter/telemeter/internal/upload"
)

// receivePath is where Prometheus servers and agents remote-write.
const receivePath = "/metrics/v1/receive"

func (s *server) handleReceive(w http.ResponseWriter, r *http.Request) {
	s.serveIngest(w, r, s.receive, http.StatusNoContent)
}

// receive ingests a remote-write request (DESIGN §3 extension, as in
// openshift/telemeter): the bearer credential is base64 of JSON naming the
// cluster token and ID, checked against the authorizer; then the same rate
// limit, routing, limits, validation and store as /upload. A request
// carries part of a cluster's series, so it is merged into the snapshot.
func (s *server) receive(w http.ResponseWriter, r *http.Request) (*forward.Answer, error) {
	if r.Method != http.MethodPost {
		return nil, upload.ErrMethodNotAllowed
	}
	if err := s.pressure.Check(); err != nil {
		return nil, err
	}
	limits := s.receiveLimits
	if r.ContentLength > limits.CompressedBytes {
		return nil, upload.Errorf(upload.ErrTooLarge, "body of %d bytes exceeds %d", r.ContentLength, limits.CompressedBytes)
	}
	token, clusterID, err := remotewrite.ParseCredential(r.Header.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	if err := auth.ValidateClusterID(clusterID); err != nil {
		return nil, upload.Errorf(upload.ErrUnauthorized, "credential names no valid cluster")
	}
	forwarded, err := s.checkForwarded(r)
	if err != nil {
		return nil, err
	}
	if !forwarded {
		cn, err := s.certIdentity(r)
		if err != nil {
			return nil, err
		}
		if cn != "" && cn != clusterID {
			return nil, upload.Errorf(upload.ErrForbidden, "certificate for %q cannot write for cluster %q", cn, clusterID)
		}
	}
	if _, err := s.authorizer.Authorize(r.Context(), token, clusterID); err != nil {
		return nil, err
	}
	res, err := s.receiveLimiter.Reserve(clusterID)
	if err != nil {
		return nil, err
	}
	settled := false
	defer func() {
		if !settled {
			res.Cancel()
		}
	}()
	release, err := s.budget.Acquire(admission.RequestBytes(r, limits.CompressedBytes))
	if err != nil {
		return nil, err
	}
	defer release()
	body := admission.MinRateReader(r.Body, http.NewResponseController(w), s.o.MinBodyRate, minBodyGrace, time.Now)
	if ans, err := s.route(r, clusterID, forwarded, res, body, limits.CompressedBytes); ans != nil || err != nil {
		settled = true
		return ans, err
	}

	if err := remotewrite.CheckContentType(r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	wr, err := remotewrite.DecodeWriteRequest(body, r.Header.Get("Content-Encoding"), limits)
	if err != nil {
		return nil, err
	}
	incoming, err := remotewrite.ToFamilies(wr)
	if err != nil {
		return nil, err
	}
	received := time.Now()
	stored, _, err := s.store.Families(clusterID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	merged := remotewrite.Merge(stored, incoming, received.Add(-s.o.MaxAge).UnixMilli())
	result, err := s.validator.Validate(clusterID, map[string]string{s.o.PartitionLabel: clusterID}, merged)
	if err != nil {
		return nil, err
	}
	meta, err := s.store.Put(clusterID, received, result.Families)
	if err != nil {
		return nil, err
	}
	res.Commit()
	settled = true
	s.stored(r.Context(), meta)
	return nil, nil
}
