package e2ee

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	encrypted, rotations, rekeys, decrypted prometheus.Counter
	requests                                *prometheus.CounterVec // key requests to us, by result
	requestsSent                            *prometheus.CounterVec // our key requests, by result
	decryptFailed                           *prometheus.CounterVec // messages not decrypted, by reason
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		encrypted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_e2ee_encrypted_total", Help: "Messages encrypted with a group key."}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_e2ee_rotations_total", Help: "Group keys rotated in band (newGroupKey)."}),
		rekeys: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_e2ee_rekeys_total", Help: "Group keys replaced on demand (re-key)."}),
		decrypted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_e2ee_decrypted_total", Help: "Messages decrypted for local consumers."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_e2ee_key_requests_total", Help: "Group key requests addressed to this publisher, by result (answered, refused, rate_limited, too_many_keys, no_keys, invalid, publish_failed)."},
			[]string{"result"}),
		requestsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_e2ee_key_requests_sent_total", Help: "Group key requests this subscriber sent, by result."},
			[]string{"result"}),
		decryptFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_e2ee_undelivered_total", Help: "Encrypted messages or keys not delivered, by reason (key_timeout, waiting_full, decrypt, bad_response, request_failed)."},
			[]string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.encrypted, m.rotations, m.rekeys, m.decrypted, m.requests, m.requestsSent, m.decryptFailed)
	}
	return m
}
