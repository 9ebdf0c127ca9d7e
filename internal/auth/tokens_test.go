package auth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/telemeter/telemeter/internal/upload"
)

func TestTokensFileAuthorize(t *testing.T) {
	tokens, err := ParseTokens([]byte(`[
		{"token": "open"},
		{"token": "bound", "account_id": "acme", "cluster_ids": ["prod-1", "prod-2"], "comment": "ACME"},
		{"token": "bound-too", "account_id": "acme", "cluster_ids": ["prod-3"]}
	]`))
	require.NoError(t, err)
	require.Equal(t, 3, tokens.Len())

	for _, tc := range []struct {
		name    string
		token   string
		cluster string
		account string
		err     error
	}{
		{name: "unbound token, any id", token: "open", cluster: "anything", account: DefaultAccountID("open")},
		{name: "bound token, its id", token: "bound", cluster: "prod-2", account: "acme"},
		{name: "second token of the account", token: "bound-too", cluster: "prod-3", account: "acme"},
		{name: "bound token, other id", token: "bound", cluster: "prod-3", err: upload.ErrForbidden},
		{name: "unknown token", token: "guess", cluster: "prod-1", err: upload.ErrUnauthorized},
		{name: "prefix of a token", token: "boun", cluster: "prod-1", err: upload.ErrUnauthorized},
		{name: "token plus suffix", token: "bound!", cluster: "prod-1", err: upload.ErrUnauthorized},
		{name: "empty token", token: "", cluster: "prod-1", err: upload.ErrUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			account, err := tokens.Authorize(context.Background(), tc.token, tc.cluster)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				require.Empty(t, account)
				if tc.token != "" {
					require.NotContains(t, err.Error(), tc.token, "refusals never echo the token")
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.account, account)
		})
	}
}

func TestDefaultAccountID(t *testing.T) {
	a := DefaultAccountID("token-a")
	require.Len(t, a, 32)
	require.Equal(t, a, DefaultAccountID("token-a"), "stable across calls and restarts")
	require.NotEqual(t, a, DefaultAccountID("token-b"))
	require.NotContains(t, a, "token-a")
}

func TestParseTokensRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, data, err string
	}{
		{name: "misspelt field", data: `[{"token":"a","cluster_id":["x"]}]`, err: "unknown field"},
		{name: "duplicate token", data: `[{"token":"a"},{"token":"b"},{"token":"a"}]`, err: "entry 2: duplicate token"},
		{name: "empty token", data: `[{"token":""}]`, err: "empty token"},
		{name: "missing token", data: `[{"account_id":"x"}]`, err: "empty token"},
		{name: "white space", data: `[{"token":"a "}]`, err: "white space"},
		{name: "control character", data: `[{"token":"a\u0000b"}]`, err: "control character"},
		{name: "too long", data: `[{"token":"` + strings.Repeat("x", maxClusterTokenBytes+1) + `"}]`, err: "longer than"},
		{name: "bad bound id", data: `[{"token":"a","cluster_ids":["ok","\u0007"]}]`, err: "control character"},
		{name: "not an array", data: `{"token":"a"}`, err: "parse tokens"},
		{name: "trailing data", data: `[{"token":"a"}] [{"token":"b"}]`, err: "after the JSON array"},
		{name: "not json", data: `token=a`, err: "parse tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTokens([]byte(tc.data))
			require.ErrorContains(t, err, tc.err)
			require.NotContains(t, err.Error(), `"a"`, "errors name entries by index, not by token")
		})
	}
}

func TestLoadTokensFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	require.NoError(t, os.WriteFile(path, []byte(`[{"token":"a"}]`+"\n"), 0o600))
	tokens, err := LoadTokensFile(path)
	require.NoError(t, err)
	_, err = tokens.Authorize(context.Background(), "a", "c")
	require.NoError(t, err)

	_, err = LoadTokensFile(filepath.Join(dir, "missing.json"))
	require.ErrorIs(t, err, os.ErrNotExist)

	require.NoError(t, os.WriteFile(path, []byte(`[{"token":"a"},{"token":"a"}]`), 0o600))
	_, err = LoadTokensFile(path)
	require.ErrorContains(t, err, path)
}

func TestValidateClusterID(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   string
		ok   bool
	}{
		{name: "uuid", id: "0b7e4f4c-8f5d-4a4e-9c1b-3f6f7a2d9e10", ok: true},
		{name: "unicode", id: "clúster-ü-東京", ok: true},
		{name: "spaces and punctuation", id: "prod cluster #1 (eu/west)", ok: true},
		{name: "longest", id: strings.Repeat("a", MaxClusterIDBytes), ok: true},
		{name: "empty", id: ""},
		{name: "too long", id: strings.Repeat("a", MaxClusterIDBytes+1)},
		{name: "invalid utf-8", id: "abc\xff"},
		{name: "newline", id: "a\nb"},
		{name: "nul", id: "a\x00b"},
		{name: "del", id: "a\x7fb"},
		{name: "c1 control", id: "a\u0085b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateClusterID(tc.id)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, upload.ErrInvalid)
		})
	}
}
