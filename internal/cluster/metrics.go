package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Values of the event label of telemeter_server_cluster_member_events_total.
const (
	eventJoin    = "join"    // a node (this one included) became a member
	eventUpdate  = "update"  // a member changed its metadata or address
	eventLeave   = "leave"   // a member left gracefully or was declared dead
	eventFailed  = "failed"  // this node declared a member dead (suspicion timed out)
	eventSuspect = "suspect" // this node suspected a member of failing
	eventRefute  = "refute"  // this node refuted being suspected or declared dead
)

type metrics struct {
	events         *prometheus.CounterVec
	failedRejoins  prometheus.Counter
	rejoins        prometheus.Counter
	keyringReloads *prometheus.CounterVec
	peerInfo       prometheus.Gauge
	collectors     []prometheus.Collector
}

func newMetrics(p *Peer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_cluster_member_events_total",
			Help: "Membership events seen by this node: join, update, leave (left or declared dead), suspect (this node suspected a member), failed (this node declared a member dead), refute (this node refuted a suspicion of itself).",
		}, []string{"event"}),
		failedRejoins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_cluster_failed_rejoins_total",
			Help: "Joins of the seed peers, the first one included, in which no seed could be reached.",
		}),
		rejoins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "telemeter_server_cluster_rejoins_total",
			Help: "Joins of the seed peers attempted, the first one at start included.",
		}),
		keyringReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "telemeter_server_cluster_keyring_reloads_total",
			Help: "Reloads of the gossip keyring file, by result (success, failure).",
		}, []string{"result"}),
		peerInfo: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "telemeter_server_cluster_peer_info",
			Help:        "Constant 1, labelled with this node's cluster name.",
			ConstLabels: prometheus.Labels{"peer": p.name},
		}),
	}
	m.peerInfo.Set(1)
	for _, e := range []string{eventJoin, eventUpdate, eventLeave, eventFailed, eventSuspect, eventRefute} {
		m.events.WithLabelValues(e)
	}
	for _, r := range []string{"success", "failure"} {
		m.keyringReloads.WithLabelValues(r)
	}
	m.collectors = []prometheus.Collector{
		m.events, m.failedRejoins, m.rejoins, m.keyringReloads, m.peerInfo,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telemeter_server_cluster_members",
			Help: "Members this node sees as alive or suspect, itself included.",
		}, func() float64 { return float64(p.ml.NumMembers()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telemeter_server_cluster_health_score",
			Help: "Memberlist's health score of this node; 0 is healthy, higher means it is missing its probe deadlines.",
		}, func() float64 { return float64(p.ml.GetHealthScore()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telemeter_server_cluster_ready",
			Help: "1 when this node has joined the cluster and membership has settled.",
		}, func() float64 { return boolFloat(p.Ready()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "telemeter_server_cluster_keyring_keys",
			Help: "Gossip encryption keys installed on this node; 0 when gossip is not encrypted.",
		}, func() float64 {
			if p.keyring == nil {
				return 0
			}
			return float64(len(p.keyring.GetKeys()))
		}),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
