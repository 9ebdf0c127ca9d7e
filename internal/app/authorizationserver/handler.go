package authorizationserver

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telemeter/telemeter/internal/auth"
	"github.com/telemeter/telemeter/internal/upload"
	"github.com/telemeter/telemeter/internal/web"
)

// reviewHandler answers token reviews (DESIGN §3, upstream authorizer
// protocol): POST a JSON upload.TokenReview; 201 when this review claimed
// the cluster ID, 200 when the account already held it, both with the
// account_id; otherwise a JSON {"error": "..."} with
//
//	400 malformed JSON or cluster ID   401 missing or unknown token
//	403 token bound to other IDs       405 not POST
//	409 ID claimed by another account  413 body over the limit
//	415 not application/json           503 claim not persisted (Retry-After)
type reviewHandler struct {
	tokens  auth.Authorizer
	claims  *claimStore
	maxBody int64
	logger  *slog.Logger
	results *prometheus.CounterVec
}

func (h *reviewHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		h.fail(w, "", upload.Errorf(upload.ErrMethodNotAllowed, "use POST"))
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		h.fail(w, "", upload.Errorf(upload.ErrUnsupportedMedia, "want Content-Type: application/json"))
		return
	}
	if r.ContentLength > h.maxBody {
		h.fail(w, "", upload.Errorf(upload.ErrTooLarge, "body larger than %d bytes", h.maxBody))
		return
	}
	var review upload.TokenReview
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err := dec.Decode(&review); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.fail(w, "", upload.Errorf(upload.ErrTooLarge, "body larger than %d bytes", h.maxBody))
			return
		}
		h.fail(w, "", upload.Errorf(upload.ErrInvalid, "malformed JSON body"))
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		h.fail(w, "", upload.Errorf(upload.ErrInvalid, "data after the JSON object"))
		return
	}
	if review.AuthorizationToken == "" {
		h.fail(w, "", upload.Errorf(upload.ErrUnauthorized, "missing authorization_token"))
		return
	}
	if err := auth.ValidateClusterID(review.ClusterID); err != nil {
		h.fail(w, "", err)
		return
	}

	account, err := h.tokens.Authorize(r.Context(), review.AuthorizationToken, review.ClusterID)
	if err != nil {
		h.fail(w, review.ClusterID, err)
		return
	}
	created, err := h.claims.Claim(r.Context(), review.ClusterID, account)
	if err != nil {
		h.fail(w, review.ClusterID, err)
		return
	}

	code, result := http.StatusOK, "reclaimed"
	if created {
		code, result = http.StatusCreated, "claimed"
		h.logger.Info("cluster id claimed", "cluster", review.ClusterID, "account", account)
	}
	h.results.WithLabelValues(result).Inc()
	writeJSON(w, code, upload.TokenReview{ClusterID: review.ClusterID, AccountID: account})
}

// fail answers err as JSON with the status upload.StatusCode gives it.
func (h *reviewHandler) fail(w http.ResponseWriter, cluster string, err error) {
	code := upload.StatusCode(err)
	msg := err.Error()
	switch {
	case code == http.StatusInternalServerError:
		msg = "internal error"
		h.logger.Error("review failed", "cluster", cluster, "err", err)
	case code >= 500:
		h.logger.Warn("review failed", "cluster", cluster, "err", err)
	case code == http.StatusConflict:
		h.logger.Info("claim refused", "cluster", cluster, "err", err)
	default:
		h.logger.Debug("review refused", "cluster", cluster, "code", code, "err", err)
	}
	h.results.WithLabelValues(resultFor(code)).Inc()
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", upload.FormatRetryAfter(web.Jitter(upload.RetryAfter(err))))
	}
	if code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{msg})
}

func resultFor(code int) string {
	switch code {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusMethodNotAllowed:
		return "invalid"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusConflict:
		return "conflict"
	}
	return "error"
}

var reviewResults = []string{"claimed", "reclaimed", "invalid", "unauthorized", "forbidden", "conflict", "error"}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// notFound answers paths this server does not serve, in the same JSON form.
func notFound(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusNotFound, struct {
		Error string `json:"error"`
	}{"not found: POST / or /authorize"})
}
