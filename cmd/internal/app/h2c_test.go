package app

import (
	"net/http"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// TestUpstreamH2C: with an h2c:// upstream URL edgecache speaks HTTP/2 with
// prior knowledge to the model, for a plain answer and a stream alike; with
// http:// it speaks HTTP/1.1. llmsim (Config.H2C) serves both on one port
// and counts the requests that arrived over HTTP/2.
func TestUpstreamH2C(t *testing.T) {
	for _, c := range []struct {
		scheme string
		want   int64 // requests llmsim saw over HTTP/2
	}{{"h2c", 2}, {"http", 0}} {
		t.Run(c.scheme, func(t *testing.T) {
			sim := startSim(t, llmsim.Config{H2C: true}) // HTTP/1.1 and h2c
			data, _ := startEdgecache(t, c.scheme+"://"+strings.TrimPrefix(sim.URL(), "http://"))
			plain := postChat(t, data, "sk-h2c", "h2c plain "+c.scheme, false)
			if plain.status != http.StatusOK || !strings.Contains(plain.body, `"chat.completion"`) {
				t.Fatalf("plain answer: %d %.300s", plain.status, plain.body)
			}
			stream := postChat(t, data, "sk-h2c", "h2c stream "+c.scheme, true)
			if stream.status != http.StatusOK || !strings.Contains(stream.body, `"chat.completion.chunk"`) ||
				!strings.HasSuffix(strings.TrimSpace(stream.body), "data: [DONE]") {
				t.Fatalf("stream: %d %.300s", stream.status, stream.body)
			}
			if got := sim.Server.Stats()[llmsim.StatHTTP2Requests]; got != c.want {
				t.Errorf("llmsim saw %d requests over HTTP/2, want %d", got, c.want)
			}
		})
	}
}
