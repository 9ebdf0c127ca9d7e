package remotewrite

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

func TestParseCredential(t *testing.T) {
	std := base64.StdEncoding.EncodeToString
	raw := base64.RawStdEncoding.EncodeToString
	url := base64.URLEncoding.EncodeToString
	for _, tc := range []struct {
		name, bearer     string
		token, clusterID string
		err              string // empty: valid
	}{
		{
			name:   "as the original telemeter's clients send it",
			bearer: std([]byte(`{"authorization_token":"tok","cluster_id":"0b1c-42"}`)),
			token:  "tok", clusterID: "0b1c-42",
		},
		{
			name:   "whole header value",
			bearer: "Bearer " + std([]byte(`{"authorization_token":"tok","cluster_id":"c"}`)),
			token:  "tok", clusterID: "c",
		},
		{
			name:   "scheme in lower case, extra spaces",
			bearer: "  bearer   " + std([]byte(`{"authorization_token":"tok","cluster_id":"c"}`)) + " ",
			token:  "tok", clusterID: "c",
		},
		{
			name:   "unpadded",
			bearer: raw([]byte(`{"authorization_token":"t","cluster_id":"c"}`)),
			token:  "t", clusterID: "c",
		},
		{
			name:   "URL-safe alphabet",
			bearer: url([]byte(`{"authorization_token":"??>>","cluster_id":"c"}`)),
			token:  "??>>", clusterID: "c",
		},
		{
			name:   "other fields ignored",
			bearer: std([]byte(`{"authorization_token":"t","cluster_id":"c","account_id":"x","n":1}`)),
			token:  "t", clusterID: "c",
		},
		{
			name:   "unicode cluster ID",
			bearer: std([]byte(`{"authorization_token":"t","cluster_id":"grüße"}`)),
			token:  "t", clusterID: "grüße",
		},
		{name: "empty", bearer: "", err: "empty"},
		{name: "only the scheme", bearer: "Bearer ", err: "empty"},
		{name: "basic scheme", bearer: "Basic " + std([]byte("u:p")), err: "scheme"},
		{name: "not base64", bearer: "!!!notbase64", err: "base64"},
		{name: "base64 of garbage", bearer: std([]byte("garbage")), err: "JSON"},
		{name: "JSON array", bearer: std([]byte(`["a"]`)), err: "JSON"},
		{name: "number field", bearer: std([]byte(`{"authorization_token":1,"cluster_id":"c"}`)), err: "JSON"},
		{name: "trailing data", bearer: std([]byte(`{"authorization_token":"t","cluster_id":"c"}{}`)), err: "after"},
		{name: "no token", bearer: std([]byte(`{"cluster_id":"c"}`)), err: "authorization_token"},
		{name: "empty token", bearer: std([]byte(`{"authorization_token":"","cluster_id":"c"}`)), err: "authorization_token"},
		{name: "null token", bearer: std([]byte(`{"authorization_token":null,"cluster_id":"c"}`)), err: "authorization_token"},
		{name: "no cluster ID", bearer: std([]byte(`{"authorization_token":"t"}`)), err: "cluster_id"},
		{name: "cluster ID with a newline", bearer: std([]byte(`{"authorization_token":"t","cluster_id":"a\nb"}`)), err: "cluster_id"},
		{name: "cluster ID too long", bearer: std([]byte(`{"authorization_token":"t","cluster_id":"` + strings.Repeat("c", 2049) + `"}`)), err: "cluster_id"},
		{name: "invalid UTF-8", bearer: std([]byte("{\"authorization_token\":\"t\",\"cluster_id\":\"\xff\"}")), err: "UTF-8"},
		{name: "too long", bearer: strings.Repeat("A", 8<<10+4), err: "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token, id, err := ParseCredential(tc.bearer)
			if tc.err == "" {
				require.NoError(t, err)
				require.Equal(t, tc.token, token)
				require.Equal(t, tc.clusterID, id)
				return
			}
			require.ErrorIs(t, err, upload.ErrUnauthorized)
			require.Equal(t, http.StatusUnauthorized, upload.StatusCode(err))
			require.ErrorContains(t, err, tc.err)
			require.Empty(t, token)
			require.Empty(t, id)
		})
	}
}

func TestParseCredentialNeverQuotesTheToken(t *testing.T) {
	secret := "sup3r-s3cret-t0ken"
	for _, body := range []string{
		`{"authorization_token":"` + secret + `"}`,
		`{"authorization_token":"` + secret + "\x01" + `","cluster_id":"c"}`,
		`{"authorization_token":"` + secret + `",`,
	} {
		_, _, err := ParseCredential(base64.StdEncoding.EncodeToString([]byte(body)))
		require.Error(t, err)
		require.NotContains(t, err.Error(), secret)
	}
}
