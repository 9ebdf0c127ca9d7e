package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/telemeter/telemeter/internal/admission"
	"github.com/telemeter/telemeter/internal/auth"
	"github.com/telemeter/telemeter/internal/forward"
	"github.com/telemeter/telemeter/internal/limit"
	"github.com/telemeter/telemeter/internal/store"
	"github.com/telemeter/telemeter/internal/upload"
	"github.com/telemeter/telemeter/internal/web"
)

// handleUpload is the pipeline of DESIGN §4, cheapest rejection first:
// method, token, rate limit, then the body under limits, validation, and a
// durable write. Only a stored snapshot is answered 200.
func (s *server) handleUpload(w http.ResponseWriter, r *http.Request) {
	s.serveIngest(w, r, s.upload, http.StatusOK)
}

// serveIngest answers an ingest request (an upload or a remote write):
// the owner's relayed answer, an error, or ok once stored.
func (s *server) serveIngest(w http.ResponseWriter, r *http.Request, ingest func(http.ResponseWriter, *http.Request) (*forward.Answer, error), ok int) {
	start := time.Now()
	relayed, err := ingest(w, r)
	if relayed != nil {
		// The owner answered a forwarded upload: relay its answer.
		s.metrics.observeStatus(relayed.Status, time.Since(start))
		if relayed.RetryAfter != "" {
			w.Header().Set("Retry-After", relayed.RetryAfter)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(relayed.Status)
		_, _ = w.Write(relayed.Body)
		return
	}
	s.metrics.observeUpload(err, time.Since(start))
	if err != nil {
		if upload.StatusCode(err) == http.StatusInternalServerError {
			s.logger.Error("upload failed", "err", err)
		} else {
			s.logger.Debug("upload refused", "err", err)
		}
		if upload.StatusCode(err) == http.StatusRequestEntityTooLarge {
			// The rest of the body is not read: do not keep the connection.
			w.Header().Set("Connection", "close")
		}
		web.WriteError(w, err)
		return
	}
	w.WriteHeader(ok)
}

func (s *server) upload(w http.ResponseWriter, r *http.Request) (*forward.Answer, error) {
	if r.Method != http.MethodPost {
		return nil, upload.ErrMethodNotAllowed
	}
	if err := s.pressure.Check(); err != nil {
		return nil, err
	}
	if r.ContentLength > s.o.Limits.CompressedBytes {
		return nil, upload.Errorf(upload.ErrTooLarge, "body of %d bytes exceeds --limit-bytes %d", r.ContentLength, s.o.Limits.CompressedBytes)
	}
	claims, err := s.authenticate(r)
	if err != nil {
		return nil, err
	}
	// A cloned cluster or a stolen token: two writers alternating on one ID.
	s.writers.Observe(claims.ClusterID, claims.ID)
	forwarded, err := s.checkForwarded(r)
	if err != nil {
		return nil, err
	}
	res, err := s.limiter.Reserve(claims.ClusterID)
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			res.Cancel()
		}
	}()
	// Bytes in flight are bounded across all clusters; each cluster holds at
	// most one upload's worth (the reservation above).
	release, err := s.budget.Acquire(admission.RequestBytes(r, s.o.Limits.CompressedBytes))
	if err != nil {
		return nil, err
	}
	defer release()
	body := admission.MinRateReader(r.Body, http.NewResponseController(w), s.o.MinBodyRate, minBodyGrace, time.Now)

	if ans, err := s.route(r, claims.ClusterID, forwarded, res, body, s.o.Limits.CompressedBytes); ans != nil || err != nil {
		committed = true // route settled the reservation
		return ans, err
	}

	// Families already in the form validation gives them go to the store
	// as they came (validate.Verbatim); the rest are decoded and validated.
	verbatim := s.validator.Verbatim(claims.ClusterID, claims.Labels, s.o.Limits)
	defer verbatim.Release()
	families, err := upload.DecodeTaking(body, r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"), s.o.Limits, verbatim.Take)
	if err != nil {
		return nil, err
	}
	received := time.Now()
	encoded, result, err := verbatim.Finish(families)
	if err != nil {
		return nil, err
	}
	meta, err := s.store.PutEncoded(claims.ClusterID, received, encoded, result.Families)
	if err != nil {
		return nil, err
	}
	res.Commit()
	committed = true
	s.metrics.familiesVerbatim.Add(float64(len(encoded)))
	s.metrics.familiesDecoded.Add(float64(len(result.Families)))
	s.stored(r.Context(), meta)
	return nil, nil
}

// route sends a request for a cluster another node owns to that node, once,
// and settles the reservation by the owner's answer. The entry node's own
// rate limit bounds what a client spraying every node can send to the
// owner: limit × nodes. It returns nil, nil when this node owns the cluster.
func (s *server) route(r *http.Request, clusterID string, forwarded bool, res *limit.Reservation, body io.Reader, limitBytes int64) (*forward.Answer, error) {
	if s.placement == nil || forwarded {
		return nil, nil
	}
	owner, url := s.placement.owner(clusterID)
	if owner == s.placement.self {
		return nil, nil
	}
	if url == "" {
		res.Cancel()
		return nil, upload.WithRetryAfter(upload.ErrUnavailable, 5*time.Second, "owner "+owner+" has no address yet")
	}
	ans, err := s.placement.fwd.Upload(r.Context(), url, r, io.LimitReader(body, limitBytes+1))
	if err != nil {
		res.Cancel()
		return nil, err
	}
	if ans.Status/100 == 2 || ans.Status == http.StatusTooManyRequests {
		res.Commit()
	} else {
		res.Cancel()
	}
	return ans, nil
}

// stored runs what follows a durable write: replicas, remote write.
func (s *server) stored(ctx context.Context, meta store.Meta) {
	if s.placement != nil {
		s.placement.replicate(ctx, meta)
	}
	if s.remoteWrite != nil {
		s.remoteWrite.Notify(meta.ClusterID, meta.Received)
	}
}

// checkForwarded verifies the peer token of a forwarded request.
func (s *server) checkForwarded(r *http.Request) (bool, error) {
	if r.Header.Get(forward.HeaderForwardedBy) == "" {
		return false, nil
	}
	if s.placement == nil {
		return true, upload.Errorf(upload.ErrForbidden, "forwarded request to a node outside a cluster")
	}
	_, err := s.placement.checkPeer(r)
	return true, err
}

// minBodyGrace is how long a body may take before --min-body-rate applies.
const minBodyGrace = 10 * time.Second

// authenticate checks the upload token: structure first, then signature,
// expiry and audience (auth.Verifier).
func (s *server) authenticate(r *http.Request) (*auth.Claims, error) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, upload.Errorf(upload.ErrUnauthorized, "missing bearer token")
	}
	claims, err := s.verifier.Verify(strings.TrimSpace(token))
	if err != nil {
		if !errors.Is(err, upload.ErrUnauthorized) {
			err = upload.Errorf(upload.ErrUnauthorized, "%v", err)
		}
		return nil, err
	}
	if err := auth.ValidateClusterID(claims.ClusterID); err != nil {
		return nil, upload.Errorf(upload.ErrUnauthorized, "token names no valid cluster")
	}
	// In mTLS identity mode a forwarded upload was checked by the entry
	// node, which holds the client's certificate; the peer token vouches.
	if r.Header.Get(forward.HeaderForwardedBy) == "" {
		cn, err := s.certIdentity(r)
		if err != nil {
			return nil, err
		}
		if cn != "" && cn != claims.ClusterID {
			return nil, upload.Errorf(upload.ErrForbidden, "certificate for %q cannot push for cluster %q", cn, claims.ClusterID)
		}
	}
	return claims, nil
}
