package transform

import (
	"fmt"
	"regexp"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// The expected tokens below were computed outside Go from the documented
// constructions, with OpenSSL and Python's hashlib/hmac, for example:
//
//	printf '%s' 'telemeter-salt10.0.150.196:9099' | openssl dgst -sha256 -binary | head -c 9 | base64 | tr '+/' '-_'
//	printf '%s' '10.0.150.196:9099' | openssl dgst -sha256 -hmac telemeter-salt -binary | head -c 18 | base64 | tr '+/' '-_'
func TestAnonymizeValueKnown(t *testing.T) {
	for _, tc := range []struct {
		name, salt, value string
		legacy, hmac      string
	}{
		{"ip and port", "telemeter-salt", "10.0.150.196:9099", "Z8iNiKDrff3i", "0b_MIz_CjwjmGSxQyRWJbKLC"},
		{"no salt", "", "ip-10-0-141-152", "H3Q4Zsva-rnu", "78j6JuwfPf3fMX-FJc5Wbz8m"},
		{"split ab|c", "ab", "c", "ungWv48Bz-pB", "EVXvNDGLz260JsXi2dXZEKJ1"},
		{"split a|bc", "a", "bc", "ungWv48Bz-pB", "zgMH2iztsqepvEEBXRSwPyEt"},
		{"empty value stays empty", "telemeter-salt", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.legacy, AnonymizeValue(tc.salt, tc.value, AnonymizeLegacy))
			require.Equal(t, tc.hmac, AnonymizeValue(tc.salt, tc.value, AnonymizeHMAC))
		})
	}
}

func TestAnonymizeValueForm(t *testing.T) {
	legacy := regexp.MustCompile(`^[A-Za-z0-9_-]{12}$`)
	hmac := regexp.MustCompile(`^[A-Za-z0-9_-]{24}$`)
	for i := range 200 {
		v := fmt.Sprintf("10.0.%d.%d:9100", i/7, i)
		require.Regexp(t, legacy, AnonymizeValue("s", v, AnonymizeLegacy))
		require.Regexp(t, hmac, AnonymizeValue("s", v, AnonymizeHMAC))
		require.NotEqual(t, AnonymizeValue("s", v, AnonymizeHMAC), AnonymizeValue("t", v, AnonymizeHMAC), "salt must matter")
	}
	// Modes other than legacy use the HMAC form.
	require.Equal(t, AnonymizeValue("s", "v", AnonymizeHMAC), AnonymizeValue("s", "v", AnonymizeMode(7)))
}

func TestAnonymize(t *testing.T) {
	for _, mode := range []AnonymizeMode{AnonymizeLegacy, AnonymizeHMAC, AnonymizeMode(7)} {
		t.Run(mode.String(), func(t *testing.T) {
			mf := family("m", dto.MetricType_GAUGE,
				gaugeMetric(1, "instance", "10.0.0.1:9100", "job", "node", "pod", "p-1"),
				nil,
				gaugeMetric(2, "instance", "", "job", "node"),
				gaugeMetric(3, "instance", "10.0.0.1:9100", "pod", "p-2"),
				&dto.Metric{Label: []*dto.LabelPair{nil, pair("pod", "p-3")}},
			)
			keep, err := Anonymize("salt", []string{"instance", "pod"}, mode).Transform(mf)
			require.NoError(t, err)
			require.True(t, keep)
			h := func(v string) string { return AnonymizeValue("salt", v, mode) }
			want := [][]*dto.LabelPair{
				pairs("instance", h("10.0.0.1:9100"), "job", "node", "pod", h("p-1")),
				nil,
				pairs("instance", "", "job", "node"),
				pairs("instance", h("10.0.0.1:9100"), "pod", h("p-2")),
				{nil, pair("pod", h("p-3"))},
			}
			for i, m := range mf.Metric {
				if want[i] == nil {
					require.Nil(t, m)
					continue
				}
				require.Len(t, m.Label, len(want[i]))
				for j, lp := range m.Label {
					require.Equal(t, want[i][j].GetName(), lp.GetName())
					require.Equal(t, want[i][j].GetValue(), lp.GetValue())
				}
			}
		})
	}
}

func TestAnonymizeConcurrent(t *testing.T) {
	tr := Anonymize("salt", []string{"instance"}, AnonymizeHMAC)
	const workers, perWorker = 4, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				v := fmt.Sprintf("10.0.%d.%d:9100", w, i)
				mf := family("m", dto.MetricType_GAUGE, gaugeMetric(1, "instance", v), gaugeMetric(2, "instance", v+"x"))
				if _, err := tr.Transform(mf); err != nil {
					errs <- err
					return
				}
				if got, want := mf.Metric[0].Label[0].GetValue(), AnonymizeValue("salt", v, AnonymizeHMAC); got != want {
					errs <- fmt.Errorf("value %s: got %s, want %s", v, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestParseAnonymizeMode(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    AnonymizeMode
		wantErr bool
	}{
		{in: "legacy", want: AnonymizeLegacy},
		{in: "hmac", want: AnonymizeHMAC},
		{in: "HMAC", wantErr: true},
		{in: "", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAnonymizeMode(tc.in)
			if tc.wantErr {
				require.ErrorContains(t, err, "want legacy or hmac")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.in, got.String())
		})
	}
}
