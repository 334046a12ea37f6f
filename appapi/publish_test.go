package appapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/bridge"
	"github.com/tributary-iot/tributary/streamr"
)

// recordingPublisher takes every reading at once as durable.
type recordingPublisher struct {
	mu  sync.Mutex
	got []bridge.Direct
}

func (p *recordingPublisher) IngestDirect(d bridge.Direct) (func(context.Context) error, *bridge.Reason) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, d)
	return func(context.Context) error { return nil }, nil
}

type fixedPermissions struct {
	allowed bool
	err     error
}

func (f fixedPermissions) Allowed(context.Context, string, []byte, streamr.Permission, time.Time) (bool, error) {
	return f.allowed, f.err
}

// With [registry], a publish the gateway holds no publish permission for
// is 403, and one the registry cannot answer is 503; neither is stored.
func TestHTTPPublishPermissions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		perms  Permissions
		status int
		stored int
	}{
		{"no registry", nil, 200, 1},
		{"allowed", fixedPermissions{allowed: true}, 200, 1},
		{"denied", fixedPermissions{}, 403, 0},
		{"registry down", fixedPermissions{err: errors.New("rpc unreachable")}, 503, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := &recordingPublisher{}
			h, err := NewHTTPPublish(PublishConfig{Publisher: pub, Permissions: tc.perms, PublisherID: make([]byte, 20)})
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			mux.Handle("POST /streams/{id}/{$}", h)
			w := httptest.NewRecorder()
			mux.ServeHTTP(w, httptest.NewRequest("POST", "/streams/0x1234567890123456789012345678901234567890%2Fs/?partition=2", strings.NewReader(`{"a":1}`)))
			if w.Code != tc.status || len(pub.got) != tc.stored {
				t.Fatalf("status %d (%s), %d stored; want %d, %d", w.Code, w.Body, len(pub.got), tc.status, tc.stored)
			}
			if tc.stored == 1 && (pub.got[0].Part.Partition != 2 || string(pub.got[0].Payload) != `{"a":1}` || pub.got[0].Source != "http") {
				t.Errorf("stored %+v", pub.got[0])
			}
		})
	}
}
