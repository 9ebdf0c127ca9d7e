package transform

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseLabels(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flags   []string
		want    map[string]string
		wantErr string
	}{
		{name: "none", flags: nil, want: map[string]string{}},
		{name: "several", flags: []string{"region=eu", "_team=core"}, want: map[string]string{"region": "eu", "_team": "core"}},
		{name: "value keeps later equals signs", flags: []string{"q=a=b"}, want: map[string]string{"q": "a=b"}},
		{name: "repeat with the same value", flags: []string{"a=1", "a=1"}, want: map[string]string{"a": "1"}},
		{name: "no equals sign", flags: []string{"region"}, wantErr: `parse label "region": want name=value`},
		{name: "empty name", flags: []string{"=eu"}, wantErr: `parse label "=eu": invalid label name ""`},
		{name: "name with a dash", flags: []string{"my-label=x"}, wantErr: `parse label "my-label=x": invalid label name "my-label"`},
		{name: "name starting with a digit", flags: []string{"1a=x"}, wantErr: `invalid label name "1a"`},
		{name: "name with a space", flags: []string{"region =eu"}, wantErr: `invalid label name "region "`},
		{name: "reserved name", flags: []string{"__name__=up"}, wantErr: `parse label "__name__=up": names starting with __ are reserved`},
		{name: "empty value", flags: []string{"region="}, wantErr: `parse label "region=": empty value`},
		{name: "value not UTF-8", flags: []string{"region=\xff"}, wantErr: `value is not valid UTF-8`},
		{name: "conflicting repeat", flags: []string{"a=1", "a=2"}, wantErr: `parse label "a=2": a is already set to "1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLabels(tc.flags)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseRenames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flags   []string
		want    map[string]string
		wantErr string
	}{
		{name: "none", flags: nil, want: map[string]string{}},
		{name: "alerts", flags: []string{"ALERTS=alerts"}, want: map[string]string{"ALERTS": "alerts"}},
		{name: "colons allowed", flags: []string{"a=cluster:cpu:sum", "b=c"}, want: map[string]string{"a": "cluster:cpu:sum", "b": "c"}},
		{name: "repeat", flags: []string{"a=b", "a=b"}, want: map[string]string{"a": "b"}},
		{name: "no equals sign", flags: []string{"ALERTS"}, wantErr: `parse rename "ALERTS": want old=new`},
		{name: "bad old name", flags: []string{"1up=up"}, wantErr: `parse rename "1up=up": invalid metric name "1up"`},
		{name: "bad new name", flags: []string{"up=up-2"}, wantErr: `parse rename "up=up-2": invalid metric name "up-2"`},
		{name: "empty new name", flags: []string{"up="}, wantErr: `invalid metric name ""`},
		{name: "two new names", flags: []string{"a=b", "a=c"}, wantErr: `parse rename "a=c": a is already renamed to b`},
		{name: "two families onto one", flags: []string{"a=c", "b=c"}, wantErr: `parse rename "b=c": c is already the new name of a`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRenames(tc.flags)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
