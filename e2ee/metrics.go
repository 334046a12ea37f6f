package e2ee

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	encrypted, rotations, rekeys, decrypted prometheus.Counter
	requests                                *prometheus.CounterVec // key requests to us, by result
	requestsSent                            *prometheus.CounterVec // our key requests, by result
	decryptFailed                           *prometheus.CounterVec // messages not decrypted, by reason
	collected                               *prometheus.CounterVec // key server: stored messages' keys, by result
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
			Name: "tributary_e2ee_key_requests_total", Help: "Group key requests addressed to this publisher, or to a publisher whose keys this key server holds, by result (answered, refused, rate_limited, too_many_keys, no_keys, invalid, publish_failed)."},
			[]string{"result"}),
		requestsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_e2ee_key_requests_sent_total", Help: "Group key requests this subscriber sent, by result."},
			[]string{"result"}),
		decryptFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_e2ee_undelivered_total", Help: "Encrypted messages or keys not delivered, by reason (key_timeout, waiting_full, decrypt, bad_response, unauthorised_key_server, request_failed)."},
			[]string{"reason"}),
		collected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_e2ee_key_server_collected_total", Help: "Stored messages whose group key a key server ([[store]] answer_key_requests) had to fetch or learn from a rotation, by result (ok, failed)."},
			[]string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.encrypted, m.rotations, m.rekeys, m.decrypted, m.requests, m.requestsSent, m.decryptFailed, m.collected)
	}
	return m
}
