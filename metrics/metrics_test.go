package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	m := New()
	m.Transaction("reject")
	m.Lookup("authbl", "listed", 3*time.Millisecond)
	m.Detection("ip", true, "reject")
	m.CounterVecFunc("notifications_total", "Notifications.", []string{"channel", "result"},
		func() []Sample { return []Sample{{Labels: []string{"webhook", "ok"}, Value: 1}} })
	m.GaugeVecFunc("list_healthy", "Health.", []string{"list"},
		func() []Sample {
			return []Sample{{Labels: []string{"authbl"}, Value: 1}, {Labels: []string{"x", "bad"}}}
		})
	m.CounterFunc("store_errors_total", "Store errors.", func() float64 { return 1 })
	hits := 41.0
	m.CounterFunc("cache_hits_total", "Cache hits.", func() float64 { return hits + 1 })

	var notReady error = errors.New("list authbl fails its self-test")
	srv, err := Listen("127.0.0.1:0", Handler(m, func() error { return notReady }), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	base := "http://" + srv.Addr()

	code, body := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`authbl_milter_transactions_total{outcome="reject"} 1`,
		`authbl_milter_lookups_total{list="authbl",result="listed"} 1`,
		`authbl_milter_lookup_duration_seconds_bucket{list="authbl",le="0.005"} 1`,
		`authbl_milter_detections_total{new="true",reason="ip"} 1`,
		`authbl_milter_actions_total{action="reject"} 1`,
		`authbl_milter_notifications_total{channel="webhook",result="ok"} 1`,
		`authbl_milter_list_healthy{list="authbl"} 1`,
		`authbl_milter_store_errors_total 1`,
		`authbl_milter_cache_hits_total 42`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "authbl") {
		t.Fatalf("/readyz not ready: %d %q", code, body)
	}
	notReady = nil
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz ready: %d", code)
	}
}
