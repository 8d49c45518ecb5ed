package pipeline

import (
	"net/http"
	"testing"
)

// headerValues' slices share one array: adding to one header must not
// write into the next header's value.
func TestHeaderValuesAreIndependent(t *testing.T) {
	h := headerValues{h: http.Header{}, v: make([]string, 0, 2)}
	h.set("Age", "1")
	h.set("Cache-Status", "edgecache; hit")
	h.set("Content-Length", "3") // past the capacity: a new array
	h.h.Add("Age", "2")
	if got := h.h.Values("Age"); len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Errorf("Age %q", got)
	}
	if got := h.h.Get("Cache-Status"); got != "edgecache; hit" {
		t.Errorf("Cache-Status %q after Add to Age", got)
	}
	if got := h.h.Get("Content-Length"); got != "3" {
		t.Errorf("Content-Length %q", got)
	}
}
