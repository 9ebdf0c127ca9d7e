package auth

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/telemeter/telemeter/internal/upload"
	"github.com/telemeter/telemeter/internal/web"
)

// maxAuthorizeFormBytes bounds the url-encoded body of an /authorize request.
const maxAuthorizeFormBytes = 4 << 10

// defaultUnavailableRetryAfter is asked of clients when an authorizer fails
// without saying how long to wait.
const defaultUnavailableRetryAfter = 5 * time.Second

type authorizeHandler struct {
	authorizer Authorizer
	issuer     *Issuer
	labels     func(clusterID string) map[string]string
	logger     *slog.Logger
	results    *prometheus.CounterVec
}

// NewAuthorizeHandler serves the /authorize endpoint of DESIGN §3: POST
// with the cluster ID in the query or an url-encoded form body (?id=...) and
// "Authorization: Bearer <cluster token>". It asks a whether the token may
// claim the ID, then answers an upload.AuthorizeResponse with a token from
// iss carrying labels(id). The "_id" label is always the cluster ID,
// whatever labels returns; labels may be nil. Refusals are one line of plain
// text with the status upload.StatusCode gives (409 when another account
// owns the ID); 429 and 503 carry Retry-After.
func NewAuthorizeHandler(a Authorizer, iss *Issuer, labels func(clusterID string) map[string]string, logger *slog.Logger, reg prometheus.Registerer) http.Handler {
	h := &authorizeHandler{
		authorizer: a,
		issuer:     iss,
		labels:     labels,
		logger:     logger,
		results: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_authorize_requests_total",
			Help: "Requests to /authorize by result: issued, or the status they were refused with.",
		}, []string{"result"}),
	}
	h.results.WithLabelValues("issued")
	return h
}

func (h *authorizeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		h.refuse(w, "", upload.Errorf(upload.ErrMethodNotAllowed, "use POST"))
		return
	}
	// Cheap checks first: the header before the body.
	token, err := bearerToken(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="telemeter"`)
		h.refuse(w, "", err)
		return
	}
	id, err := clusterIDOf(w, r)
	if err != nil {
		h.refuse(w, "", err)
		return
	}
	if err := ValidateClusterID(id); err != nil {
		h.refuse(w, "", err)
		return
	}

	account, err := h.authorizer.Authorize(r.Context(), token, id)
	if err != nil {
		if upload.StatusCode(err) == http.StatusServiceUnavailable && upload.RetryAfter(err) <= 0 {
			err = &upload.StatusError{Err: err, RetryAfter: defaultUnavailableRetryAfter}
		}
		h.refuse(w, id, err)
		return
	}

	labels := make(map[string]string)
	if h.labels != nil {
		for k, v := range h.labels(id) {
			labels[k] = v
		}
	}
	labels[upload.IDLabel] = id
	signed, ttl, err := h.issuer.Issue(id, account, labels)
	if err != nil {
		h.refuse(w, id, err)
		return
	}
	body, err := json.Marshal(upload.AuthorizeResponse{
		Version:          1,
		Token:            signed,
		ExpiresInSeconds: int64(ttl / time.Second),
		Labels:           labels,
	})
	if err != nil {
		h.refuse(w, id, err)
		return
	}
	h.results.WithLabelValues("issued").Inc()
	h.logger.Debug("token issued", "cluster", id, "account", account)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

func (h *authorizeHandler) refuse(w http.ResponseWriter, id string, err error) {
	code := upload.StatusCode(err)
	h.results.WithLabelValues(strconv.Itoa(code)).Inc()
	switch {
	case code >= 500:
		h.logger.Warn("authorize failed", "cluster", id, "code", code, "err", err)
	default:
		h.logger.Debug("authorize refused", "cluster", id, "code", code, "err", err)
	}
	web.WriteError(w, err)
}

// bearerToken returns the credentials of "Authorization: Bearer <token>".
func bearerToken(r *http.Request) (string, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return "", upload.Errorf(upload.ErrUnauthorized, "missing Authorization header")
	}
	if len(values) > 1 {
		return "", upload.Errorf(upload.ErrUnauthorized, "more than one Authorization header")
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", upload.Errorf(upload.ErrUnauthorized, "want Authorization: Bearer <token>")
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", upload.Errorf(upload.ErrUnauthorized, "empty bearer token")
	}
	return token, nil
}

// clusterIDOf reads the id parameter from the query and, for an url-encoded
// form, from the body (at most maxAuthorizeFormBytes). More than one
// distinct value is an error.
func clusterIDOf(w http.ResponseWriter, r *http.Request) (string, error) {
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "", upload.Errorf(upload.ErrInvalid, "malformed query string")
	}
	ids := query["id"]

	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "application/x-www-form-urlencoded" {
		if r.ContentLength > maxAuthorizeFormBytes {
			return "", upload.Errorf(upload.ErrTooLarge, "form body larger than %d bytes", maxAuthorizeFormBytes)
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAuthorizeFormBytes))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return "", upload.Errorf(upload.ErrTooLarge, "form body larger than %d bytes", maxAuthorizeFormBytes)
			}
			return "", upload.Errorf(upload.ErrInvalid, "read form body: %v", err)
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return "", upload.Errorf(upload.ErrInvalid, "malformed form body")
		}
		ids = append(ids, form["id"]...)
	}

	if len(ids) == 0 {
		return "", upload.Errorf(upload.ErrInvalid, "missing cluster id: want ?id=<cluster-id>")
	}
	for _, id := range ids[1:] {
		if id != ids[0] {
			return "", upload.Errorf(upload.ErrInvalid, "more than one cluster id")
		}
	}
	return ids[0], nil
}
