package upload

// Media types and content codings of the v1 protocol.
const (
	// MediaTypeProtoDelim is the body of an upload: length-delimited
	// io.prometheus.client.MetricFamily messages.
	MediaTypeProtoDelim = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
	// MediaTypeText is the Prometheus text exposition format 0.0.4.
	MediaTypeText = "text/plain; version=0.0.4"
	// EncodingSnappy is the Content-Encoding of a snappy-compressed body.
	EncodingSnappy = "snappy"
)

// AuthorizeResponse is the JSON body of a 200 from /authorize.
type AuthorizeResponse struct {
	Version          int               `json:"version"`
	Token            string            `json:"token"`
	ExpiresInSeconds int64             `json:"expiresInSeconds"`
	Labels           map[string]string `json:"labels,omitempty"`
}

// TokenReview is the body the server sends to an upstream authorizer, and
// the authorizer's answer: a non-empty AccountID means allowed.
type TokenReview struct {
	ClusterID          string `json:"cluster_id"`
	AuthorizationToken string `json:"authorization_token"`
	AccountID          string `json:"account_id"`
}

// IDLabel is the label that names the source cluster on every series.
const IDLabel = "_id"
