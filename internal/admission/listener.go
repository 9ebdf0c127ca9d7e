package admission

import (
	"net"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// LimitListener returns a listener that keeps at most limit connections open
// (limit <= 0: no cap, connections are still counted). Wrap the plain TCP
// listener, before TLS, so the server still sees *tls.Conn.
//
// A connection over the cap is accepted and closed at once, with a reset,
// rather than left waiting in the kernel's backlog the way
// golang.org/x/net/netutil does it. Waiting would let an attacker who holds
// the open slots queue every later client, honest or not, behind them for
// as long as it likes; closing fails the surplus fast, frees the backlog
// and the socket (no TIME_WAIT), and lets honest clients retry with their
// backoff. The cost is that a surplus client sees a reset instead of an
// HTTP answer: there is no way to answer it without spending what the cap
// protects.
//
// name tells listeners apart in the metrics
// telemeter_server_admission_connections{listener},
// ..._connections_limit{listener} and ..._connections_rejected_total{listener}.
// reg may be nil.
func LimitListener(l net.Listener, limit int, reg prometheus.Registerer, name string) net.Listener {
	ll := &limitListener{Listener: l, max: int64(limit)}
	f := promauto.With(reg)
	labels := prometheus.Labels{"listener": name}
	ll.rejected = f.NewCounter(prometheus.CounterOpts{
		Name:        "telemeter_server_admission_connections_rejected_total",
		Help:        "Connections closed as soon as accepted because the listener had its maximum open.",
		ConstLabels: labels,
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "telemeter_server_admission_connections",
		Help:        "Connections open on the listener.",
		ConstLabels: labels,
	}, func() float64 { return float64(ll.open.Load()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "telemeter_server_admission_connections_limit",
		Help:        "Most connections the listener keeps open; 0 when uncapped.",
		ConstLabels: labels,
	}, func() float64 { return float64(max(ll.max, 0)) })
	return ll
}

type limitListener struct {
	net.Listener
	max      int64
	open     atomic.Int64
	rejected prometheus.Counter
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := l.open.Add(1); l.max > 0 && n > l.max {
			l.open.Add(-1)
			l.rejected.Inc()
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // close with a reset: no TIME_WAIT for a refused peer
			}
			_ = c.Close()
			continue
		}
		return &limitConn{Conn: c, l: l}, nil
	}
}

type limitConn struct {
	net.Conn
	l      *limitListener
	closed atomic.Bool
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
	}
	return err
}

// CloseWrite passes through to TCP, so that net/http can half-close a
// connection after an error answer (a 413 with the body unread) and the
// client reads the answer instead of a reset.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
